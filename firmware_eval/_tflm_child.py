"""Child-process side of :mod:`tinyexport.firmware_eval.tflm_runner` (never imported by the parent).

Usage: ``python -m tinyexport.firmware_eval._tflm_child REQUEST.json``. The request names a mode:

* ``tflm``   - build the TFLM interpreter, invoke it on every input, save the outputs, then call
  ``print_allocations()``; its C-level stderr is read by the parent (docs/tflm_memory.md §9.1).
* ``bisect`` - smallest ``arena_size`` for which construct + invoke reproduces ``expected``
  (docs/tflm_memory.md §9.2); progress is written after every try, so a crash still leaves a result.
* ``litert`` - LiteRT with ``BUILTIN_REF`` reference kernels (docs/toolchain.md §8), the golden.
* ``verify`` - LiteRT's flatbuffer verifier (``tflite::Verify`` in ``Interpreter(model_content)``)
  and ``allocate_tensors`` (every op's Prepare, reference kernels) on each model of a list; one
  JSON line per model is appended to the results file as it is done, so a model that kills the
  process is the first one without a line.
* ``localize`` - both interpreters keep every tensor (TFLM ``kPreserveAllTensors``, LiteRT
  ``experimental_preserve_all_tensors``); the op outputs are compared in execution order and the
  first differing one is written out (where a TFLM / LiteRT mismatch starts).
* ``op_crcs`` - TFLM keeping every tensor: the CRC-32 of each op's output, for the emulated
  firmware's op-by-op comparison (``emulate.localize``).
"""

from __future__ import annotations

import json
import sys
import zlib

import numpy as np

from tinyexport.tflite_graph.interpreter import make_interpreter
from tinyexport.tflite_graph.reader import read_graph


def _tflm(model: bytes, arena_size: int | None):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena_size)


def _io(model_path: str) -> tuple[list[tuple[tuple[int, ...], str]], int]:
    """(shape, dtype) of every model input and the number of outputs (subgraph order)."""
    graph = read_graph(model_path)
    return ([(graph.tensors[i].shape, graph.tensors[i].dtype) for i in graph.inputs],
            len(graph.outputs))


def _row_inputs(x: np.ndarray, specs) -> list[np.ndarray]:
    """Input 0 is the caller's row; further inputs of a multi-input model get int8 noise seeded
    by the row's bytes, so TFLM, LiteRT and every bisection try see the same values."""
    arrays = [x[None]]
    seed = zlib.crc32(np.ascontiguousarray(x).tobytes())
    for k, (shape, dtype) in enumerate(specs[1:], start=1):
        rng = np.random.default_rng([seed, k])
        arrays.append(rng.integers(-128, 128, shape, dtype=np.int8).astype(dtype))
    return arrays


def _invoke_all(interp, inputs: np.ndarray, set_input, invoke, get_output, io) -> np.ndarray:
    """Run every row; a row's result is all outputs flattened and concatenated (output 0 first)."""
    specs, n_out = io
    outs = []
    for x in inputs:
        for k, arr in enumerate(_row_inputs(x, specs)):
            set_input(arr, k)
        invoke()
        outs.append(np.concatenate([np.array(get_output(k)).reshape(-1) for k in range(n_out)]))
    return np.stack(outs)


def run_tflm(req: dict) -> None:
    model = open(req["model"], "rb").read()
    inputs = np.load(req["inputs"])
    interp = _tflm(model, req.get("arena_size"))
    outs = _invoke_all(interp, inputs, interp.set_input, interp.invoke, interp.get_output,
                       _io(req["model"]))
    np.save(req["outputs"], outs)
    sys.stderr.flush()
    interp.print_allocations()


def _works(model: bytes, size: int, x: np.ndarray, expected: np.ndarray, io) -> bool:
    try:
        interp = _tflm(model, size)
        got = _invoke_all(interp, x, interp.set_input, interp.invoke, interp.get_output, io)
        return bool(np.array_equal(got[0], expected))
    except (RuntimeError, ValueError):
        return False


