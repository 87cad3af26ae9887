"""torch -> ONNX for one stage graph (legacy TorchScript exporter, opset 17: fast and exact)."""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import torch

from eecompile.errors import ExportError, UnsupportedOpError

OPSET = 17


def export_onnx(module: torch.nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str],
                output_names: list[str], path: Path, dynamic_batch: bool, stage_idx: int,
                output_shapes: list[list[int]] | None = None) -> None:
    axes = {n: {0: "batch"} for n in input_names + output_names} if dynamic_batch else None
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, str(path), input_names=input_names, output_names=output_names,
                              opset_version=OPSET, dynamo=False, dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:  # torch.onnx raises many untyped errors; classify the ones users hit
        msg = str(exc)
        if "adaptive_avg_pool2d" in msg or "not factor of input size" in msg:
            raise UnsupportedOpError(
                f"stage {stage_idx}: AdaptiveAvgPool2d with an output size that does not divide the input "
                f"size cannot be exported to ONNX ({msg.splitlines()[0]})",
                hint="use AdaptiveAvgPool2d(1) (global pooling) or a fixed AvgPool2d(kernel, stride) in this stage",
            ) from exc
        if "Unsupported" in msg or "not supported" in msg or "Exporting the operator" in msg:
            raise UnsupportedOpError(f"stage {stage_idx}: an op cannot be exported to ONNX: {msg.splitlines()[0]}",
                                     hint="replace the op with a supported one in this stage") from exc
        raise ExportError(f"stage {stage_idx}: torch.onnx.export failed: {type(exc).__name__}: {msg.splitlines()[0]}",
                          hint="check that the stage runs under torch.jit.trace") from exc
    if output_shapes is not None and not dynamic_batch:
        _pin_shapes(path, output_shapes)


def _pin_shapes(path: Path, output_shapes: list[list[int]]) -> None:
    """Write the known static output shapes into the graph and run ONNX shape inference.

    Modules that compute padding from tensor sizes (e.g. "same" padding helpers) leave the
    exported outputs with unknown dims; onnx2tf then guesses layouts and can get them wrong.
    """
    import onnx

    model = onnx.load(str(path))
    for out, shape in zip(model.graph.output, output_shapes):
        dims = out.type.tensor_type.shape.dim
        if len(dims) == len(shape):
            for d, v in zip(dims, shape):
                d.Clear()
                d.dim_value = int(v)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, str(path))


def avgpool_to_depthwise(path: Path) -> int:
    """Rewrite unpadded 2-D ``AveragePool`` nodes as depthwise ``Conv`` nodes with constant
    ``1 / (kh * kw)`` weights (1x1 stride-1 pools as ``Identity``), in place; returns how many
    were rewritten.

    The float result is the same. It matters for int8 TFLite: XNNPACK delegates int8
    depthwise convolutions but not int8 AVERAGE_POOL_2D. A pool left outside the delegate
    runs in LiteRT's scalar kernel and splits the graph into more delegate partitions.
    On dsnet-fmnist that kernel took about 30% of the network's time.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    n = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type != "AveragePool":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        if kernel == [1, 1] and list(attrs.get("strides", [1, 1])) == [1, 1] and not any(attrs.get("pads", [])):
            # an identity (e.g. AvgPool2d(1)): an Identity node, which the converter drops; a 1x1
            # depthwise convolution would add an int8 requantization that was not there
            model.graph.node.remove(node)
            model.graph.node.insert(i, helper.make_node("Identity", [node.input[0]], list(node.output),
                                                        name=f"{node.name}__identity"))
            n += 1
            continue
        shape = shapes.get(node.input[0], [])
        padded = any(attrs.get("pads", [])) and not attrs.get("count_include_pad", 0)
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        if (len(kernel) != 2 or len(shape) != 4 or shape[1] <= 0 or padded or attrs.get("ceil_mode", 0)
                or auto_pad not in (b"NOTSET", b"VALID")):
            continue
        c = shape[1]
        w_name = f"{node.output[0]}__avgpool_weight"
        weight = np.full((c, 1, kernel[0], kernel[1]), 1.0 / (kernel[0] * kernel[1]), dtype=np.float32)
        model.graph.initializer.append(numpy_helper.from_array(weight, w_name))
        conv_attrs = {"kernel_shape": kernel, "strides": list(attrs.get("strides", [1, 1])), "group": c}
        if attrs.get("pads"):
            conv_attrs["pads"] = list(attrs["pads"])
        conv = helper.make_node("Conv", [node.input[0], w_name], list(node.output), name=f"{node.name}__depthwise",
                                **conv_attrs)
        model.graph.node.remove(node)
        model.graph.node.insert(i, conv)
        n += 1
    if n:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return n


def constants_as_initializers(path: Path) -> int:
    """Turn ``Constant`` nodes into graph initializers, in place; returns how many.

    The opset-17 exporter writes scalars as ``Constant`` nodes. onnx2tf folds such a node into
    a bare Python float, and where it divides a tensor (attention's ``/ sqrt(d)``) the graph's
    output became that float: "Output tensors of a Functional model must be the output of a
    TensorFlow Layer ... Found: 5.656854152679443". As an initializer it is a tensor like any
    weight. Same graph, same numbers.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = [n for n in model.graph.node
              if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value"]
    for n in consts:
        model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(n.attribute[0].t), n.output[0]))
        model.graph.node.remove(n)
    if consts:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return len(consts)
