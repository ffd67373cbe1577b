"""Faults injected for real: `kill -9` in the middle of a run loses nothing and leaves nothing
half-written where a reader would take it for finished."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support import BIN, digitflow, digitflow_env, last_json, new_root, start_digitflow, write_pngs
from tasks.score import SCHEMA

pytestmark = pytest.mark.slow


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
    return last_json(digitflow(root, *args))


def test_kill_during_training_leaves_no_model_and_the_rerun_resumes(root):
    args = ("train", "--limit", "20000", "--epochs", "6", "--preset", "tuned")
    kill_when(start_digitflow(root, *args), "Epoch 3/6")
    assert not list((root / "artifacts").glob("models/*/model.keras"))
    assert not (root / "artifacts" / "models" / "champion.json").exists()
    rerun = start_digitflow(root, *args)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output[-3000:]
    done = json.loads(next(line for line in reversed(output.splitlines()) if line.startswith("{")))
    assert done["cached_steps"] == ["normalize"]  # what finished before the kill is reused
    assert "resuming after epoch 2" in output or "resuming after epoch 3" in output
    assert "Epoch 1/6" not in output and "Epoch 6/6" in output  # only the missing epochs ran
    history = pq.read_table(Path(done["model_path"]).parent / "history.parquet").to_pandas()
    assert list(history["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert not list((root / "artifacts" / "cache").glob("*.checkpoint.npz"))  # done with


def test_kill_during_scoring_leaves_no_table_and_the_rerun_completes(root, mnist):
    finish(root, "train", "--limit", "1000", "--epochs", "1")
    folder = root / "inbox"
    folder.mkdir()
    write_pngs(folder, mnist["x_test"][:3000])
    output = root / "out" / "predictions.parquet"
    args = ("score", str(folder), "--output", str(output), "--chunk-size", "100")
    kill_when(start_digitflow(root, *args), "Task run 'score-images-")
    assert not output.exists()  # no half-written table where a reader looks
    done = finish(root, *args)
    table = pq.read_table(output)
    assert table.schema.equals(SCHEMA) and table.num_rows == done["scored"] == 3000


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_npz, mnist) -> dict:
    """A root with a small trained model and an inbox of 1,500 digit PNGs, shared by the tests
    below (each writes its own outputs)."""
    root = new_root(tmp_path_factory.mktemp("trained"), mnist_npz)
    finish(root, "train", "--limit", "1000", "--epochs", "1")
    inbox = root / "inbox"
    inbox.mkdir()
    write_pngs(inbox, mnist["x_test"][:1500])
    return {"root": root, "inbox": inbox}


def test_kill_during_incremental_scoring_keeps_finished_chunks(trained):
    root, dataset = trained["root"], trained["root"] / "dataset"
    args = ("score", str(trained["inbox"]), "--dataset", str(dataset), "--chunk-size", "100")
    kill_when(start_digitflow(root, *args), "Task run 'score-images-")  # a chunk has finished
    done = finish(root, *args)
    assert done["skipped"] >= 100 and done["scored"] == 1500 - done["skipped"]
    table = pq.read_table(dataset).to_pandas()  # a dataset reader skips hidden temp files
    assert len(table) == 1500 and table["path"].is_unique  # every file once: none lost, none twice


def test_two_runs_writing_the_same_output_at_once_both_finish(trained):
    root, output = trained["root"], trained["root"] / "shared" / "predictions.parquet"
    args = ("score", str(trained["inbox"]), "--output", str(output), "--chunk-size", "500")
    runs = [start_digitflow(root, *args) for _ in range(2)]
    logs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    table = pq.read_table(output)  # one of the two, whole: each was renamed into place complete
    assert table.schema.equals(SCHEMA) and table.num_rows == 1500
    assert not [p for p in output.parent.iterdir() if p != output]  # no temp files left behind


def run_on_small_filesystem(trained: dict, options: str, output: Path) -> tuple[int, str, str]:
    """`digitflow score` with `output` on a fresh tmpfs mounted with `options`, in a mount
    namespace of its own (no privileges needed). Returns (exit code, stderr, what the tmpfs holds)."""
    mount = output.parent
    mount.mkdir(parents=True)
    script = (f'mount -t tmpfs -o {options} tmpfs "$1" || exit 97; shift; "$@" 1>&2; '
              'rc=$?; echo "left: $(ls -A "$MOUNT")" >&2; exit $rc')
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
               str(mount), str(BIN / "digitflow"), "score", str(trained["inbox"]), "--output", str(output)]
    done = subprocess.run(command, env=digitflow_env(trained["root"], MOUNT=str(mount)),
                          cwd=trained["root"], capture_output=True, text=True, timeout=600)
    if done.returncode == 97 or "unshare:" in done.stderr:
        pytest.skip(f"this machine cannot mount a tmpfs in a user namespace: {done.stderr[-300:]}")
    left = done.stderr.rsplit("left: ", 1)[1].strip()
    return done.returncode, done.stderr, left


def test_disk_full_fails_naming_the_path_and_leaves_no_partial_file(trained):
    output = trained["root"] / "full" / "predictions.parquet"
    code, stderr, left = run_on_small_filesystem(trained, "size=16k", output)
    assert code == 1
    error = stderr.split("digitflow score: error: ")[1].splitlines()[0]
    assert error.startswith(f"cannot write {output}: ") and "No space left on device" in error
    assert error.endswith("nothing was written there")
    assert left == ""  # neither the table nor a temp file


def test_unwritable_output_is_refused_before_any_scoring(trained):
    output = trained["root"] / "readonly" / "predictions.parquet"
    code, stderr, left = run_on_small_filesystem(trained, "ro", output)
    assert code == 1 and left == ""
    assert f"digitflow score: error: cannot write {output.parent}: Read-only file system" in stderr
    assert "score-images" not in stderr  # refused up front, not after the work
