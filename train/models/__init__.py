"""The tiny-model zoo: registered builders (``build_model``), their specs and building blocks."""

from tinyexport.train.models.zoo import MODELS, build_model, check_bounds, list_models, model_spec

__all__ = ["MODELS", "build_model", "check_bounds", "list_models", "model_spec"]
