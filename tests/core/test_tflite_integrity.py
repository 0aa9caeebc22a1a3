"""Graph integrity rules on hand-built graphs: each output shape below is worked out by hand."""

import pytest

from tinyexport.errors import UserError
from tinyexport.tflite_graph.integrity import _out_size, check_integrity, integrity_problems
from tinyexport.tflite_graph.reader import Graph, Op, Quant, Tensor

Q = Quant((0.1,), (0,))


def _t(i, shape, const=False, dtype="int8", quant=Q):
    n = 1
    for d in shape:
        n *= d
    data = n * (4 if dtype == "int32" else 1) if const else 0
    return Tensor(i, f"t{i}", tuple(shape), dtype, const, False, quant, int(const) * (i + 1), data)


def _conv_graph(out_shape, stride=2, padding=0, filter_scales=(0.1,) * 8):
    """16x16x3 input, 3x3 filter, 8 channels. SAME, stride 2: ceil(16 / 2) = 8 -> 1x8x8x8;
    VALID, stride 2: (16 - 3 + 2) // 2 = 7 -> 1x7x7x8."""
    tensors = (_t(0, (1, 16, 16, 3)), _t(1, (8, 3, 3, 3), True, quant=Quant(filter_scales,
                                                                            (0,) * len(filter_scales))),
               _t(2, (8,), True, "int32"), _t(3, out_shape))
    opts = (("padding", padding), ("stride_h", stride), ("stride_w", stride),
            ("dilation_h", 1), ("dilation_w", 1), ("activation", 0))
    op = Op(0, "CONV_2D", 1, (0, 1, 2), (3,), (), opts)
    return Graph(tensors, (op,), (0,), (3,), 1000, extra={"num_buffers": 10})


def test_out_size_matches_tflite():
    assert _out_size(16, 3, 2, 1, 0) == 8  # SAME
    assert _out_size(16, 3, 2, 1, 1) == 7  # VALID
    assert _out_size(16, 3, 1, 2, 1) == 12  # VALID, dilation 2: effective filter 5


def test_consistent_conv_passes():
    assert integrity_problems(_conv_graph((1, 8, 8, 8))) == []
    assert integrity_problems(_conv_graph((1, 7, 7, 8), padding=1)) == []


@pytest.mark.parametrize("graph,message", [
    (_conv_graph((1, 7, 7, 8)), "output shape [1, 7, 7, 8], but the inputs give [1, 8, 8, 8]"),
    (_conv_graph((1, 8, 8, 8), stride=0), "strides / dilations"),
    (_conv_graph((1, 8, 8, 8), padding=5), "neither SAME"),
    (_conv_graph((1, 8, 0x7FFFFFFF, 8)), "each dimension must be"),
    (_conv_graph((1, 8, 8, 8), filter_scales=(0.1,) * 3), "3 scales on quantized dimension"),
])
def test_inconsistent_conv_is_one_clear_error(graph, message):
    with pytest.raises(UserError, match="^m.tflite is not a valid int8 TFLite model: ") as err:
        check_integrity(graph, "m.tflite", "int8 TFLite model")
    assert message in str(err.value)


def test_buffer_and_dataflow_problems():
    g = _conv_graph((1, 8, 8, 8))
    short = g.tensors[1].__class__(**{**g.tensors[1].__dict__, "data_bytes": 10})
    bad = Graph((g.tensors[0], short, *g.tensors[2:]), g.ops, g.inputs, g.outputs, 1000,
                extra=g.extra)
    assert "stores 10 bytes of data" in integrity_problems(bad)[0]
    unread = Graph(g.tensors, g.ops, (3,), (3,), 1000, extra=g.extra)
    assert "reads tensor 0 before any op writes it" in integrity_problems(unread)[0]
    no_quant = g.tensors[0].__class__(**{**g.tensors[0].__dict__, "quant": Quant()})
    bad = Graph((no_quant, *g.tensors[1:]), g.ops, g.inputs, g.outputs, 1000, extra=g.extra)
    assert "has no quantization parameters" in integrity_problems(bad)[0]
