"""Keeping converter and TensorFlow log noise off the user's terminal.

TensorFlow, onnx2tf's converter and LiteRT write from native code straight to file
descriptor 2 (absl's "All log messages before absl::InitializeLog()", oneDNN and cudart
notes, MLIR's "fully_quantize: 0, ..." lines, the XNNPACK banner), where Python's
``redirect_stderr`` cannot reach them. The CLI points fd 2 at a log file for the whole
command and gives Python's ``sys.stderr`` a duplicate of the real terminal, so eecompile's
own messages (errors, hints, progress on stderr) still reach the user. ``--verbose`` turns
this off. The last command's native log is kept at ``<cache>/logs/native.log``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from eecompile.util import cache_dir


def native_log_path() -> Path:
    return cache_dir() / "logs" / "native.log"


@contextlib.contextmanager
def quiet_native_output(enabled: bool = True) -> Iterator[Path | None]:
    if not enabled:
        yield None
        return
    path = native_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:  # no writable cache: keep the noise rather than fail the command
        yield None
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    old_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding=old_stderr.encoding or "utf-8",
                           errors="backslashreplace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TensorFlow's and LiteRT's deprecation warnings
        try:
            yield path
        finally:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = old_stderr
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
