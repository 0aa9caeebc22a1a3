"""Multi-output and tiny Keras / TFLiteConverter int8 models: the predicted tail equals TFLM's, and
the predicted smallest arena is never below the one bisected in the real interpreter.

* two / three outputs, each head a GlobalAveragePooling (MEAN, a 1-byte params struct) and a
  Dense (FULLY_CONNECTED): the tail was predicted 16 B low and the smallest arena 8 B low,
  because TfLiteFullyConnectedParams is 8-byte aligned in the tail (arena.BUILTIN_ALIGN);
* one 1x1 conv on 8x8x3: TFLM needs 1,688 B while the ops' Prepare run (temp TfLiteTensors,
  conv's twice; arena.prepare_peak), above the recorded total of 1,408 B.
"""

import numpy as np
import pytest

from tinyexport.firmware_eval import arena, tflm_runner
from tinyexport.tflite_graph.reader import read_graph

pytest.importorskip("tflite_micro")


@pytest.fixture(scope="module")
def heads(tmp_path_factory, keras_to_tflite):
    import tensorflow as tf

    keras, layers = tf.keras, tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    a = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(a)
    gate = layers.Activation("sigmoid")(layers.Conv2D(8, 1)(x))
    score = layers.Dense(1)(layers.GlobalAveragePooling2D()(gate))
    cls = layers.Dense(3)(layers.GlobalAveragePooling2D()(x))
    models = {"two": keras.Model(a, [score, cls]),
              "three": keras.Model(a, [score, cls, layers.Conv2D(2, 1)(x)]),
              "conv1x1": keras.Model(a, layers.Conv2D(3, 1)(a))}
    folder = tmp_path_factory.mktemp("multi_out")
    paths = {}
    for name, model in models.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(keras_to_tflite(model))
    return paths


# name: (head, tail, smallest arena_size TFLM accepts) measured with tflite-micro
# 0.dev20261023182759 (x86-64, 2026-11)
MEASURED = {"two": (1536, 2400, 3928), "three": (1536, 2784, 4312), "conv1x1": (384, 1024, 1688)}


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_tail_exact_and_min_arena_never_below(heads, name):
    path = heads[name]
    graph = read_graph(path)
    pred = arena.predict(graph)
    x = np.random.default_rng(0).integers(-128, 128, (1, 8, 8, 3), np.int8)
    run = tflm_runner.run_tflm(path, x, arena_size=1 << 16)
    found = tflm_runner.min_arena(path, x, run.outputs, start=run.total).min_arena
    assert (run.head, run.tail, found) == MEASURED[name]
    assert (pred.head, pred.tail) == (run.head, run.tail)
    assert found <= pred.min_arena <= found + 16  # above by an alignment step at most
