"""Write the C bundle that runs a ``.tflite`` model in TFLite Micro on a board.

Files: ``model_data.cc/.h`` (the model as a 16-byte aligned array and its length),
``op_resolver.h`` (``MicroMutableOpResolver<N>`` with exactly the model's ops), ``arena_size.h``
(predicted total + margin; which kernels the figure is for), ``preprocess.h`` (input shape,
scale / zero point, and the training preprocessing when given: resize, crop, mean / std, channel
order, with the uint8-pixel-to-int8 formula) and ``main.cc`` (quantize an input with the model's own scale and zero
point, invoke, print the top class). Drop the folder into an Arduino / Zephyr / STM32Cube project
next to the TFLM library (docs/guide/firmware.md, "The C bundle").
``scripts/build_bundle_host.sh`` builds it for the x86-64 host against a TFLM source tree;
``scripts/check_bundle_host.py`` compares that binary with the Python TFLM interpreter
(tests/firmware_eval/test_bundle_build.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tinyexport.atomic import write_text
from tinyexport.tflite_graph.reader import Graph, Tensor

# Arena margin: 16 B for an unaligned arena pointer (micro_interpreter.h:144-149) plus 1 KiB for
# temp allocations during Prepare that the recording allocator can under-report (tflite-micro#2738).
ARENA_MARGIN = 16 + 1024

_SPECIAL = {"CONV_2D": "Conv2D", "DEPTHWISE_CONV_2D": "DepthwiseConv2D",
            "AVERAGE_POOL_2D": "AveragePool2D", "MAX_POOL_2D": "MaxPool2D",
            "L2_POOL_2D": "L2Pool2D", "RELU6": "Relu6", "BATCH_MATMUL": "BatchMatMul",
            "PADV2": "PadV2", "SPLIT_V": "SplitV", "SELECT_V2": "SelectV2",
            "REVERSE_V2": "ReverseV2", "LOG_SOFTMAX": "LogSoftmax",
            # micro_mutable_op_resolver.h spells these AddCumSum, AddUnidirectionalSequenceLSTM.
            "CUMSUM": "CumSum", "UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTM"}


def add_method(opcode: str) -> str:
    """``DEPTHWISE_CONV_2D`` -> ``AddDepthwiseConv2D`` (micro_mutable_op_resolver.h names)."""
    if opcode in _SPECIAL:
        return "Add" + _SPECIAL[opcode]
    return "Add" + "".join(part.capitalize() for part in opcode.split("_"))


def _c_array(data: bytes) -> str:
    rows = (", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16))
    return ",\n  ".join(rows)


@dataclass(frozen=True)
class ArenaBasis:
    """What the bundle's arena figure covers: TFLM's reference kernels, or a board's predicted
    CMSIS-NN scratch on top (predicted per op, docs/tflm_memory.md §5) with the 32-bit struct
    sizes; both checked in QEMU on Cortex-M4/M7 (``tinyexport --board B --emulate``)."""

    board: str | None = None
    isa: str | None = None
    reference_bytes: int | None = None  # the same arena with reference kernels

    def comment(self) -> str:
        if self.board is None:
            return ("// For TFLM's reference kernels with this x86-64 host's struct sizes (a 32-bit "
                    "build's tail is smaller).\n// Optimized CMSIS-NN kernels (Cortex-M) may need "
                    "extra scratch,\n// not included: see `tinyreport MODEL.tflite --board B`.")
        ref = f"; {self.reference_bytes} B with reference kernels" if self.reference_bytes else ""
        return (f"// Includes the predicted CMSIS-NN scratch for board {self.board} (ISA "
                f"{self.isa or '?'}){ref}.\n// Predicted per op for a 32-bit build; "
                "`tinyexport --board B --emulate` measures it in QEMU (Cortex-M4/M7).")


def write_bundle(out_dir: Path, model: bytes, graph: Graph, predicted_total: int,
                 basis: ArenaBasis | None = None, preprocessing: dict | None = None) -> list[str]:
    """Write the bundle files into ``out_dir``; return their names.

    Args:
        basis: which kernels ``predicted_total`` is for (reference kernels when None).
        preprocessing: the export's ``Preprocessing.as_dict()`` (``resolution``, ``mean``,
            ``std``, ``resize_short_side``); without it ``preprocess.h`` holds the model's input
            shape and quantization only.
    """
    ops = graph.opcodes
    in_t, out_t = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    files = {
        "model_data.h": _MODEL_H.format(n=len(model)),
        "model_data.cc": _MODEL_CC.format(n=len(model), body=_c_array(model)),
        "op_resolver.h": _RESOLVER_H.format(
            n=len(ops), adds="\n".join(f"  if (r.{add_method(o)}() != kTfLiteOk) return false;"
                                       for o in ops)),
        "arena_size.h": _ARENA_H.format(pred=predicted_total, margin=ARENA_MARGIN,
                                        total=predicted_total + ARENA_MARGIN,
                                        basis=(basis or ArenaBasis()).comment()),
        "preprocess.h": preprocess_header(in_t, preprocessing),
        "main.cc": Template(MAIN_CC.read_text()).substitute(
            in_shape="x".join(map(str, in_t.shape)), out_shape="x".join(map(str, out_t.shape))),
    }
    for name, text in files.items():
        write_text(out_dir / name, text)
    return sorted(files)


def _c_float(value: float) -> str:
    return f"{float(value)!r}f"


def preprocess_header(tensor: Tensor, preprocessing: dict | None) -> str:
    """``preprocess.h``: input 0's shape (NHWC), scale and zero point from the model, and the
    training preprocessing constants when ``preprocessing`` is given."""
    scale = tensor.quant.scales[0] if tensor.quant.scales else 1.0
    zero = tensor.quant.zero_points[0] if tensor.quant.zero_points else 0
    shape = "x".join(map(str, tensor.shape))
    lines = [_PRE_H.format(shape=shape, dtype=tensor.dtype, n=tensor.nbytes,
                           scale=_c_float(scale), zero=zero)]
    if len(tensor.shape) == 4:
        h, w, c = tensor.shape[1:]
        lines.append(f"constexpr int kInputHeight = {h};\nconstexpr int kInputWidth = {w};\n"
                     f"constexpr int kInputChannels = {c};\n")
    if preprocessing:
        mean, std = preprocessing["mean"], preprocessing["std"]
        lines.append(_PRE_TRAIN_H.format(
            resize=int(preprocessing.get("resize_short_side", preprocessing["resolution"])),
            crop=int(preprocessing["resolution"]), n=len(mean),
            mean=", ".join(map(_c_float, mean)), std=", ".join(map(_c_float, std))))
    else:
        lines.append("// No training preprocessing was given (resize, crop, mean / std): see the\n"
                     "// export's export.json \"preprocessing\".\n")
    return "\n".join(lines)


def resolver_ops(text: str) -> list[str]:
    """The ``AddXxx`` calls in an ``op_resolver.h`` (used by tests)."""
    return re.findall(r"r\.(Add\w+)\(\)", text)


_MODEL_H = """// Generated by tinyexport.firmware_eval.bundle. The .tflite model as a C array.
#pragma once
#include <cstddef>
#include <cstdint>

