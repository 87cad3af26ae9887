"""What the Android app gets from a bundle, as bytes by destination, before anything is written
(``app.py`` writes them):

- ``assets:bundle/``: manifest.json, decision.hash and the model files the generated C opens
  (the packed file when the bundle has one);
- ``assets:samples.bin`` + ``samples.json``: labelled test samples as raw model inputs (the
  first stage's layout and dtype), balanced over the classes;
- ``assets:pareto.json``: the calibration's Pareto points with their rules, the one the bundle
  carries marked ``chosen`` (absent when the bundle was not calibrated); the app reads it in
  ``Pareto.java``, and ``tests/test_android.py`` checks every key that file asks for is here;
- ``harness:``: the generated harness (``eecompile harness``) the app's CMakeLists builds;
- ``assets:stamp.txt``: a digest of all of the above, harness included (the app re-copies its
  assets on a change; ``app.check_installed`` recomputes it before a build).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from eecompile.bundle.io import Bundle
from eecompile.errors import BundleError

STAMP = "stamp.txt"
STAMP_KEY = f"assets:{STAMP}"
HARNESS_FILES = ("CMakeLists.txt", "ee_bundle_gen.c", "ee_bundle_gen.h")
HARNESS_DIRS = ("include", "src")
COST_UNITS = {"latency": "us", "energy": "mJ", "macs": "MMAC"}


def check_bundle(bundle: Bundle) -> None:
    """A bundle worth shipping: TFLite, validated, and its checks pass (load_bundle did the files)."""
    m = bundle.manifest
    if not m.target.startswith("tflite-"):
        raise BundleError(f"{bundle.root} is a {m.target} bundle; the app runs TFLite bundles",
                          hint="export with --target tflite-int8 (or tflite-fp32)")
    if len(m.input) != 1:
        raise BundleError(f"{bundle.root} takes {len(m.input)} inputs; the demo app feeds one image input",
                          hint="run it with the Python runtime or the C harness (ee_session_run_inputs); several "
                               "inputs in the app are not built yet")
    if m.input[0].source_dtype != "float32":
        raise BundleError(f"{bundle.root} takes token ids ({m.input[0].dtype}); the demo app draws and shows image "
                          "inputs", hint="run a text bundle with eecompile run --text, the Python runtime or the C "
                                         "harness (ee_session_run_raw); text in the app is not built yet")
    v = m.validation or {}
    if not v:
        raise BundleError(f"{bundle.root} was never validated against its PyTorch reference",
                          hint=f"eecompile validate {bundle.root} --data ...")
    if not v.get("passed", False):
        fails = "; ".join(str(f.get("message", f)) for f in v.get("failures", []))[:400]
        raise BundleError(f"{bundle.root} failed validation ({fails})",
                          hint="fix the export (eecompile validate shows each failure); the app is not updated")


def sample_rows(bundle: Bundle, n: int) -> tuple[bytes, list[int], list[int]]:
    """n labelled samples, round-robin over the classes, as raw model inputs: (bytes, labels,
    their indices in the bundle's samples)."""
    import numpy as np

    from eecompile.core.quant import to_graph_input

    x, y = bundle.load_samples()
    if y is None:
        raise BundleError(f"{bundle.root}'s samples have no labels", hint="re-export the bundle")
    order, by_class = [], {c: list(np.flatnonzero(y == c)) for c in sorted(set(y.tolist()))}
    while len(order) < min(n, len(y)):
        for c in by_class:
            if by_class[c] and len(order) < n:
                order.append(by_class[c].pop(0))
    spec = bundle.manifest.input[0]
    raw = b"".join(to_graph_input(x[i:i + 1], spec).tobytes() for i in order)
    return raw, [int(y[i]) for i in order], [int(i) for i in order]


class _BadReport(ValueError):
    pass


def _number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _BadReport(f"{what} is {v!r}, not a finite number")
    return float(v)


def _rule(r, n_exits: int, what: str) -> dict:
    if not isinstance(r, dict):
        raise _BadReport(f"{what} is not an object")
    th, kept = r.get("thresholds"), r.get("kept")
    if not isinstance(r.get("policy"), str):
        raise _BadReport(f"{what}.policy is {r.get('policy')!r}")
    if not isinstance(th, list) or len(th) != n_exits:
        raise _BadReport(f"{what}.thresholds is not a list of {n_exits} numbers")
    if not isinstance(kept, list) or len(kept) != n_exits or not all(isinstance(k, bool) for k in kept):
        raise _BadReport(f"{what}.kept is not a list of {n_exits} booleans")
    return {"policy": r["policy"], "thresholds": [_number(t, f"{what}.thresholds[{i}]") for i, t in enumerate(th)],
            "kept": list(kept), "gates": r.get("gates")}


def _point(p, kind: str, n_exits: int, what: str) -> dict:
    """One frontier point as the app reads it (Pareto.java): the fields checked, nothing else kept."""
    if not isinstance(p, dict) or not isinstance(p.get("cost"), dict):
        raise _BadReport(f"{what} has no cost object")
    drop = p.get("target_drop_pts")
    return {"target_drop_pts": None if drop is None else _number(drop, f"{what}.target_drop_pts"),
            "accuracy": _number(p.get("accuracy"), f"{what}.accuracy"),
            "cost": {k: _number(v, f"{what}.cost.{k}") for k, v in p["cost"].items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)} | {
                kind: _number(p["cost"].get(kind), f"{what}.cost.{kind}")},
            "shares": p.get("shares"), "rule": _rule(p.get("rule"), n_exits, f"{what}.rule")}


