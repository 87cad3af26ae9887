"""ONNX -> TFLite for one stage graph: onnx2tf (in process) to a SavedModel, then
``tf.lite.TFLiteConverter`` restricted to builtin ops, so an op that would need TF
Select (Flex) kernels fails loudly instead of producing a model a device cannot run.

onnxsim: ``auto`` converts without it (fast), checks the float SavedModel against ONNX
Runtime on real inputs, and reconverts with onnxsim when they disagree (onnx2tf
mis-converts some graphs, e.g. explicit padding layers, without it).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eecompile.bundle.manifest import QuantParams, TensorSpec
from eecompile.errors import ExportError, UnsupportedOpError
from eecompile.export.interrupts import checkpoint

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PRECISIONS = ("int8", "dynamic", "fp16", "fp32")
FLOAT_CHECK_REL_TOL = 1e-3


@dataclass
class TFLiteGraph:
    data: bytes
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    signature: str
    used_onnxsim: bool
    float_check_rel_err: float
    avgpools_as_depthwise: int = 0  # int8: AveragePool nodes rewritten for XNNPACK (see onnx.avgpool_to_depthwise)


def infer_perm(torch_shape: list[int], exported_shape: list[int], what: str) -> list[int]:
    """The permutation onnx2tf applied to a tensor: channel-last for images (rank 4), torch
    layout for every other rank (``_onnx2tf`` keeps rank-3 and rank-5 inputs as they are, and
    onnx2tf writes such outputs in torch layout), so a sequence state leaves one stage in the
    layout the next stage takes. Ambiguous shapes (e.g. 64x64) resolve to those defaults."""
    rank = len(torch_shape)
    candidates = [[0, 2, 3, 1]] if rank == 4 else []
    candidates.append(list(range(rank)))
    if rank == 3:
        candidates.append([0, 2, 1])  # what onnx2tf does to a rank-3 input it is not told to keep
    for perm in candidates:
        if [torch_shape[p] for p in perm] == list(exported_shape):
            return perm
    raise ExportError(f"{what}: exported shape {exported_shape} is no layout of the PyTorch shape {torch_shape}",
                      hint="onnx2tf changed the tensor's shape; report this model to eecompile")


def _sample_images(sample: list[np.ndarray]):
    """onnx2tf downloads sample images for inputs that look like RGB images (4-D, 3 channels),
    even without quantization, which fails offline: hand it our own inputs instead (NHWC;
    onnx2tf resizes them to the input size)."""
    first = next((a for a in sample if a.ndim == 4), None)
    if first is None:
        return None
    nhwc = np.transpose(first, (0, 2, 3, 1)).astype(np.float32)
    reps = -(-20 // nhwc.shape[0])
    return lambda: np.concatenate([nhwc] * reps)[:20]


def _keep_layout_inputs(onnx_path: Path) -> list[str] | None:
    """Inputs of rank 3 and 5 that onnx2tf must leave in torch layout. By default it makes
    them channel-last (NCW -> NWC) while it writes the same tensors as outputs in torch
    layout, so a (batch, 16, 64) sequence state left stage k as (1, 16, 64) and stage k+1
    expected (1, 64, 16). Images (rank 4) stay NHWC on both sides, as XNNPACK wants."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    names = [i.name for i in graph.input if len(i.type.tensor_type.shape.dim) in (3, 5)]
    return names or None


def _pseudo_ops(onnx_path: Path) -> list[str]:
    """TFLite has no builtin ERF (exact GELU, ``nn.GELU()``, spells it out): onnx2tf then
    writes erf as Abramowitz-Stegun 7.1.26 (abs, exp, mul, add; max error 1.5e-7), which
    every TFLite runtime has. Validation judges the result like any other conversion."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return ["erf"] if any(n.op_type == "Erf" for n in graph.node) else []


def _onnx2tf(onnx_path: Path, out_dir: Path, use_onnxsim: bool, stage_idx: int, sample_images=None):
    import sys

    import onnx2tf

    impl = sys.modules["onnx2tf.onnx2tf"]
    original = impl.download_test_image_data
    if sample_images is not None:
        impl.download_test_image_data = sample_images

    shutil.rmtree(out_dir, ignore_errors=True)
    sink = io.StringIO()
    logging.getLogger("onnx2tf").setLevel(logging.ERROR)
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            model = onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(out_dir),
                                    not_use_onnxsim=not use_onnxsim, output_signaturedefs=True,
                                    copy_onnx_input_output_names_to_tflite=True, non_verbose=True,
                                    keep_shape_absolutely_input_names=_keep_layout_inputs(onnx_path),
                                    replace_to_pseudo_operators=_pseudo_ops(onnx_path))
    except SystemExit as exc:  # onnx2tf exits the process on conversion errors
        checkpoint()  # an interrupt it turned into an error is an interrupt
        tail = sink.getvalue().strip().splitlines()[-3:]
        raise ExportError(f"stage {stage_idx}: onnx2tf failed: {' | '.join(tail)}",
                          hint="try --onnxsim on, or simplify the stage's ops") from exc
    except Exception as exc:  # onnx2tf raises arbitrary errors from its op converters
        checkpoint()
        raise ExportError(f"stage {stage_idx}: onnx2tf failed: {type(exc).__name__}: {exc}",
                          hint="try --onnxsim on, or simplify the stage's ops") from exc
    finally:
        impl.download_test_image_data = original
    checkpoint()  # a Ctrl-C the converter swallowed (see export/interrupts.py)
    if model is None or not (out_dir / "saved_model.pb").exists():
        raise ExportError(f"stage {stage_idx}: onnx2tf wrote no SavedModel", hint="try --onnxsim on")
    return model


def _float_rel_err(fp32_tflite: bytes, onnx_path: Path, sample: list[np.ndarray], in_names: list[str]) -> float:
    """Max relative error between the converted float32 model and ONNX Runtime on ``sample``
    (torch layout). Goes through the model's signature: inputs by ONNX name, outputs output_<i>."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    runner = Interpreter(model_content=fp32_tflite).get_signature_runner()
    in_shapes = {k: [int(d) for d in v["shape"]] for k, v in runner.get_input_details().items()}
    worst = 0.0
    for i in range(sample[0].shape[0]):
        feeds = {n: a[i : i + 1] for n, a in zip(in_names, sample)}
        ref = sess.run(None, feeds)
        got = runner(**{n: np.ascontiguousarray(np.transpose(a, infer_perm(list(a.shape), in_shapes[n], n)))
                        for n, a in feeds.items()})
        for j, r in enumerate(ref):
            g = got[f"output_{j}"]
            g = np.transpose(g, np.argsort(infer_perm(list(r.shape), list(g.shape), "float check")))
            worst = max(worst, float(np.abs(r - g).max() / (np.abs(r).max() + 1e-6)))
    return worst


