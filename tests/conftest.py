"""Shared fixtures: the verified MNIST copy, throwaway digitflow roots, one Prefect harness."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from support import BIN, REPO, free_port, new_root, prefect
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mnist_npz() -> Path:
    """The verified copy `make install` writes (no test downloads anything)."""
    path = REPO / "data" / "raw" / "mnist.npz"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make install` (it fetches and verifies MNIST)")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_npz: Path) -> dict[str, np.ndarray]:
    with np.load(mnist_npz, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture
def root(tmp_path: Path, mnist_npz: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty digitflow root holding only the verified data, used as $DIGITFLOW_ROOT."""
    monkeypatch.setenv("DIGITFLOW_ROOT", str(tmp_path))
    return new_root(tmp_path, mnist_npz)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port with a throwaway home: the environment
    (PREFECT_HOME, PREFECT_API_URL, ...) for processes that should use it. Stopped after."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_UI_API_URL": api}
    with open(home / "server.log", "w") as log:
        server = subprocess.Popen([BIN / "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            prefect(env, "server", "status", "--wait", "--timeout", "120")
            yield {"env": env, "url": f"http://127.0.0.1:{port}", "home": home}
        finally:
            server.terminate()
            server.wait(timeout=60)


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium driven by Playwright (no browser download)."""
    if not Path("/usr/bin/chromium").exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("needs Debian's chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()
