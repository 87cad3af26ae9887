"""``eecompile bundle BUNDLE --android APP``: put a bundle into the Android demo app.

What goes where (the app's ``eecompile-app.json`` names the folders):
- ``assets/eecompile/bundle/``: manifest.json, decision.hash and the model files the generated C
  opens (the packed file when the bundle has one);
- ``assets/eecompile/samples.bin`` + ``samples.json``: labelled test samples as raw model inputs
  (the first stage's layout and dtype), balanced over the classes;
- ``assets/eecompile/pareto.json``: the calibration's Pareto points with their rules, the one the
  bundle carries marked ``chosen`` (absent when the bundle was not calibrated);
- ``assets/eecompile/stamp.txt``: a digest of all of that (the app re-copies on a change);
- ``cpp/harness/``: the generated harness (``eecompile harness``) the app's CMakeLists builds.

Idempotent: a file is written only when its content changes (atomically) and files of an older
bundle are removed from those folders, nothing else. Refused, before anything is written: a
directory that is not the app, a bundle that fails its checks (files against the manifest's
hashes, the decision rule against decision.hash, failed validation), a bundle the C harness
cannot run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from eecompile.bundle.io import Bundle, load_bundle
from eecompile.errors import BundleError, EecompileError, OutputPathError
from eecompile.util import atomic_write_bytes

APP_CONFIG = "eecompile-app.json"
APP_LAYOUT = 1
DEFAULT_SAMPLES = 64
HARNESS_FILES = ("CMakeLists.txt", "ee_bundle_gen.c", "ee_bundle_gen.h")
HARNESS_DIRS = ("include", "src")


class AppError(EecompileError):
    """The target directory is not the eecompile Android app, or its config is broken."""


@dataclass(frozen=True)
class App:
    root: Path
    config: dict

    def path(self, key: str) -> Path:
        return self.root / self.config[key]


@dataclass
class InstallResult:
    app: Path
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    n_samples: int = 0
    calibrated: bool = False


_PKG_APP = Path(__file__).resolve().parents[1] / "_app"  # in an installed wheel
_TREE_APP = Path(__file__).resolve().parents[2] / "android_demo"  # in a source checkout
TEMPLATE_SKIP = ("assets", "harness", "build", ".cxx", ".gradle", "local.properties", "__pycache__")


def app_template() -> Path:
    """The app's sources as eecompile ships them (the wheel's copy, else the source tree's)."""
    for root in (_PKG_APP, _TREE_APP):
        if (root / APP_CONFIG).is_file():
            return root
    raise AppError(f"the Android app template is missing (looked in {_PKG_APP} and {_TREE_APP})",
                   hint="reinstall eecompile")


def create_app(app_dir: str | Path) -> Path:
    """A fresh copy of the app template at ``app_dir`` (which must not exist or be empty)."""
    import shutil

    dst = Path(app_dir)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise OutputPathError(f"{dst} exists and is not an empty directory", hint="choose a new directory for the app")
    tmp = dst.with_name(dst.name + ".tmp-create")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(app_template(), tmp, ignore=shutil.ignore_patterns(*TEMPLATE_SKIP))
    if dst.exists():
        dst.rmdir()
    os.replace(tmp, dst)
    return dst


def load_app(app_dir: str | Path) -> App:
    root = Path(app_dir)
    cfg_path = root / APP_CONFIG
    if not cfg_path.is_file():
        raise AppError(f"{root} is not the eecompile Android app (no {APP_CONFIG})",
                       hint="pass the android_demo/ directory of the eecompile sources (or a copy), or a new "
                            "directory with --create")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise AppError(f"{cfg_path} is not readable JSON: {exc}", hint="restore it from the eecompile sources") from exc
    need = ("layout", "package", "min_sdk", "manifest", "java", "res", "assets", "cpp", "harness")
    missing = [k for k in need if k not in cfg]
    if missing or cfg.get("layout") != APP_LAYOUT:
        raise AppError(f"{cfg_path} lacks {missing} or has layout {cfg.get('layout')!r} (expected {APP_LAYOUT})",
                       hint="restore it from the eecompile sources of this version")
    app = App(root, cfg)
    for key in ("manifest", "cpp"):
        if not app.path(key).exists():
            raise AppError(f"{app.path(key)} is missing: {root} is not a complete app",
                           hint="restore it from the eecompile sources")
    return app


