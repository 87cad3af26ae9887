"""Integer model inputs (token ids) through every step: contract, export (onnx, tflite-fp32,
tflite-int8), validation, the Python runtime and the C harness (raw int64 ids), with the
vocabulary range checked everywhere an id comes in.

The model is a small transformer trained for real on a synthetic, learnable text task that
needs no download: sequences of up to 12 ids from a 32-word vocabulary (0 is padding);
words 1..10 are "positive", 11..20 "negative", 21..31 neutral; the label says which kind
occurs more often. Stage 0 holds the embeddings and derives the attention mask from the
padding id, so the state between stages is (hidden, mask) as in DeeBERT-style exits."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from eecompile import Runtime
from eecompile.data.datasets import Dataset
from eecompile.errors import ContractError, DataError, InputError
from eecompile.model.contract import EarlyExitModel
from eecompile.model.train import exit_accuracies, train
from eecompile.model.zoo import Recipe

D, L, VOCAB = 32, 12, 32


def token_task(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, L), np.int64)
    y = np.zeros(n, np.int64)
    for i in range(n):
        length = int(rng.integers(3, L + 1))
        while True:
            ids = rng.integers(1, VOCAB, size=length)
            pos, neg = int(((ids >= 1) & (ids <= 10)).sum()), int(((ids >= 11) & (ids <= 20)).sum())
            if pos != neg:
                break
        x[i, :length] = ids
        y[i] = int(pos > neg)
    return Dataset(x, y, ["negative", "positive"], f"token-task:{seed}")


class Encoder(nn.Module):
    """Attention scaled by 1/sqrt(d), masked softmax, LayerNorm, a feed-forward. The mask adds
    -16 to padded positions (exp(-16) ~ 1e-7: as good as -inf), not the customary -1e4: full-int8
    quantization gives the scores one scale, and a -1e4 floor leaves ~40 per level, which
    flattens every real score (measured: exit 0 at 5.7 dB SNR, 13 points below PyTorch; the
    export's validation refuses it)."""

    def __init__(self, act: type[nn.Module], heads: int = 2) -> None:
        super().__init__()
        self.heads, self.dh = heads, D // heads
        self.qkv, self.out = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.ff = nn.Sequential(nn.Linear(D, 2 * D), act(), nn.Linear(2 * D, D))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh) + (1.0 - mask)[:, None, None, :] * -16.0
        att = torch.softmax(scores, dim=-1) @ v
        h = self.norm1(h + self.out(att.transpose(1, 2).reshape(b, t, D)))
        return self.norm2(h + self.ff(h)), mask


class Embed(nn.Module):
    """Token ids -> (hidden, mask): the mask is 1 where the id is not padding (0)."""

    def __init__(self, act: type[nn.Module]) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(torch.zeros(L, D))
        self.enc = Encoder(act)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.enc(self.emb(ids) + self.pos, (ids != 0).float())


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D, 2)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc((h * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0))


def make_model(act: type[nn.Module] = nn.ReLU, dtype: str = "int64", input_range=None) -> EarlyExitModel:
    return EarlyExitModel([Embed(act), Encoder(act), Encoder(act)], [Head(), Head(), Head()], input_shape=(L,),
                          class_names=["negative", "positive"], input_dtype=dtype, name="token-transformer",
                          input_range=input_range)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = make_model()
    data = {"train": token_task(3000, 1), "val": token_task(400, 2), "test": token_task(600, 3)}
    train(model, data["train"], Recipe(epochs=12, lr=3e-3, batch_size=64), quiet=True)
    model.eval()
    accs = exit_accuracies(model, data["test"])
    assert accs[-1] > 0.9, accs  # a trained model: the checks below judge real decisions
    return model, data


def test_the_vocabulary_range_comes_from_the_embedding_or_is_given():
    assert make_model().input_range == (0, VOCAB - 1)
    assert make_model(input_range=(0, 20)).input_range == (0, 20)
    with pytest.raises(ContractError, match="input_range is given for a float32 input"):
        EarlyExitModel([nn.Identity()], [nn.Sequential(nn.Flatten(), nn.Linear(4, 2))], input_shape=(4,),
                       input_range=(0, 3))
    with pytest.raises(ContractError, match=r"input_range \(5, 1\) is empty"):
        make_model(input_range=(5, 1))


