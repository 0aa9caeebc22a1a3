"""Firmware evaluation: will an int8 ``.tflite`` run in TFLite Micro on a board, in how much memory?

Entry points (import them from their modules; this ``__init__`` imports nothing, because the TFLM
and QEMU children start with ``python -m tinyexport.firmware_eval...`` and must stay light):

* :mod:`~tinyexport.firmware_eval.evaluate` - ``evaluate_firmware``, the export's firmware stage:
  analyse, run in TFLM, optimise the arena, write the C bundle, give the board verdict; returns a
  ``FirmwareResult``.
* :mod:`~tinyexport.firmware_eval.report` - ``tinyreport FILE.tflite`` (``build_report``,
  ``run_tflite_report``); :mod:`~tinyexport.firmware_eval.optimize_report` its ``--optimize``.
* :mod:`~tinyexport.firmware_eval.verdicts` - does a model fit a board: ``board_verdict`` builds
  the verdict (predicted, or measured when emulated), ``verdict_lines`` renders it.
* :mod:`~tinyexport.firmware_eval.emulate` - the bundle built for a Cortex-M and run in QEMU
  (:mod:`emulate_build` builds and runs it, :mod:`emulate_map` reads the linker map and the
  driver's output; the driver itself is ``emu_driver.cc``, package data); a run's figures travel
  as an ``EmulationSummary`` (:mod:`emulation_summary`).

The rest, by role:

* model checks and runs: :mod:`tflm_readiness` (can TFLM run it), :mod:`tflm_runner` (TFLM /
  LiteRT in a child, whose side is :mod:`_tflm_child`), :mod:`tflm_measurement` (arena,
  bit-exactness, top-1), :mod:`calibrate` (per-op persistent bytes);
* arena figures: :mod:`arena` (TFLM's arena from the flatbuffer), :mod:`planner` (lifetimes and
  head planning), :mod:`offline_plan` (our tighter placement), :mod:`arena_analysis` (all of them
  for one graph);
* the memory optimiser: :mod:`optimize` (one entry), :mod:`reorder` (operator order),
  :mod:`patching` and :mod:`patch_search` (patch-based inference); what a verified rewrite
  (optimiser, compaction) found travels as the frozen results of :mod:`verified_rewrites`;
* firmware: :mod:`bundle` (the C bundle; its ``main.cc`` is ``bundle_main.cc.in``, package data),
  :mod:`model_flash` (the flash a model takes, predicted before export), :mod:`compaction_report`
  (the lines a model-compaction record prints).
"""
