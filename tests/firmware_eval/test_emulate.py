"""firmware_eval.emulate: the bundle on an emulated Cortex-M4 / M7 (QEMU) with CMSIS-NN kernels.

The parsing tests always run. The end-to-end test needs arm-none-eabi-gcc, qemu-system-arm and
the pinned sources (TFLM_SRC, THIRD_PARTY_SRC; see scripts/build_bundle_cortex_m.sh); without them
it is skipped at collection (PATH and environment look-ups only). The first run builds the TFLM
library per core (minutes on 2 cores). Run with
``TFLM_SRC=... THIRD_PARTY_SRC=... .venv/bin/pytest -m slow tests/firmware_eval/test_emulate.py``.
"""

import os

import numpy as np
import pytest

from tinyexport.errors import UserError
from tinyexport.firmware_eval import emulate as em

MAP = """\
Linker script and memory map

.text           0x00000000    0x1000
 *(.vectors)
 .vectors       0x00000000       0x40 /w/obj/startup.o
 .text._ZN6tflite16MicroInterpreter6InvokeEv
                0x00000040      0x200 /g/lib/libtensorflow-microlite.a(micro_interpreter.o)
 .text.arm_convolve_s8
                0x00000240      0x300 /g/lib/libtensorflow-microlite.a(arm_convolve_s8.o)
 .text._ZN6tflite12_GLOBAL__N_14EvalEP13TfLiteContextP10TfLiteNode
                0x00000540       0x80 /g/lib/libtensorflow-microlite.a(conv.o)
 .text.memcpy   0x000005c0       0x20 /usr/lib/arm-none-eabi/lib/libc.a(libc_a-memcpy.o)
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
    flash, ram = em.flash_split(MAP, cats)
    assert flash["model"] == 0x1800
    assert flash["tflm_framework"] == 0x200
    assert flash["kernels"] == 0x380 and flash["cmsis_nn"] == 0x300
    assert flash["runtime"] == 0x40 + 0x20 + 0x10  # startup, memcpy, .data of libc
    assert flash["driver"] == 0x90 + 0x8 and flash["test_inputs"] == 0x300
    assert flash["padding"] == 0x8  # and the merged string sharing 0x2800 counted once
    assert flash["total"] == 0x1800 + 0x200 + 0x380 + 0x70 + 0x98 + 0x300 + 0x8
    assert flash["total_without_test_inputs"] == flash["total"] - 0x300
    assert ram == {"data": 0x10, "bss": 0x40, "bss_emulator_arena": 0x800}


def test_parse_output():
    found = em.parse_output("x\nemu calib_ticks: 50000\nemu arena_min: 1234\n"
                            "emu invoke_ticks 0: 77\nemu output 0: 1 -2 3\nemu done\n")
    assert found["calib_ticks"] == "50000" and found["arena_min"] == "1234"
    assert found["invoke_ticks"] == {0: ["77"]} and found["output"] == {0: ["1", "-2", "3"]}
    assert found["done"] == ""


def test_model_bytes_and_inputs_header(tmp_path):
    cc = tmp_path / "model_data.cc"
    cc.write_text('#include "model_data.h"\nalignas(16) const uint8_t g_model_data[3] = {\n'
                  "  0x1c, 0x00, 0xff\n};\n")
    assert em.model_bytes(cc) == b"\x1c\x00\xff"
    h = em.inputs_header(np.array([[[1, -2]], [[3, 4]]], np.int8))
    assert "kEmuNumInputs = 2" in h and "kEmuInputBytes = 2" in h and "{1, -2}" in h


def test_missing_tools_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="arm-none-eabi-gcc.*gcc-arm-none-eabi"):
        em.emulate(tmp_path / "m.tflite")
    with pytest.raises(UserError, match="core must be"):
        em.emulate(tmp_path / "m.tflite", core="cortex-m0")


def test_sources_problem_names_the_variable(tmp_path):
    assert "TFLM_SRC" in em.sources_problem(None, None)
    (tmp_path / "tensorflow/lite/micro").mkdir(parents=True)
    (tmp_path / "tensorflow/lite/micro/micro_interpreter.h").write_text("")
    assert "FLATBUFFERS_SRC" in em.sources_problem(str(tmp_path), None)


_SKIP = (f"tools missing: {em.missing_tools()}" if em.missing_tools() else
         em.sources_problem(os.environ.get("TFLM_SRC"), os.environ.get("THIRD_PARTY_SRC")))


@pytest.mark.slow
@pytest.mark.skipif(_SKIP is not None, reason=f"no Cortex-M emulation: {_SKIP}")
@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m7"])
def test_emulated_outputs_match_python_tflm(models, tmp_path, core):
    res = em.emulate(models["int8"], core, work=tmp_path, n_inputs=3)
    assert res.bit_exact["equal"], res.bit_exact
    assert res.outputs.shape == (3, 10)
    assert 0 < res.arena_used <= res.arena_min <= 2 * res.bundle_arena_size + 65536
    model_size = models["int8"].stat().st_size
    assert model_size <= res.flash["model"] <= model_size + 64
    assert res.flash["kernels"] > 0 and res.flash["tflm_framework"] > 0
    assert all(n > 1000 for n in res.instructions_per_inference)
    # Same inputs' work: the counts of different inputs agree within a few percent.
    assert max(res.instructions_per_inference) < 1.1 * min(res.instructions_per_inference)