@pytest.mark.parametrize("target", ["onnx", "tflite-fp32", "tflite-int8"])
def test_token_ids_export_validate_and_run(trained, target, tmp_path):
    from eecompile.export import ExportOptions, export

    model, data = trained
    bundle = export(model, target, data["train"].take(512), tmp_path / target, val_data=data["val"],
                    options=ExportOptions(quiet=True, model_source="test_token_ids"))
    m = bundle.manifest
    inp = m.input[0]
    assert (inp.dtype, inp.quant, inp.value_range, inp.perm_from_torch) == ("int64", None, [0, VOCAB - 1], [0, 1])
    assert not m.validation["failures"], m.validation["failures"]
    assert min(e["top1_agreement"] for e in m.validation["exits"]) >= (0.98 if target == "tflite-int8" else 0.999)
    x, y = bundle.load_samples()
    assert x.dtype == np.int64 and np.array_equal(x, data["val"].x[: len(x)])

    rt = Runtime(bundle)
    test = data["test"]
    full = rt.run(test.x, no_early_exit=True)
    ref = np.argmax(model(torch.from_numpy(test.x))[-1].detach().numpy(), axis=1)
    assert np.mean(full.class_idx == ref) >= 0.98
    early = rt.run(test.x, policy="max-prob", thresholds=0.9)
    acc_early, acc_full = np.mean(early.class_idx == test.y), np.mean(full.class_idx == test.y)
    assert acc_early >= acc_full - 0.03 and np.mean(early.exit_idx == 0) > 0.2, (acc_early, acc_full)
    np.testing.assert_array_equal(rt.run(test.x[:50].astype(np.int32)).class_idx, early.class_idx[:50])

    with pytest.raises(InputError, match=r"dtype float32, expected integers \(int64\): this model takes token ids"):
        rt.run(test.x.astype(np.float32))
    bad = test.x[:4].copy()
    bad[2, 0] = VOCAB
    with pytest.raises(InputError, match=rf"1 sample\(s\) hold ids outside 0..{VOCAB - 1} \(e.g. {VOCAB}\)") as err:
        rt.run(bad)
    assert "tokenizer" in err.value.hint


def test_export_refuses_float_or_out_of_vocabulary_calibration_data(trained, tmp_path):
    from eecompile.export import ExportOptions, export

    model, data = trained
    with pytest.raises(DataError, match="calibration data: dtype float32, expected integers"):
        export(model, "onnx", data["train"].x.astype(np.float32), tmp_path / "a", val_data=data["val"],
               options=ExportOptions(quiet=True))
    bad = data["val"].x.copy()
    bad[:3, 0] = -1
    with pytest.raises(DataError, match=r"validation data: 3 sample\(s\) hold ids outside 0..31 \(e.g. -1\)"):
        export(model, "onnx", data["train"].take(256), tmp_path / "b", val_data=Dataset(bad, data["val"].y, [], "v"),
               options=ExportOptions(quiet=True))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_c_harness_takes_int64_ids_bit_exact_and_checks_them(trained, tmp_path):
    """ee_run reads int64 ids (a .npy, or raw with the model's dtype), matches the Python
    runtime's int8 logits bit for bit, and refuses floats and out-of-vocabulary ids."""
    from conftest import require_tools
    from test_harness import built, check_parity

    from eecompile.export import ExportOptions, export
    from eecompile.harness import find_litert_lib

    require_tools("cmake", "cc")
    model, data = trained
    bundle = export(model, "tflite-int8", data["train"].take(512), tmp_path / "int8", val_data=data["val"],
                    options=ExportOptions(quiet=True, model_source="test_token_ids"))
    exe = built(bundle, tmp_path).ee_run
    lib = str(find_litert_lib())
    shares = check_parity(bundle, exe, data["test"].x[:300], lib, tmp_path)
    assert any(s[0] > 0 and sum(s[1:]) > 0 for s in shares.values()), shares  # decisions at several depths

    def ee_run(arr: np.ndarray, name: str, *args: str) -> subprocess.CompletedProcess:
        path = tmp_path / name
        np.save(path, arr) if name.endswith(".npy") else arr.tofile(path)
        return subprocess.run([str(exe), str(bundle.root), str(path), "--litert", lib, "--json", *args],
                              capture_output=True, text=True, timeout=300)

    ok = ee_run(data["test"].x[:40], "ids.npy")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["summary"]["input"] == "npy int64" and out["summary"]["n"] == 40
    ref = Runtime(bundle).run(data["test"].x[:40])
    assert [s["exit_idx"] for s in out["samples"]] == ref.exit_idx.tolist()

    floats = ee_run(data["test"].x[:4].astype(np.float32), "f.npy")
    assert floats.returncode == 1 and "this model takes token ids as int64" in floats.stderr, floats.stderr
    bad = data["test"].x[:4].copy()
    bad[1, 3] = 1000
    oov = ee_run(bad, "oov.npy")
    assert oov.returncode == 1 and "input 0: id 1000 at position 3 is outside the vocabulary 0..31" in oov.stderr
    assert "sample 1: invalid argument" in oov.stderr
    f32 = ee_run(data["test"].x[:4], "raw.bin", "--f32")
    assert f32.returncode == 1 and "--f32 given, but this model takes token ids (int64)" in f32.stderr
    raw = ee_run(data["test"].x[:4], "raw.bin")
    assert raw.returncode == 0 and json.loads(raw.stdout)["summary"]["input"] == "raw int64"


