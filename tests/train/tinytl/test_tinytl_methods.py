"""Each method trains exactly its set (docs/tinytl.md §1)."""

import pytest
import torch

from tinyexport.errors import UserError
from tinyexport.train.models import build_model
from tinyexport.train.tinytl.methods import METHODS, canonical_method, prepare_method, trainable_names
from tinyexport.train.tinytl.modules import insert_lite_residual

# docs/tinytl.md §1, Flowers head (102 classes), verified with the official code.
OFFICIAL_TRAINABLE = {"ft-last": 130_662, "tinytl-b": 151_638, "tinytl-l": 1_947_078,
                      "tinytl-lb": 1_962_310, "ft-norm-last": 172_614, "ft-full": 4_746_590}


@pytest.fixture(scope="module")
def proxyless():
    return insert_lite_residual(build_model("proxylessnas-mobile", num_classes=1000))


@pytest.mark.parametrize("method", METHODS)
def test_trainable_counts_match_official(proxyless, method):
    prepared = prepare_method(proxyless, method, num_classes=102)
    count = sum(p.numel() for p in prepared.parameters() if p.requires_grad)
    assert count == OFFICIAL_TRAINABLE[method]


def test_sets_by_name():
    model = insert_lite_residual(build_model("mbv2-tiny", num_classes=4, resolution=64))
    names = {n for n, _ in model.named_parameters()}
    lite = {n for n in names if ".lite_residual." in n}
    final_bias = {n for n in lite if n.endswith("final_bn.bias")}
    head = {"classifier.weight", "classifier.bias"}
    bias = {n for n in names if n.endswith(".bias")}
    norm = {n for n in names if ".bn" in n or "final_bn" in n}
    assert trainable_names(model, "ft-last") == head
    assert trainable_names(model, "ft-full") == names
    assert trainable_names(model, "tinytl-b") == head | bias
    assert trainable_names(model, "tinytl-l") == head | lite
    assert trainable_names(model, "tinytl-lb") == head | ((bias | lite) - final_bias)
    assert final_bias and not final_bias & trainable_names(model, "tinytl-lb")
    assert trainable_names(model, "ft-norm-last") == head | norm
    assert not any("conv" in n and n.endswith("weight") and "bn" not in n
                   for n in trainable_names(model, "ft-norm-last"))


def test_new_classifier_and_purity():
    model = insert_lite_residual(build_model("mbv2-tiny", num_classes=10, resolution=64))
    prepared = prepare_method(model, "TinyTL-L+B", num_classes=3)
    assert prepared.classifier.out_features == 3 and prepared.spec.num_classes == 3
    assert model.classifier.out_features == 10
    assert all(p.requires_grad for p in model.parameters())
    assert torch.count_nonzero(prepared.classifier.bias) == 0


@pytest.mark.parametrize("spelling,expected", [
    ("TinyTL-L+B", "tinytl-lb"), ("tinytl-lite_residual+bias", "tinytl-lb"),
    ("FT-Norm+Last", "ft-norm-last"), ("bn+last", "ft-norm-last"), ("tinytl-bias", "tinytl-b"),
    ("TinyTL-L", "tinytl-l"), ("last", "ft-last"), ("FT-Full", "ft-full")])
def test_spellings(spelling, expected):
    assert canonical_method(spelling) == expected


def test_unknown_method():
    with pytest.raises(UserError, match="unknown transfer method 'tinytl-x'"):
        canonical_method("tinytl-x")
