"""Stand-in voice models built with onnx.helper: a Piper voice's exact inputs and outputs, no weights.

Each phoneme id lasts ``FRAMES[id]`` frames of ``HOP`` samples (times the length scale, rounded up, as Piper's
``w_ceil``) and sounds as a sine tone of ``FREQS[id]`` Hz. ``scales[0]`` (noise) adds Gaussian noise, so a run
with noise > 0 differs from the last one, as a real voice's does. With ``durations=True`` the model also returns
each id's frames, the way a Piper export with its ``w_ceil`` output does. As in a real Piper network the rounded-up
frames tensor feeds a ``CumSum`` (the alignment path) and a ``ReduceSum`` (the length); ``ceil`` names it
(``"/Ceil_output_0"`` as in the exported voices), or with None it is computed without a ``Ceil`` node (-floor(-x)),
so that no durations tensor can be found; ``decoy`` adds a tensor called ``w_ceil`` that is not the durations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RATE = 16000
HOP = 256
PAD, BOS, EOS, SPACE = 0, 1, 2, 3
# Every symbol espeak-ng's en-us IPA uses in the tests, and Piper's marks.
SYMBOLS = " ,.;:!?abcdefghijklmnopqrstuvwxyzæçðøŋœɐɑɒɔəɘɚɛɜɝɞɟɡɪɬɯɲɹɾʃʊʌʒʔˈˌːθᵻ"
VOCAB = 4 + len(SYMBOLS)
FRAMES = np.array([2, 3, 4] + [1] * (VOCAB - 3), dtype=np.float32)  # pad 2, bos 3, eos 4, every phoneme 1
FREQS = np.array([0.0, 0.0, 0.0] + [200.0 + 20.0 * i for i in range(VOCAB - 3)], dtype=np.float32)


def phoneme_id_map(leave_out: str = "") -> dict[str, list[int]]:
    id_map = {"_": [PAD], "^": [BOS], "$": [EOS]}
    for index, symbol in enumerate(SYMBOLS):
        if symbol not in leave_out:
            id_map[symbol] = [SPACE + index]
    return id_map


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _ceil_nodes(name: str | None) -> tuple[list[onnx.NodeProto], str]:
    """frames_scaled rounded up: by a Ceil node whose output is called ``name``, or without Ceil when ``name`` is
    None; and the name of the rounded tensor."""
    if name is None:
        return [helper.make_node("Neg", ["frames_scaled"], ["negated"]),
                helper.make_node("Floor", ["negated"], ["floored"]),
                helper.make_node("Neg", ["floored"], ["frames_up"])], "frames_up"
    return [helper.make_node("Ceil", ["frames_scaled"], [name])], name


def piper_standin(dest: Path, *, durations: bool = False, with_json: bool = True, leave_out: str = "",
                  speakers: int = 1, ceil: str | None = "w_ceil", decoy: bool = False) -> Path:
    """Write a stand-in Piper voice ``dest`` (.onnx) and, unless told not to, its ``.onnx.json``."""
    rounding, w_ceil = _ceil_nodes(ceil)
    nodes = [
        _const("frames_table", FRAMES), _const("freq_table", FREQS),
        _const("axis0", np.array([0], dtype=np.int64)), _const("axis1", np.array([1], dtype=np.int64)),
        _const("zero", np.array(0, dtype=np.int64)), _const("one", np.array(1, dtype=np.int64)),
        _const("hop", np.array(HOP, dtype=np.int64)), _const("i_noise", np.array(0, dtype=np.int64)),
        _const("i_length", np.array(1, dtype=np.int64)),
        _const("omega", np.array(2 * np.pi / RATE, dtype=np.float32)),
        _const("amp", np.array(0.5, dtype=np.float32)),
        _const("out_shape", np.array([1, 1, -1], dtype=np.int64)),
        helper.make_node("Squeeze", ["input", "axis0"], ["ids"]),
        helper.make_node("Gather", ["frames_table", "ids"], ["frames_raw"]),
        helper.make_node("Gather", ["scales", "i_length"], ["length_scale"]),
        helper.make_node("Mul", ["frames_raw", "length_scale"], ["frames_scaled"]),
        *rounding,
        helper.make_node("CumSum", [w_ceil, "zero"], ["ends_frames"]),
        helper.make_node("ReduceSum", [w_ceil], ["total_frames"], keepdims=0),
        helper.make_node("Cast", ["ends_frames"], ["ends_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["ends_i", "hop"], ["ends"]),
        helper.make_node("Cast", ["total_frames"], ["total_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["total_i", "hop"], ["total"]),
        helper.make_node("Range", ["zero", "total", "one"], ["t"]),
        helper.make_node("Unsqueeze", ["t", "axis1"], ["t_col"]),
        helper.make_node("Unsqueeze", ["ends", "axis0"], ["ends_row"]),
        helper.make_node("GreaterOrEqual", ["t_col", "ends_row"], ["past"]),
        helper.make_node("Cast", ["past"], ["past_i"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["past_i", "axis1"], ["which"], keepdims=0),
        helper.make_node("Gather", ["ids", "which"], ["id_at"]),
        helper.make_node("Gather", ["freq_table", "id_at"], ["freq"]),
        helper.make_node("Cast", ["t"], ["t_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["t_f", "freq"], ["cycles"]),
        helper.make_node("Mul", ["cycles", "omega"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["tone"]),
        helper.make_node("Mul", ["tone", "amp"], ["clean"]),
        helper.make_node("RandomNormalLike", ["clean"], ["gauss"], dtype=TensorProto.FLOAT),
        helper.make_node("Gather", ["scales", "i_noise"], ["noise_scale"]),
        helper.make_node("Mul", ["gauss", "noise_scale"], ["noise"]),
        helper.make_node("Add", ["clean", "noise"], ["audio"]),
        helper.make_node("Reshape", ["audio", "out_shape"], ["output"]),
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
              helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "samples"])]
    if speakers > 1:
        inputs.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))  # accepted, not used
    if durations:
        nodes.append(helper.make_node("Reshape", [w_ceil, "out_shape"], ["durations"]))
        outputs.append(helper.make_tensor_value_info("durations", TensorProto.FLOAT, [1, 1, "phonemes"]))
    if decoy:  # a tensor called w_ceil that is not the durations (one value per symbol of the vocabulary)
        nodes.append(helper.make_node("Identity", ["frames_table"], ["w_ceil"]))
    graph = helper.make_graph(nodes, "piper_standin", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    if with_json:
        config = {"audio": {"sample_rate": RATE, "quality": "medium"}, "espeak": {"voice": "en-us"},
                  "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
                  "phoneme_type": "espeak", "phoneme_id_map": phoneme_id_map(leave_out), "num_symbols": VOCAB,
                  "num_speakers": speakers,
                  "speaker_id_map": {f"speaker{i}": i for i in range(speakers)} if speakers > 1 else {}}
        dest.with_name(dest.name + ".json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return dest


def kokoro_like(dest: Path) -> Path:
    """An ONNX model with Kokoro's inputs (tokens, style, speed): not a Piper voice."""
    nodes = [helper.make_node("Mul", ["style", "speed"], ["audio"])]
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "n"]),
              helper.make_tensor_value_info("style", TensorProto.FLOAT, [1, 256]),
              helper.make_tensor_value_info("speed", TensorProto.FLOAT, [1])]
    outputs = [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 256])]
    model = helper.make_model(helper.make_graph(nodes, "kokoro_like", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(dest))
    return dest


# A stand-in Kokoro model: token id i lasts KOKORO_FRAMES[i] frames of KOKORO_HOP samples (divided by the speed and
# rounded up) and sounds as a tone of KOKORO_FREQS[i] Hz (the pad, id 0: silence), offset by the style vector's first
# value, so a chunk's first sample tells which style row it was given.
KOKORO_RATE = 24000
KOKORO_HOP = 240  # 10 ms
KOKORO_IDS = 178
KOKORO_FRAMES = np.array([2] + [1] * (KOKORO_IDS - 1), dtype=np.float32)
KOKORO_FREQS = np.array([0.0] + [200.0 + 10.0 * i for i in range(1, KOKORO_IDS)], dtype=np.float32)


def kokoro_standin(dest: Path, *, durations: bool = False) -> Path:
    """Write a stand-in Kokoro v1.0 model ``dest``: inputs tokens, style, speed; output audio (and durations)."""
    nodes = [
        _const("frames_table", KOKORO_FRAMES), _const("freq_table", KOKORO_FREQS),
        _const("axis0", np.array([0], dtype=np.int64)), _const("axis1", np.array([1], dtype=np.int64)),
        _const("zero", np.array(0, dtype=np.int64)), _const("one", np.array(1, dtype=np.int64)),
        _const("hop", np.array(KOKORO_HOP, dtype=np.int64)), _const("flat", np.array([-1], dtype=np.int64)),
        _const("omega", np.array(2 * np.pi / KOKORO_RATE, dtype=np.float32)),
        _const("amp", np.array(0.5, dtype=np.float32)),
        helper.make_node("Squeeze", ["tokens", "axis0"], ["ids"]),
        helper.make_node("Gather", ["frames_table", "ids"], ["frames_raw"]),
        helper.make_node("Div", ["frames_raw", "speed"], ["frames_scaled"]),
        helper.make_node("Ceil", ["frames_scaled"], ["frames_ceil"]),
        helper.make_node("Cast", ["frames_ceil"], ["frames"], to=TensorProto.INT64),
        helper.make_node("Mul", ["frames", "hop"], ["id_samples"]),
        helper.make_node("CumSum", ["id_samples", "zero"], ["ends"]),
        helper.make_node("ReduceSum", ["id_samples"], ["total"], keepdims=0),
        helper.make_node("Range", ["zero", "total", "one"], ["t"]),
        helper.make_node("Unsqueeze", ["t", "axis1"], ["t_col"]),
        helper.make_node("Unsqueeze", ["ends", "axis0"], ["ends_row"]),
        helper.make_node("GreaterOrEqual", ["t_col", "ends_row"], ["past"]),
        helper.make_node("Cast", ["past"], ["past_i"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["past_i", "axis1"], ["which"], keepdims=0),
        helper.make_node("Gather", ["ids", "which"], ["id_at"]),
        helper.make_node("Gather", ["freq_table", "id_at"], ["freq"]),
        helper.make_node("Cast", ["t"], ["t_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["t_f", "freq"], ["cycles"]),
        helper.make_node("Mul", ["cycles", "omega"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["tone"]),
        helper.make_node("Mul", ["tone", "amp"], ["clean"]),
        helper.make_node("Reshape", ["style", "flat"], ["style_flat"]),
        helper.make_node("Gather", ["style_flat", "zero"], ["offset"]),
        helper.make_node("Add", ["clean", "offset"], ["audio"]),
    ]
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "tokens"]),
              helper.make_tensor_value_info("style", TensorProto.FLOAT, [1, 256]),
              helper.make_tensor_value_info("speed", TensorProto.FLOAT, [1])]
    outputs = [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["samples"])]
    if durations:
        outputs.append(helper.make_tensor_value_info("frames", TensorProto.INT64, ["tokens"]))
    graph = helper.make_graph(nodes, "kokoro_standin", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest


def kokoro_voices(dest: Path, speakers: tuple[str, ...] = ("af_test", "bf_test", "zf_test")) -> Path:
    """A voices file as kokoro-onnx ships it (an .npz of [510, 1, 256] tables); row r's first value is (r+1)/10000."""
    table = np.zeros((510, 1, 256), dtype=np.float32)
    table[:, 0, 0] = (np.arange(510, dtype=np.float32) + 1) / 10000
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as handle:  # a .bin name, as voices-v1.0.bin: np.savez would add .npz to a path
        np.savez(handle, **{name: table for name in speakers})
    return dest
