"""The bundle manifest: a versioned JSON description of every stage model in a bundle.

Layouts: tensors carry ``perm_from_torch``, the permutation that takes the PyTorch
layout of a tensor (NCHW) to its exported layout (NHWC for TFLite 4-D tensors), so a
runtime never has to guess. Quantized tensors carry ``quant`` (scale, zero point); an
input whose producer was quantized differently carries ``requant_from``: the runtime
requantizes ``q2 = clip(round((q1 - z1) * s1 / s2) + z2)`` before feeding it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from eecompile.core.text import TextSpec
from eecompile.errors import BundleError

# 2: optional ``packed`` (every graph as a signature of one TFLite file)
# 3: optional ``samples`` (a few labelled held-out inputs shipped with the bundle)
# 4: per-stage ``trunk`` graphs (the segment without its exit head: run where an exit is
#    dropped), per-exit ``kept``/``gate``, the ``decision`` section (calibration, anytime table)
# 5: integer model inputs (token ids: dtype int32/int64, never quantized) with ``value_range``;
#    ``passthrough_of`` on outputs that are a graph input passed on unchanged; optional ``text``
#    (the tokenizer.json the ids come from, and the truncation/padding rule)
# 6: several model inputs (``input`` lists them in order: e.g. ids and attention mask, each with
#    its own ``value_range``); ``samples.npz`` stores them as x0, x1, ...; ``text.inputs`` says
#    what each input is ("ids", "attention_mask", "token_type_ids")
SCHEMA_VERSION = 6
READABLE_SCHEMAS = (1, 2, 3, 4, 5, 6)
MANIFEST_NAME = "manifest.json"
GRAPH_KINDS = ("fused", "segment", "head")
TENSOR_ROLES = ("input", "state", "logits")


@dataclass
class QuantParams:
    scale: float
    zero_point: int


@dataclass
class TensorSpec:
    """One input or output of a stage graph, in the graph's own (exported) layout."""

    name: str
    role: str  # "input" (model input), "state" (between stages), "logits" (exit)
    shape: list[int]  # exported shape, batch first
    dtype: str  # numpy dtype name: "int8", "float32", "float16"; model inputs also "int32"/"int64" (token ids)
    perm_from_torch: list[int]  # exported = torch_tensor.permute(perm_from_torch)
    index: int = -1  # backend tensor index (TFLite) or position (ONNX)
    signature_name: str = ""  # name in the graph's signature (TFLite: outputs are output_<i>)
    quant: QuantParams | None = None
    requant_from: QuantParams | None = None  # inputs: producer's quant params when they differ
    value_range: list[int] | None = None  # integer model inputs: the valid values (ids), inclusive
    passthrough_of: str | None = None  # outputs: the graph input this output is (a state passed on unchanged,
    # e.g. a transformer's attention mask: one tensor in the graph, so a runtime binds both to one buffer)

    @property
    def source_dtype(self) -> str:
        """The dtype a caller hands in (PyTorch's): float32, unless the graph takes integer ids."""
        return self.dtype if self.dtype in ("int32", "int64") and self.quant is None else "float32"

    @property
    def torch_shape(self) -> list[int]:
        inv = [0] * len(self.perm_from_torch)
        for i, p in enumerate(self.perm_from_torch):
            inv[p] = i
        return [self.shape[inv[i]] for i in range(len(self.shape))]


@dataclass
class GraphSpec:
    """One model file: a fused stage (segment + head), or a segment / head exported alone."""

    kind: str
    file: str
    sha256: str
    size_bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    signature: str | None = None


@dataclass
class StageSpec:
    stage_idx: int
    exit_idx: int
    graphs: list[GraphSpec]
    macs: int
    n_params: int
    trunk: GraphSpec | None = None  # the segment alone (no exit head): runs instead when the exit is dropped
    head_macs: int = 0  # the exit head's share of ``macs``


@dataclass
class ExitSpec:
    exit_idx: int
    stage_idx: int
    n_classes: int
    class_names: list[str]
    policy: str
    threshold: float
    kept: bool = True  # a dropped exit's head is not run (the stage's trunk graph runs) and it never fires
    gate: list[float] | None = None  # policy "learned": weights of (max-prob, margin, entropy, agree) and a bias


@dataclass
class PackedSpec:
    """All graphs of a TFLite bundle in one file, one signature per graph, in stage order
    (``signature_keys[i]`` is the i-th graph of ``[g for s in stages for g in s.graphs]``).
    The stage files stay in the bundle; runtimes may use either, the results are identical."""

    file: str
    sha256: str
    size_bytes: int
    signature_keys: list[str]


@dataclass
class SamplesSpec:
    """A few held-out inputs shipped in the bundle (``samples.npz``: ``x`` in the model's
    PyTorch layout, float32; ``y`` when labelled): the default inputs of ``eecompile profile``
    and the test samples an app can show."""

    file: str
    sha256: str
    size_bytes: int
    n: int
    labelled: bool
    source: str


