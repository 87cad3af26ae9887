"""Models with several inputs (token ids and an attention mask, as BERT checkpoints are called)
through every step: contract, export (onnx, tflite-int8), validation, the Python
runtime, text, calibration, the host profile and the C harness (ee_session_run_inputs; ee_run
takes one .npy per input, comma-separated), with each input checked where it comes in.

The model is test_token_ids' small transformer with stage 0 taking (ids, mask) instead of
deriving the mask from the pad id; trained for real on the same synthetic task."""

from __future__ import annotations

import json
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
from test_token_ids import L, VOCAB, Embed, Encoder, Head, cli, profile_on_host, token_task, word_tokenizer


class EmbedWithMask(Embed):
    """(ids, mask) -> (hidden, mask): the mask comes in as the model's second input."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.enc(self.emb(ids) + self.pos, mask.float())


def make_model(mask_dtype: str = "int64") -> EarlyExitModel:
    return EarlyExitModel([EmbedWithMask(nn.ReLU), Encoder(nn.ReLU), Encoder(nn.ReLU)], [Head(), Head(), Head()],
                          input_shape=[(L,), (L,)], input_dtype=["int64", mask_dtype],
                          input_range=[None, (0, 1)] if mask_dtype != "float32" else None,
                          class_names=["negative", "positive"], name="ids-and-mask")


def with_mask(d: Dataset) -> Dataset:
    return Dataset((d.x, (d.x != 0).astype(np.int64)), d.y, d.class_names, d.name + "+mask")


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = make_model()
    data = {k: with_mask(token_task(n, seed)) for k, n, seed in (("train", 3000, 1), ("val", 400, 2),
                                                                 ("test", 600, 3))}
    train(model, data["train"], Recipe(epochs=12, lr=3e-3, batch_size=64), quiet=True)
    model.eval()
    accs = exit_accuracies(model, data["test"])
    assert accs[-1] > 0.9, accs
    return model, data


def test_the_contract_declares_every_input():
    m = make_model()
    assert [(s.shape, s.dtype, s.value_range) for s in m.input_specs] == [((L,), "int64", (0, VOCAB - 1)),
                                                                          ((L,), "int64", (0, 1))]
    f = make_model("float32")
    assert [(s.dtype, s.value_range) for s in f.input_specs] == [("int64", (0, VOCAB - 1)), ("float32", None)]
    with pytest.raises(ContractError, match="1 input dtypes for 2 inputs"):
        EarlyExitModel([EmbedWithMask(nn.ReLU)], [Head()], input_shape=[(L,), (L,)], input_dtype=["int64"])
    with pytest.raises(ContractError, match="3 input ranges for 2 inputs"):
        EarlyExitModel([EmbedWithMask(nn.ReLU)], [Head()], input_shape=[(L,), (L,)], input_dtype="int64",
                       input_range=[None, (0, 1), (0, 1)])
    with pytest.raises(ContractError, match="segment failed on input state"):  # a one-input segment, two inputs
        EarlyExitModel([Embed(nn.ReLU)], [Head()], input_shape=[(L,), (L,)], input_dtype="int64")


@pytest.mark.parametrize("target", ["onnx", "tflite-int8"])  # fp32 is int8's path without quantization
def test_ids_and_mask_export_validate_and_run(trained, target, tmp_path):
    from eecompile.export import ExportOptions, export

    model, data = trained
    bundle = export(model, target, data["train"].take(512), tmp_path / target, val_data=data["val"],
                    options=ExportOptions(quiet=True, trunks=target != "onnx"))
    m = bundle.manifest
    assert m.validation["passed"], m.validation["failures"]
    assert [(t.name, t.source_dtype, t.value_range) for t in m.input] == [
        ("input_0", "int64", [0, VOCAB - 1]), ("input_1", "int64", [0, 1])]
    assert all(t.quant is None for t in m.input)  # ids and mask stay integers, even in int8
    x, _ = bundle.load_samples()
    assert isinstance(x, tuple) and len(x) == 2 and np.array_equal(x[1], (x[0] != 0))
    rt = Runtime(bundle)
    ids, mask = data["test"].x
    full = rt.run((ids, mask), no_early_exit=True, keep_logits=True)
    ref = model(torch.from_numpy(ids), torch.from_numpy(mask))[-1].detach().numpy().argmax(1)
    assert np.mean(full.class_idx == ref) >= 0.99
    z = full.exit_logits[0] - full.exit_logits[0].max(1, keepdims=True)
    t = float(np.median(np.exp(z).max(1) / np.exp(z).sum(1)))  # half the samples are this sure at exit 0
    early = rt.run((ids, mask), policy="max-prob", thresholds=t)
    assert 0 < np.bincount(early.exit_idx, minlength=3)[0] < len(ids)  # exits at several depths

    with pytest.raises(InputError, match=r"one array of shape \(600, 12\), but the model takes 2 inputs") as err:
        rt.run(ids)
    assert "(ids, attention_mask)" in err.value.hint
    bad = mask.copy()
    bad[5, 0] = 2
    with pytest.raises(InputError, match=r"input, input 1: 1 sample\(s\) hold ids outside 0..1 \(e.g. 2\)"):
        rt.run((ids, bad))
    with pytest.raises(InputError, match=r"the inputs hold different numbers of samples \(\[600, 599\]\)"):
        rt.run((ids, mask[:-1]))
    with pytest.raises(InputError, match="3 input arrays, the model takes 2"):
        rt.run((ids, mask, mask))


def test_export_refuses_data_that_does_not_fit_the_inputs(trained, tmp_path):
    from eecompile.export import export

    model, data = trained
    ids, mask = data["train"].x
    with pytest.raises(DataError, match="calibration data: one array of shape"):
        export(model, "onnx", ids, tmp_path / "a")
    with pytest.raises(DataError, match=r"calibration data, input 1: dtype float32, expected integers"):
        export(model, "onnx", (ids, mask.astype(np.float32)), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_npz_with_several_inputs_loads(trained, tmp_path):
    from eecompile.data import load_data

    _, data = trained
    ids, mask = data["val"].x
    np.savez(tmp_path / "d.npz", x0=ids, x1=mask, y=data["val"].y)
    d = load_data(str(tmp_path / "d.npz"))
    assert isinstance(d.x, tuple) and np.array_equal(d.x[1], mask) and len(d) == len(ids)
    assert np.array_equal(d.take(7).x[0], ids[:7])
    np.savez(tmp_path / "bad.npz", x0=ids, x1=mask[:-3], y=data["val"].y)
    with pytest.raises(DataError, match="inputs but 400 labels"):
        load_data(str(tmp_path / "bad.npz"))


@pytest.fixture(scope="module")
def int8_text_bundle(trained, tmp_path_factory):
    from eecompile.export import ExportOptions, export

    model, data = trained
    tmp = tmp_path_factory.mktemp("mi")
    return export(model, "tflite-int8", data["train"].take(512), tmp / "bundle", val_data=data["val"],
                  options=ExportOptions(quiet=True, tokenizer=word_tokenizer(tmp / "tokenizer.json")))


def test_text_fills_ids_and_mask(int8_text_bundle, trained):
    model, _ = trained
    m = int8_text_bundle.manifest
    assert m.text.inputs == ["ids", "attention_mask"]
    rt = Runtime(int8_text_bundle)
    res, enc = rt.run_text(["good1 good2 bad3", "bad1 bad2 bad9 good3 meh1", "meh1 " * 20 + "good1"],
                           no_early_exit=True)
    ids, mask = enc.model_inputs
    np.testing.assert_array_equal(mask.sum(1), [3, 5, L])  # the tokens kept; truncated text fills the length
    np.testing.assert_array_equal(ids * (1 - mask), 0)  # padding where the mask is 0
    ref = model(torch.from_numpy(ids), torch.from_numpy(mask))[-1].detach().numpy().argmax(1)
    np.testing.assert_array_equal(res.class_idx, ref)
    assert res.class_idx[:2].tolist() == [1, 0]


def test_c_harness_takes_one_file_per_input_bit_exact(int8_text_bundle, trained, tmp_path):
    """ee_run reads ids.npy,mask.npy and matches the Python runtime bit for bit on every exit's
    int8 logits and every policy; it refuses a missing input, a mask value outside 0..1 and
    inputs with different numbers of samples."""
    from conftest import require_tools
    from test_harness import built, check_parity

    from eecompile.harness import find_litert_lib

    require_tools("cmake", "cc")
    _, data = trained
    bundle = int8_text_bundle
    exe = built(bundle, tmp_path).ee_run
    lib = str(find_litert_lib())
    ids, mask = (a[:300] for a in data["test"].x)
    shares = check_parity(bundle, exe, (ids, mask), lib, tmp_path)
    assert any(s[0] > 0 and sum(s[1:]) > 0 for s in shares.values()), shares

    def ee_run(arrays: list[np.ndarray], *args: str) -> subprocess.CompletedProcess:
        files = []
        for i, a in enumerate(arrays):
            np.save(tmp_path / f"x{i}.npy", a)
            files.append(str(tmp_path / f"x{i}.npy"))
        return subprocess.run([str(exe), str(bundle.root), ",".join(files), "--litert", lib, "--json", *args],
                              capture_output=True, text=True, timeout=300)

    ok = ee_run([ids[:40], mask[:40]])
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["summary"]["n"] == 40
    assert [s["exit_idx"] for s in out["samples"]] == Runtime(bundle).run((ids[:40], mask[:40])).exit_idx.tolist()
    one = ee_run([ids[:4]])
    assert one.returncode == 1 and "too few file(s) given, the model takes 2 inputs" in one.stderr, one.stderr
    bad = mask[:4].copy()
    bad[2, 7] = 3
    oov = ee_run([ids[:4], bad])
    assert oov.returncode == 1 and "input 1: id 3 at position 7 is outside the vocabulary 0..1" in oov.stderr
    assert "sample 2: invalid argument" in oov.stderr
    short = ee_run([ids[:4], mask[:3]])
    assert short.returncode == 1 and "holds 3 samples, the first input 4" in short.stderr, short.stderr
    f32 = ee_run([ids[:4], mask[:4]], "--f32")
    assert f32.returncode == 1 and "--f32 applies to a one-input model" in f32.stderr


def test_profile_and_calibrate_take_several_inputs(int8_text_bundle, trained, tmp_path):
    """The host profile runs the bundle's own (ids, mask) samples through ee_profile (one file
    per input), and calibration reads them from a .npz with x0, x1."""
    import shutil

    from conftest import require_tools

    require_tools("cmake", "cc")
    _, data = trained
    b = tmp_path / "b"
    shutil.copytree(int8_text_bundle.root, b)

    profile_on_host(b, tmp_path / "prof.json")
    ids, mask = data["test"].x
    np.savez(tmp_path / "cal.npz", x0=ids, x1=mask, y=data["test"].y)
    res = cli("calibrate", b, "--data", tmp_path / "cal.npz", "--budget", "accuracy-drop=1", "-o", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    np.savez(tmp_path / "ids_only.npz", x=ids, y=data["test"].y)
    res = cli("calibrate", b, "--data", tmp_path / "ids_only.npz", "--budget", "accuracy-drop=1")
    assert res.returncode == 1 and "but the model takes 2 inputs" in res.stderr, res.stderr
    res = cli("info", b)
    assert "input 0 (ids): int64 (12,), values 0..31" in res.stdout
    assert "input 1 (attention_mask): int64 (12,), values 0..1" in res.stdout


def test_the_android_app_refuses_several_inputs(int8_text_bundle):
    from eecompile.android.contents import check_bundle
    from eecompile.errors import BundleError

    with pytest.raises(BundleError, match="takes 2 inputs; the demo app feeds one image input"):
        check_bundle(int8_text_bundle)
