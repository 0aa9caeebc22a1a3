"""The export stages, one function each: load → BN recalibration → Conv+BN fusion → classifier as a
1×1 conv → ONNX → float TFLite → int8 → checks → evaluation → firmware check. Each fills the
``StageRecord`` it is given and returns a typed result (:mod:`tinyexport.export.state`);
:mod:`tinyexport.export.pipeline` runs them in order."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinyexport.boards import Verdict
from tinyexport.errors import StageError, printable
from tinyexport.export.config import ExportConfig
from tinyexport.export.convert import onnx_to_tflite
from tinyexport.export.fuse import fuse_and_check
from tinyexport.export.head import head_as_conv_and_check
from tinyexport.export.parity import compare_outputs
from tinyexport.export.state import DataInfo, Evaluation, Loaded, TflmTop1
from tinyexport.export.tensors import check_finite, nchw_to_nhwc
from tinyexport.export.to_onnx import run_onnxruntime, to_onnx
from tinyexport.firmware_eval.evaluate import FirmwareResult, evaluate_firmware
from tinyexport.firmware_eval.optimize import OptimizeOptions
from tinyexport.firmware_eval.verdicts import board_verdicts
from tinyexport.json_record import to_record
from tinyexport.log import native_output_to_debug_log
from tinyexport.quantize.int8_checks import check_int8_model, compare_int8_to_float, run_tflite
from tinyexport.quantize.layer_names import op_modules, tensor_modules
from tinyexport.quantize.layer_report import LayerError, layer_errors
from tinyexport.quantize.ptq import float_tflite_from_saved_model, quantize_int8
from tinyexport.safe_io import check_labels
from tinyexport.tflite_graph.reader import read_graph
from tinyexport.train.bn_recalibration import reestimate_bn
from tinyexport.train.data import (
    Preprocessing,
    build_dataset,
    mcunet_zoo_preprocessing,
    parse_data_spec,
    preprocessing_record,
    take_images,
)
from tinyexport.train.model_from_checkpoint import model_from_checkpoint
from tinyexport.train.models import build_model

_log = logging.getLogger(__name__)

# Random weights: BN statistics of 128 images (x H*W positions per channel) are stable to a few %;
# more only costs time (500 images @ 176 px took 178 s of the main command on 2 shared cores).
RANDOM_RECAL_IMAGES = 128
# Eval images also run in the TFLite Micro interpreter (reference kernels: ~0.1 s per 176 px
# mcunet image on x86) for its own top-1 and a wider bit-exactness check against LiteRT.
TFLM_EVAL_IMAGES = 200


def load_model(config: ExportConfig) -> Loaded:
    """Stage 1: build a zoo model (random weights) or rebuild one from a checkpoint."""
    if config.checkpoint is not None:
        model, meta = model_from_checkpoint(config.checkpoint, config.model, config.resolution)
    else:
        with torch.random.fork_rng():  # seeded random init: the same command, the same file
            torch.manual_seed(config.seed)
            model = build_model(config.model, num_classes=config.num_classes or 1000,
                                resolution=config.resolution)
        meta = {"kind": "random", "model": model.spec.name, "source_format": None}
    model.eval()
    check_finite(model)
    resolution = int(config.resolution or getattr(model, "resolution", None) or 224)
    pre = (mcunet_zoo_preprocessing(resolution) if meta.get("source_format") == "mcunet-zoo"
           else Preprocessing(resolution))
    return Loaded(model, meta, resolution, pre)


SYNTHETIC_WARNING = "no --calib-data: calibrating on SYNTHETIC noise images"


def load_images(spec: str | None, split: str, pre, count: int, train_style: bool, seed: int,
                warn: bool = True) -> tuple[torch.Tensor, torch.Tensor, DataInfo]:
    """``count`` images of a data SPEC (synthetic with a warning when no SPEC)."""
    named, warning = spec or "synthetic", None if spec else SYNTHETIC_WARNING
    if spec is None:
        if warn:
            _log.warning("warning: %s", warning)
        spec = f"synthetic:{count}"
    dataset = build_dataset(parse_data_spec(spec), split, pre, train_style)
    images, labels = take_images(dataset, count, seed)
    skipped = getattr(getattr(dataset, "skipped", None), "count", 0)
    if skipped:
        _log.warning("warning: skipped %d unreadable image(s) in %s", skipped, spec)
    classes = [printable(c) for c in getattr(dataset, "classes", None) or []]
    return images, labels, DataInfo(named, skipped or None, len(images), split, len(classes),
                                    warning, tuple(classes))


def _wants_recalibration(config: ExportConfig, kind: str | None) -> bool:
    """Explicit flag, else on for NetAug supernets (docs/netaug.md §1.7) and for random weights: a
    he_fout-initialised net's activations shrink layer after layer (mcunet-in3's logits reach
    ~4e-9), so int8 checks and arena figures say nothing until BN statistics come from real
    activations. Recalibrated, the random net has realistic ranges; its accuracy stays meaningless.
    """
    if config.bn_recalibrate is not None:
        return config.bn_recalibrate
    return kind in ("netaug-supernet", "random")


def recalibrate(config: ExportConfig, loaded: Loaded, record) -> nn.Module:
    """Stage 2: BN re-estimation on train-style calibration images (docs/netaug.md §1.7)."""

    if not _wants_recalibration(config, loaded.kind):
        record.status = "skipped"
        record.details["reason"] = ("off (pass --bn-recalibrate; default on for NetAug supernets "
                                    "and random weights)")
        return loaded.model
    count = config.calib_images
    if loaded.kind == "random":  # statistics only need to be realistic, not exact
        count = min(count, RANDOM_RECAL_IMAGES)
    images, _, info = load_images(config.calib_data, "train", loaded.preprocessing, count, True,
                                  config.seed, warn=False)
    batches = list(torch.split(images, 50))
    record.details.update(images=len(images), batches=len(batches), data=info.spec,
                          why=loaded.kind)
    return reestimate_bn(loaded.model, batches)


def fuse(model: nn.Module, calib: torch.Tensor, record) -> nn.Module:
    """Stage 3: Conv+BN fusion, checked against the unfused model."""

    fused, check = fuse_and_check(model, calib[:8])
    record.details.update(to_record(check))
    return fused


LINEAR_HEAD = "linear (FULLY_CONNECTED; --linear-head)"  # export.json's classifier, head kept


def head_as_conv(model: nn.Module, calib: torch.Tensor, record) -> tuple[nn.Module, str]:
    """Stage 3b: the classifier as a 1×1 conv, checked against the Linear head (``export.head``
    says why: TFLM and LiteRT round the int8 FULLY_CONNECTED differently). Returns the model and
    what its head now is (export.json's ``classifier``)."""

    converted, check = head_as_conv_and_check(model, calib[:8])
    record.details.update(to_record(check))
    if check.converted:
        return converted, "1x1 conv (" + ", ".join(check.converted) + ")"
    record.status = "skipped"
    record.details["reason"] = getattr(converted, "head_reason",
                                       "no Linear reads globally pooled features")
    return converted, f"unchanged: {record.details['reason']}"


def export_onnx(model: nn.Module, path: Path, resolution: int, calib: torch.Tensor, record
                ) -> np.ndarray:
    """Stage 4: ONNX opset 18 + checker + ONNX Runtime parity vs torch. Returns ORT logits."""

    to_onnx(model, path, resolution)
    images = calib[:8]
    with torch.no_grad():
        ref = model(images).numpy()
    ort = run_onnxruntime(path, images.numpy())
    parity = compare_outputs("onnxruntime vs torch", ref, ort)
    record.details.update(to_record(parity), checker="passed", opset=18)
    if not parity.passed:
        raise StageError(f"ONNX Runtime differs from torch: max |diff| {parity.max_abs_diff:.3g} "
                         f"> {parity.tolerance:.3g}")
    return ort


@native_output_to_debug_log()
def export_float_tflite(onnx_path: Path, out_path: Path, work: Path, calib_nhwc: np.ndarray,
                        ort_logits: np.ndarray, onnxsim: bool, record) -> Path:
    """Stage 5: onnx2tf in a subprocess; float TFLite parity vs ONNX Runtime. Returns saved_model."""
    result = onnx_to_tflite(onnx_path, work, calib_nhwc, onnxsim=onnxsim)
    out_path.write_bytes(result.float_tflite.read_bytes())
    tfl, _ = run_tflite(out_path.read_bytes(), calib_nhwc[:len(ort_logits)])
    parity = compare_outputs("float tflite vs onnxruntime", ort_logits, tfl)
    record.details.update(to_record(parity), layout="NHWC")
    if not parity.passed:
        raise StageError(f"float TFLite differs from ONNX Runtime: max |diff| "
                         f"{parity.max_abs_diff:.3g} > {parity.tolerance:.3g}")
    return result.saved_model_dir


@native_output_to_debug_log()
def quantize(saved_model: Path, out_path: Path, calib_nhwc: np.ndarray, per_channel: bool,
             record) -> bytes:
    """Stage 6: full-int8 PTQ with TFLiteConverter."""

    data = quantize_int8(saved_model, calib_nhwc, per_channel)
    out_path.write_bytes(data)
    record.details.update(size_bytes=len(data), calibration_images=len(calib_nhwc),
                          weights="per-channel" if per_channel else "per-tensor")
    return data


@native_output_to_debug_log()
def check_int8(int8: bytes, float_path: Path, check_nhwc: np.ndarray, record,
               model: nn.Module | None = None):
    """Stage 7: TFLM op set, no TRANSPOSE / float compute, int8 I/O; LiteRT numerics vs fp32
    (judged later by :mod:`tinyexport.export.gate`). Problems name the PyTorch module of the op
    when ``model`` (the fused model) is given."""
    static = check_int8_model(int8)
    if not static.passed and model is not None:
        static = _with_modules(static, int8, model)
    record.details.update(static=to_record(static))
    if not static.passed:
        raise StageError("the int8 model is not deployable on TFLite Micro: "
                         + "; ".join(p.describe() for p in static.problems))
    numerics, _ = compare_int8_to_float(int8, float_path.read_bytes(), check_nhwc)
    record.details.update(to_record(numerics))
    return static, numerics


def _with_modules(static, int8: bytes, model: nn.Module):
    try:
        modules = op_modules(int8, model)
    except Exception as exc:  # noqa: BLE001 - naming is a diagnostic aid; never mask the failure
        _log.debug("could not map ops to modules: %s", exc)
        return static
    problems = tuple(dataclasses.replace(p, module=modules.get(p.index, "")) for p in
                     static.problems)
    return dataclasses.replace(static, problems=problems)


@dataclass(frozen=True)
class TflmBatch:
    """The first ``TFLM_EVAL_IMAGES`` evaluation images (NHWC), their labels and LiteRT's int8
    logits: the firmware stage runs TFLite Micro on the same images."""

    images_nhwc: np.ndarray
    labels: np.ndarray
    litert_int8: np.ndarray

    def tflm_top1(self, firmware_result: FirmwareResult) -> TflmTop1 | None:
        """TFLM's top-1 next to LiteRT's on these images (``evaluation.tflm``)."""
        if firmware_result.top1 is None:
            return None
        return TflmTop1(len(self.labels), firmware_result.top1,
                        float((self.litert_int8.argmax(1) == self.labels).mean()))


def class_mismatch(model_classes: int, data_info: DataInfo) -> str | None:
    """A warning when the model's outputs and the evaluation data's classes differ in number:
    top-1 then compares indices that do not name the same classes."""
    data_classes = data_info.classes
    if not data_classes or data_classes == model_classes:
        return None
    return (f"the model has {model_classes} outputs but --eval-data {data_info.spec} has "
            f"{data_classes} classes: top-1 compares class indices as they are and means nothing "
            "unless the model was trained on this data")


@native_output_to_debug_log()
def evaluate(config: ExportConfig, loaded: Loaded, fused: nn.Module, onnx_path: Path,
             int8: bytes, record) -> tuple[Evaluation, TflmBatch]:
    """Stage 8: top-1 of fp32 torch, ONNX Runtime and int8 LiteRT on ``--eval-data``; also the
    batch the firmware stage scores TFLite Micro on."""
    images, labels, info = load_images(config.eval_data, "val", loaded.preprocessing,
                                       config.eval_images, False, config.seed)
    labels = labels.numpy()
    with torch.no_grad():
        torch_out = torch.cat([fused(b) for b in torch.split(images, 64)]).numpy()
    check_labels(labels, torch_out.shape[1], f"--eval-data {info.spec!r} for a model with "
                 f"{torch_out.shape[1]} outputs")
    ort_out = run_onnxruntime(onnx_path, images.numpy())
    int8_out, _ = run_tflite(int8, nchw_to_nhwc(images))
    top1 = {name: float((out.argmax(1) == labels).mean())
            for name, out in (("torch_fp32", torch_out), ("onnxruntime_fp32", ort_out),
                              ("litert_int8", int8_out))}
    mismatch = class_mismatch(torch_out.shape[1], info)
    if mismatch:
        _log.warning("warning: %s", mismatch)
        info = dataclasses.replace(info, warning=mismatch)
    record.details.update(to_record(info), **{f"top1_{k}": v for k, v in top1.items()})
    n = min(TFLM_EVAL_IMAGES, len(labels))
    return (Evaluation(info, top1),
            TflmBatch(nchw_to_nhwc(images[:n]), labels[:n], int8_out[:n]))


@native_output_to_debug_log()
def quant_report(saved_model: Path, int8: bytes, calib_nhwc: np.ndarray, model: nn.Module,
                 record) -> tuple[LayerError, ...]:
    """Optional: per-layer SQNR of int8 vs float activations, worst first, with module names."""


    rows = layer_errors(int8, float_tflite_from_saved_model(saved_model), calib_nhwc[:16])
    modules = tensor_modules(int8, model)
    rows = [dataclasses.replace(r, module=modules.get(r.tensor, "")) for r in rows]
    record.details.update(layers=len(rows), worst=rows[0].tensor if rows else None,
                          worst_module=rows[0].module if rows else None)
    return tuple(rows)


def firmware_stage(config: ExportConfig, loaded: Loaded, int8_path: Path, out: Path,
                   images_nhwc: np.ndarray, record, labels: np.ndarray | None = None,
                   class_names: Sequence[str] | None = None) -> FirmwareResult:
    """Firmware stage: arena prediction, TFLM run, C bundle (with the preprocessing as constants),
    with ``--emulate`` the bundle run on the board's core in QEMU (ELF, map and logs kept in
    ``out/emulation/<core>``), and the final board verdict. ``labels`` (of ``images_nhwc``):
    TFLM's top-1 is recorded too."""
    result = evaluate_firmware(int8_path, out / "firmware",
                               optimize_options=optimize_options(config), board=config.board,
                               images=images_nhwc, labels=labels,
                               preprocessing=preprocessing_record(loaded.preprocessing),
                               emulate_into=out / "emulation" if config.emulate else None,
                               compact=config.compact, class_names=class_names)
    result = result.relative_to(out)
    record.details.update({k: v for k, v in to_record(result).items()
                           if not isinstance(v, (dict, list))})
    return result


def shipped_verdicts(config: ExportConfig, int8_path: Path, firmware: FirmwareResult
                     ) -> tuple[Verdict, ...]:
    """The verdict of every requested board on the shipped model (the firmware stage's own for the
    first; measured where a board's core ran in emulation)."""
    if len(config.boards) <= 1:
        return (firmware.board,) if firmware.board else ()
    return tuple(board_verdicts(read_graph(int8_path), config.boards, firmware.emulation))


def shipped_op_histogram(int8_path: Path) -> dict[str, int]:
    """Operator counts of the model the export ships (after the memory optimiser, whose patch
    plans add STRIDED_SLICE / CONCATENATION), most frequent first."""
    return dict(Counter(op.opcode for op in read_graph(int8_path).ops).most_common())


def optimize_options(config: ExportConfig) -> OptimizeOptions | None:
    """The memory optimiser's settings from the export flags (None: every step switched off)."""
    if not (config.reorder or config.offline_plan or config.patch != "off"):
        return None
    return OptimizeOptions(reorder=config.reorder, patch=config.patch,
                           offline_plan=config.offline_plan,
                           max_mac_overhead=config.patch_max_mac_overhead,
                           compacted_flash=config.compact)
