"""Export: every target, int8 chaining, split heads, validation failures, atomic bundles."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from torch import nn

from eecompile import EarlyExitModel, ExportOptions, Runtime, export, load_bundle
from eecompile.errors import DataError, OutputPathError, ToleranceError, UnsupportedOpError
from eecompile.export import Tolerances

from conftest import require_tools


def test_int8_bundle_is_full_integer_and_chains_in_nhwc(int8_bundle):
    m = int8_bundle.manifest
    assert m.target == "tflite-int8" and len(m.stages) == 3 and m.n_exits == 3
    for k, stage in enumerate(m.stages):
        (g,) = stage.graphs
        assert g.kind == "fused" and g.file == f"stage{k}.tflite"
        assert all(t.dtype == "int8" and t.quant is not None for t in g.inputs + g.outputs)
        roles = [t.role for t in g.outputs]
        assert roles == (["logits"] if k == 2 else ["state", "logits"])
        assert stage.macs > 0 and stage.n_params > 0
    # every stage but the last has a trunk: the segment alone, same input and state output (shape, grid)
    for k, stage in enumerate(m.stages):
        if k == 2:
            assert stage.trunk is None
            continue
        t, f = stage.trunk, stage.graphs[0]
        assert t.kind == "segment" and t.file == f"stage{k}_trunk.tflite" and [o.role for o in t.outputs] == ["state"]
        assert t.inputs[0].quant == f.inputs[0].quant and t.outputs[0].quant == f.outputs[0].quant
    assert m.packed.signature_keys == ["stage0", "stage1", "stage2", "stage0_trunk", "stage1_trunk"]
    # stage k's output state has exactly stage k+1's input shape (NHWC, no transposes between stages)
    for a, b in zip(m.stages[:-1], m.stages[1:]):
        assert a.graphs[0].outputs[0].shape == b.graphs[0].inputs[0].shape
        assert b.graphs[0].inputs[0].perm_from_torch == [0, 2, 3, 1]
    assert m.input[0].shape == [1, 8, 8, 1]
    assert m.calibration["propagated"] == "exported stages"


def test_int8_heads_have_no_average_pool_op(int8_bundle):
    """The heads' AvgPool2d became depthwise convolutions, which XNNPACK runs in int8."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    checks = {c["graph"]: c["avgpools_as_depthwise"] for c in int8_bundle.manifest.calibration["float_checks"]}
    assert checks == {"stage0.tflite": 1, "stage0_trunk.tflite": 0, "stage1.tflite": 1, "stage1_trunk.tflite": 0,
                      "stage2.tflite": 1}  # trunks have no head, so no pool
    for g in int8_bundle.manifest.graphs:
        model = flatbuffer_utils.read_model(str(int8_bundle.root / g.file))
        ops = [names[model.operatorCodes[op.opcodeIndex].builtinCode] for op in model.subgraphs[0].operators]
        assert "AVERAGE_POOL_2D" not in ops and "DEPTHWISE_CONV_2D" in ops, ops


def test_avgpool_to_depthwise_keeps_the_float_result(tmp_path):
    import onnx
    import onnxruntime as ort
    import torch

    from eecompile.export.onnx import avgpool_to_depthwise, export_onnx

    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AvgPool2d(3), nn.AvgPool2d(2, 1, padding=1, count_include_pad=True),
                      nn.AvgPool2d(1), nn.AvgPool2d(2, 1, padding=1, count_include_pad=False)).eval()
    x = torch.randn(1, 3, 20, 20)
    path = tmp_path / "m.onnx"
    export_onnx(m, (x,), ["x"], ["y"], path, dynamic_batch=False, stage_idx=0, output_shapes=[list(m(x).shape)])
    before = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    # the pool that excludes its padding from the average is not a convolution: left alone
    # an identity pool becomes Identity: a 1x1 depthwise conv would add an int8 requantization
    assert avgpool_to_depthwise(path) == 3
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == ["Conv", "Conv", "Conv", "Identity", "AveragePool"]
    after = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)
    assert avgpool_to_depthwise(path) == 0


def test_int8_boundaries_share_one_grid(int8_bundle, split_bundle):
    rows = int8_bundle.manifest.boundaries
    assert [r["boundary"] for r in rows] == ["stage 0 -> stage 1", "stage 1 -> stage 2"]
    for r in rows:  # range anchors: the consumer's input grid is the producer's output grid
        assert r["rel_scale_diff"] == 0.0 and r["out_zero_point"] == r["in_zero_point"] and not r["requantize"]
    # without anchors, calibration on the propagated states alone: close, not always equal
    for r in split_bundle.manifest.boundaries:
        assert r["rel_scale_diff"] < 0.02
    for s in split_bundle.manifest.stages:
        for g in s.graphs:
            for t in g.inputs:
                row = [r for r in split_bundle.manifest.boundaries if r["tensor"] == t.name
                       and r["boundary"].endswith(f"stage {s.stage_idx}" if g.kind == "segment" else "head")
                       and r["boundary"].startswith(f"stage {s.stage_idx - 1 if g.kind == 'segment' else s.stage_idx}")]
                if s.stage_idx == 0 and g.kind == "segment":
                    assert not row  # the model input: no producer
                    continue
                assert row, f"stage {s.stage_idx} {g.kind} input {t.name} has no boundary row"
                assert (t.requant_from is not None) == row[0]["requantize"]


