"""TinyTL: lite residual adapters, the six transfer methods, the training-memory model
(``docs/tinytl.md``). Heavy libraries are not imported here."""

from tinyexport.train.tinytl.methods import METHODS, canonical_method, prepare_method
from tinyexport.train.tinytl.modules import LiteResidual, LiteResidualBlock, LiteResidualConfig, insert_lite_residual

__all__ = ["METHODS", "canonical_method", "prepare_method", "LiteResidual", "LiteResidualBlock",
           "LiteResidualConfig", "insert_lite_residual"]
