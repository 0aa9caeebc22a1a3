"""Build a model's C bundle for the host against TFLM and check it against the Python TFLM.

    .venv/bin/python scripts/check_bundle_host.py MODEL.tflite --tflm-src TFLM_SRC [--work DIR]

Writes the bundle with ``evaluate_firmware`` (on a copy of the model) and builds two binaries from
it with ``scripts/build_bundle_host.sh``:

* ``app``: the bundle's own ``main.cc`` built with ``-DTINYEXPORT_INPUT_HOOK`` and an ``input.cc``
  whose ``read_input_value`` reads the float input from ``$TINYEXPORT_INPUT_FILE``; its printed
  top class is compared with the tflite-micro Python interpreter's on the same input (random
  int8 inputs, given as the floats main.cc quantizes back to exactly those values; picked among
  ``n_candidates`` for different Python top classes where the model has them);
* ``dump``: the bundle's model, resolver and arena size driven by a small ``main`` that prints
  every output value; compared bit-exact with the Python interpreter on all candidates.

Also reports the binary's ``arena used`` next to tinyexport's prediction and the Python
interpreter's recorded total. Prints JSON; exit status 0 when everything agrees, 1 when not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyexport.errors import UserError
from tinyexport.firmware_eval import tflm_runner
from tinyexport.firmware_eval.evaluate import evaluate_firmware
from tinyexport.firmware_eval.tflm_measurement import bit_exactness
from tinyexport.firmware_eval.tflm_readiness import load

BUILD_SCRIPT = Path(__file__).resolve().parent / "build_bundle_host.sh"
_RESULT = re.compile(r"top class: (\d+) \(arena used (\d+) bytes\)")


def host_inputs(graph, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n int8 inputs, float32 values that main.cc's lround(x / scale) + zero_point maps back to
    them). Each float is (q - zp) * scale, so x / scale lands within a few ulp of an integer: no
    rounding ties, and C's lround and numpy agree."""
    t = graph.tensors[graph.inputs[0]]
    scale, zp = np.float32(t.quant.scales[0]), int(t.quant.zero_points[0])
    q = np.random.default_rng(seed).integers(-128, 128, (n, *t.shape[1:]), np.int8)
    x = ((q.astype(np.int32) - zp).astype(np.float32) * scale).astype(np.float32)
    back = np.clip(np.round(x / scale).astype(np.int64) + zp, -128, 127)
    assert np.array_equal(back, q), "float input does not quantize back to the int8 input"
    return q, x


# read_input_value for main.cc built with -DTINYEXPORT_INPUT_HOOK: element i of the raw float32
# file named by $TINYEXPORT_INPUT_FILE, so one binary runs many inputs.
INPUT_CC = Path(__file__).with_name("bundle_host_input.cc")
# A second driver on the same bundle files (model_data, op_resolver, arena_size): runs raw int8
# input files and prints every output value, for a bit-exact comparison with the Python TFLM.
DUMP_CC = Path(__file__).with_name("bundle_host_dump.cc")


def build(tflm_src: Path, bundle: Path, binary: Path,
          env: dict) -> tuple[subprocess.CompletedProcess, float]:
    """Run build_bundle_host.sh with extra ``env``; (the build process, seconds)."""
    start = time.monotonic()
    proc = subprocess.run(["bash", str(BUILD_SCRIPT), str(tflm_src), str(bundle), str(binary)],
                          capture_output=True, text=True, env=dict(os.environ, **env))
    return proc, time.monotonic() - start