def test_int8_validation_meets_defaults(int8_bundle):
    v = int8_bundle.manifest.validation
    assert v["passed"] and v["n_samples"] == 300
    for e in v["exits"]:
        assert e["top1_agreement"] >= 0.98 and e["snr_db"] >= 15
        assert 100 * (e["accuracy_torch"] - e["accuracy_exported"]) <= 1.0
    assert v["exits"][-1]["accuracy_exported"] > 0.9


@pytest.mark.parametrize("target,min_agree", [("tflite-fp32", 1.0), ("tflite-fp16", 0.99), ("onnx", 1.0)])
def test_float_targets(export_digits, tmp_path, target, min_agree):
    # fp16 weights can flip a near-tie sample; on 300 validation digits one flip is 0.33%,
    # under the 99.9% gate, so fp16 is checked here against 99% with the gate's report kept.
    b = export_digits(target, tmp_path / "b", allow_mismatch=target == "tflite-fp16")
    v = b.manifest.validation
    if target != "tflite-fp16":
        assert v["passed"], v["failures"]
    else:  # passes, or fails by near-tie flips only: at most one sample per agreement metric
        one = 1.0 / v["n_samples"]
        for f in v["failures"]:
            assert f["metric"] in ("top1_agreement", "accuracy_drop_pts", "decision_agreement"), f
            assert (f["value"] >= 1 - 1.5 * one) if f["metric"] != "accuracy_drop_pts" else f["value"] <= 150 * one
    assert min(e["top1_agreement"] for e in v["exits"]) >= min_agree
    assert min(e["snr_db"] for e in v["exits"]) >= (40 if target == "tflite-fp16" else 100)
    ext = ".onnx" if target == "onnx" else ".tflite"
    assert all(g.file.endswith(ext) and g.inputs[0].dtype == "float32" for s in b.manifest.stages for g in s.graphs)
    assert (b.manifest.packed is None) == (target == "onnx")


def test_packed_stages_compute_what_the_stage_files_compute(int8_bundle, split_bundle, resnet_bundle, tmp_path):
    from eecompile.errors import InternalError
    from eecompile.export.pack import check_packed, pack_tflite

    for b in (int8_bundle, split_bundle):
        p = b.manifest.packed
        files = [b.path_of(g) for g in b.manifest.all_graphs]
        assert p.signature_keys == [f.stem for f in files]
        # every weight once: a trunk repeats its fused stage's weights, and they are stored once
        stages = sum(b.path_of(g).stat().st_size for g in b.manifest.graphs)
        trunks = sum(b.path_of(g).stat().st_size for g in b.manifest.trunks)
        assert 0.9 * stages <= p.size_bytes <= stages + 0.75 * trunks
        check_packed(b.root / p.file, files, p.signature_keys, n_samples=8)
    # a signature that is not its stage file's graph is caught
    other = [resnet_bundle.path_of(resnet_bundle.manifest.graphs[0])]
    pack_tflite(other, ["stage0"], tmp_path / "wrong.tflite")
    with pytest.raises(InternalError, match=r"wrong.tflite\[stage0\] output .* differs from stage0.tflite"):
        check_packed(tmp_path / "wrong.tflite", [int8_bundle.path_of(int8_bundle.manifest.graphs[0])], ["stage0"])


def test_split_heads_int8(export_digits, digits_data, int8_bundle, tmp_path):
    b = export_digits("tflite-int8", tmp_path / "split", split_heads=True)
    kinds = [[g.kind for g in s.graphs] for s in b.manifest.stages]
    assert kinds == [["segment", "head"]] * 3
    assert len(b.manifest.boundaries) == 5  # 3 segment->head + 2 stage->stage
    res = Runtime(b).run(digits_data["test"].x, no_early_exit=True)
    fused = Runtime(int8_bundle).run(digits_data["test"].x, no_early_exit=True)
    assert np.mean(res.class_idx == fused.class_idx) >= 0.98  # same network, different graph cut


def test_validation_failure_collects_every_check_and_leaves_nothing(export_digits, tmp_path):
    strict = Tolerances(min_top1_agreement=1.0, max_accuracy_drop_pts=0.0, min_snr_db=200.0,
                        min_decision_agreement=1.0)
    from eecompile.export import export as do_export

    out = tmp_path / "strict"
    with pytest.raises(ToleranceError) as e:
        do_export(_model(), "tflite-int8", _data()["train"], out,
                  val_data=_data()["val"], options=ExportOptions(quiet=True), tolerances=strict)
    snr_fails = [f for f in e.value.failures if f.metric == "snr_db"]
    assert len(snr_fails) == 3  # every exit reported, not just the first
    assert "exit 0 snr_db" in str(e.value) and "--allow-mismatch" in e.value.hint
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".strict")]  # no staging dir left
    b = do_export(_model(), "tflite-int8", _data()["train"], out, val_data=_data()["val"],
                  options=ExportOptions(quiet=True, allow_mismatch=True), tolerances=strict)
    assert not b.manifest.validation["passed"] and out.exists()


