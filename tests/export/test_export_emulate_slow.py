"""``tinyexport --board B --emulate``: the export's C bundle built with TFLM + CMSIS-NN for the
board's core and run in QEMU; the board verdict from the measured flash and SRAM. Needs
arm-none-eabi-gcc, qemu-system-arm and the pinned sources (see firmware_eval/emulate.py);
skipped with the reason otherwise. Run with ``.venv/bin/pytest -m slow``."""

import json

import pytest

from tinyexport.export.cli import main
from tinyexport.firmware_eval.emulate import emulation_problem

_PROBLEM = emulation_problem()


@pytest.mark.slow
@pytest.mark.skipif(_PROBLEM is not None, reason=f"no Cortex-M emulation: {_PROBLEM}")
def test_export_emulated_on_the_board_core(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["--model", "mbv2-tiny", "--resolution", "32", "--num-classes", "10",
                 "--calib-images", "16", "--check-images", "8", "--board", "stm32f412",
                 "--emulate", "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "emulated cortex-m4" in summary and "measured: cortex-m4 in QEMU" in summary
    fw = json.loads((out / "export.json").read_text())["firmware"]
    run = fw["emulation"]["cortex-m4"]
    assert run["bit_exact"]["equal"] and run["bundle_arena_allocates"]
    assert fw["board"]["sram_needed"] == run["sram_bytes"]
    assert fw["board"]["flash_needed"] == run["flash_bytes"]
    # the verdict's flash is the product image's (newlib-nano, no semihosting), below the run
    # image that produced the outputs; the summary says what the harness adds
    assert run["flash_bytes"] == run["flash"]["total"] < run["flash_run_image"]["total"]
    assert "product image" in summary and "run image adds" in summary
    # the calibrated estimate is never below the measured firmware (less the emulator's driver)
    assert fw["board"]["predicted"]["flash_needed"] >= run["flash_bytes"] - run["flash"]["driver"]
    assert (out / "emulation" / "cortex-m4").is_dir()
