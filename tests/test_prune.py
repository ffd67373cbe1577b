"""`digitflow prune`: what digitflow recomputes goes; champions, predictions and spans stay."""

import json
import os
import time
from pathlib import Path

from support import digitflow, last_json
from tasks.paths import Paths
from tasks.prune import prune


def write(path: Path, text: str = "x" * 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def age(root: Path, days: float) -> None:
    """Every file and folder under `root` last changed `days` ago."""
    then = time.time() - days * 86400
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            os.utime(os.path.join(folder, name), (then, then))


def a_root(root: Path) -> Paths:
    """Four versions: v1 champion now, v2 champion before (rollback needs it), v3 never, v4 the
    latest (never champion); caches, predictions and a span."""
    paths = Paths(root)
    for v in ("v1", "v2", "v3", "v4"):
        write(paths.models / v / "model.keras")
        write(paths.models / v / "metadata.json", json.dumps({"model_version": v}))
    write(paths.promotions, "".join(json.dumps({"model_version": v}) + "\n" for v in ("v2", "v1")))
    write(paths.champion, json.dumps({"model_version": "v1"}))
    write(paths.latest_model, json.dumps({"model_version": "v4"}))
    write(paths.cache / "train-abc.json")
    write(paths.cache / "train-abc.checkpoint.npz")
    write(paths.normalized / "abc" / "x_train.npy")
    write(paths.prepared_labels / "def" / "x_train.npy")
    write(paths.predictions / "inbox" / "date=2026-12-01" / "part-1.parquet")
    write(paths.predictions / "demo.parquet")
    write(paths.labelled / "mine" / "7" / "a.png")
    return paths


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_prune_deletes_what_is_recomputed_and_keeps_champions_predictions_and_spans(tmp_path):
    paths = a_root(tmp_path)
    age(tmp_path, days=10)
    before = files_under(tmp_path)
    pruned = prune(paths, older_than_days=7)
    assert sorted(pruned.removed) == [
        "artifacts/cache/train-abc.checkpoint.npz", "artifacts/cache/train-abc.json",
        "artifacts/labelled/def", "artifacts/models/v3", "artifacts/normalized/abc"]
    assert pruned.freed_bytes == 5 * 100 + len(json.dumps({"model_version": "v3"}))
    assert pruned.kept_versions == ["v1", "v2", "v4"]
    gone = ("artifacts/cache/", "artifacts/labelled/", "artifacts/models/v3/",
            "artifacts/normalized/")
    assert files_under(tmp_path) == {f for f in before if not f.startswith(gone)}
    assert not list(paths.artifacts.glob(".pruning-*"))


def test_prune_leaves_what_changed_recently_a_running_job_s_files(tmp_path):
    paths = a_root(tmp_path)
    age(tmp_path, days=10)
    write(paths.cache / "train-abc.checkpoint.npz")  # a training writing its checkpoint now
    write(paths.models / "v3" / "model.onnx")  # a version being exported now
    pruned = prune(paths, older_than_days=7)
    assert "artifacts/cache/train-abc.checkpoint.npz" not in pruned.removed
    assert "artifacts/models/v3" not in pruned.removed and (paths.models / "v3").is_dir()


def test_digitflow_prune_dry_run_lists_and_deletes_nothing(tmp_path):
    a_root(tmp_path)
    age(tmp_path, days=10)
    before = files_under(tmp_path)
    done = digitflow(tmp_path, "prune", "--dry-run")
    assert last_json(done)["removed"] == ["artifacts/cache/train-abc.checkpoint.npz",
                                          "artifacts/cache/train-abc.json", "artifacts/labelled/def",
                                          "artifacts/models/v3", "artifacts/normalized/abc"]
    assert "would delete artifacts/models/v3" in done.stderr
    assert "kept the versions ever champion, and the latest: v1, v2, v4" in done.stderr
    assert files_under(tmp_path) == before
