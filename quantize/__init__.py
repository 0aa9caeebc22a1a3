"""Quantization stage: full-int8 PTQ (TFLiteConverter), int8 model checks, per-layer error report.

* :mod:`~tinyexport.quantize.ptq` - ``quantize_int8``: full-int8 post-training quantization.
* :mod:`~tinyexport.quantize.int8_checks` - ``check_int8_model`` (what TFLite Micro accepts) and
  ``compare_int8_to_float`` (how close to float it is).
* :mod:`~tinyexport.quantize.layer_report` - per-layer SQNR of int8 vs float activations.
* :mod:`~tinyexport.quantize.layer_names` - the PyTorch module each op of the int8 model came from.

Knows nothing of training: it reads ``.tflite`` files (``tinyexport.tflite_graph``) and arrays.
This ``__init__`` imports nothing (TensorFlow is loaded only by the functions that use it).
"""
