"""Small shared helpers: atomic file writes that honour the umask, hashing, the cache
directory, lazy package exports. Cheap to import (standard library only)."""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from eecompile.errors import OutputPathError


def cache_dir() -> Path:
    """``$EECOMPILE_CACHE``, default ``~/.cache/eecompile`` (weights, downloads)."""
    return Path(os.environ.get("EECOMPILE_CACHE", Path.home() / ".cache" / "eecompile"))


def download_cache_dir() -> Path:
    """Downloads pinned by hash (e.g. the aarch64 libLiteRt.so) live here, outside the
    weights cache, so a test session with its own ``EECOMPILE_CACHE`` still reuses them."""
    return Path(os.environ.get("EECOMPILE_DOWNLOAD_CACHE", Path.home() / ".cache" / "eecompile" / "downloads"))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` / ``mkdir()`` would give: 0666 / 0777 minus the umask.
    ``mkstemp``/``mkdtemp`` create 0600/0700, which would leave bundle files unreadable to
    the other users that a plain copy would let read them."""
    return (0o777 if directory else 0o666) & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputPathError(f"cannot write to {path.parent}: {exc.strerror}",
                              hint="choose a writable output location") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), default_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names live in submodules
    that import heavy libraries (torch, TensorFlow): they load on first use, so
    ``import eecompile`` and ``eecompile --help`` stay fast."""

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
