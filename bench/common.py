"""What the benchmarks share: running a command as its own process and measuring it."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"


def run(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run `cmd`; its wall seconds, CPU seconds, peak RSS (MiB) and the JSON of its last stdout
    line."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed (status {status})")
    last = out.strip().splitlines()[-1] if out.strip() else "{}"
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "result": json.loads(last)}


def fixed_costs(env: dict) -> dict:
    """What any command built on Prefect and Keras pays before its first step, however it is
    written: each import as its own process (wall and CPU seconds). `server` is what Prefect's
    temporary server imports before it can answer (prefect.server.api.server). Each leaves as
    `digitflow` does (flows.cli.run): os._exit, without the interpreter's teardown."""
    costs = {}
    for name, modules in (("prefect", "prefect"), ("keras+prefect", "keras, prefect"),
                          ("server", "prefect.server.api.server")):
        costs[name] = run([str(BIN / "python"), "-c", f"import {modules}, os; os._exit(0)"], env)
    return costs


def bench_root() -> Path:
    """A fresh digitflow root holding only the verified data, and its own Prefect home."""
    root = Path(tempfile.mkdtemp(prefix="digitflow-bench-"))
    (root / "data" / "raw").mkdir(parents=True)
    shutil.copy(REPO / "data" / "raw" / "mnist.npz", root / "data" / "raw" / "mnist.npz")
    return root


def train_scoring_model(root: Path) -> None:
    """The scoring benchmarks' model in `root`: a seed model of 10,000 digits and 2 epochs."""
    run([str(BIN / "digitflow"), "train", "--limit", "10000", "--epochs", "2"], digitflow_env(root),
        cwd=root)


def digitflow_env(root: Path) -> dict:
    return {"DIGITFLOW_ROOT": str(root), "PREFECT_HOME": str(root / ".prefect"),
            "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@contextmanager
def prefect_server(root: Path) -> Iterator[str]:
    """`prefect server start` on a free loopback port with the root's Prefect home; its API URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **digitflow_env(root), "PREFECT_API_URL": api}
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        subprocess.run([str(BIN / "prefect"), "server", "status", "--wait", "--timeout", "120"],
                       env=env, check=True, capture_output=True)
        yield api
    finally:
        server.terminate()
        server.wait(timeout=30)
