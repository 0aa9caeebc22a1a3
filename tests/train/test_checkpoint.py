"""Checkpoint round trip, mismatch messages, and the released-file key mappings.

The mappings were checked once against the reference implementations (NetAug
``netaug/models/base`` and the MCUNet zoo's ``ProxylessNASNets`` built from the zoo JSONs): the
foreign state_dicts loaded strictly and gave identical outputs. These tests pin that mapping:
key counts of the reference models and literal key names.
"""

import argparse

import pytest
import torch

from tinyexport.errors import UserError
from tinyexport.train.checkpoint_format import (
    load_checkpoint,
    make_payload,
    mcunet_key_map,
    netaug_key_map,
    save_checkpoint,
)
from tinyexport.train.model_from_checkpoint import model_from_checkpoint
from tinyexport.train.models import build_model


def _randomise_bn(model):
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model


def _same_outputs(a, b, resolution):
    a.eval()
    b.eval()
    x = torch.randn(2, 3, resolution, resolution)
    return torch.equal(a(x), b(x))


@pytest.mark.parametrize("wrapped", [True, False])
def test_round_trip_plain_and_wrapped(tmp_path, wrapped):
    model = _randomise_bn(build_model("mcunet-in0", num_classes=5))
    path = tmp_path / "m.pt"
    sd = model.state_dict()
    torch.save({"state_dict": sd} if wrapped else sd, path)
    other = build_model("mcunet-in0", num_classes=5)
    report = load_checkpoint(other, path)
    assert report.source_format == "tinyexport"
    assert _same_outputs(model, other, 48)


def test_our_payload_rebuilds_the_model(tmp_path):
    model = _randomise_bn(build_model("mbv2-tiny", num_classes=3, resolution=64))
    save_checkpoint(model, tmp_path / "base.pt", epoch=4)
    rebuilt, meta = model_from_checkpoint(tmp_path / "base.pt")
    assert meta["model"] == "mbv2-tiny" and rebuilt.resolution == 64
    assert _same_outputs(model, rebuilt, 64)
    assert make_payload(model)["num_classes"] == 3


def test_mismatch_names_missing_unexpected_and_shapes(tmp_path):
    torch.save(build_model("mcunet-in0", num_classes=10).state_dict(), tmp_path / "in0.pt")
    with pytest.raises(UserError) as err:
        load_checkpoint(build_model("mcunet-in1", num_classes=10), tmp_path / "in0.pt")
    message = str(err.value)
    assert "does not match model 'mcunet-in1'" in message
    assert "unexpected" in message and "shape mismatch" in message
    assert "first_conv.conv.weight: checkpoint (24, 3, 3, 3) vs model (16, 3, 3, 3)" in message


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch file"):
        load_checkpoint(build_model("mcunet-in0"), bad)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(build_model("mcunet-in0"), tmp_path / "nope.pt")


class _Pickled:  # any class: weights_only loading refuses it
    pass


@pytest.mark.parametrize("kind, fragment", [
    ("empty", r"is empty \(0 bytes\)"), ("folder", "is a folder"),
    ("truncated", "not a readable PyTorch file"), ("object", "never loads"),
])
def test_bad_checkpoints_never_suggest_unsafe_loading(tmp_path, kind, fragment):
    path = tmp_path / "ck.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "truncated":
        torch.save(build_model("mcunet-in0", num_classes=10).state_dict(), path)
        path.write_bytes(path.read_bytes()[:5000])
    else:
        torch.save({"state_dict": {}, "obj": _Pickled()}, path)
    with pytest.raises(UserError, match=fragment) as err:
        load_checkpoint(build_model("mcunet-in0", num_classes=10), path)
    assert "weights_only=False" not in str(err.value)


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, path)  # not allow-listed
    with pytest.raises(UserError, match="weights_only"):
        load_checkpoint(build_model("mcunet-in0"), path)


# key counts of the reference implementations' state_dicts (BN buffers included)
REFERENCE_KEY_COUNTS = {"mbv2-tiny": 314, "mbv2-w0.35": 314, "mcunet": 326,
                        "proxylessnas-w0.35": 368}


