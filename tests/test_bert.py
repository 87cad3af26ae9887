"""BERT with exits (eecompile.model.bert): the pretrained MiniLM-L6 loads into the plain-PyTorch
encoder exactly (it reproduces all-MiniLM-L6-v2's published sentence similarity), and a small
randomly initialised BERT with MiniLM's real tokenizer goes through export (tflite-fp32 and
onnx), validation, text in the bundle and early exits. The trained MiniLM figures come from
bench/bench_transformer.py (minutes of fine-tuning: not a test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eecompile import Runtime
from eecompile.data import load_data
from eecompile.data.text import RT_CLASSES, RT_MAX_LENGTH, minilm_dir, minilm_encoder


def _pooled(model, ids: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        state = (torch.from_numpy(ids),)
        for k in range(model.n_stages):
            state, _ = model.forward_stage(k, *state)
        h, mask = state
        e = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return e / e.norm(dim=1, keepdim=True)


def test_minilm_loads_exactly():
    """sentence-transformers documents cos("A man is eating food.", "A man is eating a piece of
    bread.") = 0.7553 for all-MiniLM-L6-v2; unrelated sentences stay near 0."""
    from eecompile.model.bert import minilm

    model = minilm(RT_CLASSES).eval()
    assert model.input_dtype == "int64" and model.input_range == (0, 30521) and model.n_stages == 6
    s = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
         "A monkey is playing drums."]
    e = _pooled(model, minilm_encoder().encode(s).ids)
    sim = (e @ e.T).numpy()
    assert sim[0, 1] == pytest.approx(0.7553, abs=2e-3)
    assert abs(sim[0, 2]) < 0.15 and abs(sim[0, 3]) < 0.15


