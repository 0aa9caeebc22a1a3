"""Export benchmark: per-stage wall time of ``tinyexport`` vs the bare tools on the same ONNX.

For mcunet, mbv2-tiny and proxylessnas-w0.35 at native resolution (random weights, synthetic
calibration): ``tinyexport`` stage times and total; then, on the same ``model.onnx``, the bare
onnx2tf CLI + TFLiteConverter (what a user would run by hand) and the ratio; int8 size and op
histogram. Writes ``benchmarks/results/export_results.json`` and ``export_results.md``.

    .venv/bin/python -m tinyexport.benchmarks.bench_export [--models mcunet mbv2-tiny ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyexport.atomic import write_json, write_text
from tinyexport.config import package_versions
from tinyexport.export.config import ExportConfig
from tinyexport.export.convert import onnx2tf_command, prepare_scratch, subprocess_env
from tinyexport.export.pipeline import export
from tinyexport.quantize.ptq import quantize_int8

RESULTS = Path(__file__).parent / "results"


def bare_tools(onnx_path: Path, calib_nhwc: np.ndarray, work: Path) -> float:
    """onnx2tf CLI (float saved_model) + TFLiteConverter int8, timed together."""
    start = time.perf_counter()
    calib = prepare_scratch(work, calib_nhwc)
    subprocess.run(onnx2tf_command(onnx_path, work / "o", calib), cwd=work, env=subprocess_env(),
                   check=True, capture_output=True)
    quantize_int8(work / "o", calib_nhwc)
    return time.perf_counter() - start


def bench(name: str, calib_images: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / name
        start = time.perf_counter()
        result = export(ExportConfig(model=name, out=out, calib_images=calib_images,
                                     check_images=16, firmware=False), progress=print)
        total = time.perf_counter() - start
        rng = np.random.default_rng(0)
        res = result.provenance["resolution"]
        calib = rng.standard_normal((calib_images, res, res, 3)).astype(np.float32)
        bare = bare_tools(out / "model.onnx", calib, Path(tmp) / "bare")
        doc = result.provenance
    return {"model": name, "resolution": res, "total_s": round(total, 2),
            "stages_s": {k: v["seconds"] for k, v in doc["checks"].items()},
            "bare_tools_s": round(bare, 2), "ratio": round(total / bare, 2),
            "int8_bytes": doc["artifacts"]["model_int8.tflite"]["bytes"],
            "op_histogram": doc["op_histogram"]}


CONVERSION_STAGES = ("onnx2tf float TFLite", "int8 quantization")


def render(rows: list[dict]) -> str:
    """Two tables: totals vs the bare tools (whole pipeline, and its two conversion stages alone,
    which do the same work as the bare tools), then every stage's time."""
    lines = ["| model | res | tinyexport total s | its onnx2tf + int8 stages s | bare onnx2tf CLI + "
             "TFLiteConverter s | ratio total / bare | ratio stages / bare | int8 bytes | ops |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ops = ", ".join(f"{k} {v}" for k, v in r["op_histogram"].items())
        conv = sum(r["stages_s"].get(s, 0.0) for s in CONVERSION_STAGES)
        lines.append(f"| {r['model']} | {r['resolution']} | {r['total_s']:.1f} | {conv:.1f} | "
                     f"{r['bare_tools_s']:.1f} | {r['ratio']:.2f} | {conv / r['bare_tools_s']:.2f} "
                     f"| {r['int8_bytes']:,} | {ops} |")
    stages = sorted({s for r in rows for s in r["stages_s"]}, key=list(rows[0]["stages_s"]).index)
    lines += ["", "| model | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    lines += [f"| {r['model']} | " + " | ".join(f"{r['stages_s'].get(s, 0):.1f}" for s in stages)
              + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads (C++ log noise)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mcunet", "mbv2-tiny", "proxylessnas-w0.35"])
    p.add_argument("--calib-images", type=int, default=100)
    p.add_argument("--render-only", action="store_true",
                   help="re-render export_results.md from export_results.json (no runs)")
    args = p.parse_args(argv)
    if args.render_only:
        import json

        write_text(RESULTS / "export_results.md", render(json.loads((RESULTS / "export_results.json")
                                                            .read_text())["rows"]))
        return 0
    rows = [bench(name, args.calib_images) for name in args.models]
    host = {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
            "note": "shared machine: other jobs ran concurrently; compare ratios, not seconds"}
    write_json(RESULTS / "export_results.json", {"versions": package_versions(), "host": host,
                                         "calib_images": args.calib_images, "rows": rows})
    write_text(RESULTS / "export_results.md", render(rows))
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
