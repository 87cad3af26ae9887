"""Packing: every graph of a TFLite bundle as one signature of a single model file.

A device runtime that opens each stage file as a model of its own pays for it at every
stage switch: one interpreter and one XNNPACK thread pool per stage, whose workers must be
woken each time (measured: the full chain cost 1.20x the monolithic model at 2 threads on
dsnet-fmnist). Packed, all stages share one interpreter and one pool.

The stage flatbuffers are merged as they are -- subgraphs, weight buffers and operator
codes (deduplicated) are copied, each graph gets one signature -- so a signature computes
exactly what its stage file computes. ``check_packed`` verifies that bit for bit before a
bundle is written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from eecompile.errors import ExportError, InternalError
from eecompile.util import atomic_write_bytes

PACKED_FILE = "stages.tflite"


def _opcode_key(oc) -> tuple:
    return (oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode, oc.version)


def pack_tflite(files: list[Path], keys: list[str], out: Path) -> None:
    """Merge single-subgraph TFLite ``files`` into ``out``; signature i is ``keys[i]``."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    if len(files) != len(keys) or len(set(keys)) != len(keys):
        raise InternalError(f"packing needs one distinct signature key per file, got {keys} for {len(files)} files "
                            "(export with --no-pack meanwhile)")
    merged = fb.ModelT()
    merged.operatorCodes, merged.subgraphs, merged.buffers, merged.signatureDefs = [], [], [], []
    merged.metadata = []
    opcode_index: dict[tuple, int] = {}  # merged operator codes, by identity
    buffer_index: dict[bytes, int] = {}  # merged non-empty buffers, by content
    for k, (path, key) in enumerate(zip(files, keys)):
        m = fbu.read_model(str(path))
        if len(m.subgraphs) != 1 or len(m.signatureDefs or []) != 1:
            raise ExportError(f"{path.name} has {len(m.subgraphs)} subgraphs and {len(m.signatureDefs or [])} "
                              "signatures; packing takes one of each (no control-flow ops)",
                              hint="export with --no-pack")
        if k == 0:
            merged.version, merged.description = m.version, m.description
        # identical weight buffers are stored once (a trunk graph repeats its fused stage's weights)
        buffer_map = []
        for buf in m.buffers:
            data = bytes(buf.data) if buf.data is not None and len(buf.data) else b""
            digest = hashlib.sha256(data).digest() if data else None
            if digest is not None and digest in buffer_index:
                buffer_map.append(buffer_index[digest])
                continue
            buffer_map.append(len(merged.buffers))
            if digest is not None:
                buffer_index[digest] = len(merged.buffers)
            merged.buffers.append(buf)
        opcode_map = []
        for oc in m.operatorCodes:
            if _opcode_key(oc) not in opcode_index:
                opcode_index[_opcode_key(oc)] = len(merged.operatorCodes)
                merged.operatorCodes.append(oc)
            opcode_map.append(opcode_index[_opcode_key(oc)])
        sg = m.subgraphs[0]
        for t in sg.tensors:
            t.buffer = buffer_map[t.buffer]
        for op in sg.operators:
            op.opcodeIndex = opcode_map[op.opcodeIndex]
        sg.name = key.encode()
        merged.subgraphs.append(sg)
        sig = m.signatureDefs[0]
        sig.subgraphIndex, sig.signatureKey = k, key.encode()
        merged.signatureDefs.append(sig)
        if k == 0:  # converter metadata (min runtime version, ...) is the same for every stage
            for md in m.metadata or []:
                md.buffer = buffer_map[md.buffer]
                merged.metadata.append(md)
    atomic_write_bytes(out, bytes(fbu.convert_object_to_bytearray(merged)))


def _random_input(detail: dict, rng: np.random.Generator, id_range: tuple[int, int] | None) -> np.ndarray:
    shape, dtype = detail["shape"], detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo, hi = id_range if id_range is not None and info.bits >= 32 else (info.min, info.max)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def check_packed(packed: Path, files: list[Path], keys: list[str], n_samples: int = 4, seed: int = 0,
                 id_ranges: dict[str, tuple[int, int] | None] | None = None) -> None:
    """Every signature of ``packed`` must give bit-identical outputs to its stage file, on
    random inputs of the input dtypes (the same ops on the same weights compute the same);
    integer model inputs (ids, masks) are drawn from ``id_ranges[signature input name]``
    (the vocabulary), other integer inputs from the first one's."""
    ranges = id_ranges or {}
    fallback = next(iter(ranges.values()), None)
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(seed)
    whole = Interpreter(model_path=str(packed))
    if sorted(whole.get_signature_list()) != sorted(keys):
        raise InternalError(f"{packed.name} has signatures {sorted(whole.get_signature_list())}, expected {keys} "
                            "(export with --no-pack meanwhile)")
    for path, key in zip(files, keys):
        single = Interpreter(model_path=str(path)).get_signature_runner()
        runner = whole.get_signature_runner(key)
        for _ in range(n_samples):
            feed = {name: _random_input(d, rng, ranges.get(name, fallback)) for name, d in runner.get_input_details().items()}
            want, got = single(**feed), runner(**feed)
            for name in want:
                if not np.array_equal(want[name], got[name]):
                    raise InternalError(f"{packed.name}[{key}] output {name} differs from {path.name}: the merge "
                                        "changed a graph (export with --no-pack meanwhile)")
