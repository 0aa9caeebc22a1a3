"""firmware_eval.emulate: the bundle on an emulated Cortex-M4 / M7 (QEMU) with CMSIS-NN kernels.

The parsing tests always run. The end-to-end test needs arm-none-eabi-gcc, qemu-system-arm and
the pinned sources (TFLM_SRC, THIRD_PARTY_SRC; see scripts/build_bundle_cortex_m.sh); without them
it is skipped at collection (PATH and environment look-ups only). The first run builds the TFLM
library per core (minutes on 2 cores). Run with
``TFLM_SRC=... THIRD_PARTY_SRC=... .venv/bin/pytest -m slow tests/firmware_eval/test_emulate.py``.
"""

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tinyexport.boards import BOARDS, verdict
from tinyexport.errors import UserError
from tinyexport.firmware_eval import emulate, emulate_build, emulate_map
from tinyexport.firmware_eval.emulation_summary import EmulationSummary, ProfileFigures
from tinyexport.json_record import to_record

# The TFLM library's part of both images (framework, a CMSIS-NN function, a TFLM kernel).
_TFLM_TEXT = """\
 .text._ZN6tflite16MicroInterpreter6InvokeEv
                0x00000040      0x200 /g/lib/libtensorflow-microlite.a(micro_interpreter.o)
 .text.arm_convolve_s8
                0x00000240      0x300 /g/lib/libtensorflow-microlite.a(arm_convolve_s8.o)
 .text._ZN6tflite12_GLOBAL__N_14EvalEP13TfLiteContextP10TfLiteNode
                0x00000540       0x80 /g/lib/libtensorflow-microlite.a(conv.o)
"""
MAP = f"""\
Linker script and memory map

.text           0x00000000    0x1000
 *(.vectors)
 .vectors       0x00000000       0x40 /w/obj/startup.o
{_TFLM_TEXT} .text.memcpy   0x000005c0       0x20 /usr/lib/arm-none-eabi/lib/libc.a(libc_a-memcpy.o)
 .text.main     0x000005e0       0x90 /w/obj/emu_driver.o

.rodata         0x00001000    0x2000
 .rodata.g_model_data
                0x00001000     0x1800 /w/obj/model_data.o
 .rodata.main.str1.1
                0x00002800        0x8 /w/obj/emu_driver.o
 .rodata.x.str1.1
                0x00002800        0x4 /w/obj/emu_driver.o
 *fill*         0x00002808        0x8
 .rodata._ZL12g_emu_inputs
                0x00002810      0x300 /w/obj/emu_driver.o

.data           0x20000000       0x10 load address 0x00003000
 .data.impure   0x20000000       0x10 /usr/lib/arm-none-eabi/lib/libc.a(libc_a-impure.o)

.bss            0x20000010    0x1000
 .bss._ZL5arena 0x20000010      0x800 /w/obj/emu_driver.o
 .bss.x         0x20000810      0x40 /g/lib/libtensorflow-microlite.a(micro_interpreter.o)
"""


def test_flash_split_from_map():
    cats = {"micro_interpreter.o": "framework", "conv.o": "kernels",
            "arm_convolve_s8.o": "kernels"}
    flash, ram = emulate_map.flash_split(MAP, cats)
    assert flash["model"] == 0x1800
    assert flash["tflm_framework"] == 0x200
    assert flash["kernels"] == 0x380 and flash["cmsis_nn"] == 0x300
    assert flash["runtime"] == 0x40 + 0x20 + 0x10  # startup, memcpy, .data of libc
    assert flash["driver"] == 0x90 + 0x8 and flash["test_inputs"] == 0x300
    assert flash["padding"] == 0x8  # and the merged string sharing 0x2800 counted once
    assert flash["total"] == 0x1800 + 0x200 + 0x380 + 0x70 + 0x98 + 0x300 + 0x8
    assert flash["total_without_test_inputs"] == flash["total"] - 0x300
    assert ram == {"data": 0x10, "bss": 0x40, "bss_emulator": 0x800}


