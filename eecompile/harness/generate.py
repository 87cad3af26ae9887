"""``eecompile harness BUNDLE -o DIR``: write the bundle's constants as C (stage files, tensor
shapes and sizes, quant params, requantization, policy, thresholds, class names), so the
device needs no JSON parser, next to a copy of the harness sources (``runtimes/c``).

The C is built from designated initialisers (a field added to ``ee.h`` cannot silently shift
the others), strings escape every byte that is not printable ASCII, and the ABI version is
read from ``ee.h`` itself, the one place it is written. Cheap to import: no numpy.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

from eecompile.bundle.io import Bundle
from eecompile.bundle.manifest import GraphSpec, TensorSpec
from eecompile.core.names import POLICY_INFO
from eecompile.errors import BundleError, HarnessError, OutputPathError, PolicyError, ToolError
from eecompile.util import atomic_write_text, default_mode

_PKG_SOURCES = Path(__file__).resolve().parents[1] / "_csrc"  # in an installed wheel
_TREE_SOURCES = Path(__file__).resolve().parents[2] / "runtimes" / "c"  # in a source checkout
SOURCE_DIRS = ("include", "src", "tests", "bench")
GENERATED = ("ee_bundle_gen.h", "ee_bundle_gen.c")
_DTYPES = {"int8": "EE_DTYPE_INT8", "float32": "EE_DTYPE_FLOAT32", "int32": "EE_DTYPE_INT32",
           "int64": "EE_DTYPE_INT64"}  # int32/int64: integer model inputs (token ids)
_DTYPE_BYTES = {"int8": 1, "float32": 4, "int32": 4, "int64": 8}
_ROLES = {"input": "EE_ROLE_INPUT", "state": "EE_ROLE_STATE", "logits": "EE_ROLE_LOGITS"}
_KINDS = {"fused": "EE_GRAPH_FUSED", "segment": "EE_GRAPH_SEGMENT", "head": "EE_GRAPH_HEAD"}
GATE_SIZE = 5  # EE_GATE_SIZE: the learned gate's 4 weights and bias


def c_sources() -> Path:
    """The harness sources: shipped inside the package (a wheel), else the source tree's."""
    for root in (_PKG_SOURCES, _TREE_SOURCES):
        if (root / "CMakeLists.txt").is_file():
            return root
    raise ToolError(f"the C harness sources are missing (looked in {_PKG_SOURCES} and {_TREE_SOURCES})",
                    hint="reinstall eecompile (pip install eecompile, or pip install . in its source tree)")


def abi_version(sources: Path | None = None) -> int:
    """``EE_ABI_VERSION`` as ``include/ee.h`` defines it."""
    header = (sources or c_sources()) / "include" / "ee.h"
    match = re.search(r"^#define EE_ABI_VERSION (\d+)", header.read_text(), re.M)
    if match is None:
        raise ToolError(f"{header} defines no EE_ABI_VERSION", hint="reinstall eecompile")
    return int(match.group(1))


def c_float(v: float) -> str:
    """An exact C literal of a float32 value (hex float)."""
    f32 = struct.unpack("<f", struct.pack("<f", float(v)))[0]
    return f32.hex() + "f"


def c_str(s: str) -> str:
    """A C string literal holding the UTF-8 bytes of ``s``: printable ASCII as is (with ``\\``,
    ``"`` and ``?`` escaped, the last against trigraphs), every other byte as an octal escape."""
    out = []
    for b in s.encode("utf-8"):
        ch = chr(b)
        if ch in '\\"?':
            out.append("\\" + ch)
        elif 0x20 <= b < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64, the stage-file checksum the C harness checks before LiteRT sees a file."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def c_identifier(name: str) -> str:
    ident = re.sub(r"[^0-9a-zA-Z_]", "_", name)
    return ident if not ident[:1].isdigit() else f"b_{ident}"


def _quant(q) -> str:
    return f"{{.scale = {c_float(q.scale)}, .zero_point = {q.zero_point}}}" if q else "{.scale = 0.0f, .zero_point = 0}"


def _tensor(t: TensorSpec, input_names: list[str] | None = None) -> str:
    if t.dtype not in _DTYPES:
        raise HarnessError(f"tensor {t.name} has dtype {t.dtype}; the C harness takes int8, float32 and "
                           "integer ids (int32, int64)",
                             hint="export with --target tflite-int8 or tflite-fp32")
    if any(d <= 0 for d in t.shape):
        raise HarnessError(f"tensor {t.name} has a dynamic shape {t.shape}", hint="export TFLite (batch 1)")
    n_bytes = _DTYPE_BYTES[t.dtype]
    for d in t.shape:
        n_bytes *= d
    dims = ", ".join(str(d) for d in t.shape)
    passthrough = (input_names or []).index(t.passthrough_of) if t.passthrough_of in (input_names or []) else -1
    if t.passthrough_of is not None and passthrough < 0:
        raise HarnessError(f"output {t.name} passes on input {t.passthrough_of}, which its graph does not have",
                           hint="re-export the bundle")
    return (f"{{.signature_name = {c_str(t.signature_name)}, .role = {_ROLES[t.role]}, .dtype = {_DTYPES[t.dtype]}, "
            f".rank = {len(t.shape)}, .dims = {{{dims}}}, .n_bytes = {n_bytes}u, "
            f".has_quant = {'true' if t.quant else 'false'}, .quant = {_quant(t.quant)}, "
            f".requant = {'true' if t.requant_from else 'false'}, .requant_from = {_quant(t.requant_from)}, "
            f".has_range = {'true' if t.value_range else 'false'}, {_range(t.value_range)}, "
            f".passthrough = {'true' if passthrough >= 0 else 'false'}, .passthrough_input = {max(passthrough, 0)}}}")