def run_bisect(req: dict) -> None:
    """Resumable: ``lo``/``hi`` come from the request; before each try the size is written to the
    progress file, so when a try kills the process the parent counts it as a failure and resumes."""
    model = open(req["model"], "rb").read()
    x = np.load(req["inputs"])[:1]
    expected = np.load(req["expected"])[0]
    io = _io(req["model"])
    prog = {"lo": req["lo"], "hi": req["hi"], "tries": req["tries"], "trying": None}
    if prog["hi"] is None:  # find a working size, doubling from ``start``
        size = int(req["start"])
        while size <= req["max"]:
            _write(req["progress"], dict(prog, trying=size))
            prog["tries"] += 1
            if _works(model, size, x, expected, io):
                prog["hi"] = size
                break
            prog["lo"], size = size, size * 2
        if prog["hi"] is None:
            _write(req["progress"], dict(prog, trying=None, done=True))
            return
    while prog["hi"] - prog["lo"] > 1:
        mid = (prog["lo"] + prog["hi"]) // 2
        _write(req["progress"], dict(prog, trying=mid))
        prog["tries"] += 1
        if _works(model, mid, x, expected, io):
            prog["hi"] = mid
        else:
            prog["lo"] = mid
    _write(req["progress"], dict(prog, trying=None, done=True))


def _model_bytes(req: dict) -> bytes:
    with open(req["model"], "rb") as f:
        return f.read()


def run_litert(req: dict) -> None:
    interp = make_interpreter(_model_bytes(req), reference_kernels=True)
    # Tensor indices in subgraph order, as TFLM's set_input(x, k) / get_output(k) use them (the
    # LiteRT details lists follow the signature, which may order I/O by name).
    i_idx, o_idx = _subgraph_io(req["model"])
    outs = _invoke_all(interp, np.load(req["inputs"]), lambda x, k: interp.set_tensor(i_idx[k], x),
                       interp.invoke, lambda k: interp.get_tensor(o_idx[k]), _io(req["model"]))
    np.save(req["outputs"], outs)


def _subgraph_io(model_path: str) -> tuple[list[int], list[int]]:
    graph = read_graph(model_path)
    return list(graph.inputs), list(graph.outputs)


def run_localize(req: dict) -> None:
    from tflite_micro.python.tflite_micro import runtime

    x = np.load(req["inputs"])[:1]
    arrays = _row_inputs(x[0], _io(req["model"])[0])
    in_idx = _subgraph_io(req["model"])[0]
    lit = make_interpreter(_model_bytes(req), reference_kernels=True, preserve_all_tensors=True)
    for k, arr in enumerate(arrays):
        lit.set_tensor(in_idx[k], arr)
    lit.invoke()
    tflm = runtime.Interpreter.from_file(
        req["model"], arena_size=req["arena_size"],
        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    for k, arr in enumerate(arrays):
        tflm.set_input(arr, k)
    tflm.invoke()
    found = None
    for op_index, tensor in req["op_outputs"]:
        ref = lit.get_tensor(tensor).astype(np.int64).ravel()
        got = np.asarray(tflm.GetTensor(tensor, 0)["tensor_data"]).astype(np.int64).ravel()
        diff = np.abs(ref - got)
        if diff.size and diff.max() > 0:
            found = {"op": op_index, "tensor": tensor, "mismatches": int((diff > 0).sum()),
                     "max_abs_diff": int(diff.max()), "values": int(diff.size)}
            break
    _write(req["result"], {"first_difference": found})


def run_verify(req: dict) -> None:
    with open(req["results"], "a") as out:
        for path in req["models"]:
            try:
                with open(path, "rb") as f:
                    make_interpreter(f.read(), reference_kernels=True)
                problem = None
            except ImportError as exc:
                problem, path = f"unavailable: {exc}", None
            except (RuntimeError, ValueError) as exc:
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                problem = "; ".join(lines)[:400] or type(exc).__name__
            out.write(json.dumps({"model": path, "problem": problem}) + "\n")
            out.flush()
            if path is None:
                return


def _write(path: str, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)


def run_op_crcs(req: dict) -> None:
    """TFLM keeping every tensor, the input rows in order: the CRC-32 and byte count of each
    listed op output after the last (what the emulated firmware prints in its localize build)."""
    from tflite_micro.python.tflite_micro import runtime

    rows = np.load(req["inputs"])
    tflm = runtime.Interpreter.from_file(
        req["model"], arena_size=req["arena_size"],
        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    specs = _io(req["model"])[0]
    for x in rows:  # in order: variable tensors carry state from one row to the next
        for k, arr in enumerate(_row_inputs(x, specs)):
            tflm.set_input(arr, k)
        tflm.invoke()
    crcs = []
    for op_index, tensor in req["op_outputs"]:
        data = np.ascontiguousarray(tflm.GetTensor(tensor, 0)["tensor_data"]).tobytes()
        crcs.append([op_index, zlib.crc32(data), len(data)])
    _write(req["result"], {"op_crcs": crcs})


def main(argv: list[str]) -> int:
    req = json.load(open(argv[0]))
    {"tflm": run_tflm, "bisect": run_bisect, "litert": run_litert,
     "localize": run_localize, "verify": run_verify, "op_crcs": run_op_crcs}[req["mode"]](req)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
