"""int8 model checks and onnx2tf failure surfacing, on real (tiny) converter outputs."""

import numpy as np
import pytest

from tinyexport.errors import StageError
from tinyexport.quantize.int8_checks import check_int8_model, sqnr_db


def _float_model_with_transpose() -> bytes:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 6, 3], tf.float32)])
    def fn(x):
        return tf.transpose(x, [0, 2, 1, 3]) * 2.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    return bytes(converter.convert())


def test_check_names_transpose_and_float_ops():
    check = check_int8_model(_float_model_with_transpose())
    assert not check.passed
    text = "\n".join(p.describe() for p in check.problems)
    assert "TRANSPOSE" in text and "layout transpose" in text
    assert "MUL" in text and "computes in float" in text
    assert "model input is float32" in text


def test_sqnr_hand_computed():
    ref = np.array([3.0, 4.0])
    assert sqnr_db(ref, ref) == float("inf")
    # signal 25, noise 0.25 -> 20 dB
    assert abs(sqnr_db(ref, ref + np.array([0.5, 0.0])) - 20.0) < 1e-9


def test_onnx2tf_failure_surfaces_its_reason(tmp_path):
    from tinyexport.export.convert import onnx_to_tflite

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    with pytest.raises(StageError, match="onnx2tf failed"):
        onnx_to_tflite(bad, tmp_path / "work", np.zeros((2, 8, 8, 3), np.float32))
