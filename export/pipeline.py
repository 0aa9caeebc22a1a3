"""``run_export``: the stages of :mod:`tinyexport.export.stages` in order, each timed and checked,
and :func:`export`, which writes into a temporary folder renamed into place at the end
(``tinyexport.atomic.atomic_dir``), so a failed export leaves nothing behind."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from tinyexport.atomic import atomic_dir, write_json, write_text
from tinyexport.errors import StageError, UserError
from tinyexport.export.config import (
    ARTIFACTS,
    RANDOM_WEIGHTS_WARNING,
    TFLM_ONLY,
    UNOPTIMIZED,
    ExportConfig,
)
from tinyexport.export.gate import GateVerdict, judge_int8
from tinyexport.export.output_files import scratch_dir, sha256
from tinyexport.export.provenance import build_provenance, render_report
from tinyexport.export.stage_timer import StageTimer
from tinyexport.export.stages import (
    LINEAR_HEAD,
    check_int8,
    evaluate,
    export_float_tflite,
    export_onnx,
    firmware_stage,
    fuse,
    head_as_conv,
    load_images,
    load_model,
    quant_report,
    quantize,
    recalibrate,
    shipped_op_histogram,
    shipped_verdicts,
)
from tinyexport.export.state import Artifact, Evaluation, ExportResult, ExportState, Int8Model, Loaded
from tinyexport.export.tensors import nchw_to_nhwc
from tinyexport.firmware_eval.emulate import emulation_problem
from tinyexport.json_record import to_record
from tinyexport.quantize.int8_checks import Int8Numerics
from tinyexport.safe_io import check_regular
from tinyexport.train.checkpoint_format import MAX_CHECKPOINT_BYTES
from tinyexport.train.data import Preprocessing, build_dataset, take_images

__all__ = ["PROBE_IMAGES", "export", "keep_emulation_logs", "previous_export_problem", "gate", "run_export",
           "convert_to_int8", "written_artifacts", "recorded_data_readable", "check_user_paths"]

_log = logging.getLogger(__name__)

PROBE_IMAGES = 8  # decoded before any work, so a folder of corrupt images fails in seconds


def export(config: ExportConfig, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Run the export into a temporary folder; rename it onto ``config.out`` when complete."""
    check_user_paths(config)
    check_address_space()
    with atomic_dir(config.out, force=config.force, replaceable=previous_export_problem) as tmp:
        try:
            result = run_export(config, tmp, progress)
        except (UserError, StageError) as exc:
            raise keep_emulation_logs(exc, tmp, config.out) from None
        write_json(tmp / "export.json", result.provenance)
        write_text(tmp / "report.md", render_report(result.provenance))
    return replace(result, out=config.out)


# TensorFlow's converter runs in this process (int8 PTQ) and reserves address space far beyond the
# memory it uses: below ~6 GB of `ulimit -v` it aborts natively (SIGABRT / exit 127, no message);
# an mcunet-in0 export at 32 px completes at 6,000,000 KiB and aborts at 3,000,000 KiB.
MIN_ADDRESS_SPACE = 6_000_000 * 1024


