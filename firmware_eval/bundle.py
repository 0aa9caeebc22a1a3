"""Write the C bundle that runs a ``.tflite`` model in TFLite Micro on a board.

Files: ``model_data.cc/.h`` (the model as a 16-byte aligned array and its length),
``op_resolver.h`` (``MicroMutableOpResolver<N>`` with exactly the model's ops, the int8-only
kernel variants where every use of an op is int8), ``arena_size.h`` (predicted arena + margin,
for CMSIS-NN on Cortex-M unless a board is given; says which kernels), ``preprocess.h`` (input
shape, scale / zero point, and the training preprocessing when given: resize, crop, mean / std,
channel order, with the uint8-pixel-to-int8 formula), ``labels.h`` (class names),
``tinyexport_model.h/.cc`` (``tx_model_init`` / ``tx_model_run`` / ``tx_model_scores`` /
``tx_model_top1``, from ``templates/``) and ``main.cc`` (quantize an input with the model's own
scale and zero point, invoke, print the top class: the host / QEMU builds' program). The
generated files are filled from ``bundle_files/`` (package data, like ``bundle_main.cc.in``).
Beside them, project layouts that use those files (:func:`write_layouts`): ``arduino/<Library>/``,
``zephyr/``, ``cmake/`` (docs/guide/firmware.md, "The C bundle").
``scripts/build_bundle_host.sh`` builds it for the x86-64 host against a TFLM source tree;
``scripts/check_bundle_host.py`` compares that binary with the Python TFLM interpreter
(tests/firmware_eval/test_bundle_build.py); tests/firmware_eval/test_bundle_templates.py builds
the CMake project with arm-none-eabi-gcc.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tinyexport.atomic import write_text
from tinyexport.firmware_eval import arena
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
    """What the bundle's arena figure covers: a board's predicted CMSIS-NN scratch (predicted per
    op, docs/tflm_memory.md §5) with the 32-bit struct sizes, checked in QEMU on Cortex-M4/M7
    (``tinyexport --board B --emulate``); without a board, every Cortex-M CMSIS-NN build and the
    reference kernels on a 64-bit host (:func:`arena_for`)."""

    board: str | None = None
    isa: str | None = None
    reference_bytes: int | None = None  # the same arena with reference kernels
    core: str | None = None  # the board's core, e.g. "Cortex-M7 @ 216 MHz"

    def comment(self) -> str:
        ref = f"; {self.reference_bytes} B with reference kernels" if self.reference_bytes else ""
        if self.isa == "xtensa":
            return (f"// Sized for board {self.board} (Xtensa): reference-kernel scratch and the "
                    "host's struct sizes;\n// ESP-NN's own scratch is not predicted.")
        return (f"// Sized for board {self.board}: TFLM with its CMSIS-NN kernels (ISA "
                f"{self.isa or '?'}),\n// the predicted CMSIS-NN scratch included{ref}.\n"
                "// Predicted per op with the 32-bit struct sizes; `tinyexport --board B --emulate` "
                "measures it\n// in QEMU (Cortex-M4/M7).")

    def cpu(self) -> str:
        """The board's ``-mcpu`` (``cortex-m7`` without a board or for a non-Cortex-M core)."""
        match = re.search(r"Cortex-M(\d+)(\+?)", self.core or "")
        if match is None:
            return "cortex-m7"
        return f"cortex-m{match.group(1)}{'plus' if match.group(2) else ''}"


# Without --board the arena must allocate on any Cortex-M with CMSIS-NN (the common target) and
# still on the 64-bit host build (scripts/build_bundle_host.sh): the largest of these.
CORTEX_M_ISAS = {"dsp": "Cortex-M4/M7/M33", "mve": "Cortex-M55/M85", "none": "Cortex-M0+/M3"}


def arena_for(graph: Graph, predicted: int, basis: ArenaBasis) -> tuple[int, str]:
    """The arena the bundle reserves (before the margin) and the comment saying what it covers.
    ``predicted``: the caller's figure (the board's, or the reference kernels' on the host)."""
    if basis.board is not None:
        return predicted, basis.comment()
    figures = {isa: max(p.total, p.min_arena)
               for isa, p in ((isa, arena.predict(graph, isa)) for isa in CORTEX_M_ISAS)}
    rows = "\n".join(f"//   CMSIS-NN, {isa} ({cores}): {figures[isa]} B"
                     for isa, cores in CORTEX_M_ISAS.items())
    return max(predicted, *figures.values()), (
        "// No --board: sized for TFLM with the CMSIS-NN kernels on any Cortex-M (32-bit struct\n"
        "// sizes, CMSIS-NN scratch predicted per op) and for the reference kernels on a 64-bit\n"
        f"// host (scripts/build_bundle_host.sh), the largest of\n{rows}\n"
        f"//   reference kernels, x86-64 host: {predicted} B\n"
        "// `tinyexport --board B` sizes it for one board's core.")


