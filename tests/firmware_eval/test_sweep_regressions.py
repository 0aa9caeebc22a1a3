"""Regressions from a sweep of Keras / TFLiteConverter int8 models (2026-11): TRANSPOSE_CONV's int32
scratch in the head, BATCH_MATMUL's transposed-operand copy in the tail, per-input/output tail
terms, multi-input/multi-output measurement, and the clear errors for float I/O, 16x8 and an
un-fused dilated convolution TFLM would run into garbage."""

import json
import re

import pytest

from tinyexport.errors import UserError
from tinyexport.firmware_eval.report import run_tflite_report
from tinyexport.firmware_eval.tflm_readiness import load


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, keras_to_tflite):
    import tensorflow as tf
    from keras import ops

    keras, layers = tf.keras, tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("sweep")
    a = keras.Input((8, 8, 4), name="in1")
    x = layers.Conv2DTranspose(6, 3, strides=2, padding="same")(a)
    tconv = keras.Model(a, x)
    a, b = keras.Input((8, 8, 3), name="in1"), keras.Input((8, 8, 3), name="in2")
    s = layers.Add()([layers.Conv2D(8, 3, padding="same")(a), layers.Conv2D(8, 1)(b)])
    multi = keras.Model([a, b], [layers.GlobalAveragePooling2D()(s), layers.Conv2D(4, 1)(s)])
    a, b = keras.Input((8, 16), name="in1"), keras.Input((16, 8), name="in2")
    bmm = keras.Model([a, b], ops.matmul(a, b))
    a = keras.Input((12, 12, 3), name="in1")
    dil = keras.Model(a, layers.Conv2D(4, 3, dilation_rate=2, padding="same")(a))
    paths = {}
    for name, model, mode in [("tconv", tconv, "int8"), ("multi", multi, "int8"),
                              ("bmm", bmm, "int8"), ("dilated", dil, "int8"),
                              ("float_io", multi, "float_io"), ("16x8", multi, "16x8")]:
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(keras_to_tflite(model, mode))
    return paths


@pytest.mark.parametrize("name", ["tconv", "multi", "bmm"])
def test_sweep_models_match_tflm(sweep, name, capsys):
    assert run_tflite_report(str(sweep[name]), run_tflm=True, as_json=True) == 0
    rep = json.loads(capsys.readouterr().out)
    pred, meas = rep["arena"], rep["measured"]
    assert rep["errors"] == []
    assert pred["head"] == meas["head"]  # tconv: 4 x output-size int32 scratch in the head
    assert pred["tail"] == meas["tail"]  # bmm: transposed RHS copy; multi: 4 I/O tensors
    assert abs(meas["min_arena"] - meas["total"]) <= 16  # every input fed, every output compared
    assert rep["bit_exact"]["equal"]


@pytest.mark.parametrize("name,msg", [("float_io", "float32 inputs/outputs around int8"),
                                      ("16x8", "16x8-quantized")])
def test_sweep_models_rejected_clearly(sweep, name, msg):
    with pytest.raises(UserError, match=msg):
        load(sweep[name])


def test_dilated_model_is_analysed_but_not_run(sweep, capsys):
    """The converter's un-fused dilated conv: the arena is still predicted, TFLM is not started
    (it would compute garbage), and each bad op is one error line; exit code 1."""
    from tinyexport.benchmarks.report_cli import main

    assert main([str(sweep["dilated"]), "--measure", "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["arena"]["head"] > 0 and "measured" not in rep
    assert all(e.startswith("TFLM not run: ") for e in rep["errors"])  # one per bad op
    assert re.search("TFLM not run: SPACE_TO_BATCH_ND .* output batch 1", rep["errors"][0])
