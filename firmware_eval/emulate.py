"""Run a model's C bundle on an emulated Cortex-M (QEMU) with TFLM + CMSIS-NN kernels.

:func:`emulate` builds the bundle (an export's ``firmware/`` folder, or one written for a
``.tflite``) with ``scripts/build_bundle_cortex_m.sh`` and a driver ``main`` that:

* bisects the smallest arena for which ``AllocateTensors`` succeeds (byte exact, CMSIS-NN scratch
  buffers included, since they are requested at Prepare and allocated by ``AllocateTensors``);
* runs the model with exactly that arena on seeded random int8 inputs and prints every output
  value, compared value by value with the tflite-micro Python interpreter (reference kernels);
* counts the instructions of each ``Invoke()`` with SysTick under ``qemu -icount shift=0`` (one
  instruction per virtual nanosecond; the tick-to-instruction ratio is calibrated in the same run
  on a loop of known length). An instruction count, not a cycle count: QEMU models no pipeline,
  caches, wait states or multi-cycle instructions.

Flash is read from the linker maps: ``.text`` + ``.rodata`` + ``.data`` (+ the small ARM sections)
attributed to the model array, the TFLM framework, the kernels (TFLM kernel wrappers + CMSIS-NN),
the C/C++ runtime and startup, and ``main``. Two images of the same bundle and library are linked:
the run image (the driver above, semihosting, full newlib: outputs, arena, stack, instructions)
and the product image (``product_main.cc``: initialise + invoke, newlib-nano, no semihosting),
whose flash is the measured one; the report says what the run image's harness adds.
The firmware profile (``PROFILES``: product, release, speed) picks the TFLM library build.

Needs ``arm-none-eabi-gcc`` (Debian ``gcc-arm-none-eabi libnewlib-arm-none-eabi``),
``qemu-system-arm`` and the pinned TFLM / CMSIS-NN / third-party sources (``TFLM_SRC`` and
``THIRD_PARTY_SRC`` or the per-library variables; see the script's header).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tinyexport.errors import UserError
from tinyexport.firmware_eval import tflm_runner
from tinyexport.firmware_eval.arena_analysis import analyse
from tinyexport.firmware_eval.bundle import write_bundle
from tinyexport.firmware_eval.emulate_build import (
    BUILD_SCRIPT,
    CALIB_ITERATIONS,
    MACHINES,
    PROFILES,
    FirmwareBuild,
    bisection_notes,
    localize,
    model_bytes,
    run_bisecting,
)
from tinyexport.firmware_eval.emulate_map import (
    flash_split,
    harness_delta,
    object_categories,
    recorded_sections,
    stack_high_water,
)
from tinyexport.firmware_eval.emulation_summary import EmulationSummary, ProfileFigures
from tinyexport.firmware_eval.tflm_measurement import bit_exactness
from tinyexport.firmware_eval.tflm_readiness import load, load_verified
from tinyexport.json_record import NOT_RECORDED, to_record

__all__ = ["TOOLS", "EmulationResult", "TFLM_COMMIT", "CMSIS_NN_COMMIT", "DEFAULT_SOURCES",
           "CORES", "PROFILES", "PROFILE_ENV", "selected_profiles", "source_dirs",
           "emulation_problem", "missing_tools", "sources_problem", "emulate", "emulate_cores",
           "emulation_lines", "main"]

_log = logging.getLogger(__name__)
TOOLS = {"arm-none-eabi-gcc": "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi",
         "arm-none-eabi-g++": "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi",
         "qemu-system-arm": "apt-get install qemu-system-arm", "make": "apt-get install make"}



@dataclass(frozen=True)
class EmulationResult:
    """What one QEMU run of a bundle measured. ``instructions_per_inference`` is an instruction
    count from QEMU's icount (not cycles); ``arena_min`` the smallest arena that allocates (and
    the outputs were produced with exactly that arena)."""

    core: str
    machine: str
    flash: dict            # the run image's bytes: total and the split by origin
    flash_product: dict    # the product image's (newlib-nano, no semihosting, no driver)
    ram_static: dict       # .data + .bss (the driver's bisection arena etc. reported apart)
    arena_min: int
    arena_used: int        # interpreter.arena_used_bytes() at arena_min
    stack_bytes: int       # stack high-water mark of make + AllocateTensors + Invoke
    op_instructions: list  # [op name, instructions] per op of input 0 (a profiled Invoke)
    arena_sections: dict   # head / tail at arena_min and the tail's bytes by allocation type
    bundle_arena_size: int  # the bundle's kTensorArenaSize
    bundle_arena_allocates: bool
    arena_python_tflm: int  # the Python (x86-64, reference kernels) interpreter's recorded total
    instructions_per_inference: list[int]
    instructions_per_tick: float  # the counts' resolution (SysTick at 25 MHz, 1 insn per ns)
    # one row per input, all outputs concatenated
    outputs: np.ndarray = field(metadata=NOT_RECORDED)
    # the tflite-micro Python interpreter on the same inputs
    reference: np.ndarray = field(metadata=NOT_RECORDED)
    bit_exact: dict
    elf: Path
    map_file: Path
    seconds: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    profile: str = "product"

    @property
    def sram_bytes(self) -> int:
        """What the application needs in RAM: the smallest arena + .data + .bss (without the
        emulator's bisection buffer) + the stack high-water mark."""
        return (self.arena_min + self.ram_static["data"] + self.ram_static["bss"]
                + self.stack_bytes)

    @property
    def flash_bytes(self) -> int:
        """Flash of the product image: the bundle's model, TFLM, its kernels and the C runtime as
        an application links them (its minimal main stands in for the application's)."""
        return self.flash_product["total"]

    @property
    def harness(self) -> dict:
        """What the run image (semihosting, full newlib, printf, the measuring driver, its test
        inputs) adds to the product image's flash."""
        return harness_delta(self.flash, self.flash_product)

    def by_op_type(self) -> dict[str, int]:
        """Instructions per op type (the profiled Invoke), largest first."""
        totals: dict[str, int] = {}
        for name, n in self.op_instructions:
            totals[name] = totals.get(name, 0) + n
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def summary(self) -> EmulationSummary:
        """The figures reports and verdicts use (no arrays, no paths into a temporary folder)."""
        insns = self.instructions_per_inference
        return EmulationSummary(
            core=self.core, machine=self.machine, profile=self.profile,
            flash_bytes=self.flash_bytes, flash=self.flash_product, flash_run_image=self.flash,
            flash_harness=self.harness, sram_bytes=self.sram_bytes,
            sram={"arena_min": self.arena_min, **self.ram_static, "stack": self.stack_bytes},
            arena_used=self.arena_used, arena_sections=self.arena_sections,
            bundle_arena_size=self.bundle_arena_size,
            bundle_arena_allocates=self.bundle_arena_allocates,
            instructions_per_inference=insns, instructions_mean=round(sum(insns) / len(insns)),
            instructions_by_op_type=self.by_op_type(), bit_exact=self.bit_exact,
            inputs=len(insns), notes=self.notes, seconds=self.seconds)


# The pinned sources (scripts/build_bundle_cortex_m.sh): named in every emulation report.
TFLM_COMMIT = "90b983c2"
CMSIS_NN_COMMIT = "4ab83cc3"
DEFAULT_SOURCES = "~/.cache/tinyexport/cortex-m-src"  # where the report's hint fetches them
CORES = tuple(MACHINES)


def source_dirs() -> tuple[str | None, str | None]:
    """(TFLM_SRC, THIRD_PARTY_SRC): the environment's, else the default fetch folder's when it
    holds a tflite-micro tree (``build_bundle_cortex_m.sh fetch-sources`` writes that layout)."""
    tflm, third = os.environ.get("TFLM_SRC"), os.environ.get("THIRD_PARTY_SRC")
    default = Path(os.environ.get("TINYEXPORT_CORTEX_M_SRC", DEFAULT_SOURCES)).expanduser()
    if not tflm and (default / "tflm").is_dir():
        tflm, third = str(default / "tflm"), third or str(default)
    return tflm, third


def emulation_problem() -> str | None:
    """Why emulation cannot run here (tools or sources missing, with how to fix it; an unknown
    ``$TINYEXPORT_FIRMWARE_PROFILE``), or None."""
    try:
        selected_profiles()
    except UserError as exc:
        return f"{PROFILE_ENV}: {exc}"
    missing = missing_tools()
    if missing:
        return "emulation needs tools not on PATH: " + "; ".join(missing)
    problem = sources_problem(*source_dirs())
    if problem:
        return (f"{problem}. Get the pinned TFLM and CMSIS-NN sources with `bash "
                f"scripts/build_bundle_cortex_m.sh fetch-sources {DEFAULT_SOURCES}` (or set "
                "TFLM_SRC and THIRD_PARTY_SRC to trees obtained separately)")
    return None


def missing_tools() -> list[str]:
    """The tools emulate needs that are not on PATH, with how to install each."""
    return [f"{t} ({how})" for t, how in TOOLS.items() if shutil.which(t) is None]


def sources_problem(tflm_src: str | None, third_party_src: str | None) -> str | None:
    """Why the sources are not usable (None when they look fine): TFLM_SRC must be a tflite-micro
    tree, and each third-party library either already in its downloads folder or given."""
    if not tflm_src:
        return "TFLM_SRC is not set and no sources are in the default folder"
    if not Path(tflm_src, "tensorflow/lite/micro/micro_interpreter.h").is_file():
        return f"TFLM_SRC={tflm_src!r} is not a tflite-micro source tree"
    dl = Path(tflm_src, "tensorflow/lite/micro/tools/make/downloads")
    env = {"flatbuffers": "FLATBUFFERS_SRC", "gemmlowp": "GEMMLOWP_SRC", "ruy": "RUY_SRC",
           "kissfft": "KISSFFT_SRC", "cmsis": "CMSIS_SRC", "cmsis_nn": "CMSIS_NN_SRC",
           "cortex_dfp": "CORTEX_DFP_SRC"}
    for name, var in env.items():
        placed = dl / ("cmsis/Cortex_DFP" if name == "cortex_dfp" else name)
        given = os.environ.get(var) or (third_party_src and str(Path(third_party_src, name)))
        if not (placed.is_dir() and any(placed.iterdir())) and not (given and Path(given).is_dir()):
            return f"{placed} is missing and neither {var} nor THIRD_PARTY_SRC/{name} is given"
    return None


def _write_model_bundle(model: Path, out_dir: Path) -> None:
    """The C bundle of a ``.tflite`` with TFLM's reference-kernel arena (the build adds the
    CMSIS-NN scratch it measures)."""
    graph = load_verified(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bundle(out_dir, model.read_bytes(), graph, analyse(graph).arena_needed)


def emulate(source, core: str = "cortex-m7", *, tflm_src: str | None = None,
            third_party_src: str | None = None, work: Path | None = None, n_inputs: int = 3,
            seed: int = 0, timeout_s: float = 600.0, build_timeout_s: float = 3600.0,
            check_ops: bool = False, profile: str = "product") -> EmulationResult:
    """Build ``source`` (an export folder with ``firmware/``, a bundle folder, or a ``.tflite``)
    for ``core`` with TFLM + CMSIS-NN, run it under QEMU and compare with the Python TFLM.
    Where the outputs differ, :func:`localize` finds the first op that differs; ``check_ops``
    runs that op-by-op comparison on input 0 even when they agree (``bit_exact["ops_equal"]``).
    ``profile`` (``PROFILES``) picks the TFLM library build both images link."""
    if core not in MACHINES:
        raise UserError(f"core must be one of {sorted(MACHINES)}, not {core!r}")
    check_profile(profile)
    missing = missing_tools()
    if missing:
        raise UserError("emulate needs tools not on PATH: " + "; ".join(missing))
    env_tflm, env_third = source_dirs()
    tflm_src = tflm_src or env_tflm
    third_party_src = third_party_src or env_third
    problem = sources_problem(tflm_src, third_party_src)
    if problem:
        raise UserError(f"{problem} (see {BUILD_SCRIPT} for the pinned commits)")
    source = Path(source)
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="emulate_"))
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict = {}
    if source.suffix == ".tflite":
        shutil.copy(source, work / "model.tflite")
        _write_model_bundle(work / "model.tflite", work / "bundle")
        bundle = work / "bundle"
    else:
        bundle = source / "firmware" if (source / "firmware").is_dir() else source
    if not (bundle / "model_data.cc").is_file():
        raise UserError(f"{source}: no bundle (model_data.cc) found")
    model = work / "bundle_model.tflite"
    model.write_bytes(model_bytes(bundle / "model_data.cc"))
    graph = load(model)
    if len(graph.inputs) != 1:
        raise UserError(f"{source}: emulate feeds one input; this model has {len(graph.inputs)}")
    t_in = graph.tensors[graph.inputs[0]]
    if t_in.dtype.lower() != "int8":
        raise UserError(f"{source}: input is {t_in.dtype}, emulate feeds int8")
    q = np.random.default_rng(seed).integers(-128, 128, (n_inputs, *t_in.shape[1:]), np.int8)

    build = FirmwareBuild(core, bundle, work, str(tflm_src), third_party_src, q, timeout_s,
                          build_timeout_s, profile)
    found = run_bisecting(build, work / core, seconds)
    out = work / core
    rows = np.array([[int(v) for v in found["output"][k]] for k in range(n_inputs)], np.int64)
    ref_run = tflm_runner.run_tflm(model, q)
    ref = ref_run.outputs.reshape(n_inputs, -1).astype(np.int64)
    exact = (bit_exactness(ref, rows) if ref.shape == rows.shape else
             {"equal": False, "shape_reference": ref.shape, "shape_emulated": rows.shape})
    if not exact["equal"] and ref.shape == rows.shape:
        row = int(np.argwhere(ref != rows)[0][0])
        exact["first_difference"] = localize(build, model, graph, row)
    elif check_ops:
        first = localize(build, model, graph, 0)
        exact["ops_equal"] = first is None
        if first is not None:
            exact["first_difference"] = first
    calib = int(found["calib_ticks"])
    per_tick = 2 * CALIB_ITERATIONS / calib
    insns = [round(int(found["invoke_ticks"][k][0]) * per_tick) for k in range(n_inputs)]
    lib = Path((out / "tflm_library.txt").read_text().strip())
    cats = object_categories(lib)
    flash, ram = flash_split((out / "firmware.map").read_text(), cats)
    flash_product, _ = flash_split((out / "product.map").read_text(), cats)
    arena_h = (bundle / "arena_size.h").read_text()
    return EmulationResult(
        core=core, machine=MACHINES[core], flash=flash, flash_product=flash_product,
        ram_static=ram,
        arena_min=int(found["arena_min"]), arena_used=int(found["arena_used"]),
        stack_bytes=stack_high_water(found), arena_sections=recorded_sections(found),
        op_instructions=[[v[1] if len(v) > 1 else "?", round(int(v[0]) * per_tick)]
                         for _, v in sorted(found.get("op_ticks", {}).items())],
        bundle_arena_size=int(re.search(r"kTensorArenaSize = (\d+)", arena_h).group(1)),
        bundle_arena_allocates=found["bundle_arena_allocates"] == "1",
        arena_python_tflm=ref_run.total,
        instructions_per_inference=insns, instructions_per_tick=round(per_tick, 3),
        outputs=rows, reference=ref, bit_exact=exact,
        elf=out / "firmware.elf", map_file=out / "firmware.map", seconds=seconds,
        notes=bisection_notes(found), profile=profile)


