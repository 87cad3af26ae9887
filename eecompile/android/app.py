"""``eecompile bundle BUNDLE --android APP``: put a bundle into the Android demo app.

The app's ``eecompile-app.json`` names its folders; two of them belong to eecompile and hold
what ``contents.py`` plans: ``assets`` (must end in ``/eecompile``: the bundle, samples, Pareto
table, stamp.txt) and ``harness`` (must end in ``/harness``: the generated C). Every configured
path is relative and stays inside the app (``load_app`` refuses others), so the sweep of old
files never reaches beyond those two folders.

Idempotent: a file is written only when its content changes (atomically), files of an older
bundle are removed from those folders, nothing else. stamp.txt (a digest of everything else,
harness included) is removed before the first change and written after the last: an install
cut short leaves no stamp, and ``check_installed`` -- run by the APK build and the host check --
refuses an app whose stamp is missing or does not match its files. Refused, before anything is
written: a directory that is not the app, a bundle that fails its checks (files against the
manifest's hashes, the decision rule against decision.hash, failed validation, a broken
calibration report), a bundle the C harness cannot run. With ``create``, the app is assembled
in a temporary folder beside the target and renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from eecompile.android.contents import STAMP, STAMP_KEY, check_bundle, plan_files, stamp_digest
from eecompile.bundle.io import load_bundle
from eecompile.errors import EecompileError, OutputPathError
from eecompile.util import atomic_write_bytes

__all__ = ["APP_CONFIG", "App", "AppError", "InstallResult", "app_template", "check_bundle", "check_installed",
           "create_app", "install_bundle", "load_app"]

APP_CONFIG = "eecompile-app.json"
APP_LAYOUT = 1
DEFAULT_SAMPLES = 64
PATH_KEYS = ("manifest", "java", "res", "assets", "cpp", "harness")
OWNED_DIRS = {"assets": "eecompile", "harness": "harness"}  # config key -> the folder's required name
SDK_RANGE = (1, 1000)
VERSION_CODE_RANGE = (1, 2_100_000_000)  # Google Play's largest versionCode
PACKAGE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+")
RESTORE_HINT = "restore it from the eecompile sources of this version"


class AppError(EecompileError):
    """The target directory is not the eecompile Android app, its config is broken, or what
    `eecompile bundle --android` put into it is incomplete."""


@dataclass(frozen=True)
class App:
    root: Path
    config: dict

    def path(self, key: str) -> Path:
        return self.root / self.config[key]

    @property
    def min_sdk(self) -> int:
        return self.config["min_sdk"]

    @property
    def target_sdk(self) -> int:
        return self.config.get("target_sdk", self.min_sdk)

    @property
    def version_code(self) -> int:
        return self.config.get("version_code", 1)


@dataclass
class InstallResult:
    app: Path
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    n_samples: int = 0
    calibrated: bool = False
    created: bool = False


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


# ---- the app's config ---------------------------------------------------------------------

def _config_problems(cfg: dict) -> list[str]:
    out = []
    for key in PATH_KEYS:
        v = cfg[key]
        if not isinstance(v, str) or not v.strip() or "\\" in v or Path(v).is_absolute() or ".." in Path(v).parts \
                or Path(v) == Path("."):
            out.append(f"{key} {v!r} is not a relative path inside the app")
        elif key in OWNED_DIRS and Path(v).name != OWNED_DIRS[key]:
            out.append(f"{key} {v!r} must end in /{OWNED_DIRS[key]} (eecompile replaces that folder's files)")
    a, h = (Path(str(cfg[k])) for k in OWNED_DIRS)
    if a == h or a in h.parents or h in a.parents:
        out.append(f"assets {str(a)!r} and harness {str(h)!r} must not contain one another")
    ints = {"min_sdk": (cfg.get("min_sdk"), SDK_RANGE), "target_sdk": (cfg.get("target_sdk", 0), SDK_RANGE),
            "version_code": (cfg.get("version_code", 1), VERSION_CODE_RANGE)}
    for key, (v, (lo, hi)) in ints.items():
        if key == "target_sdk" and "target_sdk" not in cfg:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            out.append(f"{key} {v!r} is not an integer in [{lo}, {hi}]")
    if not out and cfg.get("target_sdk", cfg["min_sdk"]) < cfg["min_sdk"]:
        out.append(f"target_sdk {cfg['target_sdk']} is below min_sdk {cfg['min_sdk']}")
    if not isinstance(cfg["package"], str) or not PACKAGE_RE.fullmatch(cfg["package"]):
        out.append(f"package {cfg['package']!r} is not a Java package name (like dev.eecompile.demo)")
    if not isinstance(cfg.get("version_name", "0"), str):
        out.append(f"version_name {cfg['version_name']!r} is not a string")
    return out


def load_app(app_dir: str | Path) -> App:
    """The app at ``app_dir`` with its config checked (paths, names, SDK levels), or AppError."""
    root = Path(app_dir)
    cfg_path = root / APP_CONFIG
    if not cfg_path.is_file():
        raise AppError(f"{root} is not the eecompile Android app (no {APP_CONFIG})",
                       hint="pass the android_demo/ directory of the eecompile sources (or a copy), or a new "
                            "directory with --create")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AppError(f"{cfg_path} is not readable JSON: {exc}", hint=RESTORE_HINT) from exc
    if not isinstance(cfg, dict):
        raise AppError(f"{cfg_path} is not a JSON object", hint=RESTORE_HINT)
    need = ("layout", "package", "min_sdk", *PATH_KEYS)
    missing = [k for k in need if k not in cfg]
    if missing or cfg.get("layout") != APP_LAYOUT:
        raise AppError(f"{cfg_path} lacks {missing} or has layout {cfg.get('layout')!r} (expected {APP_LAYOUT})",
                       hint=RESTORE_HINT)
    problems = _config_problems(cfg)
    app = App(root, cfg)
    inside = root.resolve()
    for key in PATH_KEYS if not problems else ():
        real = app.path(key).resolve()
        if real != inside and inside not in real.parents:
            problems.append(f"{key} {cfg[key]!r} leads out of the app (to {real})")
        elif key in OWNED_DIRS and real.name != OWNED_DIRS[key]:  # a symlink to another folder of the app
            problems.append(f"{key} {cfg[key]!r} leads to {real}, not a folder named {OWNED_DIRS[key]}")
    if problems:
        raise AppError(f"{cfg_path}: " + "; ".join(problems), hint=RESTORE_HINT)
    for key in ("manifest", "cpp"):
        if not app.path(key).exists():
            raise AppError(f"{app.path(key)} is missing: {root} is not a complete app",
                           hint="restore it from the eecompile sources")
    return app


# ---- a new app ----------------------------------------------------------------------------------

def _new_app_dir(app_dir: str | Path, hint_if_app: str = "") -> Path:
    """The absolute path of a new app: it must not exist, or be an empty directory."""
    dst = Path(app_dir).resolve()
    if not dst.name:
        raise OutputPathError(f"cannot create the app at {dst}", hint="choose a new directory for the app")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        is_app = (dst / APP_CONFIG).is_file()
        raise OutputPathError(f"{app_dir} exists and is not an empty directory" + (" (it is an app)" if is_app else ""),
                              hint=hint_if_app if is_app and hint_if_app else "choose a new (or empty) directory")
    return dst


def _stage_template(dst: Path) -> Path:
    """The app template copied into a new folder beside ``dst``, for ``_move_into_place``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.create-{uuid.uuid4().hex[:8]}")
    shutil.copytree(app_template(), tmp, ignore=shutil.ignore_patterns(*TEMPLATE_SKIP))
    return tmp


