"""Whole flows on a small subset, under one Prefect test harness."""

import json
import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from support import api_client, new_root, run_artifacts
from flows.score import score_folder
from flows.train import train_digits
from tasks.demo import make_demo_folder
from tasks.mnist import FROZEN_TEST_SET
from tasks.score import SCHEMA

pytestmark = pytest.mark.flow
SMALL = {"limit": 10_000, "epochs": 2, "seed": 1}  # ~0.9 test accuracy in a few seconds


@pytest.fixture(scope="module")
def flow_root(tmp_path_factory, mnist_npz, prefect_harness):
    root = new_root(tmp_path_factory.mktemp("digitflow"), mnist_npz)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIGITFLOW_ROOT", str(root))
        yield root


@pytest.fixture(scope="module")
def first_run(flow_root):
    return train_digits(**SMALL)


def test_train_writes_model_history_metadata_evaluation_and_plots(first_run, flow_root):
    assert set(first_run) >= {"test_accuracy", "model_path", "model_version", "run_id", "seconds"}
    assert first_run["test_accuracy"] > 0.85
    folder = Path(first_run["model_path"]).parent
    assert folder == flow_root / "artifacts" / "models" / first_run["model_version"]

    history = pd.read_parquet(folder / "history.parquet")
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert len(history) == 2

    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["model_version"] == first_run["model_version"]
    assert metadata["settings"] == {"preset": "seed", "epochs": 2, "batch_size": 32,
                                    "validation_split": 0.2, "seed": 1, "speedups": True,
                                    "limit": 10_000}
    assert metadata["train_images"] == 10_000 and metadata["params"] == 104_938
    assert metadata["metrics"]["test_accuracy"] == first_run["test_accuracy"]
    assert metadata["data_verified"] is True and "keras" in metadata["libraries"]
    calibration = metadata["calibration"]
    assert 0.2 < calibration["temperature"] < 5 and 0 < calibration["threshold"] <= 1
    assert calibration["validation"]["images"] == 2_000  # the last fifth of the 10,000
    mnist_figures = calibration["tests"]["mnist"]
    assert mnist_figures["ece_after"] <= mnist_figures["ece_before"] + 0.005
    assert (folder / "calibration" / "reliability.png").is_file()

    per_class = pd.read_parquet(folder / "evaluation" / "per_class.parquet")
    assert list(per_class["digit"]) == list(range(10)) and per_class["support"].sum() == 10_000
    confusion = pd.read_parquet(folder / "evaluation" / "confusion.parquet")
    trace = np.trace(confusion.drop(columns="true").to_numpy())
    assert trace / 10_000 == pytest.approx(first_run["test_accuracy"])

    for name in ("curves", "confusion", "misclassified"):
        with Image.open(folder / "plots" / f"{name}.png") as png:
            assert png.width > 300 and png.height > 200
    latest = json.loads((flow_root / "artifacts" / "models" / "latest.json").read_text())
    assert latest["model_version"] == first_run["model_version"]


def test_first_model_becomes_champion_and_a_worse_one_does_not(first_run, flow_root):
    champion = flow_root / "artifacts" / "models" / "champion.json"
    assert first_run["promoted"] and first_run["gate"] == "no champion yet"
    assert json.loads(champion.read_text())["model_version"] == first_run["model_version"]

    worse = train_digits(limit=500, epochs=1, seed=1)
    assert not worse["promoted"] and "is worse than" in worse["gate"]
    assert json.loads(champion.read_text())["model_version"] == first_run["model_version"]


def test_report_artifacts_embed_the_plots(first_run):
    artifacts = run_artifacts(first_run["run_id"])
    with api_client() as client:
        run = client.read_flow_run(first_run["run_id"])
    assert run.name.startswith("train-seed-")
    assert {"preset:seed", f"model:{first_run['model_version']}", "promoted"} <= set(run.tags)
    by_type = {a.type: a for a in artifacts}
    report = by_type["markdown"].data
    assert report.count("](data:image/png;base64,") == 4  # 3 plots and the reliability diagram
    assert "## Confidence: calibration and the review flag" in report and "ECE before" in report
    assert "## Model" in report and "104,938" in report  # model.summary(), as the tutorial prints
    assert f"]({Path(first_run['model_path']).resolve().as_uri()})" in report  # a link to the model
    assert f"Test set `{FROZEN_TEST_SET}` (MNIST's own, frozen)" in report
    assert "Promoted to champion" in report and "no champion yet" in report
    assert f"{first_run['test_accuracy']:.4f}" in report
    tables = {a.key: json.loads(a.data) for a in artifacts if a.type == "table"}
    assert len(tables["per-class-metrics-seed"]) == 10
    assert tables["model-versions"][0]["version"] == first_run["model_version"]


