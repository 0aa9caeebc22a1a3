"""Child processes that die with their parent.

onnx2tf and the TFLite Micro interpreter run in child processes (STYLE habit 11). If the parent is
killed (SIGKILL, an OOM kill, a closed terminal), a plain child keeps running as an orphan and
keeps writing into a folder nobody will rename. On Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``
asks the kernel to kill the child when its parent dies; elsewhere the children are still bounded
by their timeouts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` of a child: SIGKILL it when the parent dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def run_child(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose child dies with this process."""
    return subprocess.run(cmd, preexec_fn=die_with_parent, **kwargs)  # noqa: PLW1509