# Firmware profiles to measure when the caller names none: a comma-separated list, the first one's
# figures go to the verdict (e.g. TINYEXPORT_FIRMWARE_PROFILE=product,speed).
PROFILE_ENV = "TINYEXPORT_FIRMWARE_PROFILE"


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise UserError(f"firmware profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    return profile


def selected_profiles(profiles=None) -> list[str]:
    """The profiles to measure: ``profiles`` (a list or a comma-separated string), else
    ``$TINYEXPORT_FIRMWARE_PROFILE``, else the product profile; duplicates dropped, order kept."""
    if profiles is None:
        profiles = os.environ.get(PROFILE_ENV) or "product"
    if isinstance(profiles, str):
        profiles = [p.strip() for p in profiles.split(",") if p.strip()]
    names = list(dict.fromkeys(check_profile(p) for p in profiles))
    if not names:
        raise UserError("no firmware profile named")
    return names


def emulate_cores(source, cores: list[str], keep: Path | None = None, profiles=None,
                  **kwargs) -> dict[str, EmulationSummary]:
    """:func:`emulate` on each core; core -> the summary of the first profile
    (:func:`selected_profiles`), whose ``profiles`` hold each measured profile's flash and
    instructions side by side. Builds in a temporary folder unless ``keep`` names one (ELF, maps
    and logs per core and profile stay there)."""
    names = selected_profiles(profiles)
    out = {}
    with tempfile.TemporaryDirectory(prefix="emulate_") as tmp:
        for core in cores:
            runs = {}
            for name in names:
                work = Path(keep or tmp) / (core if name == "product" else f"{core}-{name}")
                _log.info("emulating %s on %s (QEMU %s, %s profile)...", Path(source).name, core,
                          MACHINES[core], name)
                runs[name] = emulate(source, core, work=work, profile=name, **kwargs).summary()
            # a core named twice keeps its first measurement, as the verdicts read it
            out.setdefault(core, replace(runs[names[0]], profiles={
                name: ProfileFigures.of(run) for name, run in runs.items()}))
    return out


def emulation_lines(run: EmulationSummary, indent: str = "") -> list[str]:
    """The human-readable lines of one emulation summary."""
    f, s, exact = run.flash, run.sram, run.bit_exact
    same = ("bit-exact" if exact.get("equal") else
            f"{exact.get('mismatches', '?')} of {exact.get('values', '?')} values DIFFER "
            f"(max {exact.get('max_abs_diff', '?')} LSB)") + f" on {run.inputs} inputs"
    first = exact.get("first_difference")
    if first:
        same += f"; first differing op #{first['op']} {first['opcode']}"
    elif exact.get("ops_equal"):
        same += ", every op's output too"
    allocates = "allocates" if run.bundle_arena_allocates else "DOES NOT allocate"
    h = run.flash_harness
    return [f"{indent}emulated {run.core} (QEMU {run.machine}; TFLM {TFLM_COMMIT} + "
            f"CMSIS-NN {CMSIS_NN_COMMIT}; {run.profile} profile: {PROFILES[run.profile]}):",
            f"{indent}  flash measured {run.flash_bytes:,} B (product image: newlib-nano, no "
            f"semihosting): model {f['model']:,} + TFLM framework {f['tflm_framework']:,} + "
            f"kernels {f['kernels']:,} (CMSIS-NN {f['cmsis_nn']:,}) + C runtime "
            f"{f['runtime']:,} + main {f['driver']:,} + padding {f['padding']:,}",
            *([f"{indent}  the emulator's run image adds {h['total']:,} B (C runtime with "
               f"printf and semihosting {h['runtime']:+,}, measuring driver {h['driver']:+,}, "
               f"test inputs {h['test_inputs']:,}): {run.flash_run_image['total']:,} B, not "
               "flashed"] if h else []),
            f"{indent}  SRAM measured {run.sram_bytes:,} B: arena {s['arena_min']:,} (the "
            f"smallest that allocates; the bundle's {run.bundle_arena_size:,} {allocates}) + "
            f".data {s['data']:,} + .bss {s['bss']:,} + stack {s['stack']:,}",
            f"{indent}  instructions per inference: {run.instructions_mean:,} (QEMU icount: "
            "an instruction count, not cycles)" + _by_type(run),
            f"{indent}  outputs vs TFLM reference kernels on the host: {same}",
            *_profile_lines(run, indent),
            *(f"{indent}  note: {n}" for n in run.notes)]


def _profile_lines(run: EmulationSummary, indent: str) -> list[str]:
    """Flash and instructions of each measured profile side by side (when more than one)."""
    rows = run.profiles or {}
    if len(rows) < 2:
        return []
    base = next(iter(rows.values()))
    lines = [f"{indent}  profiles (product image flash / instructions per inference):"]
    for name, r in rows.items():
        d_flash = r.flash_bytes - base.flash_bytes
        d_insn = 100 * (r.instructions_mean / base.instructions_mean - 1)
        lines.append(f"{indent}    {name:<8} {r.flash_bytes:>11,} B ({d_flash:+,})  "
                     f"{r.instructions_mean:>13,} ({d_insn:+.1f} %)"
                     + ("" if r.bit_exact else "  outputs DIFFER"))
    return lines


def _by_type(run: EmulationSummary) -> str:
    """The largest op types' share of the instructions (the profiled Invoke)."""
    types = run.instructions_by_op_type
    total = sum(types.values())
    if not total:
        return ""
    top = list(types.items())[:3]
    return "; by op type: " + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="export folder, bundle folder or int8 .tflite")
    ap.add_argument("--core", choices=sorted(MACHINES), default="cortex-m7")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--inputs", type=int, default=3)
    ap.add_argument("--check-ops", action="store_true",
                    help="also compare every op's output with the host (a second build)")
    ap.add_argument("--profile", default="product",
                    help="firmware profile: " + "; ".join(f"{k} ({v})" for k, v in PROFILES.items()))
    args = ap.parse_args(argv)
    try:
        res = emulate(args.source, args.core, work=args.work, n_inputs=args.inputs,
                      check_ops=args.check_ops, profile=args.profile)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(to_record(res), indent=1))
    return 0 if res.bit_exact["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