def write_bundle(out_dir: Path, model: bytes, graph: Graph, predicted_total: int,
                 basis: ArenaBasis | None = None, preprocessing: dict | None = None,
                 class_names: Sequence[str] | None = None, name: str = "model") -> list[str]:
    """Write the bundle files and the project layouts into ``out_dir``; return their paths
    (relative to ``out_dir``).

    Args:
        predicted_total: the board's arena (``basis.board``), else the reference kernels' arena
            on the host; without a board the CMSIS-NN Cortex-M arenas are predicted here too.
        basis: which board the arena is for (None: no board).
        preprocessing: the export's preprocessing record (``resolution``, ``mean``,
            ``std``, ``resize_short_side``); without it ``preprocess.h`` holds the model's input
            shape and quantization only.
        class_names: one per output value, for ``labels.h`` ("0".."N-1" when None).
        name: the model's name, in the layouts' project names and comments.
    """
    basis = basis or ArenaBasis()
    in_t, out_t = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    needed, basis_comment = arena_for(graph, predicted_total, basis)
    files = {
        "model_data.h": _bundle_file("model_data.h.in").format(n=len(model)),
        "model_data.cc": _bundle_file("model_data.cc.in").format(n=len(model), body=_c_array(model)),
        "op_resolver.h": resolver_header(graph),
        "arena_size.h": _bundle_file("arena_size.h.in").format(
            pred=needed, margin=ARENA_MARGIN, total=needed + ARENA_MARGIN, basis=basis_comment),
        "preprocess.h": preprocess_header(in_t, preprocessing),
        "labels.h": labels_header(out_t, class_names),
        "main.cc": Template(MAIN_CC.read_text()).substitute(
            in_shape="x".join(map(str, in_t.shape)), out_shape="x".join(map(str, out_t.shape))),
        **{f: (TEMPLATES / f).read_text() for f in MODEL_API},
    }
    files.update(layout_files(files, name, basis.cpu()))
    for path, text in files.items():
        (out_dir / path).parent.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / path, text)
    return sorted(files)


def _c_float(value: float) -> str:
    return f"{float(value)!r}f"


def preprocess_header(tensor: Tensor, preprocessing: dict | None) -> str:
    """``preprocess.h``: input 0's shape (NHWC), scale and zero point from the model, and the
    training preprocessing constants when ``preprocessing`` is given."""
    scale = tensor.quant.scales[0] if tensor.quant.scales else 1.0
    zero = tensor.quant.zero_points[0] if tensor.quant.zero_points else 0
    shape = "x".join(map(str, tensor.shape))
    lines = [_bundle_file("preprocess.h.in").format(shape=shape, dtype=tensor.dtype,
                                                    n=tensor.nbytes, scale=_c_float(scale), zero=zero)]
    if len(tensor.shape) == 4:
        h, w, c = tensor.shape[1:]
        lines.append(f"constexpr int kInputHeight = {h};\nconstexpr int kInputWidth = {w};\n"
                     f"constexpr int kInputChannels = {c};\n")
    if preprocessing:
        mean, std = preprocessing["mean"], preprocessing["std"]
        lines.append(_bundle_file("preprocess_training.h.in").format(
            resize=int(preprocessing.get("resize_short_side", preprocessing["resolution"])),
            crop=int(preprocessing["resolution"]), n=len(mean),
            mean=", ".join(map(_c_float, mean)), std=", ".join(map(_c_float, std))))
    else:
        lines.append("// No training preprocessing was given (resize, crop, mean / std): see the\n"
                     "// export's export.json \"preprocessing\".\n")
    return "\n".join(lines)


# Ops with an int8-only kernel variant (tflite-micro 90b983c2, tensorflow/lite/micro/kernels/*.h:
# `TFLMRegistration Register_<OP>_INT8()`): the header that declares it. With CMSIS_NN defined
# they are CMSIS-NN's int8 kernels alone, without the reference code for other types (issue 22:
# -27,556 B of flash for mcunet-in3 on Cortex-M7); without it, inline aliases of the plain ones.
INT8_KERNELS = {
    "ADD": "add.h", "AVERAGE_POOL_2D": "pooling.h", "BATCH_MATMUL": "batch_matmul.h",
    "CONV_2D": "conv.h", "DEPTHWISE_CONV_2D": "depthwise_conv.h",
    "FULLY_CONNECTED": "fully_connected.h", "MAXIMUM": "maximum_minimum.h",
    "MAX_POOL_2D": "pooling.h", "MINIMUM": "maximum_minimum.h", "MUL": "mul.h", "PAD": "pad.h",
    "SOFTMAX": "softmax.h", "TRANSPOSE": "transpose.h", "TRANSPOSE_CONV": "transpose_conv.h"}
# Tensor types that do not decide the kernel variant: biases, shapes, paddings, permutations.
_INDEX_TYPES = {"int32", "int64"}


