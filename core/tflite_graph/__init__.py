"""The one ``.tflite`` graph layer: read, write and describe TFLite flatbuffers, without TensorFlow.

* :mod:`~tinyexport.tflite_graph.schema` - the generated flatbuffer schema, op and dtype names.
* :mod:`~tinyexport.tflite_graph.reader` - ``read_graph`` / ``parse_graph`` -> :class:`Graph`
  (tensors, ops, I/O, quantization, metadata) and constant tensor values.
* :mod:`~tinyexport.tflite_graph.writer` - ``bytes -> bytes`` rewrites (offline memory plan,
  single-op models).
* :mod:`~tinyexport.tflite_graph.edit` - object-API editing helpers (add buffers / tensors /
  opcodes / ops, replace the op list, drop unused tensors and buffers) for graph rewrites.
* :mod:`~tinyexport.tflite_graph.integrity` - structural checks of a parsed graph before any figure.
* :mod:`~tinyexport.tflite_graph.compact` - model compaction: drop what the interpreter never reads.
* :mod:`~tinyexport.tflite_graph.ops` - the op set TFLite Micro registers.
* :mod:`~tinyexport.tflite_graph.quant` - TFLite's affine int8 quantization arithmetic.
* :mod:`~tinyexport.tflite_graph.interpreter` - a LiteRT interpreter on model bytes (what runs a
  model; the file itself is read with :mod:`reader`).

``tinyexport.quantize`` and ``tinyexport.firmware_eval`` both build on this package and on nothing
above it. Import the submodules directly; this ``__init__`` imports nothing.
"""