@pytest.mark.parametrize("name", sorted(REFERENCE_KEY_COUNTS))
def test_netaug_mapping_loads_strictly(tmp_path, name):
    model = _randomise_bn(build_model(name))
    mapping = netaug_key_map(model)
    assert len(set(mapping.values())) == len(mapping) == REFERENCE_KEY_COUNTS[name]
    theirs = {mapping[k]: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": theirs}, tmp_path / "netaug.pth")
    other = build_model(name)
    assert load_checkpoint(other, tmp_path / "netaug.pth").source_format == "netaug"
    assert _same_outputs(model, other, 64)


def test_netaug_literal_names():
    tiny = netaug_key_map(build_model("mbv2-tiny"))
    assert tiny["first_conv.bn.running_var"] == "backbone.input_stem.op_list.0.norm.running_var"
    assert tiny["blocks.0.depthwise.conv.weight"] == (
        "backbone.input_stem.op_list.1.conv.depth_conv.conv.weight")
    assert tiny["blocks.1.expand.conv.weight"] == (
        "backbone.stages.0.op_list.0.conv.inverted_conv.conv.weight")
    assert tiny["blocks.15.project.bn.bias"] == "backbone.stages.4.op_list.2.conv.point_conv.norm.bias"
    assert tiny["blocks.16.depthwise.bn.weight"] == "head.op_list.0.conv.depth_conv.norm.weight"
    assert tiny["final_conv.conv.weight"] == "head.op_list.1.conv.weight"
    assert tiny["classifier.weight"] == "head.op_list.3.linear.weight"
    assert netaug_key_map(build_model("mcunet"))["classifier.bias"] == "head.op_list.2.linear.bias"


ZOO_KEY_COUNTS = {"mcunet-in0": 272, "mcunet-in1": 254, "mcunet-in2": 326, "mcunet-in3": 326,
                  "mcunet-in4": 308, "mbv2-tiny": 314, "proxyless-w0.3": 368,
                  "proxylessnas-mobile": 368}


@pytest.mark.parametrize("name", sorted(ZOO_KEY_COUNTS))
def test_mcunet_zoo_mapping_loads_strictly(tmp_path, name):
    model = _randomise_bn(build_model(name))
    mapping = mcunet_key_map(model)
    assert len(set(mapping.values())) == len(mapping) == ZOO_KEY_COUNTS[name]
    torch.save({mapping[k]: v for k, v in model.state_dict().items()}, tmp_path / "zoo.pth")
    other, meta = model_from_checkpoint(tmp_path / "zoo.pth", model_name=name)
    assert meta["source_format"] == "mcunet-zoo"
    if name != "mbv2-tiny":  # the zoo's mbv2 baseline switches BN eps to 1e-3 on load
        assert _same_outputs(model, other, 64)


def test_mcunet_zoo_literal_names():
    zoo = mcunet_key_map(build_model("proxyless-w0.3"))
    # ZeroLayer blocks 3 and 4 keep their indices in the zoo file
    assert zoo["blocks.3.expand.conv.weight"] == (
        "blocks.5.mobile_inverted_conv.inverted_bottleneck.conv.weight")
    assert zoo["blocks.0.project.bn.running_mean"] == (
        "blocks.0.mobile_inverted_conv.point_linear.bn.running_mean")
    assert zoo["final_conv.bn.weight"] == "feature_mix_layer.bn.weight"
    assert zoo["classifier.weight"] == "classifier.linear.weight"


def test_plain_state_dict_needs_model_name(tmp_path):
    torch.save(build_model("mcunet-in0").state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UserError, match="pass --model"):
        model_from_checkpoint(tmp_path / "sd.pt")


def test_a_flipped_bit_in_the_weights_is_caught(tmp_path):
    """torch.load ignores the zip CRC-32s: without our check a damaged copy loads as other
    weights (the robustness benchmark found 38 of 100 mutants doing so)."""
    model = build_model("mcunet-in0", num_classes=4, resolution=32)
    path = tmp_path / "ck.pt"
    save_checkpoint(model, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensor records
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged"):
        load_checkpoint(build_model("mcunet-in0", num_classes=4, resolution=32), path)
