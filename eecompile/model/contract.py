"""The multi-exit model contract: how a user's PyTorch model comes into eecompile.

``segments[k]`` maps the state after stage k-1 to the state after stage k (stage 0 takes
the model input); ``heads[k]`` maps that state to class logits; the last head is the
final classifier. A state is one tensor or a tuple of tensors (a transformer passes
hidden states + attention mask). Segments and heads are called as ``m(*state)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from eecompile.core.inputs import InputSpec
from eecompile.errors import ContractError

State = tuple[torch.Tensor, ...]
Shape = tuple[int, ...]

_INPUT_DTYPES = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32}


def as_state(value: torch.Tensor | Sequence[torch.Tensor], what: str, stage_idx: int) -> State:
    """Normalise a segment output to a tuple of tensors, or raise a ContractError naming the stage."""
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(value)
    raise ContractError(
        f"{what} returned {type(value).__name__}, expected a tensor or a tuple of tensors",
        hint="make the segment return its output state as a tensor (or a tuple for multi-tensor states)",
        stage_idx=stage_idx,
    )


class EarlyExitModel(nn.Module):
    """A backbone split into stages, with one exit head after every stage.

    Example:
        >>> model = EarlyExitModel(segments=[seg0, seg1], heads=[head0, head1],
        ...                        input_shape=(1, 28, 28), class_names=[str(i) for i in range(10)])
        >>> logits_per_exit = model(torch.rand(8, 1, 28, 28))
    """

    def __init__(
        self,
        segments: Sequence[nn.Module],
        heads: Sequence[nn.Module],
        input_shape: Shape | Sequence[Shape],
        class_names: Sequence[str] | None = None,
        input_dtype: str | Sequence[str] = "float32",
        name: str = "model",
        input_range: tuple[int, int] | Sequence[tuple[int, int] | None] | None = None,
    ) -> None:
        super().__init__()
        if len(segments) == 0:
            raise ContractError("no segments given", hint="pass at least one backbone segment")
        if len(segments) != len(heads):
            raise ContractError(
                f"{len(segments)} segments but {len(heads)} heads",
                hint="give exactly one exit head per segment (the last head is the final classifier)",
            )
        for k, module in enumerate(list(segments) + list(heads)):
            if not isinstance(module, nn.Module):
                kind = "segment" if k < len(segments) else "head"
                idx = k if k < len(segments) else k - len(segments)
                raise ContractError(f"{kind} is a {type(module).__name__}, not an nn.Module",
                                    hint="wrap plain functions in an nn.Module", stage_idx=idx)
        self.segments = nn.ModuleList(segments)
        self.heads = nn.ModuleList(heads)
        shapes = [input_shape] if isinstance(input_shape[0], int) else list(input_shape)
        self.input_shapes: list[Shape] = [tuple(int(d) for d in s) for s in shapes]  # type: ignore[union-attr]
        n_in = len(self.input_shapes)
        dtypes = [input_dtype] * n_in if isinstance(input_dtype, str) else list(input_dtype)
        if len(dtypes) != n_in:
            raise ContractError(f"{len(dtypes)} input dtypes for {n_in} inputs",
                                hint="give one input_dtype per input_shape (or one for all)")
        for dt in dtypes:
            if dt not in _INPUT_DTYPES:
                raise ContractError(f"input_dtype {dt!r} is not supported", hint=f"use one of {sorted(_INPUT_DTYPES)}")
        self.input_dtypes: list[str] = dtypes
        ranges = ([input_range] + [None] * (n_in - 1) if input_range is None or isinstance(input_range[0], int)
                  else list(input_range))
        if len(ranges) != n_in:
            raise ContractError(f"{len(ranges)} input ranges for {n_in} inputs",
                                hint="give one input_range per input (None where the default applies)")
        self.input_ranges = [self._id_range(i, r) for i, r in enumerate(ranges)]  # type: ignore[arg-type]
        self.input_dtype = dtypes[0]  # the first input's (token ids in a transformer)
        self.input_range = self.input_ranges[0]
        self.name = name
        self.state_shapes: list[list[Shape]] = []
        self.n_classes = 0
        self._check_flow()
        if class_names is None:
            class_names = [str(i) for i in range(self.n_classes)]
        if len(class_names) != self.n_classes:
            raise ContractError(
                f"{len(class_names)} class names for {self.n_classes} classes",
                hint="pass one class name per logit of the heads",
            )
        self.class_names = [str(c) for c in class_names]

    def _id_range(self, i: int, given: tuple[int, int] | None) -> tuple[int, int] | None:
        """Integer input i (token ids, a mask): its valid values, inclusive. Given, or for the
        first input the vocabulary of the first nn.Embedding in segment 0 (0..num_embeddings-1);
        float inputs have none."""
        if self.input_dtypes[i] == "float32":
            if given is not None:
                raise ContractError(f"input_range is given for a float32 input (input {i})",
                                    hint="input_range bounds integer inputs (token ids): set input_dtype='int64'")
            return None
        if given is not None:
            lo, hi = (int(v) for v in given)
            if lo > hi:
                raise ContractError(f"input_range {tuple(given)} is empty", hint="give (lowest id, highest id)")
            return lo, hi
        if i > 0:
            return None
        emb = next((m for m in self.segments[0].modules() if isinstance(m, nn.Embedding)), None)
        return None if emb is None else (0, int(emb.num_embeddings) - 1)

    @property
    def input_specs(self) -> list[InputSpec]:
        """What the model takes, one entry per input (see core/inputs.py)."""
        return [InputSpec(s, d, r) for s, d, r in zip(self.input_shapes, self.input_dtypes, self.input_ranges)]

    @property
    def n_stages(self) -> int:
        return len(self.segments)

    def example_input(self, batch: int = 2) -> State:
        out = []
        for spec in self.input_specs:
            dtype = _INPUT_DTYPES[spec.dtype]
            if dtype.is_floating_point:
                out.append(torch.rand(batch, *spec.shape, dtype=dtype))
            else:  # the highest valid value: a mask of ones, a real (non-pad) id
                hi = spec.value_range[1] if spec.value_range else 1
                out.append(torch.full((batch, *spec.shape), hi, dtype=dtype))
        return tuple(out)

    def _check_flow(self) -> None:
        """Run a dummy batch through every stage; name the first stage whose shapes do not flow."""
        was_training = self.training
        self.eval()
        state = self.example_input(batch=2)
        try:
            with torch.no_grad():
                for k in range(self.n_stages):
                    try:
                        out = self.segments[k](*state)
                    except Exception as exc:  # a user module failing on the expected state
                        got = ", ".join(str(tuple(t.shape)) for t in state)
                        raise ContractError(
                            f"segment failed on input state of shape {got}: {type(exc).__name__}: {exc}",
                            hint="check that segment k accepts exactly what segment k-1 returns",
                            stage_idx=k,
                        ) from exc
                    state = as_state(out, f"segment {k}", k)
                    self.state_shapes.append([tuple(t.shape[1:]) for t in state])
                    try:
                        logits = self.heads[k](*state)
                    except Exception as exc:
                        raise ContractError(
                            f"head failed on the stage's state: {type(exc).__name__}: {exc}",
                            hint="an exit head takes the state that its segment returns",
                            stage_idx=k,
                        ) from exc
                    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 2:
                        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                        raise ContractError(f"head returned {shape}, expected logits of shape (batch, n_classes)",
                                            hint="end each head with a Linear layer to n_classes", stage_idx=k)
                    if k == 0:
                        self.n_classes = int(logits.shape[1])
                    elif logits.shape[1] != self.n_classes:
                        raise ContractError(
                            f"head gives {logits.shape[1]} classes, head 0 gives {self.n_classes}",
                            hint="every exit head must predict the same classes", stage_idx=k)
        finally:
            self.train(was_training)

    def forward_stage(self, stage_idx: int, *state: torch.Tensor) -> tuple[State, torch.Tensor]:
        """Run one stage: returns (state after the stage, exit logits)."""
        new_state = as_state(self.segments[stage_idx](*state), f"segment {stage_idx}", stage_idx)
        return new_state, self.heads[stage_idx](*new_state)

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """All exits' logits (used in training and as the validation reference)."""
        state: State = tuple(inputs)
        logits = []
        for k in range(self.n_stages):
            state, out = self.forward_stage(k, *state)
            logits.append(out)
        return logits


