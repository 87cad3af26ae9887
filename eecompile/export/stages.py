"""Per-stage torch modules for export: a fused stage (segment + its exit head, two outputs),
or the segment and the head alone. Also MAC and parameter counts per stage."""

from __future__ import annotations

import torch
from torch import nn

from eecompile.model.contract import EarlyExitModel, as_state


class StageGraph(nn.Module):
    """``kind``: "fused" -> (*next_state, logits) (the last stage: logits only);
    "segment" -> next_state; "head" -> logits (input: the segment's state)."""

    def __init__(self, model: EarlyExitModel, stage_idx: int, kind: str) -> None:
        super().__init__()
        self.segment = model.segments[stage_idx]
        self.head = model.heads[stage_idx]
        self.stage_idx = stage_idx
        self.kind = kind
        self.is_last = stage_idx == model.n_stages - 1

    def forward(self, *state: torch.Tensor):
        if self.kind == "head":
            return self.head(*state)
        new_state = as_state(self.segment(*state), f"segment {self.stage_idx}", self.stage_idx)
        if self.kind == "segment":
            return new_state if len(new_state) > 1 else new_state[0]
        logits = self.head(*new_state)
        return logits if self.is_last else (*new_state, logits)


def count_macs_params(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    """Multiply-accumulates of Conv/Linear layers for one sample, and the parameter count."""
    macs = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs += int(out[0].numel()) * k

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal macs
        macs += int(out[0].numel()) * m.in_features

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            module(*(t[:1] for t in inputs))
    finally:
        for h in hooks:
            h.remove()
    return macs, sum(p.numel() for p in module.parameters())
