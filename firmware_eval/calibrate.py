"""Measure the persistent bytes each op type requests in TFLM (``OP_DATA`` in :mod:`arena`).

``python -m tinyexport.firmware_eval.calibrate MODEL.tflite`` cuts the model into single-op models
(:func:`tinyexport.tflite_graph.writer.single_op_models`), runs each in the TFLM interpreter (child process) and
prints, per op, the "Persistent buffer data" bytes minus the I/O pointer arrays every model has and
minus the per-channel multiplier/shift arrays. Ops whose Prepare adds other persistent buffers
(BATCH_MATMUL, the CreateWritableTensorDimsWithCopy ops) include them; arena.persistent_buffers
models those separately. These are the ``OpData`` struct sizes of the x86-64
reference-kernel build; rerun when the tflite-micro version changes and update ``arena.OP_DATA``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tinyexport.firmware_eval.arena import per_channel_bytes
from tinyexport.tflite_graph.reader import parse_graph
from tinyexport.tflite_graph.writer import single_op_models

_CHILD = r"""
import sys
from tflite_micro.python.tflite_micro import runtime
for p in sys.argv[1:]:
    sys.stderr.write("MODEL %s\n" % p); sys.stderr.flush()
    runtime.Interpreter.from_file(p, arena_size=1 << 24).print_allocations()
"""
_PERSIST = re.compile(r"'Persistent buffer data' used \d+ bytes with alignment overhead "
                      r"\(requested (\d+) bytes")


def measure_op_data(data: bytes) -> list[tuple[str, int]]:
    """(opcode, OpData bytes) for each operator of the model."""
    graph = parse_graph(data)
    models = single_op_models(data)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, (_, blob) in enumerate(models):
            paths.append(Path(tmp) / f"{k}.tflite")
            paths[-1].write_bytes(blob)
        proc = subprocess.run([sys.executable, "-c", _CHILD, *map(str, paths)],
                              capture_output=True, text=True, timeout=600)
    chunks = proc.stderr.split("MODEL ")[1:]
    out = []
    for (name, blob), op, chunk in zip(models, graph.ops, chunks, strict=False):
        found = _PERSIST.findall(chunk)
        if found:
            single = parse_graph(blob)
            # Every model also requests the interpreter's input/output TfLiteTensor* arrays (8 B
            # each, micro_interpreter.cc). A flat 16 B here charged a 2-input op's second pointer
            # to its OpData (ADD/SUB/MUL/CONCATENATION read 8 B high before 2026-11).
            io_arrays = 8 * (len(single.inputs) + len(single.outputs))
            out.append((name, int(found[-1]) - io_arrays - per_channel_bytes(graph, op)))
    return out


def main(argv: list[str] | None = None) -> int:
    for path in argv if argv is not None else sys.argv[1:]:
        for name, size in measure_op_data(Path(path).read_bytes()):
            print(f"{name:24s} {size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