def test_int32_ids_export_and_run(tmp_path):
    """int32 ids (what many tokenizers emit) are a model input dtype of their own."""
    from eecompile.export import ExportOptions, export

    torch.manual_seed(1)
    model = make_model(dtype="int32")
    data = {k: token_task(n, s) for k, n, s in (("train", 256, 4), ("val", 128, 5))}
    as32 = {k: Dataset(v.x.astype(np.int32), v.y, v.class_names, v.name) for k, v in data.items()}
    bundle = export(model, "tflite-fp32", as32["train"], tmp_path / "fp32", val_data=as32["val"],
                    options=ExportOptions(quiet=True))
    assert (bundle.manifest.input[0].dtype, bundle.manifest.input[0].value_range) == ("int32", [0, VOCAB - 1])
    assert not bundle.manifest.validation["failures"]
    res = Runtime(bundle).run(as32["val"].x, no_early_exit=True)
    ref = np.argmax(model(torch.from_numpy(as32["val"].x))[-1].detach().numpy(), axis=1)
    assert np.mean(res.class_idx == ref) >= 0.99
    with pytest.raises(InputError, match=r"hold ids outside 0..31"):
        Runtime(bundle).run(np.full((1, L), 2**40, np.int64))  # would wrap around in int32


def word_tokenizer(path, with_unk: bool = True) -> str:
    """A real tokenizers WordLevel tokenizer for the task's vocabulary: [PAD]=0, good1..good10,
    bad1..bad10, meh1..meh10 and [UNK]=31 (a neutral id), lower-cased, split on whitespace and
    punctuation."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = ["[PAD]"] + [f"{w}{i}" for w in ("good", "bad", "meh") for i in range(1, 11)]
    vocab = {w: i for i, w in enumerate(words)}
    if with_unk:
        vocab["[UNK]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]" if with_unk else None))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def text_bundle(trained, tmp_path_factory):
    from eecompile.export import ExportOptions, export

    model, data = trained
    tmp = tmp_path_factory.mktemp("text")
    return export(model, "tflite-int8", data["train"].take(512), tmp / "bundle", val_data=data["val"],
                  options=ExportOptions(quiet=True, tokenizer=word_tokenizer(tmp / "tokenizer.json")))


def test_text_runs_through_the_bundles_tokenizer(text_bundle, trained):
    model, _ = trained
    m = text_bundle.manifest
    assert (m.text.max_length, m.text.pad_id, m.text.unk_id, m.text.vocab_size) == (L, 0, 31, 32)
    assert (text_bundle.root / "tokenizer.json").is_file()
    rt = Runtime(text_bundle)
    texts = ["good1 Good2, bad3 and good4!", "bad1 bad2 bad9 good3", "meh1 " * 20 + "good1", "zzz bad5 qqq"]
    res, enc = rt.run_text(texts)
    assert res.class_idx[:2].tolist() == [1, 0]  # the model learnt which words count
    # "," "and" "!" are unknown words: [UNK] (31); padding to 12 with [PAD] (0)
    np.testing.assert_array_equal(enc.ids[0], [1, 2, 31, 13, 31, 4, 31] + [0] * (L - 7))
    assert enc.n_tokens.tolist() == [7, 4, 21, 3] and enc.truncated.tolist() == [False, False, True, False]
    assert enc.n_unknown.tolist() == [3, 0, 0, 2]
    ref = np.argmax(model(torch.from_numpy(enc.ids))[-1].detach().numpy(), axis=1)
    assert np.array_equal(rt.run(enc.ids, no_early_exit=True).class_idx, ref)

    with pytest.raises(InputError, match="text 1 is empty"):
        rt.run_text(["good1", "   "])


def test_text_needs_a_tokenizer_and_a_fitting_one(trained, tmp_path):
    from tokenizers import Tokenizer, models

    from eecompile.errors import ExportError
    from eecompile.export import ExportOptions, export

    model, data = trained
    plain = export(model, "onnx", data["train"].take(128), tmp_path / "plain", val_data=data["val"],
                   options=ExportOptions(quiet=True))
    with pytest.raises(InputError, match="has no tokenizer, so it cannot take text") as err:
        Runtime(plain).run_text(["good1"])
    assert "--tokenizer" in err.value.hint
    big = Tokenizer(models.WordLevel({f"w{i}": i for i in range(100)} | {"[PAD]": 100, "[UNK]": 101},
                                     unk_token="[UNK]"))
    big.save(str(tmp_path / "big.json"))
    with pytest.raises(ExportError, match=r"the tokenizer has 102 ids \(0..101\) but the model takes ids 0..31"):
        export(model, "onnx", data["train"].take(128), tmp_path / "b", val_data=data["val"],
               options=ExportOptions(quiet=True, tokenizer=str(tmp_path / "big.json")))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ExportError, match="is not a tokenizers tokenizer.json"):
        export(model, "onnx", data["train"].take(128), tmp_path / "c", val_data=data["val"],
               options=ExportOptions(quiet=True, tokenizer=str(tmp_path / "bad.json")))
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_cli_run_text(text_bundle):
    from click.testing import CliRunner

    from eecompile.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["run", str(text_bundle.root), "--text", "good1 good2 bad1", "--text",
                               "meh1 " * 15 + "bad2", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["samples"]
    assert rows[0]["class"] == "positive" and rows[0]["truncated"] is False and rows[0]["n_tokens"] == 3
    assert rows[1]["truncated"] is True and rows[1]["n_tokens"] == 16
    res = runner.invoke(main, ["run", str(text_bundle.root), "--text", "meh1 " * 15 + "zzz"])
    assert res.exit_code == 0 and "text 0 has 16 tokens; it was truncated to the model's 12" in res.output
    res = runner.invoke(main, ["run", str(text_bundle.root), "--text", ""])
    assert res.exit_code == 1 and "text 0 is empty" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["run", str(text_bundle.root)])
    assert res.exit_code == 2 and "give --input or --text" in res.output
    res = runner.invoke(main, ["info", str(text_bundle.root)])
    assert "input (ids): int64 (12,), values 0..31\n  text: tokenizer.json (vocabulary 32, max length 12" in res.output


def cli(*args) -> subprocess.CompletedProcess:
    """The eecompile CLI in its own process."""
    import sys

    return subprocess.run([sys.executable, "-m", "eecompile", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


def profile_on_host(bundle_dir, out) -> list[float]:
    """A short host profile of a 3-exit bundle through ee_profile: complete, p50 rising with depth."""
    res = cli("profile", bundle_dir, "--device", "host", "--runs", "50", "--warmup", "5", "--min-secs", "0.3",
              "--max-secs", "20", "-o", out)
    assert res.returncode == 0, res.stderr
    prof = json.loads(out.read_text())
    p50 = [e["latency_us"]["p50"] for e in prof["exits"]]
    assert prof["complete"] and len(p50) == 3 and all(b > a for a, b in zip(p50, p50[1:])), p50
    return p50


def test_profile_calibrate_and_harness_on_a_text_bundle(text_bundle, trained, tmp_path):
    """The rest of the loop takes token ids as it takes images: the host profile runs the
    bundle's own int64 samples through ee_profile, calibration reads labelled ids from a .npz,
    and the regenerated harness runs the calibrated rule."""
    import shutil

    from conftest import require_tools

    require_tools("cmake", "cc")
    _, data = trained
    b = tmp_path / "b"
    shutil.copytree(text_bundle.root, b)

    profile_on_host(b, tmp_path / "prof.json")

    np.savez(tmp_path / "cal.npz", x=data["test"].x, y=data["test"].y)
    res = cli("calibrate", b, "--data", tmp_path / "cal.npz", "--budget", "accuracy-drop=1", "-o", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["budget"]["spec"] == "accuracy-drop=1"
    np.savez(tmp_path / "floats.npz", x=data["test"].x.astype(np.float32), y=data["test"].y)
    res = cli("calibrate", b, "--data", tmp_path / "floats.npz", "--budget", "accuracy-drop=1")
    assert res.returncode == 1 and "expected integers (int64): this model takes token ids" in res.stderr

    res = cli("harness", b, "-o", tmp_path / "h", "--build")
    assert res.returncode == 0, res.stderr
    np.save(tmp_path / "ids.npy", data["test"].x[:50])
    exe = next((tmp_path / "h").rglob("ee_run"))
    from eecompile.harness import find_litert_lib

    out = subprocess.run([str(exe), str(b), str(tmp_path / "ids.npy"), "--litert", str(find_litert_lib()), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    c_exits = [s["exit_idx"] for s in json.loads(out.stdout)["samples"]]
    assert c_exits == Runtime(b).run(data["test"].x[:50]).exit_idx.tolist()  # the calibrated rule, in both


def test_the_android_app_refuses_a_text_bundle(text_bundle):
    """The demo app draws image inputs: a token-id bundle is refused before anything is copied."""
    from eecompile.android.contents import check_bundle
    from eecompile.errors import BundleError

    with pytest.raises(BundleError, match=r"takes token ids \(int64\); the demo app draws and shows image inputs"):
        check_bundle(text_bundle)
