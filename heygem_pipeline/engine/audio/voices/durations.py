"""Exact phoneme durations from a Piper voice that only returns audio: its ``w_ceil`` tensor made an output.

Inside every Piper (VITS) network the duration predictor's frames per phoneme id, rounded up, is one tensor,
``w_ceil`` ([1, 1, N] frames of ``hop_length`` samples): the length of the audio is its sum and the alignment path
is built from its running sum. piper-tts exposes it by adding that tensor as a second graph output; this module
does the same in memory when a voice is loaded (the file on disk is never changed). It is found by name (a tensor
called ``w_ceil``) or by its place in the graph (the one ``Ceil`` node whose output feeds a ``CumSum``, as
exported voices name it ``/Ceil_output_0``). Adding an output changes nothing else: the audio stays the same to
the byte (checked on a real voice by the tests).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

CEIL_NAME = "w_ceil"


def durations_tensor(graph: onnx.GraphProto) -> str | None:
    """The name of ``graph``'s per-phoneme frames tensor (``w_ceil``), or None when it has none or several."""
    produced = [name for node in graph.node for name in node.output]
    named = [name for name in produced if name == CEIL_NAME or name.endswith("/" + CEIL_NAME)]
    if len(named) == 1:
        return named[0]
    cumsum_inputs = {node.input[0] for node in graph.node if node.op_type == "CumSum" and node.input}
    ceils = [node.output[0] for node in graph.node
             if node.op_type == "Ceil" and node.output and node.output[0] in cumsum_inputs]
    return ceils[0] if len(ceils) == 1 else None


def with_durations_output(model: Path) -> tuple[bytes, str] | None:
    """The serialized model with its ``w_ceil`` tensor as a second output, and that output's name.

    None when there is nothing to add: the file is not an ONNX model ``onnx`` can read (onnxruntime then names the
    problem), it already has more than one output, or no ``w_ceil`` tensor can be told apart.
    """
    try:
        proto = onnx.load(str(model))
    except Exception:  # protobuf's DecodeError and onnx's own errors for a file that is not a model
        return None
    graph = proto.graph
    if len(graph.output) != 1:
        return None
    name = durations_tensor(graph)
    if name is None or name in {output.name for output in graph.output}:
        return None
    known = next((info for info in graph.value_info if info.name == name), None)
    if known is not None and known.type.tensor_type.elem_type:
        output = onnx.ValueInfoProto()
        output.CopyFrom(known)
    else:
        output = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
    graph.output.append(output)
    return proto.SerializeToString(), name