def _convert(saved_model: Path, precision: str, representative: list[dict[str, np.ndarray]] | None,
             stage_idx: int) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if precision == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: iter(representative or [])
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    else:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if precision == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif precision == "dynamic":  # no representative data: int8 weights, activations quantized at run time
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
    sink = io.StringIO()
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            data = conv.convert()
        checkpoint()  # a Ctrl-C the converter swallowed (see export/interrupts.py)
        return data
    except Exception as exc:  # TF raises ConverterError and friends; classify by message
        checkpoint()
        msg = str(exc)
        if "Select TF" in msg or "not supported" in msg or "Flex" in msg or "quantiz" in msg.lower():
            first = next((ln for ln in msg.splitlines() if "op" in ln.lower()), msg.splitlines()[0])
            raise UnsupportedOpError(
                f"stage {stage_idx}: an op has no TFLite builtin {precision} kernel ({first.strip()[:200]})",
                hint="replace the op, or export this model with --target onnx") from exc
        raise ExportError(f"stage {stage_idx}: TFLite conversion failed: {msg.splitlines()[0][:300]}",
                          hint="report the model to eecompile") from exc


def _smoke_run(data: bytes, sample: dict[str, np.ndarray], stage_idx: int, precision: str) -> None:
    """Run the converted graph once: some int8 kernels refuse their quantized inputs at run
    time (measured: the DIV inside a spelled-out erf fails "data[i] != zero_point"), which
    would otherwise surface as a LiteRT RuntimeError in validation."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=data).get_signature_runner()
    feeds = {}
    for name, d in runner.get_input_details().items():
        scale, zp = d["quantization"]
        x = sample[name]
        if scale:
            x = np.clip(np.round(x / scale + zp), -128, 127)
        feeds[name] = x.astype(d["dtype"])
    try:
        runner(**feeds)
    except RuntimeError as exc:
        op = str(exc).strip().splitlines()[-1][:200]
        raise UnsupportedOpError(f"stage {stage_idx}: the {precision} graph does not run in LiteRT ({op})",
                                 hint="export this model with --target tflite-dynamic (int8 weights and matmuls, "
                                      "float elsewhere), tflite-fp16 or tflite-fp32 (an int8 kernel rejected its "
                                      "inputs; exact GELU is one known case)") from exc


def _io_specs(data: bytes, torch_in: list[tuple[str, str, list[int]]], torch_out: list[tuple[str, str, list[int]]],
              stage_idx: int) -> tuple[list[TensorSpec], list[TensorSpec], str]:
    """Read tensor indices, shapes, dtypes and quant params through the model's signature.

    Outputs are named ``output_<i>`` in the order of the ONNX outputs; the order of
    ``get_output_details()`` is not that order, so we go through the signature.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    sigs = interp.get_signature_list()
    if len(sigs) != 1:
        raise ExportError(f"stage {stage_idx}: expected one signature, found {list(sigs)}",
                          hint="report the model to eecompile")
    sig = next(iter(sigs))
    runner = interp.get_signature_runner(sig)
    in_d, out_d = runner.get_input_details(), runner.get_output_details()

    def spec(d: dict, name: str, role: str, torch_shape: list[int], sig_name: str) -> TensorSpec:
        shape = [int(s) for s in d["shape"]]
        scale, zp = d["quantization"]
        q = QuantParams(float(scale), int(zp)) if scale != 0.0 else None
        return TensorSpec(name=name, role=role, shape=shape, dtype=np.dtype(d["dtype"]).name,
                          perm_from_torch=infer_perm(torch_shape, shape, f"stage {stage_idx} {name}"),
                          index=int(d["index"]), quant=q, signature_name=sig_name)

    try:
        inputs = [spec(in_d[name], name, role, shp, name) for name, role, shp in torch_in]
        outputs = [spec(out_d[f"output_{i}"], name, role, shp, f"output_{i}")
                   for i, (name, role, shp) in enumerate(torch_out)]
    except KeyError as exc:
        raise ExportError(f"stage {stage_idx}: signature lacks {exc}; has {list(in_d)} -> {list(out_d)}",
                          hint="report the model to eecompile") from exc
    by_index = {t.index: t.name for t in inputs}
    for t in outputs:  # an output that is an input tensor (TFLite dedups an unchanged state)
        t.passthrough_of = by_index.get(t.index)
    return inputs, outputs, sig