def check(model: Path, tflm_src: Path, work: Path, n_inputs: int = 5, seed: int = 0,
          n_candidates: int = 32) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    copy = work / "model.tflite"
    shutil.copy(model, copy)
    summary = evaluate_firmware(copy, work / "bundle", run_tflm=False)  # prediction only
    graph = load(copy)
    shutil.copyfile(INPUT_CC, work / "input.cc")
    shutil.copyfile(DUMP_CC, work / "dump_main.cc")
    out: dict = {"model": str(model), "ops": graph.opcodes,
                 "firmware_check_errors": summary.errors}
    for binary, env in (("app", {"EXTRA_SRCS": str(work / "input.cc"),
                                 "EXTRA_CXXFLAGS": "-DTINYEXPORT_INPUT_HOOK"}),
                        ("dump", {"MAIN_SRC": str(work / "dump_main.cc")})):
        proc, build_s = build(tflm_src, work / "bundle", work / binary, env)
        out[f"build_{binary}_s"] = round(build_s, 1)
        if proc.returncode != 0:
            out["error"] = f"build of {binary} failed:\n{proc.stderr[-4000:]}"
            return out
    # Python TFLM on many random inputs first; keep ones with different top classes (random-weight
    # models often favour one class), so that agreeing top classes say more.
    q, x = host_inputs(graph, n_candidates, seed)
    n_out = int(np.prod(graph.tensors[graph.outputs[0]].shape))
    try:
        ref = tflm_runner.run_tflm(copy, q)
    except tflm_runner.TflmFailure as exc:
        out["error"] = f"Python TFLM: {exc}"
        return out
    cand_tops = [int(np.argmax(row[:n_out])) for row in ref.outputs]
    first = {}  # top class -> first candidate with it
    for k, c in enumerate(cand_tops):
        first.setdefault(c, k)
    picked = sorted(first.values())[:n_inputs]
    picked += [k for k in range(n_candidates) if k not in picked][:n_inputs - len(picked)]
    tops, used = [], set()
    for k in picked:
        (work / "input.f32").write_bytes(x[k].tobytes())
        run = subprocess.run([str(work / "app")], capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, TINYEXPORT_INPUT_FILE=str(work / "input.f32")))
        found = _RESULT.search(run.stdout)
        if run.returncode != 0 or not found:
            out["error"] = (f"binary failed (rc {run.returncode}): "
                            f"{run.stdout[-2000:]}{run.stderr[-2000:]}")
            return out
        tops.append(int(found.group(1)))
        used.add(int(found.group(2)))
    py_tops = [cand_tops[k] for k in picked]
    for k in range(n_candidates):
        (work / f"q{k}.i8").write_bytes(q[k].tobytes())
    files = [str(work / f"q{k}.i8") for k in range(n_candidates)]
    dump = subprocess.run([str(work / "dump"), *files], capture_output=True, text=True,
                          timeout=1200)
    rows = [np.array(line.split()[1:], np.int64) for line in dump.stdout.splitlines()
            if line.startswith("output:")]
    if dump.returncode != 0 or len(rows) != n_candidates:
        out["error"] = f"dump binary failed (rc {dump.returncode}): {dump.stderr[-2000:]}"
        return out
    out["outputs_bit_exact"] = bit_exactness(ref.outputs[:, :n_out], np.stack(rows))
    arena_h = (work / "bundle" / "arena_size.h").read_text()
    out.update({
        "top_class_binary": tops, "top_class_python_tflm": py_tops,
        "match": tops == py_tops and out["outputs_bit_exact"]["equal"],
        "arena_used_binary": max(used),
        "arena_predicted": summary.arena["total"],
        "arena_measured_python_tflm": ref.total,
        "kTensorArenaSize": int(re.search(r"kTensorArenaSize = (\d+)", arena_h).group(1)),
    })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--tflm-src", type=Path, default=os.environ.get("TFLM_SRC"),
                    help="tflite-micro source tree (default $TFLM_SRC)")
    ap.add_argument("--work", type=Path, help="output folder (default: a temporary one)")
    ap.add_argument("--inputs", type=int, default=5, help="random inputs compared (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.tflm_src is None:
        ap.error("--tflm-src or $TFLM_SRC is required")
    work = args.work or Path(tempfile.mkdtemp(prefix="bundle_host_"))
    try:
        inputs = len(load(args.model).inputs)
        if inputs != 1:
            raise UserError(f"{args.model}: the check feeds one input; this model has {inputs}")
        out = check(args.model, args.tflm_src, work, args.inputs, args.seed)
    except (UserError, OSError) as exc:
        print(json.dumps({"model": str(args.model), "error": str(exc)}, indent=1))
        return 2
    out["work"] = str(work)
    print(json.dumps(out, indent=1))
    return 0 if out.get("match") else 1


if __name__ == "__main__":
    sys.exit(main())