def test_bert_weights_are_refused_when_they_do_not_fit(tmp_path):
    from safetensors.torch import save_file

    from eecompile.errors import ModelLoadError
    from eecompile.model.bert import load_bert_weights, minilm, tiny_bert

    model = tiny_bert(RT_CLASSES, vocab_size=30522, length=RT_MAX_LENGTH)
    with pytest.raises(ModelLoadError, match="weights of another shape"):
        load_bert_weights(model, minilm_dir() / "model.safetensors")
    save_file({"embeddings.word_embeddings.weight": torch.zeros(4, 4)}, str(tmp_path / "part.safetensors"))
    with pytest.raises(ModelLoadError, match="lacks .* BERT weights"):
        load_bert_weights(model, tmp_path / "part.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_bert_weights(minilm(RT_CLASSES, layers=1), tmp_path / "junk.safetensors")


@pytest.fixture(scope="module")
def rt_data():
    return {"train": load_data("rotten-tomatoes:train:256"), "val": load_data("rotten-tomatoes:val:200")}


@pytest.mark.parametrize("target", ["onnx", "tflite-fp32"])
def test_tiny_bert_with_minilm_tokenizer_exports_and_takes_text(rt_data, target, tmp_path):
    from eecompile.export import ExportOptions, export
    from eecompile.model.bert import tiny_bert

    model = tiny_bert(RT_CLASSES, vocab_size=30522, length=RT_MAX_LENGTH).eval()
    bundle = export(model, target, rt_data["train"], tmp_path / target, val_data=rt_data["val"],
                    options=ExportOptions(quiet=True, tokenizer=str(minilm_dir() / "tokenizer.json"),
                                          trunks=False))
    m = bundle.manifest
    assert not m.validation["failures"] and min(e["top1_agreement"] for e in m.validation["exits"]) >= 0.995
    assert (m.text.vocab_size, m.text.max_length, m.text.pad_id, m.text.unk_id) == (30522, 48, 0, 100)
    states = [[t.passthrough_of for t in g.outputs] for g in (s.graphs[0] for s in m.stages)]
    if target == "tflite-fp32":  # the mask passes through stages 1.. unchanged: one tensor in TFLite
        assert all(row[1] == "state_in_1" for row in states[1:-1]), states
    rt = Runtime(bundle)
    long = "a " + "remarkably " * 60 + "dull film"
    res, enc = rt.run_text(["A gripping, funny film.", long, "naïve café 🎬"], no_early_exit=True)
    assert enc.truncated.tolist() == [False, True, False] and enc.n_tokens[1] == 65  # [CLS] a remarkably x60 dull film [SEP]
    assert enc.ids[1, -1] == 102  # truncation keeps [SEP]
    assert enc.n_unknown[2] >= 1  # the emoji is [UNK]; accents are stripped by the uncased normalizer
    ref = model(torch.from_numpy(enc.ids))[-1].detach().numpy().argmax(1)
    np.testing.assert_array_equal(res.class_idx, ref)
    early = rt.run(rt_data["val"].x, policy="patience", thresholds=2)
    assert early.exit_idx.max() <= 2 and (early.exit_idx >= 1).all()  # PABEE: 2 agreeing exits, at exit 1 soonest


@pytest.mark.parametrize("target", ["tflite-fp32", "tflite-dynamic"])
def test_tiny_bert_in_the_c_harness_matches_python(target, tmp_path):
    """The float paths of the C harness on BERT stages (embedding constants, exact GELU as
    builtin ops, the mask passed through every stage as one tensor), in fp32 and in dynamic-range
    int8 (int8 weights and matmuls, float LayerNorm/Softmax/GELU): validation passes, every
    exit's logits match the Python runtime's, and entropy (DeeBERT) and patience (PABEE) take
    the same exits."""
    import json
    import subprocess

    from conftest import require_tools
    from test_harness import built
    from test_token_ids import token_task

    from eecompile.export import ExportOptions, export
    from eecompile.harness import find_litert_lib
    from eecompile.model.bert import tiny_bert
    from eecompile.model.train import exit_accuracies, train
    from eecompile.model.zoo import Recipe

    require_tools("cmake", "cc")
    model = tiny_bert(["negative", "positive"], vocab_size=32, length=12)
    data = {"train": token_task(2000, 11), "val": token_task(300, 12), "test": token_task(300, 13)}
    train(model, data["train"], Recipe(mode="joint", epochs=8, lr=3e-3, batch_size=64), quiet=True)
    assert exit_accuracies(model, data["test"])[-1] > 0.85
    bundle = export(model, target, data["train"].take(64), tmp_path / target, val_data=data["val"],
                    options=ExportOptions(quiet=True))
    v = bundle.manifest.validation
    assert v["passed"] and min(e["top1_agreement"] for e in v["exits"]) >= 0.99, v
    if target == "tflite-dynamic":  # int8 weights: not the float graph, but close to it
        assert all(25 < e["snr_db"] < 100 for e in v["exits"]), [e["snr_db"] for e in v["exits"]]
    exe = built(bundle, tmp_path).ee_run
    lib = str(find_litert_lib())
    x = data["test"].x
    np.save(tmp_path / "ids.npy", x)
    rt = Runtime(bundle)

    def ee_run(*args: str) -> dict:
        proc = subprocess.run([str(exe), str(bundle.root), str(tmp_path / "ids.npy"), "--litert", lib, "--json", *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    ee_run("--all-exits", "--dump-logits", str(tmp_path / "logits.bin"))
    c_logits = np.fromfile(tmp_path / "logits.bin", dtype=np.float32).reshape(len(x), model.n_stages, 2)
    ref = rt.run(x, no_early_exit=True, keep_logits=True)
    for k in range(model.n_stages):
        np.testing.assert_allclose(c_logits[:, k], ref.exit_logits[k], rtol=1e-5, atol=1e-5)
    shares = []
    for policy, t in (("entropy", "0.5"), ("entropy", "0.2"), ("patience", "1"), ("patience", "2")):
        out = ee_run("--policy", policy, "--thresholds", t)
        c_exits = np.array([s["exit_idx"] for s in out["samples"]])
        py = rt.run(x, policy=policy, thresholds=float(t))
        np.testing.assert_array_equal(c_exits, py.exit_idx, err_msg=f"{policy} {t}")
        np.testing.assert_array_equal([s["class_idx"] for s in out["samples"]], py.class_idx)
        shares.append(np.bincount(c_exits, minlength=model.n_stages).tolist())
    assert any(s[0] > 0 and sum(s[1:]) > 0 for s in shares), shares