def test_identical_rerun_is_served_from_the_cache(first_run):
    again = train_digits(**SMALL)
    assert again["cached_steps"] == ["normalize", "train", "evaluate", "calibrate", "plots"]
    assert again["model_version"] == first_run["model_version"]
    assert again["test_accuracy"] == first_run["test_accuracy"]


def test_deleted_cached_model_is_retrained_not_crashed(first_run):
    Path(first_run["model_path"]).unlink()
    again = train_digits(**SMALL)
    assert Path(again["model_path"]).is_file()
    # Retrained with the same seed: the same weights, so the same version and its evaluation
    assert again["model_version"] == first_run["model_version"]
    assert again["cached_steps"] == ["normalize", "evaluate", "calibrate", "plots"]


def test_no_cache_reruns_every_step(first_run):
    assert train_digits(**SMALL, no_cache=True)["cached_steps"] == []


def test_score_folder_of_scans_is_accurate_and_reports_bad_files(first_run, flow_root, mnist):
    folder = flow_root / "scans"
    make_demo_folder(mnist["x_test"][-90:], mnist["y_test"][-90:], folder, count=90, seed=3)
    output = flow_root / "out" / "predictions.parquet"
    summary = score_folder(folder=folder, output=output, labels=folder / "labels.csv",
                           chunk_size=40)
    table = pq.read_table(output)
    assert table.schema.equals(SCHEMA)
    assert table.num_rows == 93  # 90 scans + 3 broken files; README.txt and labels.csv ignored
    frame = table.to_pandas()
    assert list(frame["path"]) == sorted(frame["path"])
    champion = json.loads((flow_root / "artifacts" / "models" / "champion.json").read_text())
    assert (frame["model_version"] == champion["model_version"]).all()  # the default model
    errors = frame[frame["status"] == "error"].set_index("path")["error"]
    assert sorted(errors.index) == ["broken/empty.png", "broken/notes.jpg", "broken/truncated.png"]
    assert summary["scored"] == 90 and summary["errors"] == 3
    # Scans of unseen digits score close to the clean test set; a naive resize gets ~10%.
    assert summary["accuracy"] >= first_run["test_accuracy"] - 0.1
    assert os.listdir(output.parent) == ["predictions.parquet"]
    assert len(summary["review"]) == 16 and summary["review"][0]["confidence"] <= \
        summary["review"][-1]["confidence"]
    # Calibrated confidence under the champion's threshold is flagged for review
    metadata = json.loads((Path(champion["model_path"]).parent / "metadata.json").read_text())
    ok = frame[frame["status"] == "ok"]
    assert (ok["review"] == (ok["confidence"] < metadata["calibration"]["threshold"])).all()
    assert summary["flagged"] == int(ok["review"].sum()) and frame.loc[
        frame["status"] == "error", "review"].isna().all()
    # 90 scans of MNIST digits: near the champion's MNIST reference, too few to raise an alarm
    assert summary["drift"]["reference"] == "mnist" and not summary["drift"]["alarm"]
    assert set(summary["drift"]["scores"]) >= {"predicted_digit", "confidence", "ink"}


