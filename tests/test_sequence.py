"""Sequence states chain through every target: a model whose state between stages is a
(batch, 8, 32) token sequence (digits read row by row: 8 tokens of 8 pixels), trained for
real, exported to onnx and every TFLite target, validated exit by exit against PyTorch, run
with early exits in Python and, for int8, in the C harness bit for bit. Its feed-forward uses
exact GELU (float targets; int8 uses ReLU, see test_int8_exact_gelu_is_refused...).

Before the fix onnx2tf made rank-3 stage inputs channel-last (1, 32, 8) while it wrote the
same tensor as the previous stage's output in torch layout (1, 8, 32): tflite-fp32 and
tflite-int8 failed validation with "Dimension mismatch. Got 8 but expected 32"."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from eecompile import Runtime
from eecompile.data.datasets import Dataset
from eecompile.model.contract import EarlyExitModel
from eecompile.model.train import exit_accuracies, train
from eecompile.model.zoo import Recipe

D = 32


class Block(nn.Module):
    """A Mixer-style block on a (batch, tokens, features) sequence: LayerNorm, a token-mixing
    linear layer (transposes inside the graph) and a GELU feed-forward."""

    def __init__(self, d_in: int, act: type[nn.Module] = nn.GELU, n_tokens: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, D)
        self.pos = nn.Parameter(torch.zeros(n_tokens, D))
        self.norm = nn.LayerNorm(D)
        self.mix = nn.Linear(n_tokens, n_tokens)
        self.ff = nn.Sequential(nn.Linear(D, 2 * D), act(), nn.Linear(2 * D, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.proj(x) + self.pos)
        h = h + self.mix(h.transpose(1, 2)).transpose(1, 2)
        return h + self.ff(h)


class Embed(nn.Module):
    """Stage 0 of the transformer: token embedding + position, and the padding mask (a token
    whose features are all zero is padding). The state is (hidden, mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, D)
        self.pos = nn.Parameter(torch.zeros(8, D))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (x.abs().sum(dim=-1) > 0).float()
        return self.proj(x) + self.pos, mask


class Encoder(nn.Module):
    """A plain-PyTorch transformer layer as users write it: attention scaled by 1/sqrt(d)
    (math.sqrt of the head size), masked softmax, LayerNorm, GELU feed-forward."""

    def __init__(self, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.dh = heads, D // heads
        self.qkv = nn.Linear(D, 3 * D)
        self.out = nn.Linear(D, D)
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.ff = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh) + (1.0 - mask)[:, None, None, :] * -1e4
        att = torch.softmax(scores, dim=-1) @ v
        h = self.norm1(h + self.out(att.transpose(1, 2).reshape(b, t, D)))
        return self.norm2(h + self.ff(h)), mask


class MaskedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D, 10)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc((h * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0))


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=1))


def rows_cols(ds: Dataset) -> Dataset:
    """Token i = row i and column i of the digit (8 tokens of 16 features). Not 8x8: onnx2tf
    cannot tell the axes of a square rank-3 input apart (measured: abs().sum(-1) on (1, 8, 8)
    came out wrong in every layout mode; the export's float check refuses such a graph)."""
    img = ds.x.reshape(len(ds.x), 8, 8)
    return Dataset(np.ascontiguousarray(np.concatenate([img, img.transpose(0, 2, 1)], axis=2)), ds.y,
                   ds.class_names, ds.name + " rows+cols")


def rows(ds: Dataset) -> Dataset:
    return Dataset(np.ascontiguousarray(ds.x.reshape(len(ds.x), 8, 8)), ds.y, ds.class_names, ds.name + " rows")


def _trained(act: type[nn.Module], digits_data) -> tuple[EarlyExitModel, dict[str, Dataset]]:
    from eecompile.data import load_data

    torch.manual_seed(0)
    model = EarlyExitModel([Block(8, act), Block(D, act), Block(D, act)], [Head(), Head(), Head()],
                           input_shape=(8, 8), name=f"seq-digits-{act.__name__.lower()}")
    train(model, rows(load_data("digits:train")), Recipe(epochs=15, lr=3e-3, batch_size=64), quiet=True)
    model.eval()
    data = {k: rows(v) for k, v in digits_data.items()}
    data["calib"] = rows(load_data("digits:train:1024"))  # int8: 256 samples left exit 2 1.3 points short
    accs = exit_accuracies(model, data["test"])
    assert accs[-1] > 0.85, accs  # a trained model, so the checks below judge real decisions
    return model, data


@pytest.fixture(scope="module")
def seq(digits_data):
    """GELU feed-forward, as in transformers (float targets: TFLite's int8 path rejects exact GELU)."""
    return _trained(nn.GELU, digits_data)


