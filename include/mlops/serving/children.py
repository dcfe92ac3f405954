"""What the service's child processes (the shadow workers, the log's drain) share: they die with it."""

from __future__ import annotations

import contextlib
import signal
import sys


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the thread of the service that started it ends, however it ends."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