# The product image of the same bundle: newlib-nano (libc_nano.a), the product main, no inputs.
PRODUCT_MAP = f"""\
Linker script and memory map

.text           0x00000000    0x1000
 .vectors       0x00000000       0x40 /w/obj/startup_product.o
{_TFLM_TEXT} .text.memcpy   0x000005c0       0x10 /usr/lib/arm-none-eabi/lib/thumb/libc_nano.a(libc_a-memcpy.o)
 .text.main     0x000005d0       0x30 /w/obj/product_main.o

.rodata         0x00001000    0x1800
 .rodata.g_model_data
                0x00001000     0x1800 /w/obj/model_data.o

.bss            0x20000000    0x1000
 .bss._ZL12tensor_arena
                0x20000000      0x400 /w/obj/product_main.o
"""
_CATS = {"micro_interpreter.o": "framework", "conv.o": "kernels", "arm_convolve_s8.o": "kernels"}


def test_product_image_flash_and_what_the_harness_adds():
    """The product image's map is read by the same parser (its main counted as ``driver``); the
    harness delta is run image - product image, in all and per part."""
    product, ram = emulate_map.flash_split(PRODUCT_MAP, _CATS)
    assert product["model"] == 0x1800 and product["kernels"] == 0x380
    assert product["runtime"] == 0x40 + 0x10 and product["driver"] == 0x30
    assert product["test_inputs"] == 0 and product["total"] == 0x1800 + 0x200 + 0x380 + 0x50 + 0x30
    assert ram == {"data": 0, "bss": 0x400, "bss_emulator": 0}
    run, _ = emulate_map.flash_split(MAP, _CATS)
    delta = emulate_map.harness_delta(run, product)
    assert delta["total"] == run["total"] - product["total"] > 0
    assert delta["without_test_inputs"] == delta["total"] - 0x300 and delta["test_inputs"] == 0x300
    assert delta["model"] == 0 and delta["kernels"] == 0 and delta["tflm_framework"] == 0
    assert delta["runtime"] == 0x70 - 0x50 and delta["driver"] == 0x98 - 0x30


def test_firmware_profiles_are_selected(monkeypatch):
    monkeypatch.delenv(emulate.PROFILE_ENV, raising=False)
    assert emulate.selected_profiles() == ["product"]
    assert emulate.selected_profiles("speed, product,speed") == ["speed", "product"]
    assert emulate.selected_profiles(["release"]) == ["release"]
    monkeypatch.setenv(emulate.PROFILE_ENV, "product,speed")
    assert emulate.selected_profiles() == ["product", "speed"]
    with pytest.raises(UserError, match="firmware profile must be one of product, release, speed"):
        emulate.selected_profiles("fast")
    with pytest.raises(UserError, match="no firmware profile"):
        emulate.selected_profiles(",")
    monkeypatch.setenv(emulate.PROFILE_ENV, "fast")  # found before any work is done
    assert emulate.emulation_problem().startswith(f"{emulate.PROFILE_ENV}: firmware profile must")


def test_product_main_is_package_data_without_a_harness():
    """The product image's main is a real .cc beside the module: it initialises and invokes the
    bundle's model and prints nothing (no semihosting, no stdio)."""
    text = emulate_build.PRODUCT_CC.read_text()
    assert "RegisterModelOps" in text and "Invoke()" in text and "AllocateTensors" in text
    assert "printf" not in text and "<cstdio>" not in text and "emu_inputs" not in text