def _model():
    from eecompile.model.loading import load_zoo

    return load_zoo("dsnet-digits", quiet=True)


def _data():
    from eecompile.data import load_data

    return {"train": load_data("digits:train:256"), "val": load_data("digits:val")}


def test_existing_bundle_kept_without_force_and_replaced_with_force(export_digits, tmp_path):
    out = tmp_path / "b"
    first = export_digits("onnx", out)
    stamp = (out / "manifest.json").read_text()
    with pytest.raises(OutputPathError, match="already exists"):
        export_digits("onnx", out)
    assert (out / "manifest.json").read_text() == stamp
    export_digits("tflite-fp32", out, force=True)
    assert load_bundle(out).manifest.target == "tflite-fp32" and first.manifest.target == "onnx"
    assert not (out / "stage0.onnx").exists()  # replaced whole, not merged


def test_unwritable_output(export_digits, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputPathError):
        export_digits("onnx", f / "b")
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        os.chmod(ro, 0o500)
        try:
            with pytest.raises(OutputPathError, match="not writable"):
                export_digits("onnx", ro / "b")
        finally:
            os.chmod(ro, 0o700)
        return
    # root ignores permissions (CI runs as root): make the directory a read-only mount in a
    # private mount namespace and check the output directory from a process inside it
    require_tools("unshare", "mount")
    code = "import sys; from eecompile.bundle.io import check_output_dir; check_output_dir(sys.argv[1], False)"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$1" "$1" && exec "$2" -c "$3" "$1/b"',
                           "sh", str(ro), sys.executable, code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "OutputPathError" in proc.stderr and "is not writable" in proc.stderr, proc.stderr


def test_calibration_data_checks(digits_model, tmp_path):
    with pytest.raises(DataError, match="at least 32"):
        export(digits_model, "tflite-int8", np.random.rand(20, 1, 8, 8).astype(np.float32), tmp_path / "b")
    with pytest.raises(DataError, match="does not match the model input"):
        export(digits_model, "tflite-int8", np.random.rand(64, 1, 28, 28).astype(np.float32), tmp_path / "b")
    with pytest.raises(DataError, match="dtype int64"):
        export(digits_model, "tflite-int8", np.zeros((64, 1, 8, 8), np.int64), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_unsupported_op_adaptive_pool(tmp_path):
    heads = [nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(36, 2))]
    m = EarlyExitModel([nn.Conv2d(1, 4, 3, padding=1)], heads, input_shape=(1, 8, 8))
    x = np.random.rand(160, 1, 8, 8).astype(np.float32)
    with pytest.raises(UnsupportedOpError, match="stage 0: AdaptiveAvgPool2d"):
        export(m, "onnx", x, tmp_path / "b", options=ExportOptions(quiet=True))
    assert not (tmp_path / "b").exists()


def test_op_without_builtin_kernel_fails_loudly(tmp_path):
    """An op that TFLite could only run through TF Select (Flex) kernels is refused, not shipped."""
    import tensorflow as tf

    from eecompile.export.tflite import _convert

    class Det(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4, 4], tf.float32)])
        def __call__(self, x):
            return tf.linalg.det(x)

    tf.saved_model.save(Det(), str(tmp_path / "sm"))
    for precision in ("fp32", "int8"):
        rep = [{"x": np.random.rand(1, 4, 4).astype(np.float32)} for _ in range(4)]
        with pytest.raises(UnsupportedOpError, match="stage 3: an op has no TFLite builtin"):
            _convert(tmp_path / "sm", precision, rep, stage_idx=3)


def test_manifest_records_versions_and_sizes(int8_bundle):
    raw = json.loads((int8_bundle.root / "manifest.json").read_text())
    from eecompile.bundle.manifest import SCHEMA_VERSION

    assert raw["schema_version"] == SCHEMA_VERSION == 6 and raw["tool_versions"]["torch"].startswith("2.13.0")
    for s in raw["stages"]:
        for g in s["graphs"]:
            assert g["size_bytes"] == (int8_bundle.root / g["file"]).stat().st_size
    assert raw["exits"][0]["class_names"] == [str(i) for i in range(10)]


def test_force_replaces_only_bundles(export_digits, tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    with pytest.raises(OutputPathError, match="not a bundle"):
        export_digits("onnx", project, force=True)
    assert (project / "src" / "main.c").exists()


def test_bundle_files_honour_the_umask(int8_bundle):
    """Every file and the directory get the mode a plain open()/mkdir() would give (mkstemp and
    mkdtemp alone would leave the manifest and packed model 0600 beside 0644 stage files)."""
    from eecompile.util import default_mode

    root = int8_bundle.root
    assert root.stat().st_mode & 0o777 == default_mode(directory=True)
    modes = {p.name: p.stat().st_mode & 0o777 for p in root.iterdir()}
    assert {"manifest.json", "stages.tflite", "stage0.tflite"} <= set(modes)
    assert set(modes.values()) == {default_mode()}, modes