constexpr size_t g_model_data_len = {n};
extern const uint8_t g_model_data[];
"""

_MODEL_CC = """// Generated by tinyexport.firmware_eval.bundle.
#include "model_data.h"

// 16-byte aligned: TFLM reads int32 biases and int8 weights in place from this array.
alignas(16) const uint8_t g_model_data[{n}] = {{
  {body}
}};
"""

_RESOLVER_H = """// Generated by tinyexport.firmware_eval.bundle: exactly the ops this model uses.
#pragma once
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

using ModelOpResolver = tflite::MicroMutableOpResolver<{n}>;

inline bool RegisterModelOps(ModelOpResolver& r) {{
{adds}
  return true;
}}
"""

_ARENA_H = """// Generated by tinyexport.firmware_eval.bundle.
// Predicted TFLM arena (head + tail, or TFLM's planning-time minimum when larger; the struct
// sizes of the build named below): {pred} bytes.
{basis}
// Margin {margin} B = 16 B for an unaligned arena pointer + 1024 B for Prepare-time temp
// allocations the recording allocator can miss (tflite-micro#2738).
#pragma once
#include <cstddef>

constexpr size_t kTensorArenaSize = {total};
"""

_PRE_H = """// Generated by tinyexport.firmware_eval.bundle: how a camera frame becomes the model input.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

// Model input 0: {shape} {dtype}, layout NHWC, channel order RGB, {n} bytes.
constexpr float kInputScale = {scale};
constexpr int kInputZeroPoint = {zero};
"""

_PRE_TRAIN_H = """// Training preprocessing (export.json "preprocessing"): resize the short side to
// kResizeShortSide (bilinear), centre-crop kCropSize x kCropSize, channels RGB, then per channel
//   x = (p / 255 - kMean[c]) / kStd[c]            for a uint8 camera pixel p,
//   q = round(x / kInputScale) + kInputZeroPoint   clamped to -128..127 (the int8 input),
// i.e. q = round(((p / 255 - mean) / std) / scale) + zero_point (QuantizePixel below).
constexpr int kResizeShortSide = {resize};
constexpr int kCropSize = {crop};
constexpr float kMean[{n}] = {{{mean}}};
constexpr float kStd[{n}] = {{{std}}};

inline int8_t QuantizePixel(uint8_t p, int c) {{
  const float x = (static_cast<float>(p) / 255.0f - kMean[c]) / kStd[c];
  const long q = std::lround(x / kInputScale) + kInputZeroPoint;
  return static_cast<int8_t>(q < -128 ? -128 : (q > 127 ? 127 : q));
}}
"""

# main.cc: real C++ (placeholders only in its first comment), shipped beside this module.
MAIN_CC = Path(__file__).with_name("bundle_main.cc.in")