def _result(profile: str = "product", insns=(1_000_000, 1_000_000, 1_000_000),
            extra_flash: int = 0) -> emulate.EmulationResult:
    """An emulation result as :func:`emulate.emulate` returns it, from the maps above."""
    run, ram = emulate_map.flash_split(MAP, _CATS)
    product, _ = emulate_map.flash_split(PRODUCT_MAP, _CATS)
    product = {**product, "total": product["total"] + extra_flash}
    return emulate.EmulationResult(
        core="cortex-m7", machine="mps2-an500", flash=run, flash_product=product, ram_static=ram,
        arena_min=4000, arena_used=3900, stack_bytes=900, op_instructions=[["CONV_2D", 9]],
        arena_sections={"head": 3000, "tail": 900, "by_type": {}}, bundle_arena_size=4000,
        bundle_arena_allocates=True, arena_python_tflm=4100,
        instructions_per_inference=list(insns), instructions_per_tick=1.0,
        outputs=np.zeros((3, 2)), reference=np.zeros((3, 2)), bit_exact={"equal": True},
        elf=Path("/w/firmware.elf"), map_file=Path("/w/firmware.map"), seconds={"build": 1.5},
        notes=[], profile=profile)


def _summary_with_profiles() -> EmulationSummary:
    product, speed = _result(), _result("speed", (800_000,) * 3, extra_flash=4096)
    return replace(product.summary(), profiles={"product": ProfileFigures.of(product.summary()),
                                                "speed": ProfileFigures.of(speed.summary())})


def test_summary_record_keeps_the_layout_of_export_json():
    """export.json's ``firmware.emulation[core]`` and ``tinyreport --json``'s ``emulated[core]``:
    the keys and values the summary has always been written with, in that order."""
    res = _result()
    insns = res.instructions_per_inference
    before = {"core": res.core, "machine": res.machine, "profile": res.profile,
              "flash_bytes": res.flash_bytes, "flash": res.flash_product,
              "flash_run_image": res.flash, "flash_harness": res.harness,
              "sram_bytes": res.sram_bytes,
              "sram": {"arena_min": res.arena_min, **res.ram_static, "stack": res.stack_bytes},
              "arena_used": res.arena_used, "arena_sections": res.arena_sections,
              "bundle_arena_size": res.bundle_arena_size,
              "bundle_arena_allocates": res.bundle_arena_allocates,
              "instructions_per_inference": insns,
              "instructions_mean": round(sum(insns) / len(insns)),
              "instructions_by_op_type": res.by_op_type(),
              "bit_exact": res.bit_exact, "inputs": len(insns), "notes": res.notes,
              "seconds": res.seconds}
    record = to_record(res.summary())
    assert json.dumps(record) == json.dumps(before)  # same keys, same order, same values
    run = _summary_with_profiles()
    record = to_record(run)
    assert list(record) == [*before, "profiles"]
    assert record["profiles"]["speed"] == {
        "flash_bytes": run.flash_bytes + 4096, "flash_harness": run.flash_harness["total"] - 4096,
        "kernels": run.flash["kernels"], "instructions_mean": 800_000, "bit_exact": True}
    assert EmulationSummary.from_record(json.loads(json.dumps(record))) == run


def test_emulate_cores_gives_the_first_profile_with_every_profile_side_by_side(monkeypatch):
    results = {"product": _result(), "speed": _result("speed", (800_000,) * 3, 4096)}
    monkeypatch.setattr(emulate, "emulate", lambda source, core, work, profile: results[profile])
    runs = emulate.emulate_cores("m.tflite", ["cortex-m7"], profiles="product,speed")
    run = runs["cortex-m7"]
    assert run == replace(results["product"].summary(), profiles=run.profiles)
    assert list(run.profiles) == ["product", "speed"]
    assert run.profiles["speed"].instructions_mean == 800_000


def test_report_shows_product_flash_the_harness_and_profiles_side_by_side():
    run = _summary_with_profiles()
    text = "\n".join(emulate.emulation_lines(run))
    product = run.flash_bytes
    assert f"flash measured {product:,} B (product image: newlib-nano, no semihosting)" in text
    added = run.flash_run_image["total"] - product
    assert f"run image adds {added:,} B" in text and "test inputs 768" in text
    assert "product profile: -Os, TFLM BUILD_TYPE=default" in text
    assert "speed" in text and "(+4,096)" in text and "(-20.0 %)" in text


