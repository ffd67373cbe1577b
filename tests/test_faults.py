"""Faults injected for real: `kill -9` in the middle of a run loses nothing and leaves nothing
half-written where a reader would take it for finished."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.score import SCHEMA

pytestmark = pytest.mark.slow
DIGITFLOW = Path(sys.executable).parent / "digitflow"


def environment(root: Path) -> dict:
    env = {**os.environ, "DIGITFLOW_ROOT": str(root), "PREFECT_HOME": str(root / ".prefect")}
    env.pop("PREFECT_API_URL", None)
    return env


def start(root: Path, *args: str) -> subprocess.Popen:
    """The command with its logs and output on one pipe, in a process group of its own."""
    return subprocess.Popen([DIGITFLOW, *args], env=environment(root), cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def kill_when(process: subprocess.Popen, marker: str, timeout: float = 300) -> str:
    """SIGKILL the whole process group as soon as `marker` appears in its output."""
    seen, deadline = [], time.monotonic() + timeout
    for line in process.stdout:
        seen.append(line)
        if marker in line or time.monotonic() > deadline:
            break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert marker in "".join(seen), "".join(seen)[-3000:]
    return "".join(seen)


def finish(root: Path, *args: str) -> dict:
    """Run the command to the end; its JSON summary."""
    done = subprocess.run([DIGITFLOW, *args], env=environment(root), cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def root(tmp_path, mnist_npz) -> Path:
    (tmp_path / "data" / "raw").mkdir(parents=True)
    shutil.copy(mnist_npz, tmp_path / "data" / "raw" / "mnist.npz")
    return tmp_path


def test_kill_during_training_leaves_no_model_and_the_rerun_reuses_the_cache(root):
    args = ("train", "--limit", "20000", "--epochs", "30", "--preset", "tuned")
    kill_when(start(root, *args), "Epoch 2/30")
    assert not list((root / "artifacts").glob("models/*/model.keras"))
    assert not (root / "artifacts" / "models" / "champion.json").exists()
    done = finish(root, "train", "--limit", "20000", "--epochs", "2", "--preset", "tuned")
    assert done["cached_steps"] == ["normalize"]  # what finished before the kill is reused
    assert Path(done["model_path"]).is_file()


def test_kill_during_scoring_leaves_no_table_and_the_rerun_completes(root, mnist):
    finish(root, "train", "--limit", "1000", "--epochs", "1")
    folder = root / "inbox"
    folder.mkdir()
    for i in range(3000):
        Image.fromarray(mnist["x_test"][i]).save(folder / f"{i:05d}.png")
    output = root / "out" / "predictions.parquet"
    args = ("score", str(folder), "--output", str(output), "--chunk-size", "100")
    kill_when(start(root, *args), "Task run 'score-images-")
    assert not output.exists()  # no half-written table where a reader looks
    done = finish(root, *args)
    table = pq.read_table(output)
    assert table.schema.equals(SCHEMA) and table.num_rows == done["scored"] == 3000
