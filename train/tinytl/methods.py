"""The six transfer methods and their exact trainable sets (``docs/tinytl.md`` §1).

``prepare_method`` is pure: it copies the model, puts a fresh classifier on it (always trained)
and sets ``requires_grad`` so that exactly the method's set trains.
"""

from __future__ import annotations

import copy
import difflib
import re

from torch import nn

from tinyexport.errors import UserError
from tinyexport.train.tinytl.modules import LiteResidual

METHODS = ("ft-last", "ft-norm-last", "ft-full", "tinytl-b", "tinytl-l", "tinytl-lb")
# Paper / official CLI spellings (docs/tinytl.md §1 table), matched after normalisation.
_ALIASES = {
    "last": "ft-last", "ftlast": "ft-last",
    "bnlast": "ft-norm-last", "normlast": "ft-norm-last", "ftnormlast": "ft-norm-last",
    "ftbnlast": "ft-norm-last",
    "full": "ft-full", "ftfull": "ft-full",
    "tinytlb": "tinytl-b", "tinytlbias": "tinytl-b",
    "tinytll": "tinytl-l", "tinytliteresidual": "tinytl-l", "tinytllite_residual": "tinytl-l",
    "tinytllb": "tinytl-lb", "tinytlliteresidualbias": "tinytl-lb",
}
# FT-Last is the only method whose backward does not run through the net (§6.1).
REQUIRES_BACKWARD = {m: m != "ft-last" for m in METHODS}
NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm)


def canonical_method(name: str) -> str:
    """``TinyTL-L+B``, ``tinytl-lite_residual+bias``, ``FT-Norm+Last`` ... → our method name."""
    key = re.sub(r"[^a-z]", "", str(name).lower())
    for method in METHODS:
        if key == re.sub(r"[^a-z]", "", method):
            return method
    if key in _ALIASES:
        return _ALIASES[key]
    close = difflib.get_close_matches(str(name).lower(), METHODS, n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise UserError(f"unknown transfer method {name!r}; choose one of {', '.join(METHODS)}{hint}")


def classifier_path(model: nn.Module) -> str:
    """Dotted name of the last ``nn.Linear`` (the classifier)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise UserError(f"{type(model).__name__} has no nn.Linear classifier")
    return names[-1]


def replace_classifier_(model: nn.Module, num_classes: int) -> nn.Module:
    """Put a fresh Linear (uniform ±1/sqrt(in), zero bias; §4 step 4) on ``model`` in place."""
    path = classifier_path(model)
    old = model.get_submodule(path)
    new = nn.Linear(old.in_features, num_classes)
    bound = 1.0 / old.in_features ** 0.5
    nn.init.uniform_(new.weight, -bound, bound)
    nn.init.zeros_(new.bias)
    model.set_submodule(path, new)
    if hasattr(model, "spec"):
        model.spec = model.spec.with_(num_classes=num_classes)
    return model


def _lite_param_names(model: nn.Module) -> tuple[set[str], set[str]]:
    """(all lite residual parameter names, the final norm bias names)."""
    names, final_bias = set(), set()
    for prefix, module in model.named_modules():
        if isinstance(module, LiteResidual):
            for n, _ in module.named_parameters():
                names.add(f"{prefix}.{n}")
            final_bias.add(f"{prefix}.final_bn.bias")
    return names, final_bias


def _norm_param_names(model: nn.Module) -> set[str]:
    return {f"{prefix}.{n}" for prefix, m in model.named_modules() if isinstance(m, NORM_TYPES)
            for n, _ in m.named_parameters(recurse=False)}


def trainable_names(model: nn.Module, method: str) -> set[str]:
    """The parameter names that ``method`` trains on ``model`` (docs/tinytl.md §1)."""
    method = canonical_method(method)
    all_names = {n for n, _ in model.named_parameters()}
    head = classifier_path(model)
    classifier = {n for n in all_names if n.startswith(head + ".")}
    biases = {n for n in all_names if n.endswith("bias")}
    lite, final_bias = _lite_param_names(model)
    sets = {
        "ft-last": classifier,
        "ft-norm-last": classifier | _norm_param_names(model),
        "ft-full": all_names,
        "tinytl-b": classifier | biases,
        "tinytl-l": classifier | lite,
        "tinytl-lb": classifier | ((biases | lite) - final_bias),
    }
    return sets[method]


def set_trainable_(model: nn.Module, method: str) -> set[str]:
    names = trainable_names(model, method)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return names


def prepare_method(model: nn.Module, method: str, num_classes: int | None = None) -> nn.Module:
    """A copy of ``model`` with a new classifier (if ``num_classes``) and ``method``'s trainable set."""
    new = copy.deepcopy(model)
    if num_classes is not None:
        replace_classifier_(new, num_classes)
    set_trainable_(new, method)
    new.tinytl_method = canonical_method(method)
    return new


def set_train_mode_(model: nn.Module, training: bool = True) -> nn.Module:
    """``model.train(training)``, but a BatchNorm whose scale is frozen keeps its running stats
    (eval mode), so frozen layers stay bit-identical through training."""
    model.train(training)
    if training:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and not (m.weight is not None and m.weight.requires_grad):
                m.eval()
    return model
