"""Export stage: PyTorch -> fused -> ONNX -> float TFLite -> full-int8 TFLite, verified."""
