"""How a checkpoint's tensors differ from a network's: the one-line summaries every strict loader raises."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

SHOW_KEYS = 3  # keys quoted in an error message


def counted(*groups: tuple[str, list[str]]) -> list[str]:
    """``"N <label> (e.g. a, b, c)"`` for each non-empty (label, keys) group, in order."""
    return [f"{len(keys)} {label} (e.g. {', '.join(keys[:SHOW_KEYS])})" for label, keys in groups if keys]


def key_problems(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
                 name: Callable[[str], str] = str) -> list[str]:
    """The missing, unexpected and wrong-shape keys of ``state`` against ``expected`` (name → shape), summarised
    by ``counted``; [] when it fits. ``name``: how a key is shown (e.g. with its file's prefix)."""
    missing = [name(k) for k in expected if k not in state]
    unexpected = [name(k) for k in state if k not in expected]
    wrong = [f"{name(k)} {list(v.shape)} instead of {list(expected[k])}"
             for k, v in state.items() if k in expected and tuple(v.shape) != expected[k]]
    return counted(("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))


def with_batchnorm_counters(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
                            ) -> dict[str, torch.Tensor]:
    """``state`` with BatchNorm's ``num_batches_tracked`` counters (unused in eval mode) filled in with 0 where a
    converted file dropped them."""
    filled = dict(state)
    for key in expected:
        if key not in filled and key.endswith(".num_batches_tracked"):
            filled[key] = torch.tensor(0, dtype=torch.long)
    return filled
