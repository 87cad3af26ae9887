"""Ctrl-C must stop an export, every time.

The converters run long stretches of code that catch every exception (onnx2tf has bare
``except:`` blocks; TensorFlow's converter wraps its calls), so the ``KeyboardInterrupt``
that Python raises inside them can be swallowed: measured, one Ctrl-C in about 1 of 4
exports was ignored and the bundle was written anyway. ``interrupt_guard`` installs a SIGINT
handler that also records the signal, and ``checkpoint()``, called between conversion steps
and before the bundle is committed, raises once it has been seen: a swallowed Ctrl-C stops
the export at the next step, and nothing is written.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_seen = threading.Event()


def _on_sigint(signum, frame) -> None:
    _seen.set()
    raise KeyboardInterrupt


def checkpoint() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed since the guard started (even if swallowed)."""
    if _seen.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_guard() -> Iterator[None]:
    """Record SIGINT for ``checkpoint()`` while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _seen.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
        checkpoint()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        # A Ctrl-C that landed inside a C extension's import or a converter's error path comes
        # out as some other error (measured: "ImportError: initialization failed"): it was
        # still the user's Ctrl-C.
        if _seen.is_set():
            raise KeyboardInterrupt from exc
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        _seen.clear()


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Hold SIGINT back while the block runs (a few renames); it is delivered afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