def convert_stage(onnx_path: Path, work_dir: Path, precision: str, stage_idx: int,
                  torch_in: list[tuple[str, str, list[int]]], torch_out: list[tuple[str, str, list[int]]],
                  calib_inputs: list[np.ndarray], check_inputs: list[np.ndarray], onnxsim: str = "auto") -> TFLiteGraph:
    """Convert one stage graph.

    ``torch_in``/``torch_out``: (name, role, torch shape) per tensor, in ONNX order.
    ``calib_inputs``: representative float inputs in torch layout (int8 only).
    ``check_inputs``: a few float inputs in torch layout for the float SavedModel check.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}", hint=f"use one of {PRECISIONS}")
    from eecompile.export.onnx import avgpool_to_depthwise, constants_as_initializers

    rewritten = avgpool_to_depthwise(onnx_path) if precision == "int8" else 0
    # onnx2tf gets its own copy, per attempt: it rewrites the file it is given (dropping node
    # domains), and ONNX Runtime checks the conversion against the untouched graph
    for_tf = onnx_path.with_name(onnx_path.stem + "_onnx2tf.onnx")
    shutil.copyfile(onnx_path, for_tf)
    constants_as_initializers(for_tf)  # attention's 1/sqrt(d) must stay a tensor for onnx2tf
    pristine = for_tf.read_bytes()
    attempts = {"auto": [False, True], "off": [False], "on": [True]}[onnxsim]
    rel_err = float("inf")
    used = False
    saved = work_dir / f"saved_model_{stage_idx}"
    for use_sim in attempts:
        for_tf.write_bytes(pristine)
        try:
            keras_model = _onnx2tf(for_tf, saved, use_sim, stage_idx, _sample_images(check_inputs))
        except ExportError:
            if use_sim == attempts[-1]:
                raise
            continue  # e.g. explicit padding layers: onnx2tf needs onnxsim's folding first
        perms_in = [infer_perm(shp, [int(d) for d in t.shape], f"stage {stage_idx} {name}")
                    for (name, _, shp), t in zip(torch_in, keras_model.inputs)]
        fp32 = _convert(saved, "fp32", None, stage_idx)
        try:
            rel_err = _float_rel_err(fp32, onnx_path, check_inputs, [n for n, _, _ in torch_in])
        except ExportError:  # an output came out with the wrong shape: a mis-conversion
            rel_err = float("inf")
        used = use_sim
        if rel_err <= FLOAT_CHECK_REL_TOL:
            break
    if rel_err > FLOAT_CHECK_REL_TOL:
        square = [name for name, _, shp in torch_in if len(shp) == 3 and shp[1] == shp[2]]
        raise ExportError(
            f"stage {stage_idx}: onnx2tf's float graph differs from ONNX Runtime by {rel_err:.3g} (relative)"
            f" even with onnxsim={'on' if used else 'off'}",
            hint="a rank-3 input with as many tokens as features (here " + str(square) + ") confuses onnx2tf's "
                 "layout guess: pad the features; or use --target onnx" if square else
                 "simplify the stage (e.g. fold explicit padding into convolutions) or use --target onnx")
    representative = None
    if precision == "int8":
        names = [n for n, _, _ in torch_in]
        calib = [np.ascontiguousarray(np.transpose(a, p)) for a, p in zip(calib_inputs, perms_in)]
        representative = [{n: a[i : i + 1] for n, a in zip(names, calib)} for i in range(len(calib[0]))]
    data = fp32 if precision == "fp32" else _convert(saved, precision, representative, stage_idx)
    if representative:
        _smoke_run(data, representative[0], stage_idx, precision)
    elif precision == "dynamic":  # hybrid kernels: run once on a real input before validation does
        names = [n for n, _, _ in torch_in]
        _smoke_run(data, {n: np.ascontiguousarray(np.transpose(a[:1], p))
                          for n, a, p in zip(names, check_inputs, perms_in)}, stage_idx, precision)
    inputs, outputs, sig = _io_specs(data, torch_in, torch_out, stage_idx)
    shutil.rmtree(saved, ignore_errors=True)
    for_tf.unlink(missing_ok=True)
    return TFLiteGraph(data, inputs, outputs, sig, used, rel_err, rewritten)