def test_report_md_shows_the_product_flash_and_what_the_harness_adds():
    from tinyexport.export.provenance import _firmware_lines

    run = _summary_with_profiles()
    firmware = {"arena": {"total": 4000, "head": 3000, "tail": 1000}, "min_arena": 4000,
                "emulation": {"cortex-m7": to_record(run)}}
    text = "\n".join(_firmware_lines(firmware))
    assert "- emulated cortex-m7" in text
    assert f"  - flash measured {run.flash_bytes:,} B (product image" in text
    added = run.flash_run_image["total"] - run.flash_bytes
    assert f"  - the emulator's run image adds {added:,} B" in text and "not flashed" in text
    assert "  - speed" in text  # the profiles side by side


def test_parse_output():
    found = emulate_map.parse_output("x\nemu calib_ticks: 50000\nemu arena_min: 1234\n"
                            "emu invoke_ticks 0: 77\nemu output 0: 1 -2 3\nemu done\n")
    assert found["calib_ticks"] == "50000" and found["arena_min"] == "1234"
    assert found["invoke_ticks"] == {0: ["77"]} and found["output"] == {0: ["1", "-2", "3"]}
    assert found["done"] == ""


def test_model_bytes_and_inputs_header(tmp_path):
    cc = tmp_path / "model_data.cc"
    cc.write_text('#include "model_data.h"\nalignas(16) const uint8_t g_model_data[3] = {\n'
                  "  0x1c, 0x00, 0xff\n};\n")
    assert emulate_build.model_bytes(cc) == b"\x1c\x00\xff"
    h = emulate_build.inputs_header(np.array([[[1, -2]], [[3, 4]]], np.int8))
    assert "kEmuNumInputs = 2" in h and "kEmuInputBytes = 2" in h and "{1, -2}" in h


def test_missing_tools_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="arm-none-eabi-gcc.*gcc-arm-none-eabi"):
        emulate.emulate(tmp_path / "m.tflite")
    with pytest.raises(UserError, match="core must be"):
        emulate.emulate(tmp_path / "m.tflite", core="cortex-m0")


def test_sources_problem_names_the_variable(tmp_path):
    assert "TFLM_SRC" in emulate.sources_problem(None, None)
    (tmp_path / "tensorflow/lite/micro").mkdir(parents=True)
    (tmp_path / "tensorflow/lite/micro/micro_interpreter.h").write_text("")
    assert "FLATBUFFERS_SRC" in emulate.sources_problem(str(tmp_path), None)


_SKIP = (f"tools missing: {emulate.missing_tools()}" if emulate.missing_tools() else
         emulate.sources_problem(os.environ.get("TFLM_SRC"), os.environ.get("THIRD_PARTY_SRC")))


@pytest.mark.slow
@pytest.mark.skipif(_SKIP is not None, reason=f"no Cortex-M emulation: {_SKIP}")
@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m7"])
def test_emulated_outputs_match_python_tflm(models, tmp_path, core):
    res = emulate.emulate(models["int8"], core, work=tmp_path, n_inputs=3)
    assert res.bit_exact["equal"], res.bit_exact
    assert res.outputs.shape == (3, 10)
    assert 0 < res.arena_used <= res.arena_min <= 2 * res.bundle_arena_size + 65536
    model_size = models["int8"].stat().st_size
    assert model_size <= res.flash["model"] <= model_size + 64
    assert res.flash["kernels"] > 0 and res.flash["tflm_framework"] > 0
    assert all(n > 1000 for n in res.instructions_per_inference)
    # The product image (newlib-nano, no semihosting, no driver): the same model, framework and
    # kernels, a smaller C runtime; its flash is the measured one.
    product = res.flash_product
    assert res.flash_bytes == product["total"] < res.flash["total_without_test_inputs"]
    assert (product["model"], product["kernels"]) == (res.flash["model"], res.flash["kernels"])
    assert product["runtime"] < res.flash["runtime"] and product["test_inputs"] == 0
    assert res.harness["total"] == res.flash["total"] - product["total"] > 0
    assert (tmp_path / core / "product.map").is_file() and "libc_nano" in (
        tmp_path / core / "product.map").read_text()
    # Same inputs' work: the counts of different inputs agree within a few percent.
    assert max(res.instructions_per_inference) < 1.1 * min(res.instructions_per_inference)