def _same_rule(a: dict, b: dict) -> bool:
    return (a["policy"] == b["policy"] and a["kept"] == b["kept"]
            and all(abs(x - y) < 1e-6 for x, y in zip(a["thresholds"][:-1], b["thresholds"][:-1])))


def _pareto(bundle: Bundle, rep) -> dict | None:
    m = bundle.manifest
    if not isinstance(rep, dict):
        raise _BadReport("the report is not a JSON object")
    kind = rep.get("primary_cost", "latency")
    if kind not in COST_UNITS:
        raise _BadReport(f"primary_cost is {kind!r}, not one of {sorted(COST_UNITS)}")
    front = rep.get("frontier", [])
    if not isinstance(front, list):
        raise _BadReport("frontier is not a list")
    current = {"policy": m.exits[0].policy, "thresholds": [float(e.threshold) for e in m.exits],
               "kept": [bool(e.kept) for e in m.exits]}
    points, seen = [], set()
    for i, p in enumerate(front):
        if not isinstance(p, dict) or "rule" not in p:  # points of older reports carry no rule
            continue
        pt = _point(p, kind, m.n_exits, f"frontier[{i}]")
        r = pt["rule"]
        key = (r["policy"], tuple(round(t, 7) for t in r["thresholds"][:-1]), tuple(r["kept"]))
        if key in seen:  # several accuracy targets can end at the same rule
            continue
        seen.add(key)
        points.append({**pt, "chosen": _same_rule(r, current)})
    if points and not any(p["chosen"] for p in points) and "holdout" in rep:
        h = rep["holdout"]
        if not isinstance(h, dict):
            raise _BadReport("holdout is not an object")
        pt = _point({**h, "target_drop_pts": None, "shares": h.get("exit_shares"), "rule": {**current, "gates": None}},
                    kind, m.n_exits, "holdout")
        points.append({**pt, "chosen": True})
    points.sort(key=lambda p: p["cost"][kind])
    if not points:
        return None
    return {"bundle": m.name, "decision_hash": m.decision_hash, "cost_kind": kind, "cost_unit": COST_UNITS[kind],
            "frontier": points}


def pareto(bundle: Bundle) -> dict | None:
    """The calibration's frontier with each point's rule, the bundle's own rule marked chosen
    (appended from the report's holdout figures when no frontier point has it). None when the
    bundle was not calibrated; BundleError when its calibration/report.json is broken."""
    path = bundle.root / "calibration" / "report.json"
    if not path.is_file():
        return None
    try:
        return _pareto(bundle, json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # _BadReport and JSONDecodeError are ValueErrors
        raise BundleError(f"{path} is not a readable calibration report: {exc}",
                          hint=f"calibrate again (eecompile calibrate {bundle.root} ...), or remove "
                               f"{path.parent} to ship the bundle's rule without a Pareto table") from exc


def stamp_digest(files: dict[str, bytes]) -> str:
    """The digest stamp.txt holds: every file but the stamp, by destination key."""
    h = hashlib.sha256()
    for k in sorted(files):
        if k != STAMP_KEY:
            h.update(k.encode() + b"\0" + hashlib.sha256(files[k]).digest())
    return h.hexdigest()


def plan_files(bundle: Bundle, n_samples: int, harness_src: Path) -> dict[str, bytes]:
    """Every file the app gets, by destination key ("assets:<path>", "harness:<path>")."""
    m = bundle.manifest
    files: dict[str, bytes] = {}
    models = [m.packed.file] if m.packed else sorted({g.file for g in m.all_graphs})
    for name in ["manifest.json", "decision.hash", *models]:
        f = bundle.root / name
        if f.is_file():
            files[f"assets:bundle/{name}"] = f.read_bytes()
    raw, labels, indices = sample_rows(bundle, n_samples)
    files["assets:samples.bin"] = raw
    meta = {"n": len(labels), "input_bytes": len(raw) // len(labels), "labels": labels,
            "class_names": m.exits[-1].class_names, "dtype": m.input[0].dtype, "shape": list(m.input[0].shape),
            "source": m.samples.source if m.samples else None, "indices": indices,
            "bundle": m.name, "models_sha256": m.models_sha256, "decision_hash": m.decision_hash}
    files["assets:samples.json"] = (json.dumps(meta, indent=1) + "\n").encode()
    front = pareto(bundle)
    if front is not None:
        files["assets:pareto.json"] = (json.dumps(front, indent=1) + "\n").encode()
    for name in HARNESS_FILES:
        files[f"harness:{name}"] = (harness_src / name).read_bytes()
    for d in HARNESS_DIRS:
        for f in sorted((harness_src / d).rglob("*")):
            if f.is_file():
                files[f"harness:{f.relative_to(harness_src).as_posix()}"] = f.read_bytes()
    files[STAMP_KEY] = (stamp_digest(files) + "\n").encode()
    return files
