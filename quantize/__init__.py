"""Quantization stage: full-int8 PTQ (TFLiteConverter), int8 model checks, per-layer error report."""
