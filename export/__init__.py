"""Export stage: PyTorch -> fused -> ONNX -> float TFLite -> full-int8 TFLite, verified.

* :mod:`~tinyexport.export.config` - ``ExportConfig``: what to export and how, validated.
* :mod:`~tinyexport.export.pipeline` - ``export()`` (atomic output folder) and ``run_export()``
  (the stages in order); :mod:`~tinyexport.export.cli` is ``tinyexport``.
* :mod:`~tinyexport.export.state` - the typed hand-offs between stages and ``ExportState``,
  which ``export.json`` is written from.
* :mod:`~tinyexport.export.stages` - one function a stage; the surgeries and conversions they call
  are :mod:`fuse`, :mod:`head`, :mod:`to_onnx` and :mod:`convert` (onnx2tf in a child).
* :mod:`~tinyexport.export.gate` (the int8 verdict), :mod:`~tinyexport.export.parity` (numerical
  equivalence), :mod:`~tinyexport.export.provenance` (``export.json`` and ``report.md``).
* plumbing: :mod:`~tinyexport.export.stage_timer` (stage records and their timer),
  :mod:`~tinyexport.export.output_files` (hashes, the scratch folder),
  :mod:`~tinyexport.export.tensors` (finite weights, NCHW to NHWC).

This ``__init__`` imports nothing: ``tinyexport.export.convert`` also runs as a child process.
"""
