"""Start and stop background services by process group.

Every service is started as the leader of its own session, so stopping it means
signalling the whole group: `airflow` commands fork workers and supervisors that
outlive a signal sent only to the parent.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


class PortInUseError(RuntimeError):
    pass


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def require_free_port(host: str, port: int, service: str, env_var: str) -> None:
    if not port_is_free(host, port):
        raise PortInUseError(
            f"{service} cannot start: port {port} on {host} is already in use. "
            f"Stop whatever holds it (`ss -ltnp 'sport = :{port}'` shows it) "
            f"or choose another port with {env_var}=<port>."
        )


def start_process_group(
    command: Sequence[str], log_file: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` as the leader of a new session, output appended to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    # Our own children would otherwise linger as zombies and keep the group "alive".
    try:
        while True:
            done, _ = os.waitpid(-pid, os.WNOHANG)
            if done == 0:
                break
    except ChildProcessError:
        pass


def stop_process_group(pgid: int, grace_seconds: float = 15.0) -> bool:
    """SIGTERM the group, wait up to `grace_seconds`, then SIGKILL. True if it was running."""
    if not group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        _reap(pgid)
        if not group_alive(pgid):
            return True
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while group_alive(pgid) and time.monotonic() < deadline:
        _reap(pgid)
        time.sleep(0.1)
    return True


def wait_for_http(
    url: str, timeout_seconds: float, process: subprocess.Popen[bytes] | None = None, log_file: Path | None = None
) -> None:
    """Poll `url` until it answers 2xx; fail early if `process` dies meanwhile."""
    deadline = time.monotonic() + timeout_seconds
    last_error = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-3000:] if log_file and log_file.exists() else ""
            raise RuntimeError(f"process for {url} exited with code {process.returncode}; log tail:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if 200 <= response.status < 300:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.5)
    hint = f" See {log_file}." if log_file else ""
    raise TimeoutError(f"{url} did not become healthy within {timeout_seconds:.0f} s ({last_error}).{hint}")