def test_board_core_and_clock():
    from tinyexport.firmware_eval.verdicts import board_clock_hz, board_core

    assert board_core(BOARDS.get("stm32f746")) == "cortex-m7"
    assert board_core(BOARDS.get("f412")) == "cortex-m4"
    assert board_core(BOARDS.get("rp2040")) is None and board_core(BOARDS.get("esp32s3")) is None
    assert board_clock_hz(BOARDS.get("stm32f746")) == 216e6
    assert board_clock_hz(BOARDS.get("stm32f765")) is None


def _run_summary(core: str, sram: int, flash: int, instructions: int = 2_160_000
                 ) -> EmulationSummary:
    return replace(_result().summary(), core=core, machine=emulate.MACHINES[core],
                   sram_bytes=sram, flash_bytes=flash, instructions_mean=instructions)


def test_measured_verdicts_replace_the_prediction_for_the_emulated_core_only(models):
    from tinyexport.firmware_eval.tflm_readiness import load
    from tinyexport.firmware_eval.verdicts import board_verdicts, predicted_verdict, resolve_boards

    graph = load(models["int8"])
    boards = resolve_boards(["stm32f746", "stm32f412", "rp2040"])
    out = board_verdicts(graph, boards, {"cortex-m7": _run_summary("cortex-m7", 400_000, 900)})
    f746, f412, rp = out
    predicted = predicted_verdict(graph, boards[0])
    assert (f746.sram_needed, f746.flash_needed, f746.fits) == (400_000, 900, False)
    assert f746.sram_margin == 320 * 1024 - 400_000
    assert to_record(f746)["predicted"] == {"sram_needed": predicted.sram_needed,
                                            "flash_needed": predicted.flash_needed}
    assert f746.basis == "measured: cortex-m7 in QEMU mps2-an500" and f746.isa == "dsp"
    assert f746.latency_ms == 8.0  # 2.16 M instructions x 0.80 cycles at 216 MHz
    assert f412 == predicted_verdict(graph, boards[1]) and rp == predicted_verdict(graph, boards[2])
    assert f412.basis is None and "basis" not in to_record(f412)