def int8_only_ops(graph: Graph) -> set[str]:
    """The ops of :data:`INT8_KERNELS` whose every use has int8 tensors only (besides int32 /
    int64 biases, shapes and paddings): int16 activations or int4 weights keep the plain kernel."""
    out = {}
    for op in graph.ops:
        if op.opcode not in INT8_KERNELS:
            continue
        types = {graph.tensors[i].dtype for i in (*op.inputs, *op.outputs) if i >= 0}
        out[op.opcode] = out.get(op.opcode, True) and types - _INDEX_TYPES == {"int8"}
    return {opcode for opcode, ok in out.items() if ok}


def resolver_header(graph: Graph) -> str:
    """``op_resolver.h``: one registration per op, the int8-only kernel where it applies."""
    int8 = int8_only_ops(graph)
    includes = "".join(f'#include "tensorflow/lite/micro/kernels/{h}"\n'
                       for h in sorted({INT8_KERNELS[o] for o in int8}))
    adds = "\n".join(
        f"  if (r.{add_method(o)}({f'tflite::Register_{o}_INT8()' if o in int8 else ''}) "
        "!= kTfLiteOk) return false;" for o in graph.opcodes)
    return _bundle_file("op_resolver.h.in").format(n=len(graph.opcodes), includes=includes, adds=adds)


def labels_header(output: Tensor, class_names: Sequence[str] | None) -> str:
    """``labels.h``: ``kNumClasses`` (the values of output 0 per sample) and their names."""
    n = 1
    for dim in output.shape[1:]:
        n *= dim
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for an output of {n} values")
    body = ",\n".join(f"    {_c_string(name)}" for name in names)
    source = "the export's class names" if class_names else "no names given: the class index"
    return _bundle_file("labels.h.in").format(n=n, body=body, source=source)


def _c_string(text: str) -> str:
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\{ord(c):03o}"
                         for c in text) + '"'


def resolver_ops(text: str) -> list[str]:
    """The ``AddXxx`` calls in an ``op_resolver.h`` (used by tests)."""
    return re.findall(r"r\.(Add\w+)\(", text)


# The model API written into every bundle, and the files each layout gets.
TEMPLATES = Path(__file__).with_name("templates")
MODEL_API = ("tinyexport_model.h", "tinyexport_model.cc")
ARDUINO_LIBRARY = "TinyExportModel"
# What an Arduino library's src/ holds: the bundle's sources as .cpp (Arduino compiles .c, .cpp,
# .S, not .cc) and its headers; main.cc (int main) stays out.
_ARDUINO_SOURCES = ("model_data.cc", "tinyexport_model.cc")
_ARDUINO_HEADERS = ("model_data.h", "op_resolver.h", "arena_size.h", "preprocess.h", "labels.h",
                    "tinyexport_model.h")


def layout_files(bundle: dict[str, str], name: str, cpu: str) -> dict[str, str]:
    """The Arduino library, Zephyr sample and CMake project for a bundle (``bundle``: file name
    -> text), as path -> text. Zephyr and CMake build the bundle from one folder up; Arduino,
    which compiles only its library folder, gets copies."""
    lib = ARDUINO_LIBRARY
    values = {"MODEL": name, "LIBRARY": lib, "CPU": cpu,
              "PROJECT": re.sub(r"\W", "_", name) or "model"}
    example = (TEMPLATES / "example_main.cc").read_text()
    files = {f"arduino/{lib}/src/{f.removesuffix('.cc')}.cpp": bundle[f] for f in _ARDUINO_SOURCES}
    files.update({f"arduino/{lib}/src/{f}": bundle[f] for f in _ARDUINO_HEADERS})
    files.update({
        f"arduino/{lib}/src/{lib}.h": fill("arduino/library.h", values),
        f"arduino/{lib}/library.properties": fill("arduino/library.properties", values),
        f"arduino/{lib}/examples/{lib}Classify/{lib}Classify.ino": fill("arduino/example.ino",
                                                                        values),
        "zephyr/CMakeLists.txt": fill("zephyr/CMakeLists.txt", values),
        "zephyr/prj.conf": fill("zephyr/prj.conf", values),
        "zephyr/src/main.cpp": example,
        "cmake/CMakeLists.txt": fill("cmake/CMakeLists.txt", values),
        "cmake/arm-none-eabi.cmake": fill("cmake/arm-none-eabi.cmake", values),
        "cmake/README.md": fill("cmake/README.md", values),
        "cmake/example_main.cc": example,
    })
    return files


def fill(template: str, values: dict[str, str]) -> str:
    """A file of ``templates/`` with each ``@KEY@`` replaced (CMake keeps its ``${...}``)."""
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    if re.search(r"@[A-Z]+@", text):
        raise ValueError(f"{template}: unfilled {re.search(r'@[A-Z]+@', text).group()}")
    return text


# main.cc: real C++ (placeholders only in its first comment), shipped beside this module.
MAIN_CC = Path(__file__).with_name("bundle_main.cc.in")
# The generated headers and model array: C++ with ``str.format`` fields (``{{`` is a brace).
BUNDLE_FILES = Path(__file__).with_name("bundle_files")


def _bundle_file(name: str) -> str:
    return (BUNDLE_FILES / name).read_text()
