"""TFLite's affine quantization arithmetic, with the parameters read from the model (docs/style.md
§13): ``q = clip(round(x / scale) + zero_point)`` and ``x = (q - zero_point) * scale``,
per tensor or per channel along :attr:`Quant.axis`."""

from __future__ import annotations

import numpy as np

from tinyexport.tflite_graph.reader import Quant


def quantize_values(values: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """``clip(round(x / scale) + zero_point)`` with round half away from zero, as TFLite's own
    QUANTIZE (``TfLiteRound`` = ``std::round``) and the bundle's ``main.cc`` (``lround``) do."""
    v = np.asarray(values, dtype=np.float64) / scale
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + zero_point
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_values(values: np.ndarray, quant: Quant) -> np.ndarray:
    """``(q - zero_point) * scale`` in float64, per channel along ``quant.axis`` when the tensor
    has several scales; the values unchanged (as float64) when it has none."""
    values = np.asarray(values).astype(np.float64)
    scales = np.asarray(quant.scales, np.float64)
    zeros = np.asarray(quant.zero_points, np.float64)
    if scales.size == 0:
        return values
    shape = [1] * values.ndim
    if scales.size > 1:
        shape[quant.axis] = scales.size
    return (values - zeros.reshape(shape)) * scales.reshape(shape)