def split_sequential(
    backbone: nn.Sequential,
    split_after: Sequence[int],
    heads: Sequence[nn.Module],
    input_shape: Shape,
    class_names: Sequence[str] | None = None,
    name: str = "model",
) -> EarlyExitModel:
    """Split an ``nn.Sequential``-like backbone after the given child indices and attach heads.

    ``split_after=[2, 5]`` makes three segments: children 0..2, 3..5 and 6..end, so
    ``heads`` needs three entries (the last one is the final classifier).

    Example:
        >>> model = split_sequential(nn.Sequential(*blocks), split_after=[1, 3],
        ...                          heads=[h0, h1, h2], input_shape=(1, 28, 28))
    """
    children = list(backbone.children())
    cuts = sorted(set(int(i) for i in split_after))
    if any(i < 0 or i >= len(children) - 1 for i in cuts):
        raise ContractError(
            f"split_after {list(split_after)} out of range for a backbone of {len(children)} children",
            hint=f"use child indices in 0..{len(children) - 2}",
        )
    bounds = [-1] + cuts + [len(children) - 1]
    segments = [nn.Sequential(*children[a + 1 : b + 1]) for a, b in zip(bounds[:-1], bounds[1:])]
    return EarlyExitModel(segments, heads, input_shape, class_names, name=name)
