"""The tiny-model zoo: registered builders (``build_model``), their specs and building blocks.

* :mod:`~tinyexport.train.models.zoo` - the registry of builders and the input bounds;
* :mod:`~tinyexport.train.models.spec` - architecture specs (pure data);
* :mod:`~tinyexport.train.models.mbnet`, :mod:`~tinyexport.train.models.tv_mobilenetv2` - the nets;
  :mod:`~tinyexport.train.models.layers` - their blocks (shared with NetAug and TinyTL);
* :mod:`~tinyexport.train.models.profile` - params, MACs and peak activation per layer.

Models only: no training code.
"""

from tinyexport.train.models.zoo import MODELS, build_model, check_bounds, list_models, model_spec

__all__ = ["MODELS", "build_model", "check_bounds", "list_models", "model_spec"]