def check_bundle(bundle: Bundle) -> None:
    """A bundle worth shipping: TFLite, validated, and its checks pass (load_bundle did the files)."""
    m = bundle.manifest
    if not m.target.startswith("tflite-"):
        raise BundleError(f"{bundle.root} is a {m.target} bundle; the app runs TFLite bundles",
                          hint="export with --target tflite-int8 (or tflite-fp32)")
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


def pareto(bundle: Bundle) -> dict | None:
    """The calibration's frontier with each point's rule, the bundle's own rule marked chosen."""
    report_path = bundle.root / "calibration" / "report.json"
    if not report_path.is_file():
        return None
    rep = json.loads(report_path.read_text())
    m = bundle.manifest
    current = {"policy": m.exits[0].policy, "thresholds": [e.threshold for e in m.exits],
               "kept": [e.kept for e in m.exits]}
    points, seen = [], set()
    for p in rep.get("frontier", []):
        if "rule" not in p:
            continue
        r = p["rule"]
        key = (r["policy"], tuple(round(t, 7) for t in r["thresholds"][:-1]), tuple(r["kept"]))
        if key in seen:  # several accuracy targets can end at the same rule
            continue
        seen.add(key)
        same = (r["policy"] == current["policy"] and r["kept"] == current["kept"]
                and all(abs(a - b) < 1e-6 for a, b in zip(r["thresholds"][:-1], current["thresholds"][:-1])))
        points.append({**p, "chosen": same})
    if points and not any(p["chosen"] for p in points) and "holdout" in rep:
        h = rep["holdout"]
        points.append({"target_drop_pts": None, "accuracy": h["accuracy"], "cost": h["cost"],
                       "shares": h.get("shares"), "rule": {**current, "gates": None}, "chosen": True})
    points.sort(key=lambda p: p["cost"].get("latency", p["cost"].get("macs", 0.0)))
    return {"bundle": m.name, "decision_hash": m.decision_hash, "frontier": points} if points else None


def _plan(bundle: Bundle, n_samples: int, harness_src: Path) -> dict[str, bytes]:
    """Every file the app gets, by path relative to the app config's folders ("assets:..", "harness:..")."""
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
        files["assets:pareto.json"] = (json.dumps(front, indent=1, default=float) + "\n").encode()
    h = hashlib.sha256()
    for k in sorted(files):
        h.update(k.encode() + b"\0" + hashlib.sha256(files[k]).digest())
    files["assets:stamp.txt"] = (h.hexdigest() + "\n").encode()
    for name in HARNESS_FILES:
        files[f"harness:{name}"] = (harness_src / name).read_bytes()
    for d in HARNESS_DIRS:
        for f in sorted((harness_src / d).rglob("*")):
            if f.is_file():
                files[f"harness:{f.relative_to(harness_src)}"] = f.read_bytes()
    return files


def install_bundle(bundle_dir: str | Path, app_dir: str | Path, n_samples: int = DEFAULT_SAMPLES) -> InstallResult:
    """Copy the bundle, samples, Pareto table and generated C into the app (see the module doc)."""
    from eecompile.harness.generate import generate_harness

    app = load_app(app_dir)
    bundle = load_bundle(bundle_dir)
    check_bundle(bundle)
    if n_samples < 1:
        raise OutputPathError(f"--samples {n_samples}: at least one sample is needed", hint="e.g. --samples 64")
    res = InstallResult(app.root)
    with tempfile.TemporaryDirectory() as tmp:
        harness_src = generate_harness(bundle, Path(tmp) / "harness", force=True)
        plan = _plan(bundle, n_samples, harness_src)
    roots = {"assets": app.path("assets"), "harness": app.path("harness")}
    for key, data in plan.items():
        kind, rel = key.split(":", 1)
        dst = roots[kind] / rel
        if dst.is_file() and dst.read_bytes() == data:
            res.unchanged += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dst, data)
        res.written.append(str(dst.relative_to(app.root)))
    wanted = {roots[k.split(":", 1)[0]] / k.split(":", 1)[1] for k in plan}
    for root in roots.values():
        for f in sorted(root.rglob("*"), reverse=True):
            if f.is_file() and f not in wanted:
                f.unlink()
                res.removed.append(str(f.relative_to(app.root)))
            elif f.is_dir() and not any(f.iterdir()):
                os.rmdir(f)
    res.n_samples = json.loads(plan["assets:samples.json"])["n"]
    res.calibrated = "assets:pareto.json" in plan
    return res
