"""The `digitflow` command as a user runs it: real processes, Prefect's temporary server."""

import os
import re
import sqlite3
import subprocess
import sys
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from support import REPO, digitflow, free_port, last_json, new_root, write_pngs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory, mnist_npz) -> Path:
    return new_root(tmp_path_factory.mktemp("cli"), mnist_npz)


def test_train_then_score_print_json_summaries(cli_root, mnist):
    done = digitflow(cli_root, "train", "--limit", "2000", "--epochs", "1")
    trained = last_json(done)
    assert set(trained) >= {"test_accuracy", "model_path", "model_version", "run_id", "seconds"}
    assert Path(trained["model_path"]).is_file()
    # The temporary server the command started is gone, and the run is in Prefect's database
    server = re.search(r"temporary server on (http://[\d.:]+),", done.stderr).group(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server}/api/health", timeout=5)
    with closing(sqlite3.connect(cli_root / ".prefect" / "prefect.db")) as db:
        states = dict(db.execute("SELECT id, state_type FROM flow_run"))
    assert states[trained["run_id"]] == "COMPLETED"
    # The same command again is served from the cache, and loads neither TensorFlow nor
    # matplotlib (Python lists every module it imports on stderr)
    again = digitflow(cli_root, "train", "--limit", "2000", "--epochs", "1",
                      PYTHONPROFILEIMPORTTIME="1")
    assert last_json(again)["cached_steps"] == ["normalize", "train", "evaluate", "calibrate", "plots"]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in again.stderr.splitlines()
                if line.startswith("import time:")}
    assert "prefect" in imported and not imported & {"tensorflow", "keras", "matplotlib"}

    inbox = cli_root / "inbox"
    inbox.mkdir()
    write_pngs(inbox, mnist["x_test"][:5], name="{i}.png", invert=True, size=140)
    (inbox / "bad.jpg").write_bytes(b"not a jpeg")
    scored = last_json(digitflow(cli_root, "score", str(inbox)))
    assert (scored["scored"], scored["errors"]) == (5, 1)  # a bad file is not a failed run
    assert Path(scored["output"]).parent == cli_root / "artifacts" / "predictions"
    assert Path(scored["output"]).is_file()


def test_no_early_server_when_one_is_named(tmp_path, monkeypatch):
    from flows import server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    assert not server.server_named()
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://prefect.internal/api"\n')
    assert server.server_named() and server.start() is None
    (tmp_path / "profiles.toml").unlink()
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert server.server_named()


def test_the_console_script_keeps_exit_codes_and_output(tmp_path):
    """It leaves without the interpreter's teardown (flows.cli.run): what it printed and the
    exit code must survive that."""
    shown = digitflow(tmp_path, "--help")
    assert shown.returncode == 0 and "usage: digitflow" in shown.stdout
    wrong = digitflow(tmp_path, "train", "--epochs", "none")
    assert wrong.returncode == 2 and "invalid positive value: 'none'" in wrong.stderr


def test_a_commands_run_has_no_heartbeats_unless_asked(monkeypatch):
    from prefect.settings import get_current_settings

    from flows.cli import without_heartbeats

    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    with without_heartbeats():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == 180  # Prefect's default, outside
    code = ("from prefect.settings import get_current_settings; from flows.cli import "
            "without_heartbeats\nwith without_heartbeats(): "
            "print(get_current_settings().flows.heartbeat_frequency)")
    asked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60"})
    assert asked.stdout.strip() == "60", asked.stderr  # the person's own setting stands


def test_bad_data_fails_with_a_clear_message(tmp_path):
    done = digitflow(tmp_path, "fetch-data", "--data", str(tmp_path / "nowhere.npz"))
    assert done.returncode == 1
    assert "no such file or folder" in done.stderr


def test_score_without_a_model_says_what_to_do(tmp_path):
    (tmp_path / "inbox").mkdir()
    done = digitflow(tmp_path, "score", str(tmp_path / "inbox"))
    assert done.returncode == 1
    assert "run `digitflow train` first, or pass --model PATH" in done.stderr


def test_make_ui_listens_on_loopback_only(tmp_path):
    """`make ui` as a user runs it: the UI answers on 127.0.0.1 and not on the machine's address."""
    import socket
    import time


    outside = next((a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True)
                    .stdout.split() if "." in a and not a.startswith("127.")), None)
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PORT": str(port)}
    make = subprocess.Popen(["make", "--no-print-directory", "ui"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and make.poll() is None, "make ui did not start"
                time.sleep(1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outside, port), timeout=5).close()
    finally:
        os.killpg(make.pid, 15)
        make.wait(timeout=60)


def test_label_train_and_list_spans_as_a_user_does(tmp_path, mnist_npz, mnist):
    root = new_root(tmp_path / "root", mnist_npz)
    sevens = tmp_path / "sevens"
    write_pngs(sevens, mnist["x_test"][mnist["y_test"] == 7][:12], invert=True, size=96)
    made = last_json(digitflow(root, "label", sevens, "--digit", "7", "--span", "my-sevens"))
    assert made["pictures"] == 12 and made["by_digit"][7] == 12
    assert (root / "data" / "labelled" / "my-sevens" / "7" / "00000.png").is_file()

    # The same pictures labelled 1 are refused, naming both labels; nothing is written
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("path,label\n00000.png,1\n")
    refused = digitflow(root, "label", sevens, "--labels", wrong, "--span", "wrong")
    assert refused.returncode == 1 and "00000.png" in refused.stderr
    assert not (root / "data" / "labelled" / "wrong").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\n00001.png,11\n")
    refused = digitflow(root, "label", sevens, "--labels", bad)
    assert refused.returncode == 1 and "line 2" in refused.stderr and "11" in refused.stderr

    # A queue CSV with a digit and a picture that shows none: the span, and the other remembered
    pictures = tmp_path / "inbox"
    write_pngs(pictures, mnist["x_test"][mnist["y_test"] == 3][:2], invert=True, size=96)
    answered = tmp_path / "answered.csv"
    answered.write_text("path,sha256,top3,label\n00000.png,,,3\n00001.png,,,not a digit\n")
    made = last_json(digitflow(root, "label", pictures, "--labels", answered, "--span", "threes"))
    assert (made["pictures"], made["not_a_digit"]) == (1, 1)

    listed = last_json(digitflow(root, "labels"))
    assert [(s["span"], s["in_champion"]) for s in listed["spans"]] == \
        [("my-sevens", False), ("threes", False)]
    assert listed["not_digits"] == 1
    trained = last_json(digitflow(root, "train", "--limit", "2000", "--epochs", "1"))
    assert trained["spans"] == ["my-sevens", "threes"] and trained["promoted"]
    listed = last_json(digitflow(root, "labels"))
    assert listed["spans"][0]["in_champion"] and listed["champion"] == trained["model_version"]
