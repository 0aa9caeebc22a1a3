"""TinyTL (``docs/tinytl.md``): transfer learning with little data and little training memory.

* :mod:`~tinyexport.train.tinytl.modules` - the lite residual adapter and where it goes;
* :mod:`~tinyexport.train.tinytl.methods` - the six methods and their trainable sets;
* :mod:`~tinyexport.train.tinytl.surgery` - the official backbone preprocessing (GN, WS);
* :mod:`~tinyexport.train.tinytl.transfer` - one ``tinytrain transfer`` run (:mod:`cli`);
  :mod:`~tinyexport.train.tinytl.transfer_checkpoint` - its checkpoints, rebuilt for export;
* :mod:`~tinyexport.train.tinytl.memory`, :mod:`~tinyexport.train.tinytl.report` - the analytic
  training memory (``tinyreport --train-memory``); :mod:`~tinyexport.train.tinytl.inference` -
  what the adapters cost at inference.

Heavy libraries are not imported here.
"""

from tinyexport.train.tinytl.methods import METHODS, canonical_method, prepare_method
from tinyexport.train.tinytl.modules import LiteResidual, LiteResidualBlock, LiteResidualConfig, insert_lite_residual

__all__ = ["METHODS", "canonical_method", "prepare_method", "LiteResidual", "LiteResidualBlock",
           "LiteResidualConfig", "insert_lite_residual"]
