"""Prefect's temporary server, started as the command starts, so it boots while Python imports.

With no server configured, Prefect starts this same server itself (`SubprocessASGIServer`: the
API app under uvicorn, the UI off, the SQLite database in PREFECT_HOME), but only at the first API
call, after 3-4 s of imports, and then waits ~7 s for it on 2 cores. Started first, the two
overlap. The server is stopped when the command exits, after Prefect has sent its last logs.
"""

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MAKE_UI = "http://127.0.0.1:4200"  # the Makefile's default HOST and PORT


def server_named() -> bool:
    """Whether the environment or a Prefect profile may name a server (read without Prefect)."""
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        in_profile = "PREFECT_API_URL" in profiles.read_text()
    except OSError:
        in_profile = False
    return bool(os.environ.get("PREFECT_API_URL")) or in_profile


def start() -> tuple[subprocess.Popen, str] | None:
    """The server process and its API URL; None if a server may be configured already."""
    if server_named():
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
             "PREFECT__SERVER_FINAL": "1"})
    atexit.register(stop, server)  # registered before Prefect's own exit hooks: runs after them
    return server, f"http://127.0.0.1:{port}/api"


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def healthy(server: subprocess.Popen, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


@contextmanager
def prefect_api(started: tuple[subprocess.Popen, str] | None) -> Iterator[None]:
    """Flows run inside this use the early server, unless the Prefect profile names a server
    (then that one) or the early one did not come up (then Prefect starts its own)."""
    from prefect.settings import (
        PREFECT_API_URL, PREFECT_UI_URL, get_current_settings, temporary_settings)

    settings = get_current_settings()
    if started is None or settings.api.url:
        if started is not None:
            stop(started[0])
        yield
        return
    server, url = started
    if not healthy(server, url, settings.server.ephemeral.startup_timeout_seconds):
        stop(server)
        yield
        return
    print(f"digitflow: Prefect's temporary server on {url.removesuffix('/api')}, stopped at exit; "
          f"`make ui` serves these runs at {MAKE_UI}", file=sys.stderr)
    # This server has no UI: Prefect's "View at" links point where `make ui` serves the same runs.
    with temporary_settings({PREFECT_API_URL: url, PREFECT_UI_URL: MAKE_UI}):
        yield
