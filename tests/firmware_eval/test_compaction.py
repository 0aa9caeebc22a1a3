"""Model compaction as a verified firmware step (``evaluate.compact_verified`` and
``evaluate_firmware(compact=True)``): the portable file replaces the model, the TFLM-only one goes
into the bundle and the flash figures, and each is kept only when its outputs are identical."""

from __future__ import annotations

import re
import shutil

from tinyexport.boards import BOARDS
from tinyexport.firmware_eval.compaction_report import compaction_lines
from tinyexport.firmware_eval.evaluate import COMPACTION_INPUTS, evaluate_firmware
from tinyexport.tflite_graph.reader import parse_graph


def _model_array_bytes(bundle) -> int:
    text = (bundle / "model_data.cc").read_text()
    return len(re.findall(r"0x[0-9a-fA-F]{2}", text))


def test_compaction_in_the_firmware_stage(models, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(models["int8"], model)
    original = model.read_bytes()
    result = evaluate_firmware(model, tmp_path / "fw", board=BOARDS.get("stm32f746"),
                               compact=True)
    record = result.compaction
    assert record.portable.applied and record.tflm.applied
    assert record.portable.verification.inputs == COMPACTION_INPUTS  # topped up
    assert record.portable.verification.litert_reference_equal_to_original
    portable, tflm_only = model.read_bytes(), (tmp_path / "m_tflm.tflite").read_bytes()
    assert len(tflm_only) < len(portable) < len(original)
    assert record.firmware_model_bytes == len(tflm_only) == _model_array_bytes(tmp_path / "fw")
    assert result.model_bytes == len(portable)
    # the verdict's flash counts the model the firmware links, not the file on disk
    plain = evaluate_firmware(tmp_path / "m.tflite", tmp_path / "fw2",
                              board=BOARDS.get("stm32f746"))
    assert plain.board.flash_needed - result.board.flash_needed == len(portable) - len(tflm_only)
    lines = compaction_lines(record)
    assert "identical" in lines[0] and "m_tflm.tflite" in lines[0] and "weight zero points" in \
        lines[1]


def test_compaction_is_off_unless_asked(models, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(models["int8"], model)
    result = evaluate_firmware(model, tmp_path / "fw")
    assert result.compaction is None and model.read_bytes() == models["int8"].read_bytes()
    assert parse_graph(model.read_bytes()).model_bytes == result.model_bytes
