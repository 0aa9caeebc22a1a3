"""The report CLI (``tinyreport``: params, MACs, peak SRAM, flash vs board budgets) and the
toolchain's own performance benchmarks.

* :mod:`~tinyexport.benchmarks.report_cli` - ``tinyreport``: a zoo model or a ``.tflite`` file
  against board budgets (the ``.tflite`` side is ``tinyexport.firmware_eval.report``);
  :mod:`~tinyexport.benchmarks.zoo_fit` its ``--zoo`` table (every MCU zoo model against a board
  from the measured arenas, the flash predictor and the published top-1).
* ``bench_*`` - one benchmark each, run with ``python -m tinyexport.benchmarks.bench_NAME``:
  export timings, firmware and memory figures, patching, emulated Cortex-M, NetAug, TinyTL and the
  robustness attacks on the CLIs; :mod:`~tinyexport.benchmarks.publish` writes every benchmark's
  JSON and table into ``benchmarks/results/``.
* ``robustness_*`` - the robustness benchmark's parts: its harness and worker processes
  (``robustness_harness``), the seeded mutants (``robustness_mutants``) and one module a case
  family (``robustness_files``, ``robustness_args``, ``robustness_kills``).

This ``__init__`` imports nothing; benchmarks are programs, not a library surface.
"""
