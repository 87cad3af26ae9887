"""Writing and loading bundles. A bundle is built in a temp dir next to its destination
and renamed into place, so a failed export leaves nothing half-written behind, and an
existing bundle is only replaced with ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from eecompile.bundle.manifest import (MANIFEST_NAME, READABLE_SCHEMAS, SCHEMA_VERSION, GraphSpec, Manifest,
                                       SamplesSpec)
from eecompile.errors import BundleError, ChecksumError, OutputPathError, SchemaVersionError
from eecompile.util import atomic_write_bytes, atomic_write_text, default_mode, sha256_file

SAMPLES_NAME = "samples.npz"


@dataclass
class Bundle:
    root: Path
    manifest: Manifest

    def path_of(self, graph: GraphSpec) -> Path:
        return self.root / graph.file

    def save_manifest(self) -> None:
        """Rewrite manifest.json atomically (e.g. after changing thresholds), then decision.hash."""
        write_manifest(self.root, self.manifest)

    def load_samples(self):
        """The held-out samples shipped in the bundle: (x in PyTorch layout, y or None); x is a
        tuple of arrays for a model with several inputs (core/inputs.py)."""
        import numpy as np

        from eecompile.core.inputs import npz_inputs

        spec = self.manifest.samples
        if spec is None:
            raise BundleError(f"{self.root} ships no samples (exported before schema 3)",
                              hint="pass your own inputs, or re-export the bundle")
        with np.load(self.root / spec.file, allow_pickle=False) as z:
            x = npz_inputs(z.files, z.__getitem__)
            if x is None:
                raise BundleError(f"{self.root / spec.file} holds no inputs (keys {z.files})",
                                  hint="re-export the bundle (its samples file is damaged)")
            return x, (z["y"] if "y" in z.files else None)


DECISION_HASH_NAME = "decision.hash"


def write_manifest(root: Path, manifest: Manifest) -> None:
    """manifest.json, then decision.hash (the hash of the exit decision rule, read by the C
    harness at session creation to notice a re-calibrated bundle), each atomically."""
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2))
    atomic_write_text(root / DECISION_HASH_NAME, manifest.decision_hash + "\n")


def write_samples(staging: Path, x, y, source: str, n: int = 64) -> "SamplesSpec":
    """Write ``samples.npz`` (the first ``n`` of x, y) into a staging bundle; returns its spec.
    ``x``: one array, or a tuple with one array per model input (stored as x0, x1, ...)."""
    import io

    import numpy as np

    from eecompile.core.inputs import as_arrays, npz_arrays, take, unwrap

    buf = io.BytesIO()
    xs = tuple(np.ascontiguousarray(a, dtype=np.float32 if a.dtype.kind == "f" else a.dtype)
               for a in as_arrays(take(x, slice(0, n))))
    arrays = npz_arrays(unwrap(xs))
    if y is not None:
        arrays["y"] = np.asarray(y[:n], dtype=np.int64)
    np.savez(buf, **arrays)
    atomic_write_bytes(staging / SAMPLES_NAME, buf.getvalue())
    path = staging / SAMPLES_NAME
    return SamplesSpec(file=SAMPLES_NAME, sha256=sha256_file(path), size_bytes=path.stat().st_size,
                       n=int(xs[0].shape[0]), labelled=y is not None, source=source)


def check_output_dir(out_dir: str | os.PathLike, force: bool) -> Path:
    """Fail early, before any work, when ``out_dir`` cannot take a new bundle."""
    out = Path(out_dir)
    if out.exists() and not force:
        raise OutputPathError(f"{out} already exists", hint="pass --force to replace it, or choose another -o")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out} exists and is not a directory", hint="choose another -o")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise OutputPathError(f"{out} is a non-empty directory that is not a bundle; --force replaces only bundles",
                              hint="choose another -o")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create {parent}: {exc.strerror}", hint="choose a writable -o") from exc
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"{parent} is not writable", hint="choose a writable -o")
    return out


def staging_dir(out_dir: Path) -> Path:
    """A fresh temp dir on the same filesystem as ``out_dir`` (so the final rename is atomic)."""
    parent = out_dir.absolute().parent
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=parent))
    os.chmod(staging, default_mode(directory=True))  # mkdtemp makes 0700; a bundle is as readable as a mkdir
    return staging


def commit_bundle(staging: Path, manifest: Manifest, out_dir: Path, force: bool) -> Bundle:
    """Write the manifest into ``staging`` and move it to ``out_dir`` (replacing it with ``force``)."""
    write_manifest(staging, manifest)
    out_dir = check_output_dir(out_dir, force)
    backup = None
    if out_dir.exists():
        backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, backup)
    try:
        os.replace(staging, out_dir)
    except OSError:
        if backup is not None:
            os.replace(backup, out_dir)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return Bundle(out_dir, manifest)


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Load a bundle directory; check its schema version and (with ``verify``) every checksum."""
    root = Path(path)
    mpath = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory", hint="pass the -o directory of eecompile export")
    if not mpath.is_file():
        raise BundleError(f"{root} has no {MANIFEST_NAME}", hint="the bundle is incomplete; re-export it")
    try:
        raw = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath} is not valid JSON: {exc}", hint="re-export the bundle") from exc
    if not isinstance(raw, dict) or "schema_version" not in raw:
        raise BundleError(f"{mpath} has no schema_version", hint="re-export the bundle")
    if raw["schema_version"] not in READABLE_SCHEMAS:
        raise SchemaVersionError(
            f"{mpath} has schema version {raw['schema_version']}, this eecompile reads "
            f"{', '.join(map(str, READABLE_SCHEMAS))} (writes {SCHEMA_VERSION})",
            hint="re-export the bundle with this eecompile, or use the eecompile version that wrote it")
    manifest = Manifest.from_dict(raw)
    bundle = Bundle(root, manifest)
    files = [(f"stage {stage.stage_idx}", graph.file, graph.sha256, graph.size_bytes)
             for stage in manifest.stages for graph in stage.graphs + ([stage.trunk] if stage.trunk else [])]
    if manifest.packed is not None:
        p = manifest.packed
        if len(p.signature_keys) != len(manifest.all_graphs):
            raise BundleError(f"{mpath}: packed file has {len(p.signature_keys)} signatures for "
                              f"{len(manifest.all_graphs)} graphs", hint="re-export the bundle")
        files.append(("packed stages", p.file, p.sha256, p.size_bytes))
    if manifest.samples is not None:
        files.append(("samples", manifest.samples.file, manifest.samples.sha256, manifest.samples.size_bytes))
    dh = root / DECISION_HASH_NAME
    if dh.is_file() and dh.read_text().strip() != manifest.decision_hash:
        raise BundleError(f"{dh} does not match the manifest's exit decision rule (an interrupted or hand edit)",
                          hint="rewrite it: eecompile calibrate (or re-export) the bundle")
    for what, name, sha, n_bytes in files:
        fpath = root / name
        if not fpath.is_file():
            raise BundleError(f"{what}: {name} is missing from {root}", hint="the bundle is incomplete; re-export it")
        if verify:
            size = fpath.stat().st_size
            if sha256_file(fpath) != sha:
                detail = f"size {size} != {n_bytes}" if size != n_bytes else "content differs"
                raise ChecksumError(f"{what}: {name} fails its sha256 check ({detail})",
                                    hint="the file is corrupt or truncated; re-export or re-copy the bundle")
    return bundle