@dataclass
class Manifest:
    name: str
    target: str
    model_source: str
    input: list[TensorSpec]
    stages: list[StageSpec]
    exits: list[ExitSpec]
    tool_versions: dict[str, str]
    created_utc: str
    eecompile_version: str
    calibration: dict[str, Any] = field(default_factory=dict)
    boundaries: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] | None = None
    packed: PackedSpec | None = None
    samples: SamplesSpec | None = None
    decision: dict[str, Any] = field(default_factory=dict)  # calibration: budget, figures, anytime table, history
    text: TextSpec | None = None  # the tokenizer that turns text into the input ids (core/text.py)
    schema_version: int = SCHEMA_VERSION

    @property
    def n_exits(self) -> int:
        return len(self.exits)

    @property
    def models_sha256(self) -> str:
        """The hash that identifies what runs: the model files' digests, in order (graphs and
        trunks, then the packed file). Profiles are keyed by it: a re-export changes it, new
        thresholds do not."""
        digests = [g.sha256 for g in self.all_graphs] + ([self.packed.sha256] if self.packed else [])
        return hashlib.sha256("\n".join(digests).encode()).hexdigest()

    @property
    def decision_hash(self) -> str:
        """What decides the exits: policy, thresholds, kept exits, gates and the anytime table.
        The generated C compiles it in and compares it with the bundle's ``decision.hash`` at
        session creation, so a harness older than a re-calibration notices."""
        blob = json.dumps({"exits": [[e.policy, e.threshold, e.kept, e.gate] for e in self.exits],
                           "anytime": self.decision.get("anytime")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def graphs(self) -> list[GraphSpec]:
        """Every stage's graphs, in stage order (trunks excluded)."""
        return [g for s in self.stages for g in s.graphs]

    @property
    def trunks(self) -> list[GraphSpec]:
        return [s.trunk for s in self.stages if s.trunk is not None]

    @property
    def all_graphs(self) -> list[GraphSpec]:
        """Graphs, then trunks: the order of ``packed.signature_keys``."""
        return self.graphs + self.trunks

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        try:
            return cls(
                name=d["name"], target=d["target"], model_source=d["model_source"],
                input=[_tensor(t) for t in d["input"]],
                stages=[_stage(s) for s in d["stages"]],
                exits=[_exit(e) for e in d["exits"]],
                tool_versions=dict(d["tool_versions"]), created_utc=d["created_utc"],
                eecompile_version=d["eecompile_version"], calibration=d.get("calibration", {}),
                boundaries=list(d.get("boundaries", [])), validation=d.get("validation"),
                packed=None if d.get("packed") is None else PackedSpec(
                    file=d["packed"]["file"], sha256=d["packed"]["sha256"], size_bytes=int(d["packed"]["size_bytes"]),
                    signature_keys=[str(k) for k in d["packed"]["signature_keys"]]),
                samples=None if d.get("samples") is None else SamplesSpec(
                    file=d["samples"]["file"], sha256=d["samples"]["sha256"],
                    size_bytes=int(d["samples"]["size_bytes"]), n=int(d["samples"]["n"]),
                    labelled=bool(d["samples"]["labelled"]), source=str(d["samples"]["source"])),
                decision=dict(d.get("decision") or {}),
                text=None if d.get("text") is None else TextSpec.from_dict(d["text"]),
                schema_version=int(d["schema_version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest is malformed: {type(exc).__name__}: {exc}",
                              hint="re-export the bundle with eecompile export") from exc


def _quant(d: dict | None) -> QuantParams | None:
    return None if d is None else QuantParams(float(d["scale"]), int(d["zero_point"]))


def _tensor(d: dict) -> TensorSpec:
    if d["role"] not in TENSOR_ROLES:
        raise ValueError(f"tensor role {d['role']!r}")
    return TensorSpec(name=d["name"], role=d["role"], shape=[int(x) for x in d["shape"]], dtype=d["dtype"],
                      perm_from_torch=[int(x) for x in d["perm_from_torch"]], index=int(d["index"]),
                      signature_name=d.get("signature_name", ""),
                      quant=_quant(d.get("quant")), requant_from=_quant(d.get("requant_from")),
                      value_range=None if d.get("value_range") is None else [int(v) for v in d["value_range"]],
                      passthrough_of=d.get("passthrough_of"))


def _graph(d: dict) -> GraphSpec:
    if d["kind"] not in GRAPH_KINDS:
        raise ValueError(f"graph kind {d['kind']!r}")
    return GraphSpec(kind=d["kind"], file=d["file"], sha256=d["sha256"], size_bytes=int(d["size_bytes"]),
                     inputs=[_tensor(t) for t in d["inputs"]], outputs=[_tensor(t) for t in d["outputs"]],
                     signature=d.get("signature"))


def _stage(d: dict) -> StageSpec:
    return StageSpec(stage_idx=int(d["stage_idx"]), exit_idx=int(d["exit_idx"]),
                     graphs=[_graph(g) for g in d["graphs"]], macs=int(d["macs"]), n_params=int(d["n_params"]),
                     trunk=None if d.get("trunk") is None else _graph(d["trunk"]), head_macs=int(d.get("head_macs", 0)))


def _exit(d: dict) -> ExitSpec:
    gate = d.get("gate")
    return ExitSpec(exit_idx=int(d["exit_idx"]), stage_idx=int(d["stage_idx"]), n_classes=int(d["n_classes"]),
                    class_names=[str(c) for c in d["class_names"]], policy=str(d["policy"]),
                    threshold=float(d["threshold"]), kept=bool(d.get("kept", True)),
                    gate=None if gate is None else [float(v) for v in gate])
