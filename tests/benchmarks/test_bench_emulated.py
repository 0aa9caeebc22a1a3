"""bench_emulated's compaction columns: flash before / after compaction of the product image, the
outputs of both firmwares compared in QEMU, and the published mcunet-in3 figures beside ours."""

from pathlib import Path

import pytest

from tinyexport.benchmarks import bench_emulated
from tinyexport.firmware_eval import emulate

DATA = Path(__file__).resolve().parents[1] / "firmware_eval" / "data"
_SKIP = emulate.emulation_problem()


def _row(model: str, before: int, after: int) -> dict:
    level = {"bytes_after": after, "applied": True, "steps": [], "kept": [],
             "tflm_equal": True, "litert_equal": True, "errors": []}
    return {"model": model, "core": "cortex-m7", "profile": "product", "flash_measured": after + 50,
            "flash_before_compaction": before + 50, "qemu_outputs_equal_to_uncompacted": True,
            "sram_measured": 1000, "instructions": 123,
            "compaction": {"bytes_before": before, "linked_bytes": after, "linked": "TFLM-only",
                           "portable": level, "tflm": level}}


def test_compaction_table_and_the_published_figures():
    text = "\n".join(bench_emulated._compaction_lines([_row("mcunet-in3", 9_000, 7_000)]))
    assert "| mcunet-in3 | cortex-m7 | 9,000 | 7,000 | 7,000 | TFLM-only (7,000) | 9,050 | 7,050 " \
           "| 2,000 | yes |" in text
    assert "| TinyEngine (published) | STM32F746 | 835 kB | 242 kB | 819 ms |" in text
    assert "| TFLM + CMSIS-NN (published) | STM32H743 | 1,106 kB |" in text
    assert "compacted, product image (ours) | QEMU Cortex-M7 | 7,050 B | 1,000 B |" in text
    assert bench_emulated._compaction_lines([]) == []


def test_tflm_examples_are_found_in_the_pinned_tree():
    found = dict(bench_emulated.tflm_example_models())
    assert set(found) <= set(bench_emulated.TFLM_EXAMPLES)
    assert all(path.is_file() and path.suffix == ".tflite" for path in found.values())


@pytest.mark.slow
@pytest.mark.skipif(_SKIP is not None, reason=f"no Cortex-M emulation: {_SKIP}")
def test_bench_model_measures_flash_before_and_after_compaction(tmp_path):
    row = bench_emulated.bench_model("hello_world", DATA / "hello_world_int8.tflite",
                                     "cortex-m7", 2, tmp_path)
    c = row["compaction"]
    assert c["linked"] == "TFLM-only" and c["linked_bytes"] < c["bytes_before"]
    # the model array is the only part of the image that changes
    assert row["flash_before_compaction"] - row["flash_measured"] == pytest.approx(
        c["bytes_before"] - c["linked_bytes"], abs=16)
    assert row["qemu_outputs_equal_to_uncompacted"] and row["bit_exact"]["equal"]
    # the same code runs: the counts agree to SysTick's resolution (40 instructions)
    assert row["instructions_uncompacted"] == pytest.approx(row["instructions"], abs=80)