@pytest.fixture(scope="module")
def seq_relu(digits_data):
    return _trained(nn.ReLU, digits_data)


@pytest.mark.parametrize("target", ["onnx", "tflite-fp32", "tflite-fp16", "tflite-int8"])
def test_sequence_state_chains(seq, seq_relu, target, tmp_path):
    from eecompile.export import ExportOptions, export

    model, data = seq_relu if target == "tflite-int8" else seq
    bundle = export(model, target, data["calib"], tmp_path / target, val_data=data["val"],
                    options=ExportOptions(quiet=True, model_source="test_sequence"))
    m = bundle.manifest
    for k, st in enumerate(m.stages):
        for t in st.graphs[0].inputs + [o for o in st.graphs[0].outputs if o.role == "state"]:
            assert t.perm_from_torch == [0, 1, 2] and t.shape[1:] == [8, D if (k or t.role == "state") else 8], t
    val = m.validation
    assert not val["failures"], val["failures"]
    top1 = [e["top1_agreement"] for e in val["exits"]]
    assert min(top1) >= (0.98 if target == "tflite-int8" else 0.999), top1
    rt = Runtime(bundle)
    res = rt.run(data["test"].x, policy="max-prob", thresholds=0.9)
    acc = float(np.mean(res.class_idx == data["test"].y))
    full = float(np.mean(rt.run(data["test"].x, no_early_exit=True).class_idx == data["test"].y))
    assert acc > full - 0.03 and np.bincount(res.exit_idx, minlength=3)[0] > 0, (acc, full)


def test_int8_exact_gelu_is_refused_with_a_next_step(seq, tmp_path):
    """Exact GELU converts to TFLite float (erf written as builtin ops), but LiteRT's int8 DIV
    rejects the spelled-out erf at run time: a typed error naming the stage and the way out,
    and nothing written."""
    from eecompile.errors import UnsupportedOpError
    from eecompile.export import ExportOptions, export

    model, data = seq
    with pytest.raises(UnsupportedOpError, match=r"stage 0: the int8 graph does not run in LiteRT") as exc:
        export(model, "tflite-int8", data["train"], tmp_path / "gelu-int8", val_data=data["val"],
               options=ExportOptions(quiet=True))
    assert "tflite-dynamic" in exc.value.hint and "tflite-fp16" in exc.value.hint
    assert not (tmp_path / "gelu-int8").exists()


def test_sequence_int8_c_harness_bit_exact(seq_relu, tmp_path):
    """The C harness chains the (1, 8, 32) int8 state as raw bytes, like an image state."""
    from conftest import require_tools
    from test_harness import built, check_parity

    from eecompile.export import ExportOptions, export
    from eecompile.harness import find_litert_lib

    require_tools("cmake", "cc")
    model, data = seq_relu
    bundle = export(model, "tflite-int8", data["calib"], tmp_path / "int8", val_data=data["val"],
                    options=ExportOptions(quiet=True, model_source="test_sequence"))
    exe = built(bundle, tmp_path).ee_run
    shares = check_parity(bundle, exe, data["test"].x, str(find_litert_lib()), tmp_path)
    assert any(s[0] > 0 and s[-1] > 0 for s in shares.values())


@pytest.mark.parametrize("target", ["tflite-fp32", "tflite-fp16"])
def test_plain_transformer_with_attention_and_mask_exports(digits_data, target, tmp_path):
    """A user-written transformer (2 layers after the embedding; the state is (hidden, mask),
    a rank-3 and a rank-2 tensor). Before, stage 1 failed inside onnx2tf: the folded 1/sqrt(d)
    became the graph's output ("Found: 4.0")."""
    from eecompile.data import load_data
    from eecompile.export import ExportOptions, export

    torch.manual_seed(0)
    model = EarlyExitModel([Embed(), Encoder(), Encoder()], [MaskedHead(), MaskedHead(), MaskedHead()],
                           input_shape=(8, 16), name="tiny-transformer")
    train(model, rows_cols(load_data("digits:train")), Recipe(epochs=10, lr=3e-3, batch_size=64), quiet=True)
    model.eval()
    data = {k: rows_cols(v) for k, v in digits_data.items()}
    assert exit_accuracies(model, data["test"])[-1] > 0.85
    bundle = export(model, target, data["train"], tmp_path / target, val_data=data["val"],
                    options=ExportOptions(quiet=True))
    states = [[(t.shape[1:], t.perm_from_torch) for t in g.outputs if t.role == "state"]
              for g in (st.graphs[0] for st in bundle.manifest.stages[:-1])]
    assert states == [[([8, D], [0, 1, 2]), ([8], [0, 1])]] * 2
    assert not bundle.manifest.validation["failures"]
    assert min(e["top1_agreement"] for e in bundle.manifest.validation["exits"]) >= 0.999
