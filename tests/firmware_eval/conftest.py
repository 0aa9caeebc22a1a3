"""Small int8 test models built with the real TFLiteConverter (TF imported only here, in tests).

``tiny``: conv, depthwise, 1x1 conv, residual ADD, avgpool, reshape, fully-connected (16x16x3).
``float`` / ``hybrid``: the same network without / with weight-only quantization, for the
bad-input tests.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

RES = 16


def _keras_model():
    import tensorflow as tf

    keras = tf.keras
    tf.keras.utils.set_random_seed(0)
    x_in = keras.Input((RES, RES, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x_in)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    y = keras.layers.Conv2D(8, 1)(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(5, strides=2, padding="same")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Reshape((64,))(x)
    x = keras.layers.Dense(10)(x)
    return keras.Model(x_in, x)


def convert_keras(model, mode: str = "int8") -> bytes:
    """The one Keras → TFLite conversion of these tests: ``int8`` (full int8, int8 I/O), ``16x8``
    (int16 activations), ``hybrid`` (weight-only) or ``float``; calibrated on 8 seeded normal
    samples per input."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float":
        return conv.convert()
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "hybrid":
        return conv.convert()
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(8):
            yield {i.name: rng.standard_normal((1, *i.shape[1:])).astype(np.float32)
                   for i in model.inputs}

    conv.representative_dataset = rep
    if mode == "16x8":
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    else:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if mode == "int8":
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


@pytest.fixture(scope="session")
def keras_to_tflite():
    """:func:`convert_keras`, for the test modules that build their own Keras models."""
    return convert_keras


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    folder = tmp_path_factory.mktemp("fw_models")
    keras_model = _keras_model()
    paths = {}
    for mode in ("int8", "float", "hybrid"):
        paths[mode] = folder / f"tiny_{mode}.tflite"
        paths[mode].write_bytes(convert_keras(keras_model, mode))
    return paths