def check_address_space() -> None:
    """Refuse, before any work, an address-space limit (``ulimit -v``) under which TensorFlow's
    converter would abort without a message."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft < MIN_ADDRESS_SPACE:
        raise UserError(f"this process may use {soft / 2 ** 30:.1f} GiB of address space (ulimit "
                        f"-v {soft // 1024}); the export runs TensorFlow's converter, which "
                        f"reserves more and aborts below about {MIN_ADDRESS_SPACE / 2 ** 30:.1f} "
                        f"GiB; raise it (ulimit -v {MIN_ADDRESS_SPACE // 1024} or more) or "
                        "remove the limit")


def keep_emulation_logs(exc: Exception, tmp: Path, out: Path) -> Exception:
    """A failed ``--emulate`` names its build / QEMU log, inside the partial folder that the failed
    export removes: copy the emulation folder beside ``out`` (``OUT.emulation-logs``) and name
    that copy in the message instead. Other failures pass through unchanged."""
    emulation = tmp / "emulation"
    if not emulation.is_dir() or str(emulation) not in str(exc):
        return exc
    kept = out.with_name(out.name + ".emulation-logs")
    shutil.copytree(emulation, kept, dirs_exist_ok=True)
    return type(exc)(str(exc).replace(str(emulation), str(kept)))


def previous_export_problem(folder: Path) -> str | None:
    """None when ``--force`` may replace ``folder``: it is empty or a previous export (its
    export.json was written by tinyexport); else what it holds that is not ours."""
    entries = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if not entries:
        return None
    try:
        doc = json.loads((folder / "export.json").read_text())
    except (OSError, ValueError):
        doc = None
    if isinstance(doc, dict) and doc.get("tool") == "tinyexport":
        return None
    shown = ", ".join(entries[:3]) + (f" (+{len(entries) - 3} more)" if len(entries) > 3 else "")
    return f"it is not a previous tinyexport export (no tinyexport export.json) and holds {shown}"


def gate(config: ExportConfig, numerics: Int8Numerics, evaluation: Evaluation | None,
         record) -> GateVerdict:
    """The int8 verdict (:mod:`tinyexport.export.gate`), recorded; a failure marks the stage
    FAILED and the export goes on, so every artifact is written for inspection."""
    verdict = judge_int8(config.checkpoint is not None, numerics.top1_agreement, numerics.images,
                         config.min_agreement, evaluation.top1 if evaluation else None,
                         config.max_top1_drop)
    record.details.update(to_record(verdict))
    if not verdict.passed:
        record.status = "FAILED"
    elif verdict.basis == "not applied":
        record.status = "skipped"
    return verdict


def run_export(config: ExportConfig, out_tmp: Path,
               progress: Callable[[str], None] | None = None) -> ExportResult:
    """Run every stage into ``out_tmp`` (the caller renames it into place)."""
    timer = StageTimer(progress)
    with timer.stage("load model") as rec:
        loaded = load_model(config)
        rec.details.update(model=loaded.model_name, resolution=loaded.resolution, kind=loaded.kind)
        if config.checkpoint is None:
            _log.warning("warning: %s", RANDOM_WEIGHTS_WARNING)
    calib, _, calibration = load_images(config.calib_data, "train", loaded.preprocessing,
                                        config.calib_images, False, config.seed)
    with timer.stage("BN recalibration") as rec:
        model = recalibrate(config, loaded, rec)
    with timer.stage("Conv+BN fusion") as rec:
        fused = fuse(model, calib, rec)
    classifier = LINEAR_HEAD
    if config.head_as_conv:
        with timer.stage("classifier as 1x1 conv") as rec:
            fused, classifier = head_as_conv(fused, calib, rec)
    converted = convert_to_int8(config, loaded, fused, calib, out_tmp, timer)
    evaluation = batch = None
    if config.eval_data:
        with timer.stage("evaluation") as rec:
            evaluation, batch = evaluate(config, loaded, fused, out_tmp / "model.onnx",
                                         converted.data, rec)
    with timer.stage("int8 gate") as rec:
        verdict = gate(config, converted.numerics, evaluation, rec)
    firmware_result, verdicts, static = None, (), converted.static
    if config.firmware:
        images, labels = ((batch.images_nhwc, batch.labels) if batch
                          else (converted.check_nhwc[:4], None))
        with timer.stage("firmware check") as rec:
            firmware_result = firmware_stage(
                config, loaded, out_tmp / "model_int8.tflite", out_tmp, images, rec, labels,
                calibration.names_for(_num_classes(loaded)))
        tflm = batch.tflm_top1(firmware_result) if batch else None
        if tflm:
            evaluation = replace(evaluation, tflm=tflm)
        verdicts = shipped_verdicts(config, out_tmp / "model_int8.tflite", firmware_result)
        static = replace(static, op_histogram=shipped_op_histogram(out_tmp / "model_int8.tflite"))
    state = ExportState(config, loaded, calibration, classifier, static,
                        converted.numerics, converted.layers, verdict, written_artifacts(out_tmp),
                        evaluation, firmware_result, verdicts)
    return ExportResult(out_tmp, build_provenance(state, timer.records), timer.records)


def convert_to_int8(config: ExportConfig, loaded: Loaded, fused: nn.Module, calib: torch.Tensor,
                    out_tmp: Path, timer: StageTimer) -> Int8Model:
    """The fused model through ONNX, float TFLite and int8 PTQ, each checked, into ``out_tmp``
    (``model.onnx``, ``model_fp32.tflite``, ``model_int8.tflite``); onnx2tf's scratch stays in a
    folder removed at the end."""
    calib_nhwc = nchw_to_nhwc(calib)
    check_nhwc = calib_nhwc[:config.check_images]
    onnx_path = out_tmp / "model.onnx"
    with timer.stage("ONNX export") as rec:
        ort = export_onnx(fused, onnx_path, loaded.resolution, calib, rec)
    with scratch_dir(out_tmp) as work:
        with timer.stage("onnx2tf float TFLite") as rec:
            saved = export_float_tflite(onnx_path, out_tmp / "model_fp32.tflite", Path(work),
                                        calib_nhwc, ort, config.onnxsim, rec)
        with timer.stage("int8 quantization") as rec:
            int8 = quantize(saved, out_tmp / "model_int8.tflite", calib_nhwc, config.per_channel,
                            rec)
        with timer.stage("int8 checks") as rec:
            static, numerics = check_int8(int8, out_tmp / "model_fp32.tflite", check_nhwc, rec,
                                          fused)
        with timer.stage("per-layer quant report") as rec:  # always: it explains a failed gate
            layers = quant_report(saved, int8, calib_nhwc, fused, rec)
    return Int8Model(int8, check_nhwc, static, numerics, layers)


def _num_classes(loaded: Loaded) -> int | None:
    return getattr(getattr(loaded.model, "spec", None), "num_classes", None)


def written_artifacts(out_tmp: Path) -> dict[str, Artifact]:
    """Size and SHA-256 of each model file the export wrote."""
    written = [name for name in (*ARTIFACTS, UNOPTIMIZED, TFLM_ONLY)
               if (out_tmp / name).is_file()]
    return {name: Artifact((out_tmp / name).stat().st_size, sha256(out_tmp / name))
            for name in written}


def recorded_data_readable(spec: str) -> bool:
    """Whether the data a checkpoint records (``tinytrain --data``) can be read on this machine;
    if not, say why once (the export then falls back to the flags' defaults)."""
    try:
        return len(build_dataset(spec, "val", Preprocessing(32), False)) > 0
    except (UserError, OSError, ValueError) as exc:
        _log.warning("warning: the checkpoint was trained on %s, which is not readable here (%s); "
                     "pass --calib-data / --eval-data", spec, exc)
        return False


def _check_sources_outside_out(config: ExportConfig) -> None:
    """An export replaces its --out folder as a whole: a source inside it (the checkpoint, a
    data folder) would be moved away under the run that reads it."""
    out = Path(config.out).resolve()
    sources = [("--checkpoint", config.checkpoint)] + [
        (flag, spec) for flag, spec in (("--calib-data", config.calib_data),
                                        ("--eval-data", config.eval_data))
        if spec and Path(spec).exists()]
    for flag, source in sources:
        if source is None:
            continue
        real = Path(source).resolve()
        if real == out or out in real.parents:
            raise UserError(f"{flag} {str(source)!r} is inside --out {str(config.out)!r}, which "
                            "the export writes as a whole; choose another --out or move "
                            f"{str(source)!r} out of it first")


def check_user_paths(config: ExportConfig) -> None:
    """Fail before any work on paths and data that cannot be right (a bad --eval-data must not
    wait for the whole conversion to fail)."""
    if config.emulate:
        problem = emulation_problem()
        if problem:
            raise UserError(f"--emulate: {problem}")
    checkpoint = config.checkpoint
    if checkpoint is not None and Path(checkpoint).is_dir():
        raise UserError(f"--checkpoint {str(checkpoint)!r} is a folder; pass the checkpoint file "
                        "in it (e.g. best.pt, target.pt or transfer.pt)")
    if checkpoint is not None:
        check_regular(checkpoint, "checkpoint", MAX_CHECKPOINT_BYTES)
    _check_sources_outside_out(config)
    for flag, spec, split in (("--calib-data", config.calib_data, "train"),
                              ("--eval-data", config.eval_data, "val")):
        if spec is None:
            continue
        dataset = build_dataset(spec, split, Preprocessing(32), False)
        if len(dataset) == 0:
            raise UserError(f"{flag} {spec!r} holds no images for the {split} split")
        take_images(dataset, min(PROBE_IMAGES, len(dataset)), seed=0)  # unreadable: fails now
        classes = len(getattr(dataset, "classes", None) or ())
        outputs = config.num_classes or 1000  # a random-weight model's (a checkpoint's: later)
        if flag == "--eval-data" and config.checkpoint is None and classes > outputs:
            raise UserError(f"--eval-data {spec!r} has {classes} classes, more than the model's "
                            f"{outputs} outputs: its labels {outputs}..{classes - 1} can never be "
                            "predicted; pass --num-classes or data of the model's classes")