def _move_into_place(tmp: Path, dst: Path) -> None:
    try:
        if dst.is_dir():
            dst.rmdir()  # empty: checked by _new_app_dir
        os.replace(tmp, dst)
    except OSError as exc:
        raise OutputPathError(f"cannot create the app at {dst}: {exc}",
                              hint="choose a new (or empty) directory in a writable location") from exc


def create_app(app_dir: str | Path) -> Path:
    """A fresh copy of the app template at ``app_dir`` (which must not exist or be empty)."""
    dst = _new_app_dir(app_dir)
    tmp = _stage_template(dst)
    try:
        _move_into_place(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


# ---- installing a bundle --------------------------------------------------------------------------

def _roots(app: App) -> dict[str, Path]:
    return {kind: app.path(kind) for kind in OWNED_DIRS}


def _on_disk(app: App) -> dict[str, Path]:
    """Every file (or symlink) in the folders eecompile owns, by destination key."""
    out = {}
    for kind, root in _roots(app).items():
        if root.is_dir():
            for f in root.rglob("*"):
                if f.is_symlink() or f.is_file():
                    out[f"{kind}:{f.relative_to(root).as_posix()}"] = f
    return out


def _write(app: App, plan: dict[str, bytes]) -> InstallResult:
    res = InstallResult(app.root)
    roots = _roots(app)
    dest = {k: roots[k.split(":", 1)[0]] / k.split(":", 1)[1] for k in plan}
    changed = []
    for key, data in plan.items():
        f = dest[key]
        if not f.is_symlink() and f.is_file() and f.read_bytes() == data:
            res.unchanged += key != STAMP_KEY
        else:
            changed.append(key)
    stale = {k: f for k, f in _on_disk(app).items() if k not in plan}
    if not changed and not stale:
        res.unchanged += 1
        return res
    stamp = dest[STAMP_KEY]
    if stamp.is_symlink() or stamp.exists():
        stamp.unlink()  # first: from here until the new stamp, the app holds no complete install
    for key in changed:
        if key != STAMP_KEY:
            if dest[key].is_symlink():
                dest[key].unlink()
            atomic_write_bytes(dest[key], plan[key])
            res.written.append(dest[key].relative_to(app.root).as_posix())
    for key, f in sorted(stale.items(), reverse=True):
        f.unlink()
        res.removed.append(f.relative_to(app.root).as_posix())
    for root in roots.values():
        for d in sorted((p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
    atomic_write_bytes(stamp, plan[STAMP_KEY])  # last
    if STAMP_KEY in changed:
        res.written.append(stamp.relative_to(app.root).as_posix())
    else:
        res.unchanged += 1
    return res


def install_bundle(bundle_dir: str | Path, app_dir: str | Path, n_samples: int = DEFAULT_SAMPLES,
                   create: bool = False) -> InstallResult:
    """Copy the bundle, samples, Pareto table and generated C into the app (see the module doc).
    ``create``: make the app at ``app_dir`` first (it must not exist, or be empty); the app
    appears only complete, and a refused bundle leaves nothing."""
    from eecompile.harness.generate import generate_harness

    if n_samples < 1:
        raise OutputPathError(f"--samples {n_samples}: at least one sample is needed", hint="e.g. --samples 64")
    if create:
        dst = _new_app_dir(app_dir, hint_if_app="drop --create to put the bundle into the app there")
    else:
        app = load_app(app_dir)
    bundle = load_bundle(bundle_dir)
    check_bundle(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        plan = plan_files(bundle, n_samples, generate_harness(bundle, Path(tmp) / "harness", force=True))
    if create:
        tmp_app = _stage_template(dst)
        try:
            res = _write(load_app(tmp_app), plan)
            _move_into_place(tmp_app, dst)
        except BaseException:
            shutil.rmtree(tmp_app, ignore_errors=True)
            raise
        res.app, res.created = dst, True
    else:
        res = _write(app, plan)
    res.n_samples = json.loads(plan["assets:samples.json"])["n"]
    res.calibrated = "assets:pareto.json" in plan
    return res


# ---- what a build finds in the app --------------------------------------------------------------

_GEN_FILE = re.compile(r'\.file = "((?:[^"\\]|\\.)*)", \.file_bytes = (\d+)u, \.file_fnv1a = 0x([0-9a-f]+)ULL')
_GEN_HASH = re.compile(r'\.decision_hash = "([0-9a-f]*)"')


def _c_unescape(s: str) -> str:
    """The inverse of eecompile.harness.generate.c_str (octal escapes for non-ASCII bytes)."""
    raw = re.sub(rb"\\([0-7]{1,3}|.)", lambda m: bytes([int(m.group(1), 8)]) if m.group(1)[0] in b"01234567"
                 else m.group(1), s.encode("latin-1"))
    return raw.decode("utf-8", errors="replace")


def check_installed(app: App) -> dict:
    """What `eecompile bundle --android` put into ``app``, checked before a build uses it: the
    stamp (written last) matches the files, and the generated harness is the installed bundle's
    (decision hash, each model file's size and FNV-1a). Returns samples.json; AppError otherwise."""
    from eecompile.harness.generate import fnv1a64

    assets, harness = _roots(app).values()
    again = f"eecompile bundle BUNDLE --android {app.root}"
    stamp = assets / STAMP
    if not stamp.is_file():
        what = ("holds no bundle yet" if not any(_on_disk(app)) else
                f"holds an incomplete install (no {STAMP}: `eecompile bundle` was interrupted)")
        raise AppError(f"{app.root} {what}", hint=f"{again} first")
    files = {k: f.read_bytes() for k, f in _on_disk(app).items()}
    if stamp_digest(files) != files[STAMP_KEY].decode(errors="replace").strip():
        raise AppError(f"the files in {assets} and {harness} are not those `eecompile bundle` wrote (changed since, "
                       f"or an install was interrupted)", hint=f"{again} again")
    try:
        meta = json.loads(files["assets:samples.json"])
        gen = files["harness:ee_bundle_gen.c"].decode("latin-1")
        want = meta["decision_hash"]
    except (KeyError, ValueError, TypeError) as exc:
        raise AppError(f"{app.root} holds an install of another eecompile version ({exc})",
                       hint=f"{again} again") from exc
    problems = []
    got = _GEN_HASH.findall(gen)
    if got != [want]:
        problems.append(f"decision hash {got} in the generated C, {want!r} in samples.json")
    rows = _GEN_FILE.findall(gen)
    for name, size, fnv in rows if rows else [("(no model file)", "0", "0")]:
        data = files.get(f"assets:bundle/{_c_unescape(name)}")
        if data is None or len(data) != int(size) or fnv1a64(data) != int(fnv, 16):
            problems.append(f"model file {_c_unescape(name)} differs from the one the generated C was made for")
    if problems:
        raise AppError(f"{harness} does not belong to the bundle in {assets}: " + "; ".join(sorted(set(problems))),
                       hint=f"{again} again")
    return meta
