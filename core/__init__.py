"""tinyexport: tiny CNNs from training to microcontrollers.

Stages live in subpackages (``tinyexport.train``, ``tinyexport.export``, ``tinyexport.quantize``,
``tinyexport.firmware_eval``, ``tinyexport.benchmarks``). Importing this package is cheap: no torch,
no tensorflow.
"""

__version__ = "0.1.0"