def _range(r: list[int] | None) -> str:
    lo, hi = r if r else (0, 0)
    return f".range_lo = {_c_int64(lo)}, .range_hi = {_c_int64(hi)}"


def _c_int64(v: int) -> str:
    """An int64_t literal (INT64_MIN has no literal form: written as an expression)."""
    return "(-9223372036854775807LL - 1)" if v == -(2**63) else f"{int(v)}LL"


def _graph_files(bundle: Bundle, use_packed: bool) -> list[tuple[str, int, int, str, int]]:
    """(file, size, FNV-1a, signature key, signature index) per graph, in the order of
    ``manifest.all_graphs`` (the stages' graphs, then the trunks)."""
    m = bundle.manifest
    if use_packed:
        data = (bundle.root / m.packed.file).read_bytes()
        digest = fnv1a64(data)
        return [(m.packed.file, len(data), digest, key, i) for i, key in enumerate(m.packed.signature_keys)]
    rows = []
    for g in m.all_graphs:
        data = bundle.path_of(g).read_bytes()
        rows.append((g.file, len(data), fnv1a64(data), g.signature or "serving_default", 0))
    return rows


def _graph_row(g: GraphSpec, pre: str, file_row: tuple[str, int, int, str, int]) -> str:
    file, size, digest, key, sig_idx = file_row
    return (f"{{.file = {c_str(file)}, .file_bytes = {size}u, .file_fnv1a = 0x{digest:016x}ULL, "
            f".signature_key = {c_str(key)}, .signature_index = {sig_idx}, .kind = {_KINDS[g.kind]}, "
            f".n_inputs = {len(g.inputs)}, .n_outputs = {len(g.outputs)}, .inputs = {pre}_in, .outputs = {pre}_out}}")


def _tensor_arrays(g: GraphSpec, pre: str) -> list[str]:
    _check_graph(g)
    names = [t.name for t in g.inputs]
    return [f"static const ee_tensor_desc {pre}_{side}[] = {{\n    " + ",\n    ".join(_tensor(t, names) for t in tensors)
            + "\n};" for side, tensors in (("in", g.inputs), ("out", g.outputs))]


