"""Shared fixtures: the verified MNIST copy, throwaway digitflow roots, one Prefect harness."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
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
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(mnist_npz, raw / "mnist.npz")  # a copy: a test may tamper with its own
    monkeypatch.setenv("DIGITFLOW_ROOT", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
