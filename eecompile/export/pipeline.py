"""``export()``: a multi-exit PyTorch model -> a validated bundle of per-stage graphs.

For int8, stage k is calibrated on the states it really receives: the representative
inputs propagated through the already-converted int8 stages 0..k-1 (dequantized). The
boundary between stages is then measured; where the producer's and consumer's quant
params differ, the consumer input records ``requant_from`` and both runtimes apply it.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eecompile.core.text import check_tokenizer, copy_tokenizer
from eecompile.bundle.io import Bundle, check_output_dir, commit_bundle, staging_dir, write_samples
from eecompile.bundle.manifest import ExitSpec, GraphSpec, Manifest, PackedSpec, StageSpec, TensorSpec
from eecompile.core.inputs import check_inputs, take, unwrap
from eecompile.data.datasets import Dataset
from eecompile.errors import DataError, ExportError, InternalError
from eecompile.export.interrupts import checkpoint, interrupt_guard, no_interrupts
from eecompile.export.onnx import export_onnx
from eecompile.export.stages import StageGraph, count_macs_params
from eecompile.export.validate import MIN_VALIDATION_SAMPLES, Tolerances, validate_bundle
from eecompile.model.contract import EarlyExitModel
from eecompile.bundle.graphs import open_graph
from eecompile.core.names import TARGETS
from eecompile.core.policies import make_policy
from eecompile.core.quant import needs_requant, to_graph_input, to_torch_layout
from eecompile.util import sha256_file

MIN_CALIB_SAMPLES = 32
VAL_HINT = ("pass --val-data (Python: val_data=) with at least 100 held-out labelled samples, "
            "e.g. fashion-mnist:val:1000 or a .npz with x and y")
TOOLS = ("eecompile", "torch", "onnx", "onnx2tf", "tensorflow", "ai-edge-litert", "onnxruntime", "numpy")


@dataclass
class ExportOptions:
    split_heads: bool = False  # export each exit head as its own graph
    policy: str = "max-prob"
    threshold: float | list[float] | None = None
    onnxsim: str = "auto"  # "auto" | "on" | "off"
    range_anchors: bool = True  # int8: make stage boundaries share one quant grid (see _with_range_anchors)
    pack: bool = True  # TFLite: also write every graph as a signature of one file (see export/pack.py)
    trunks: bool = True  # fused stages: also export each segment without its head (run where an exit is dropped)
    allow_mismatch: bool = False
    force: bool = False
    quiet: bool = False
    model_source: str = ""
    tokenizer: str | None = None  # a tokenizer.json for a model that takes token ids: shipped in the bundle


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i}" for i in range(n)]


def _run_int8_graph(path: Path, graph: GraphSpec, inputs_torch: list[np.ndarray]) -> list[np.ndarray]:
    """Run a converted graph over calibration samples; return dequantized outputs in torch layout."""
    runner = open_graph(path, graph, "litert")
    feeds = [to_graph_input(a, spec) for a, spec in zip(inputs_torch, graph.inputs)]
    outs: list[list[np.ndarray]] = [[] for _ in graph.outputs]
    for i in range(feeds[0].shape[0]):
        for j, o in enumerate(runner.run([f[i : i + 1] for f in feeds])):
            outs[j].append(o.copy())
    return [to_torch_layout(np.concatenate(o), spec) for o, spec in zip(outs, graph.outputs)]


def _with_range_anchors(states: list[np.ndarray], specs: list[TensorSpec]) -> list[np.ndarray]:
    """Append one calibration sample whose first two elements sit at the producer's lowest and
    highest representable values (the rest is a real sample), so the consumer's input range,
    and with it its scale and zero point, equals the producer's output grid: the boundary
    then needs no requantization. One sample in hundreds barely moves the inner ranges."""
    out = []
    for a, spec in zip(states, specs):
        if spec.quant is None:
            out.append(a)
            continue
        anchor = a[:1].copy()
        flat = anchor.reshape(-1)
        s, z = np.float32(spec.quant.scale), np.float32(spec.quant.zero_point)
        flat[0] = (np.float32(-128) - z) * s
        flat[1] = (np.float32(127) - z) * s
        out.append(np.concatenate([a, anchor]))
    return out


class _StageExporter:
    def __init__(self, model: EarlyExitModel, target: str, staging: Path, work: Path, opts: ExportOptions) -> None:
        self.model, self.target, self.staging, self.work, self.opts = model, target, staging, work, opts
        self.precision = TARGETS[target]
        self.float_checks: list[dict] = []  # onnx2tf float graph vs ONNX Runtime, per graph

    def export_graph(self, k: int, kind: str, calib_in: list[np.ndarray], check_in: list[np.ndarray],
                     stem: str | None = None) -> GraphSpec:
        module = StageGraph(self.model, k, kind).eval()
        example = tuple(torch.from_numpy(a[:1]) for a in check_in)
        with torch.no_grad():
            out = module(*example)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        in_role = "input" if k == 0 and kind != "head" else "state"
        in_names = _names("input" if in_role == "input" else "state_in", len(example))
        n_state_out = len(outs) - (0 if kind == "segment" else 1)
        out_names = _names("state_out", n_state_out) + ([] if kind == "segment" else ["logits"])
        out_roles = ["state"] * n_state_out + ([] if kind == "segment" else ["logits"])
        stem = stem or f"stage{k}" + ("" if kind == "fused" else f"_{kind}")
        onnx_path = (self.staging if self.precision == "onnx" else self.work) / f"{stem}.onnx"
        export_onnx(module, example, in_names, out_names, onnx_path, dynamic_batch=self.precision == "onnx",
                    stage_idx=k, output_shapes=[list(t.shape) for t in outs])
        torch_in = [(n, in_role, list(t.shape)) for n, t in zip(in_names, example)]
        torch_out = [(n, r, list(t.shape)) for n, r, t in zip(out_names, out_roles, outs)]
        if self.precision == "onnx":
            ident = lambda shp: list(range(len(shp)))  # noqa: E731
            dt = lambda t: str(t.numpy().dtype)  # noqa: E731
            inputs = [TensorSpec(n, r, [-1] + s[1:], dt(t), ident(s), i, signature_name=n)
                      for i, ((n, r, s), t) in enumerate(zip(torch_in, example))]
            outputs = [TensorSpec(n, r, [-1] + s[1:], dt(t), ident(s), i, signature_name=n)
                       for i, ((n, r, s), t) in enumerate(zip(torch_out, outs))]
            file = onnx_path.name
            signature = None
        else:
            from eecompile.export.tflite import convert_stage

            g = convert_stage(onnx_path, self.work, self.precision, k, torch_in, torch_out, calib_in, check_in[:4],
                              self.opts.onnxsim)
            file = f"{stem}.tflite"
            (self.staging / file).write_bytes(g.data)
            inputs, outputs, signature = g.inputs, g.outputs, g.signature
            self.float_checks.append({"graph": file, "rel_err": g.float_check_rel_err, "onnxsim": g.used_onnxsim,
                                      "avgpools_as_depthwise": g.avgpools_as_depthwise})
        for i, t in enumerate(inputs):  # a stage-0 graph's inputs are the model's, in order
            if t.role == "input" and t.source_dtype != "float32":
                rng = self.model.input_ranges[i]
                t.value_range = None if rng is None else list(rng)
        path = self.staging / file
        return GraphSpec(kind=kind, file=file, sha256=sha256_file(path), size_bytes=path.stat().st_size,
                         inputs=inputs, outputs=outputs, signature=signature)


def _boundary(producer: GraphSpec, consumer: GraphSpec, label: str) -> list[dict]:
    """Compare producer state outputs with consumer inputs; set ``requant_from`` where needed."""
    rows = []
    states = [t for t in producer.outputs if t.role == "state"]
    for out, inp in zip(states, consumer.inputs):
        if out.shape != inp.shape or out.perm_from_torch != inp.perm_from_torch or out.dtype != inp.dtype:
            raise ExportError(
                f"{label}: state {out.name} leaves as {out.dtype}{out.shape} (layout {out.perm_from_torch}) but the "
                f"next stage takes {inp.dtype}{inp.shape} (layout {inp.perm_from_torch})",
                hint="the converter laid this state out differently on the two sides; export with --target onnx "
                     "and report the model to eecompile")
        if out.quant is None or inp.quant is None:
            continue
        s1, s2 = out.quant.scale, inp.quant.scale
        requant = needs_requant(out.quant, inp.quant)
        if requant:
            inp.requant_from = out.quant
        rows.append({"boundary": label, "tensor": inp.name, "out_scale": s1, "out_zero_point": out.quant.zero_point,
                     "in_scale": s2, "in_zero_point": inp.quant.zero_point, "rel_scale_diff": abs(s1 / s2 - 1.0),
                     "max_level_shift": 255 * abs(s1 / s2 - 1.0), "requantize": requant})
    return rows


def export(model: EarlyExitModel, target: str, calib: Dataset | np.ndarray, out_dir: str | os.PathLike,
           val_data: Dataset | None = None, options: ExportOptions | None = None,
           tolerances: Tolerances | None = None) -> Bundle:
    """Export ``model`` for ``target`` into the bundle directory ``out_dir`` and validate it.

    Raises ToleranceError (with every failing check) unless ``options.allow_mismatch``;
    on any error nothing is left at ``out_dir`` (an existing bundle there is kept).
    """
    opts = options or ExportOptions()
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}", hint=f"use one of {', '.join(TARGETS)}")
    out = check_output_dir(out_dir, opts.force)
    calib_ds = calib if isinstance(calib, Dataset) else Dataset(calib, None, [], "array")
    min_n = MIN_CALIB_SAMPLES if TARGETS[target] == "int8" else 4
    x = check_inputs(calib_ds.x, model.input_specs, "calibration data", min_samples=min_n)
    n_x = len(x[0])
    held_out_from_calib = False
    if val_data is None:
        n_val = max(MIN_VALIDATION_SAMPLES, n_x // 4)
        if n_x - n_val < min_n:
            raise DataError(f"{n_x} calibration samples cannot give {n_val} for validation and keep {min_n} "
                            "for calibration", hint=VAL_HINT)
        val_data = Dataset(unwrap(take(x, slice(-n_val, None))), None if calib_ds.y is None else calib_ds.y[-n_val:],
                           [], "calib hold-out")
        x = take(x, slice(0, -n_val))
        n_x -= n_val
        held_out_from_calib = True
    val_x = check_inputs(val_data.x, model.input_specs, "validation data")  # before converting anything
    if len(val_x[0]) < MIN_VALIDATION_SAMPLES:
        raise DataError(f"validation data has {len(val_x[0])} samples; the checks need at least "
                        f"{MIN_VALIDATION_SAMPLES}", hint=VAL_HINT)
    policy = make_policy(opts.policy, opts.threshold, model.n_stages)  # checks name and range before any work
    text = None if opts.tokenizer is None else check_tokenizer(opts.tokenizer, model.input_specs)
    model.eval()

    staging = staging_dir(out)
    work = Path(tempfile.mkdtemp(prefix="eecompile-work-"))
    try:
        with interrupt_guard():
            exporter = _StageExporter(model, target, staging, work, opts)
            stages, boundaries = _export_stages(model, exporter, x, opts)
            exits = [ExitSpec(exit_idx=k, stage_idx=k, n_classes=model.n_classes, class_names=model.class_names,
                              policy=policy.name, threshold=policy.thresholds[k]) for k in range(model.n_stages)]
            first = stages[0].graphs[0]
            versions = tool_versions()
            manifest = Manifest(
                name=model.name, target=target, model_source=opts.model_source,
                input=[t for t in first.inputs], stages=stages, exits=exits, tool_versions=versions,
                created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                eecompile_version=versions["eecompile"],
                calibration={"data": calib_ds.name, "n_samples": n_x, "propagated": "exported stages"
                             if TARGETS[target] == "int8" else "not used", "float_checks": exporter.float_checks},
                boundaries=boundaries)
            if text is not None:
                copy_tokenizer(opts.tokenizer, text, staging)
                manifest.text = text
            if opts.pack and target.startswith("tflite-"):
                manifest.packed = _pack(staging, manifest)
            manifest.samples = write_samples(staging, val_x, val_data.y, val_data.name)
            bundle = Bundle(staging, manifest)
            report = validate_bundle(bundle, model, val_data, tolerances, quiet=opts.quiet, data_hint=VAL_HINT)
            manifest.validation = report.to_dict()
            manifest.validation["data"] = val_data.name + (" (held out from calibration data)" if held_out_from_calib else "")
            if report.failures and not opts.allow_mismatch:
                raise report.error()
            checkpoint()  # a Ctrl-C swallowed in validation or packing stops here, before the commit
            with no_interrupts():  # the renames that swap the bundle in are not cut in half
                return commit_bundle(staging, manifest, out, opts.force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def _pack(staging: Path, manifest: Manifest) -> PackedSpec:
    from eecompile.export.pack import PACKED_FILE, check_packed, pack_tflite

    files = [staging / g.file for g in manifest.all_graphs]
    keys = [Path(g.file).stem for g in manifest.all_graphs]
    out = staging / PACKED_FILE
    pack_tflite(files, keys, out)
    check_packed(out, files, keys, id_ranges={t.signature_name or t.name: None if t.value_range is None else
                                              tuple(t.value_range) for t in manifest.input})
    return PackedSpec(file=PACKED_FILE, sha256=sha256_file(out), size_bytes=out.stat().st_size, signature_keys=keys)


def _export_stages(model: EarlyExitModel, exporter: _StageExporter, x: tuple[np.ndarray, ...],
                   opts: ExportOptions) -> tuple[list[StageSpec], list[dict]]:
    int8 = exporter.precision == "int8"
    ref_state = list(x)  # float PyTorch states (torch layout): for float checks and MAC counts
    calib_state = list(x)  # states the stage really receives (int8: from the converted stages)
    stages: list[StageSpec] = []
    boundaries: list[dict] = []
    prev_producer: GraphSpec | None = None
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=opts.quiet) as progress:
        task = progress.add_task(f"export {model.name} -> {exporter.target}", total=model.n_stages)
        for k in range(model.n_stages):
            with torch.no_grad():
                ref_t = tuple(torch.from_numpy(a) for a in ref_state)
                new_ref, _ = model.forward_stage(k, *ref_t)
            macs, n_params = count_macs_params(StageGraph(model, k, "fused"), ref_t)
            head_macs, _ = count_macs_params(StageGraph(model, k, "head"), tuple(new_ref))
            graphs: list[GraphSpec] = []
            if opts.split_heads:
                seg = exporter.export_graph(k, "segment", calib_state, ref_state)
                seg_out = None
                if int8:
                    seg_states = [t for t in seg.outputs if t.role == "state"]
                    seg_out = _run_int8_graph(staging_of(exporter, seg), seg, calib_state)
                    if opts.range_anchors:
                        seg_out = _with_range_anchors(seg_out, seg_states)
                head_calib = seg_out if int8 else [t.numpy() for t in new_ref]
                head = exporter.export_graph(k, "head", head_calib, [t.numpy() for t in new_ref])
                boundaries += _boundary(seg, head, f"stage {k} segment -> head")
                graphs = [seg, head]
                producer = seg
                next_calib = seg_out
            else:
                fused = exporter.export_graph(k, "fused", calib_state, ref_state)
                graphs = [fused]
                producer = fused
                next_calib = None
                if int8 and k < model.n_stages - 1:
                    states = [t for t in fused.outputs if t.role == "state"]
                    next_calib = _run_int8_graph(staging_of(exporter, fused), fused, calib_state)[:-1]
                    if opts.range_anchors:
                        next_calib = _with_range_anchors(next_calib, states)
            trunk = None
            if not opts.split_heads and opts.trunks and k < model.n_stages - 1:
                trunk = exporter.export_graph(k, "segment", calib_state, ref_state, stem=f"stage{k}_trunk")
                _check_trunk(trunk, graphs[0], k)
            if prev_producer is not None:
                boundaries += _boundary(prev_producer, graphs[0], f"stage {k - 1} -> stage {k}")
            prev_producer = producer
            stages.append(StageSpec(stage_idx=k, exit_idx=k, graphs=graphs, macs=macs, n_params=n_params,
                                    trunk=trunk, head_macs=head_macs))
            ref_state = [t.numpy() for t in new_ref]
            calib_state = next_calib if int8 and next_calib is not None else ref_state
            progress.advance(task)
            checkpoint()
    if not stages:
        raise InternalError("no stages exported from a model the contract accepted")
    return stages, boundaries


def _check_trunk(trunk: GraphSpec, fused: GraphSpec, k: int) -> None:
    """The trunk replaces the fused graph where the exit is dropped: it must take the same inputs
    and give the next stage the same state (shape, dtype, quant grid), or chaining breaks."""
    fused_states = [t for t in fused.outputs if t.role == "state"]
    pairs = list(zip(trunk.inputs, fused.inputs)) + list(zip(trunk.outputs, fused_states))
    if len(trunk.outputs) != len(fused_states) or any(
            a.shape != b.shape or a.dtype != b.dtype or a.quant != b.quant or a.perm_from_torch != b.perm_from_torch
            for a, b in pairs):
        raise ExportError(f"stage {k}: the trunk graph (segment without its head) does not match the fused graph's "
                          "inputs and state outputs", hint="export with --no-trunks (exits can then only be "
                                                           "dropped by skipping their decision)")


def staging_of(exporter: _StageExporter, graph: GraphSpec) -> Path:
    return exporter.staging / graph.file