def render(bundle: Bundle, packed: bool | None = None, abi: int | None = None) -> tuple[str, str]:
    """(header, source) of the generated bundle description. ``packed``: run every graph as
    a signature of the bundle's packed file (None: when the bundle has one)."""
    m = bundle.manifest
    if not m.target.startswith("tflite-"):
        raise HarnessError(f"the C harness runs TFLite bundles, this one is {m.target}",
                             hint="export with --target tflite-int8 (or tflite-fp32)")
    if packed and m.packed is None:
        raise BundleError(f"{bundle.root} has no packed stages file", hint="re-export without --no-pack")
    abi = abi_version() if abi is None else abi
    rows = _graph_files(bundle, m.packed is not None if packed is None else packed)
    row_of = {id(g): r for g, r in zip(m.all_graphs, rows)}
    sym = f"ee_bundle_{c_identifier(m.name)}"
    lines = ["/* Generated by `eecompile harness` from manifest.json -- do not edit. */",
             '#include "ee_bundle_gen.h"', ""]
    stage_rows = []
    for s in m.stages:
        graph_rows = []
        for j, g in enumerate(s.graphs):
            lines += _tensor_arrays(g, f"s{s.stage_idx}g{j}")
            graph_rows.append(_graph_row(g, f"s{s.stage_idx}g{j}", row_of[id(g)]))
        lines.append(f"static const ee_graph_desc s{s.stage_idx}_graphs[] = {{\n    " + ",\n    ".join(graph_rows)
                     + "\n};")
        trunk = "NULL"
        if s.trunk is not None:
            lines += _tensor_arrays(s.trunk, f"s{s.stage_idx}t")
            lines.append(f"static const ee_graph_desc s{s.stage_idx}_trunk = "
                         + _graph_row(s.trunk, f"s{s.stage_idx}t", row_of[id(s.trunk)]) + ";")
            trunk = f"&s{s.stage_idx}_trunk"
        stage_rows.append(f"{{.n_graphs = {len(s.graphs)}, .graphs = s{s.stage_idx}_graphs, .trunk = {trunk}}}")
    policies = {e.policy for e in m.exits}
    if len(policies) != 1:
        raise PolicyError(f"exits use different policies {sorted(policies)}", hint="set one policy for all exits")
    policy = POLICY_INFO[policies.pop()]
    lines.append("static const ee_stage_desc stages[] = {\n    " + ",\n    ".join(stage_rows) + "\n};")
    lines.append("static const float thresholds[] = {" + ", ".join(c_float(e.threshold) for e in m.exits) + "};")
    lines.append("static const bool kept[] = {" + ", ".join("true" if e.kept else "false" for e in m.exits) + "};")
    gates = "NULL"
    if policy.name == "learned":
        vals = [c_float(v) for e in m.exits for v in (e.gate or [0.0] * GATE_SIZE)]
        lines.append(f"static const float gates[] = {{{', '.join(vals)}}};")
        gates = "gates"
    anytime = m.decision.get("anytime")
    p99 = "NULL"
    if anytime:
        by_exit = {row["exit"]: row["p99_latency_us"] for row in anytime}
        lines.append("static const float p99_latency_us[] = {"
                     + ", ".join(c_float(by_exit[k]) for k in range(m.n_exits)) + "};")
        p99 = "p99_latency_us"
    names = m.exits[-1].class_names
    lines.append("static const char *const class_names[] = {" + ", ".join(c_str(n) for n in names) + "};")
    lines.append(f"const ee_bundle_desc {sym} = {{\n    .abi_version = {abi}u,\n    .name = {c_str(m.name)},\n"
                 f"    .target = {c_str(m.target)},\n    .n_stages = {len(m.stages)},\n"
                 f"    .n_classes = {m.exits[-1].n_classes},\n    .stages = stages,\n"
                 f"    .policy = (ee_policy){policy.c_code}, /* {policy.name} */\n"
                 f"    .thresholds = thresholds,\n    .class_names = class_names,\n    .kept = kept,\n"
                 f"    .gates = {gates},\n    .p99_latency_us = {p99},\n"
                 f"    .decision_hash = {c_str(m.decision_hash)},\n}};")
    header = "\n".join([
        "/* Generated by `eecompile harness` -- do not edit. */",
        "#ifndef EE_BUNDLE_GEN_H", "#define EE_BUNDLE_GEN_H", '#include "ee.h"',
        f"#if EE_ABI_VERSION != {abi}", '#error "ee.h and the generated bundle disagree on EE_ABI_VERSION"',
        "#endif",
        f"extern const ee_bundle_desc {sym};", f"#define EE_BUNDLE {sym}",
        f"#define EE_BUNDLE_N_STAGES {len(m.stages)}", f"#define EE_BUNDLE_N_CLASSES {m.exits[-1].n_classes}",
        "#endif", ""])
    return header, "\n".join(lines) + "\n"


def _check_graph(g: GraphSpec) -> None:
    if not g.file.endswith(".tflite"):
        raise HarnessError(f"{g.file} is not a TFLite model", hint="export with --target tflite-int8")
    if any(not t.signature_name for t in g.inputs + g.outputs):
        raise BundleError(f"{g.file}: the manifest lacks signature names", hint="re-export the bundle")


def is_harness_dir(path: Path) -> bool:
    return (path / GENERATED[0]).is_file() and (path / "CMakeLists.txt").is_file()


def check_harness_dir(out_dir: str | os.PathLike, force: bool) -> Path:
    """Fail before any work when ``out_dir`` cannot take a harness: a file, a non-empty
    directory that is not a harness, or an existing harness without ``force``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out} exists and is not a directory", hint="choose another -o")
    if out.is_dir() and any(out.iterdir()):
        if not is_harness_dir(out):
            raise OutputPathError(f"{out} is a non-empty directory that is not a generated harness; "
                                  "--force replaces only harness directories", hint="choose another -o")
        if not force:
            raise OutputPathError(f"{out} already holds a harness", hint="pass --force to replace it")
    return out


def generate_harness(bundle: Bundle, out_dir: str | Path, copy_sources: bool = True,
                     packed: bool | None = None, force: bool = True) -> Path:
    """Write ee_bundle_gen.{h,c} (and the harness sources) into ``out_dir``, atomically: built
    in a temp dir beside it and renamed into place. ``packed``: see ``render``.
    (``force`` defaults to True for the library; the CLI passes the user's flag.)"""
    out = check_harness_dir(out_dir, force)
    header, source = render(bundle, packed)
    if not copy_sources:
        atomic_write_text(out / GENERATED[0], header)
        atomic_write_text(out / GENERATED[1], source)
        return out
    src = c_sources()
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.absolute().parent))
    try:
        for sub in SOURCE_DIRS:
            shutil.copytree(src / sub, staging / sub)
        shutil.copy2(src / "CMakeLists.txt", staging / "CMakeLists.txt")
        atomic_write_text(staging / GENERATED[0], header)
        atomic_write_text(staging / GENERATED[1], source)
        os.chmod(staging, default_mode(directory=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
