"""The classifier-as-1×1-conv surgery: pure, numerically equivalent, and only where it applies."""

import pytest
import torch
from torch import nn

from tinyexport.errors import StageError
from tinyexport.export.fuse import fuse_conv_bn
from tinyexport.export.head import HEAD_RTOL, check_head, head_as_conv_and_check, linear_head_as_conv
from tinyexport.train.models import build_model


def _images(resolution: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["mcunet", "mbv2-tiny", "proxylessnas-w0.35", "mobilenetv2"])
def test_zoo_heads_become_1x1_convs_with_equal_outputs(name):
    torch.manual_seed(0)
    model = fuse_conv_bn(build_model(name, num_classes=10, resolution=32))
    images = _images(32)
    converted, check = head_as_conv_and_check(model, images)
    assert check.passed and len(check.converted) == 1
    assert check.max_abs_diff <= HEAD_RTOL * check.output_scale
    head = converted.get_submodule(check.converted[0])
    assert isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1)
    linear = model.get_submodule(check.converted[0])
    assert isinstance(linear, nn.Linear)  # the input model is untouched (pure function)
    torch.testing.assert_close(head.weight[:, :, 0, 0], linear.weight, atol=0, rtol=0)
    torch.testing.assert_close(head.bias, linear.bias, atol=0, rtol=0)
    assert not any(isinstance(m, nn.Linear) for m in converted.modules())


def test_adapted_tinytl_model_head_converts():
    from tinyexport.train.tinytl.modules import default_config, insert_lite_residual

    torch.manual_seed(0)
    model = insert_lite_residual(build_model("mbv2-tiny", num_classes=5, resolution=64),
                                 default_config("mbv2-tiny")).eval()
    _, check = head_as_conv_and_check(model, _images(64, 2))
    assert check.passed and check.converted == ("classifier",)


class _SpatialLinear(nn.Module):
    """A Linear over a flattened 2×2 map: not a pooled head, must stay a Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x), 1))


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 2
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_linear_over_a_spatial_map_is_left_alone():
    model = _SpatialLinear().eval()
    converted, check = head_as_conv_and_check(model, _images(8))
    assert check.converted == () and isinstance(converted.fc, nn.Linear)
    assert check.max_abs_diff == 0


def test_untraceable_model_is_returned_unchanged():
    model = _Untraceable().eval()
    converted = linear_head_as_conv(model, _images(8, 1))
    assert converted is not model and converted.head_convs == ()
    assert isinstance(converted.fc, nn.Linear)
    assert converted.head_reason.startswith("model not traceable by torch.fx")


class _FlattenVariants(nn.Module):
    """nn.Flatten() before one Linear (converted); flatten(x, 0, 1) before another (not: it
    merges batch and channels, so it is no pooled-features flatten)."""

    def __init__(self, merge: bool):
        super().__init__()
        self.merge = merge
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(1 if merge else 3, 2)

    def forward(self, x):
        x = self.pool(x)
        x = torch.flatten(x, 0, 1) if self.merge else self.flat(x)
        return self.fc(x)


@pytest.mark.parametrize("merge, converted", [(False, ("fc",)), (True, ())])
def test_only_a_start_dim_1_flatten_counts(merge, converted):
    model = _FlattenVariants(merge).eval()
    out, check = head_as_conv_and_check(model, _images(8, 1))
    assert check.converted == converted and check.passed


def test_the_check_fails_on_a_wrong_head(monkeypatch):
    from tinyexport.export import head

    torch.manual_seed(0)
    model = build_model("mcunet", num_classes=10, resolution=32).eval()
    images = _images(32)
    wrong = linear_head_as_conv(model, images[:1])
    with torch.no_grad():
        wrong.get_submodule("classifier").weight.mul_(1.01)
    assert not check_head(model, wrong, images).passed
    # a surgery that changed the outputs must be refused by the checked wrapper
    monkeypatch.setattr(head, "linear_head_as_conv", lambda m, x: wrong)
    with pytest.raises(StageError, match="1x1-conv classifier"):
        head_as_conv_and_check(model, images)


def test_linear_head_flag_keeps_fully_connected(tmp_path, capsys):
    """``--linear-head``: a real (tiny) export whose classifier stays FULLY_CONNECTED."""
    import json

    from tinyexport.export.cli import main
    from tinyexport.quantize.int8_checks import check_int8_model

    out = tmp_path / "lin"
    assert main(["--model", "mcunet-in0", "--int8", "--resolution", "32", "--num-classes", "10",
                 "--calib-images", "8", "--check-images", "4", "--no-firmware", "--linear-head",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    ops = check_int8_model((out / "model_int8.tflite").read_bytes()).op_histogram
    doc = json.loads((out / "export.json").read_text())
    assert ops.get("FULLY_CONNECTED") == 1 and "RESHAPE" not in ops
    assert doc["classifier"] == "linear (FULLY_CONNECTED; --linear-head)"
    assert "classifier as 1x1 conv" not in doc["checks"]
