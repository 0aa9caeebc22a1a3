"""tinyexport: tiny CNNs from training to microcontrollers.

Stages live in subpackages (``tinyexport.train``, ``tinyexport.export``, ``tinyexport.quantize``,
``tinyexport.firmware_eval``, ``tinyexport.benchmarks``). The modules here (folder ``core/``) are
the ground floor every stage may use, and import nothing of ours above them:

* :mod:`~tinyexport.boards` - the board registry (SRAM, flash, core) and the fit ``Verdict``;
* :mod:`~tinyexport.config` - YAML and mapping loaders, git sha and package versions;
* :mod:`~tinyexport.json_record` - ``to_record``, the one conversion of result dataclasses to JSON;
* :mod:`~tinyexport.errors` - ``UserError`` and friends, and ``run_cli`` (one line, exit code);
* :mod:`~tinyexport.atomic` - atomic files and folders; :mod:`~tinyexport.procs` - child
  processes that die with their parent; :mod:`~tinyexport.log` - logging setup;
  :mod:`~tinyexport.distributed` - torchrun's environment; :mod:`~tinyexport.registry` - the
  loud, alias-aware registry; :mod:`~tinyexport.safe_io` - reading user files with limits;
* :mod:`~tinyexport.tflite_graph` - the one ``.tflite`` reader and writer.

Importing this package is cheap: no torch, no tensorflow.
"""

__version__ = "0.1.0"
