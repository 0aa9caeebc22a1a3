"""Full-int8 post-training quantization with TFLiteConverter (docs/toolchain.md §6, docs/mcunet.md §4).

``Optimize.DEFAULT`` + a representative dataset of calibration images + ``TFLITE_BUILTINS_INT8``
only + int8 input and output: every op runs in int8 and TFLite Micro accepts the file. Weights are
per-channel unless ``per_channel=False`` (per-tensor, via the converter's per-channel switch).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from tinyexport.errors import StageError

_log = logging.getLogger(__name__)


def _representative(calib_nhwc: np.ndarray):
    def gen():
        for image in calib_nhwc:
            yield [np.ascontiguousarray(image[None], dtype=np.float32)]

    return gen


def quantize_int8(saved_model_dir: str | os.PathLike, calib_nhwc: np.ndarray,
                  per_channel: bool = True) -> bytes:
    """The full-int8 ``.tflite`` of a saved_model, calibrated on ``calib_nhwc`` (N,H,W,C float32,
    already normalised the way the model expects).

    Raises:
        StageError: the converter failed (its own message is kept).
    """
    import tensorflow as tf

    if len(calib_nhwc) == 0:
        raise StageError("int8 calibration needs at least one image")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(saved_model_dir)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calib_nhwc)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if not per_channel:
        converter._experimental_disable_per_channel = True  # noqa: SLF001 - TF's only switch
    try:
        return bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        raise StageError(f"TFLiteConverter int8 conversion failed: "
                         f"{str(exc).strip().splitlines()[-1][:400]}") from None


def float_tflite_from_saved_model(saved_model_dir: str | os.PathLike) -> bytes:
    """A float32 ``.tflite`` from the same saved_model (same tensor names as the int8 one; used by
    the per-layer report)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(saved_model_dir)))
    return bytes(converter.convert())
