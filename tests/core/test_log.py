"""The CLIs' log formatter (core/log.py): names from files are printed escaped (issue 23, class 6)."""

import logging

import numpy as np
import pytest

from tinyexport.log import PrintableFormatter

HOSTILE = "bomb\n stm32f746 fits\x1b]0;title\x07.png"


def _render(msg, *args) -> str:
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, msg, args or None, None)
    return PrintableFormatter().format(record)


def test_an_argument_from_a_file_cannot_start_a_line_or_reach_the_terminal():
    text = _render("skipping image %s: too big", HOSTILE)
    assert text == "skipping image bomb\\x0a stm32f746 fits\\x1b]0;title\\x07.png: too big"


def test_control_characters_in_the_message_itself_are_escaped_but_its_line_breaks_stay():
    text = _render(f"table\nrow {HOSTILE}\r")
    assert text.splitlines() == ["table", "row bomb", " stm32f746 fits\\x1b]0;title\\x07.png\\x0d"]
    assert not any(c in text for c in "\x1b\x07\r")


@pytest.mark.parametrize("msg, args, expected", [
    ("%d images, lr %.3g", (3, 0.5), "3 images, lr 0.5"),
    ("top-1 %.1f%%", (np.float32(61.25),), "top-1 61.2%"),
    ("%d", (np.bool_(True),), "1"),  # not a Number: formatted as given
    ("%(name)s", ({"name": "a\nb"},), "a\\x0ab"),
])
def test_numbers_keep_their_formats(msg, args, expected):
    assert _render(msg, *args) == expected


def test_a_record_handed_to_other_handlers_is_not_changed():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "%s", (HOSTILE,), None)
    PrintableFormatter().format(record)
    assert record.args == (HOSTILE,)