@pytest.mark.parametrize("argv, fragment", [
    (["--emulate"], "add --board"),
    (["--emulate", "--board", "rp2040"], "no emulated core"),
    (["--emulate", "cortex-m0"], "emulated cores are cortex-m4, cortex-m7"),
    (["--emulate", "cortex-m4", "--optimize"], "--emulate runs an int8 FILE.tflite"),
])
def test_tinyreport_emulate_bad_requests_are_one_line(models, capsys, argv, fragment):
    from tinyexport.benchmarks import report_cli

    assert report_cli.main([str(models["int8"]), *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_tinyreport_unknown_firmware_profile_is_one_line(models, capsys, monkeypatch):
    from tinyexport.benchmarks import report_cli

    monkeypatch.setenv(emulate.PROFILE_ENV, "product,fast")
    assert report_cli.main([str(models["int8"]), "--emulate", "cortex-m7"]) == 2
    err = capsys.readouterr().err
    assert "firmware profile must be one of product, release, speed, not 'fast'" in err
    assert err.count("error") == 1 and "Traceback" not in err


def test_tinyreport_emulate_without_sources_says_how_to_get_them(models, capsys, monkeypatch,
                                                                 tmp_path):
    from tinyexport.benchmarks import report_cli

    for var in ("TFLM_SRC", "THIRD_PARTY_SRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TINYEXPORT_CORTEX_M_SRC", str(tmp_path / "none"))
    monkeypatch.setattr(emulate, "missing_tools", lambda: [])
    assert report_cli.main([str(models["int8"]), "--emulate", "cortex-m7"]) == 2
    assert "fetch-sources" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(_SKIP is not None, reason=f"no Cortex-M emulation: {_SKIP}")
def test_tinyreport_emulate_replaces_the_estimate(models, capsys):
    """``tinyreport FILE --board f746 --emulate``: measured flash / SRAM in the verdict, the
    runtime code measured, instructions and bit-exactness reported."""
    from tinyexport.benchmarks import report_cli

    assert report_cli.main([str(models["int8"]), "--board", "f746", "--emulate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    run = report["emulated"]["cortex-m7"]
    verdict = report["boards"][0]
    assert verdict["basis"].startswith("measured") and verdict["sram_needed"] == run["sram_bytes"]
    assert verdict["flash_needed"] == run["flash_bytes"] > report["model_bytes"]
    # the verdict's flash is the product image's, below the emulator's run image
    assert run["flash_bytes"] == run["flash"]["total"] < run["flash_run_image"]["total"]
    assert run["flash_harness"]["total"] == run["flash_run_image"]["total"] - run["flash_bytes"]
    assert run["sram_bytes"] == (run["sram"]["arena_min"] + run["sram"]["data"]
                                 + run["sram"]["bss"] + run["sram"]["stack"])
    assert 0 < run["sram"]["stack"] < 64 * 1024 and run["bit_exact"]["equal"]
    assert report["runtime_code_bytes"]["basis"].startswith("measured")


@pytest.mark.slow
@pytest.mark.skipif(_SKIP is not None, reason=f"no Cortex-M emulation: {_SKIP}")
def test_every_op_output_matches_the_host(models, tmp_path):
    """The localize build (every tensor kept, CRC-32 per op output) agrees with the host TFLM op
    by op; the arena sections add up and the stack was measured."""
    res = emulate.emulate(models["int8"], "cortex-m7", work=tmp_path, n_inputs=2, check_ops=True)
    assert res.bit_exact["equal"] and res.bit_exact["ops_equal"], res.bit_exact
    sections = res.arena_sections
    assert sections["head"] + sections["tail"] == res.arena_used
    assert sections["by_type"]["eval_tensors"]["bytes"] == 12 * sections["by_type"][
        "eval_tensors"]["count"]  # sizeof(TfLiteEvalTensor) on a 32-bit core
    assert 0 < res.stack_bytes < 64 * 1024
    ops = res.op_instructions  # the profiled Invoke: one row per op, adding up to the total
    assert len(ops) == 12 and {name for name, _ in ops} >= {"CONV_2D", "DEPTHWISE_CONV_2D"}
    assert 0.9 < sum(n for _, n in ops) / res.instructions_per_inference[0] < 1.1


def test_first_mismatch_in_execution_order():
    pairs = [(0, 5), (1, 7), (2, 9)]
    host = [[0, 11, 4], [1, 22, 4], [2, 33, 8]]
    assert emulate_build.first_mismatch(pairs, host, {0: ["11", "4"], 1: ["22", "4"], 2: ["33", "8"]}) is None
    assert emulate_build.first_mismatch(pairs, host, {0: ["11", "4"], 1: ["23", "4"], 2: ["0", "8"]}) == (1, 7)
    assert emulate_build.first_mismatch(pairs, host, {0: ["11", "4"], 1: ["22", "4"]}) == (2, 9)
    assert emulate_build.first_mismatch(pairs, host, {0: ["11", "2"], 1: ["22", "4"]}) == (0, 5)


def test_latency_only_where_calibrated():
    from tinyexport.firmware_eval.verdicts import latency_ms, measured_verdict

    f746, f765, f412 = (BOARDS.get(name) for name in ("stm32f746", "stm32f765", "stm32f412"))
    assert latency_ms(f746, "cortex-m7", 270e6) == pytest.approx(270e6 * 0.80 / 216e6 * 1e3)
    assert latency_ms(f765, "cortex-m7", 270e6) is None  # no clock in the board profile
    assert latency_ms(f412, "cortex-m4", 1) is None  # no published M4 figure to calibrate on
    m7 = _run_summary("cortex-m7", 1, 1, instructions=270_000_000)
    v = measured_verdict(verdict(f746, 1, 1), f746, m7)
    assert v.latency_ms == 1000.0 and "calibrated" in v.latency_basis


def test_bisection_restarts_above_a_crashing_arena(tmp_path):
    """A kernel that crashes inside AllocateTensors on a too-small arena: the firmware is rebuilt
    with the bisection starting above that size, and the result says so."""
    calls = []

    class Build:
        work = tmp_path

        def run(self, out, defines="", seconds=None):
            calls.append(defines)
            if len(calls) == 1:
                raise emulate_build.CrashedAllocating(2376, "log")
            return {"arena_min": "4056"}

    found = emulate_build.run_bisecting(Build(), tmp_path / "out", {})
    assert calls == ["", "-DEMU_BISECT_LO=2376"]
    assert found["bisection_crashes_below"] == 2376
    assert "2,376 B arena" in emulate_build.bisection_notes(found)[0]


@pytest.mark.slow
@pytest.mark.skipif(_SKIP is not None, reason=f"no Cortex-M emulation: {_SKIP}")
def test_stateful_lstm_runs_and_differences_are_localized(tmp_path):
    """TFLM's mnist_lstm example: its LSTM kernel crashes on a too-small arena (the bisection
    goes on above it), its state carries over between inputs, and where CMSIS-NN's outputs
    differ from the reference kernels the LSTM op is named."""

    model = Path(__file__).parent / "data" / "trained_lstm_int8.tflite"
    res = emulate.emulate(model, "cortex-m4", work=tmp_path, n_inputs=3)
    assert res.notes and res.arena_min > 2376
    if not res.bit_exact["equal"]:
        assert res.bit_exact["first_difference"]["opcode"] == "UNIDIRECTIONAL_SEQUENCE_LSTM"


@pytest.mark.slow
@pytest.mark.skipif(_SKIP is not None, reason=f"no Cortex-M emulation: {_SKIP}")
def test_profiles_side_by_side(models, tmp_path):
    """The product and speed profiles (the speed one builds its own TFLM library with the
    kernels at -O2: ~15 min on 2 cores the first time): both bit-exact, the product first (the
    verdict's), each profile's flash and instructions in the table."""
    runs = emulate.emulate_cores(models["int8"], ["cortex-m7"], keep=tmp_path,
                                 profiles="product,speed", n_inputs=2)
    run = runs["cortex-m7"]
    assert run.profile == "product" and list(run.profiles) == ["product", "speed"]
    assert all(row.bit_exact for row in run.profiles.values())
    assert run.profiles["product"].flash_bytes == run.flash_bytes
    assert "profiles (product image flash" in "\n".join(emulate.emulation_lines(run))


def test_build_script_rejects_an_unknown_profile_in_one_line(tmp_path):
    import subprocess

    proc = subprocess.run(["bash", str(emulate_build.BUILD_SCRIPT), "cortex-m7", str(tmp_path),
                           str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "FIRMWARE_PROFILE": "fast"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: FIRMWARE_PROFILE must be product, release or speed, "
                                   "not fast")


def test_each_build_links_the_product_image_with_the_profile(monkeypatch, tmp_path):
    """FirmwareBuild hands the build script the product main (copied from the package) and the
    profile; a failed build is one UserError naming its log."""
    seen = {}

    def fake_run(cmd, timeout, env=None):
        seen.update(env)
        return emulate_build.subprocess.CompletedProcess(cmd, 1, "", "error: stop here")

    monkeypatch.setattr(emulate_build, "run_command", fake_run)
    build = emulate_build.FirmwareBuild("cortex-m7", tmp_path, tmp_path, "/tflm", None,
                                        np.zeros((1, 4), np.int8), 1.0, 1.0, "speed")
    with pytest.raises(UserError, match="build failed"):
        build.run(tmp_path / "out")
    assert seen["FIRMWARE_PROFILE"] == "speed"
    product = tmp_path / "driver" / "product_main.cc"
    assert seen["PRODUCT_MAIN_SRC"] == str(product)
    assert product.read_text() == emulate_build.PRODUCT_CC.read_text()
