"""A LiteRT interpreter on ``.tflite`` bytes: what runs a model on the host.

The file itself (ops, tensors, quantization) is read with :mod:`tinyexport.tflite_graph.reader`;
the interpreter is used through its public API only (invoke, tensor details, ``get_tensor``).
``ai_edge_litert`` is imported when an interpreter is made, never at module import.
"""

from __future__ import annotations

from tinyexport.tflite_graph.compact import litert_form


def make_interpreter(model_bytes: bytes, reference_kernels: bool = False,
                     preserve_all_tensors: bool = False, delegates: bool = True):
    """A LiteRT interpreter on ``model_bytes``, tensors allocated. A TFLM-only model (one zero
    point for N per-channel scales, docs/tflm_memory.md §13) is loaded in its LiteRT form
    (:func:`tinyexport.tflite_graph.compact.litert_form`): same arithmetic, which LiteRT accepts.

    Args:
        reference_kernels: LiteRT's ``BUILTIN_REF`` kernels, TFLM's arithmetic (docs/toolchain.md §8).
        preserve_all_tensors: keep every intermediate tensor readable after ``invoke``.
        delegates: without them the graph is the file's own, with no XNNPACK DELEGATE node.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if reference_kernels:
        resolver = OpResolverType.BUILTIN_REF
    else:
        resolver = (OpResolverType.AUTO if delegates
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = Interpreter(model_content=litert_form(model_bytes), experimental_op_resolver_type=resolver,
                              experimental_preserve_all_tensors=preserve_all_tensors)
    interpreter.allocate_tensors()
    return interpreter
