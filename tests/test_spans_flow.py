"""train-digits with your labelled spans: a new span is a real retrain, gated on both test sets."""

import json
from pathlib import Path

import pandas as pd
import pytest

from flows.train import train_digits
from support import new_root, run_artifacts
from tasks.demo import make_other_writers_folder
from tasks.labels import LabelError, make_span

pytestmark = pytest.mark.flow
SMALL = {"limit": 6_000, "epochs": 2, "seed": 1}


@pytest.fixture(scope="module")
def root(tmp_path_factory, mnist_npz, prefect_harness):
    root = new_root(tmp_path_factory.mktemp("spans"), mnist_npz)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIGITFLOW_ROOT", str(root))
        yield root


@pytest.fixture(scope="module")
def other_writers(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("other-writers")
    return folder, make_other_writers_folder(folder)


def test_a_span_is_learnt_gated_on_both_sets_and_guarded(root, other_writers):
    mnist_only = train_digits(**SMALL)
    assert mnist_only["spans"] == [] and "your_test_accuracy" not in mnist_only

    folder, labels = other_writers
    chosen = pd.concat([g.head(20) for _, g in labels.groupby("label")])
    chosen.to_csv(root / "chosen.csv", index=False)
    make_span(root / "data" / "labelled", folder, labels=root / "chosen.csv", name="writers")

    learnt = train_digits(**SMALL)
    assert learnt["spans"] == ["writers"]
    assert "train" not in learnt["cached_steps"]  # the span changed the data: a real retrain
    assert learnt["model_version"] != mnist_only["model_version"]
    assert 20 <= learnt["your_test_images"] <= 60  # about 1 in 5 of 200
    metadata = json.loads((Path(learnt["model_path"]).parent / "metadata.json").read_text())
    assert metadata["spans"] == ["writers"] and metadata["train_images"] == 6_000 + 200 - learnt["your_test_images"]
    assert metadata["your_metrics"]["test_accuracy"] == learnt["your_test_accuracy"]
    assert "on your test set" in learnt["gate"] and "MNIST accuracy" in learnt["gate"]
    report = next(a.data for a in run_artifacts(learnt["run_id"]) if a.type == "markdown")
    assert "## Your digits" in report and "### Your test set, confusion matrix" in report
    assert "span writers: 200 pictures" in report

    again = train_digits(**SMALL)
    assert again["cached_steps"] == ["normalize", "labels", "train", "evaluate", "calibrate", "plots"]
    if learnt["promoted"]:
        assert again["gate"].startswith("nothing new")

    # A span changed after it was taken in is refused by name, before anything trains
    picture = next((root / "data" / "labelled" / "writers").rglob("*.png"))
    original = picture.read_bytes()
    picture.write_bytes(original[:-10])
    with pytest.raises(LabelError, match="span writers has changed since it was taken in"):
        train_digits(**SMALL)
    picture.write_bytes(original)

    # A span deleted after a model was trained on it: the next retrain leaves it out
    for path in sorted((root / "data" / "labelled" / "writers").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "data" / "labelled" / "writers").rmdir()
    dropped = train_digits(**SMALL)
    assert dropped["spans"] == [] and dropped["model_version"] == mnist_only["model_version"]