def test_digits_from_other_writers_raise_a_drift_event(first_run, flow_root):
    from prefect.events.filters import EventFilter, EventNameFilter

    from tasks.demo import make_other_writers_folder

    folder, dataset = flow_root / "other-writers", flow_root / "other-dataset"
    make_other_writers_folder(folder)
    summary = score_folder(folder=folder, dataset=dataset)
    drift = summary["drift"]
    assert drift["alarm"] and drift["alarming"], drift
    beside = list(dataset.glob(f"date=*/_drift-{summary['run_id'][:8]}.json"))
    assert len(beside) == 1 and json.loads(beside[0].read_text())["alarm"]
    assert pq.read_table(dataset).num_rows == 1797  # the report is not read as a part
    # Events reach the server's store asynchronously (sent in the background, written in batches)
    deadline, ours = time.monotonic() + 90, []
    while not ours and time.monotonic() < deadline:
        with api_client() as client:
            events = client.read_events(filter=EventFilter(
                event=EventNameFilter(name=["digitflow.scoring.drift"])), limit=50).events
        ours = [e for e in events if e.payload["run_id"] == summary["run_id"]]
        time.sleep(0 if ours else 2)
    assert len(ours) == 1 and ours[0].payload["folder"] == str(folder)
    assert ours[0].payload["output"] == str(dataset) and ours[0].payload["alarming"]


def test_incremental_scoring_scores_only_new_files(first_run, flow_root, mnist):
    folder, dataset = flow_root / "inbox", flow_root / "predictions-dataset"
    make_demo_folder(mnist["x_test"][:20], mnist["y_test"][:20], folder, count=20, seed=4)
    first = score_folder(folder=folder, dataset=dataset)
    assert (first["scored"], first["errors"], first["skipped"]) == (20, 3, 0)
    make_demo_folder(mnist["x_test"][20:25], mnist["y_test"][20:25], folder / "new", count=5,
                     seed=5, bad_files=False)
    second = score_folder(folder=folder, dataset=dataset)
    assert (second["scored"], second["errors"], second["skipped"]) == (5, 0, 23)
    table = pq.read_table(dataset)  # both runs, as one partitioned dataset
    assert table.num_rows == 28 and "date" in table.column_names
    nothing_new = score_folder(folder=folder, dataset=dataset)  # the usual scheduled run
    assert (nothing_new["scored"], nothing_new["skipped"]) == (0, 28)
    assert nothing_new["model_version"] == first_run["model_version"]


def test_predict_prints_one_line_per_file_and_shows_what_the_model_saw(first_run, flow_root,
                                                                        mnist, capsys):
    from flows.cli import main

    folder = flow_root / "single"
    folder.mkdir()
    dark_on_light = Image.fromarray(255 - mnist["x_test"][0]).resize((200, 200))  # a 7
    light_on_dark = Image.fromarray(mnist["x_test"][1]).resize((120, 120))  # a 2
    dark_on_light.save(folder / "seven.png")
    light_on_dark.save(folder / "two.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    files = [str(folder / n) for n in ("seven.png", "two.jpg", "broken.png")]

    assert main(["predict", *files, "--show", str(flow_root / "show.png")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("seven.png: 7 (confidence " + lines[0].split("confidence ")[1])
    assert ": 2 (confidence" in lines[1]
    assert "broken.png: error: not an image Pillow can read" in lines[2]
    with Image.open(flow_root / "show.png") as png:  # per file: picture, input, bars (9×2.6 in)
        assert png.size == (720, 3 * 208)

    assert main(["predict", *files, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [list(r) for r in rows] == [SCHEMA.names] * 3
    assert rows[0]["label"] == 7 and rows[2]["status"] == "error" and rows[2]["label"] is None
    as_table = [dict(r, scored_at=datetime.fromisoformat(r["scored_at"])) for r in rows]
    assert pa.Table.from_pylist(as_table, schema=SCHEMA).num_rows == 3  # the table's types


def test_predict_the_tutorials_own_example(first_run, capsys):
    from flows.cli import main

    assert main(["predict", "--mnist-test", "1"]) == 0
    assert capsys.readouterr().out.startswith("mnist-test/1: 2 (confidence")
    assert main(["predict", "--mnist-test", "10000"]) == 1
    assert "--mnist-test 10000: the test set has images 0 to 9999" in capsys.readouterr().err


def test_training_report_includes_the_model_summary(first_run):
    summary = (Path(first_run["model_path"]).parent / "summary.txt").read_text()
    assert "104,938" in summary and "Dense" in summary
