"""prefect.yaml is accepted by `prefect deploy` against a real `prefect server start`."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real Prefect server on a free loopback port with its own home; stopped afterwards."""
    home, port = tmp_path_factory.mktemp("prefect-home"), free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    log = open(home / "server.log", "w")
    process = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        subprocess.run([PREFECT, "server", "status", "--wait", "--timeout", "120"], env=env,
                       check=True, capture_output=True, timeout=150)
        yield env
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def prefect(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_prefect_deploy_accepts_both_deployments(server):
    assert prefect(server, "work-pool", "create", "digitflow", "--type", "process").returncode == 0
    deployed = prefect(server, "--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    listed = prefect(server, "deployment", "ls").stdout
    assert "train-digits/retrain-nightly" in listed and "score-folder/score-inbox" in listed
    nightly = prefect(server, "deployment", "inspect", "train-digits/retrain-nightly").stdout
    assert "0 3 * * *" in nightly and str(REPO) in nightly  # schedule; runs in this checkout
