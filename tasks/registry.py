"""Trained model versions under artifacts/models/<version>/, the champion, and the gate.

Every trained model is a version. One of them is the champion, which scoring uses by default: a
retrained challenger replaces it only if it is not worse on the same test set (within a margin).
The champion is a small JSON pointer replaced atomically, so a scorer reading it while a retrain
promotes sees the old champion or the new one, never a half-written model; every promotion and
rollback is appended to promotions.jsonl.
"""

import json
import platform
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.mnist import FROZEN_TEST_SET
from tasks.paths import Paths
from tasks.records import Evaluation, GateDecision, MnistCopy, TrainedModel
from tasks.store import write_bytes, write_json

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "scikit-learn", "prefect")


class ModelNotFound(RuntimeError):
    pass


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = package_version(name)
        except Exception:  # not installed (tensorflow vs tensorflow-cpu)
            continue
    return found


def model_metadata(dataset: MnistCopy, trained: TrainedModel, evaluated: Evaluation,
                   limit: int | None, timings: dict[str, float], run_id: str | None) -> dict:
    """What metadata.json says of a version (a file format: keys stay as they are)."""
    return {
        "model_version": trained.version,
        "model_path": str(trained.model_path),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_fingerprint": dataset.fingerprint,
        "data_verified": dataset.verified,
        "data_source": dataset.source,
        "test_set": dataset.test_set,
        "preset": trained.preset,  # None: a sweep trial's network
        "architecture": trained.architecture,
        "settings": {**trained.settings, "limit": limit},
        "seed": trained.settings["seed"],
        "train_images": trained.train_images,
        "params": trained.params,
        "libraries": library_versions(),
        "timings_seconds": {**timings, "fit": trained.fit_seconds},
        "metrics": {"test_accuracy": evaluated.accuracy, "test_loss": evaluated.loss,
                    "test_images": evaluated.images},
        "run_id": run_id,
    }


def record_model(paths: Paths, metadata: dict) -> Path:
    """Write the version's metadata.json and make it the latest model."""
    folder = Path(metadata["model_path"]).parent
    write_json(folder / "metadata.json", metadata)
    write_json(paths.latest_model, {"model_version": metadata["model_version"],
                                    "model_path": metadata["model_path"]})
    return folder / "metadata.json"


def read_pointer(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resolve_model(paths: Paths, model: Path | str | None) -> Path:
    """A .keras file from a path, a model folder or a version; None: the champion, else latest."""
    if model is None:
        pointer = read_pointer(paths.champion) or read_pointer(paths.latest_model)
        if pointer is None:
            raise ModelNotFound(f"no trained model in {paths.models}: run `digitflow train` first, "
                                f"or pass --model PATH")
        model = pointer["model_path"]
    elif not Path(model).exists() and (paths.models / str(model)).is_dir():
        model = paths.models / str(model)  # a version, as `digitflow models` lists them
    model = Path(model)
    if model.is_dir():
        model = model / "model.keras"
    if not model.is_file():
        raise ModelNotFound(f"model file {model} does not exist")
    return model


def list_models(paths: Paths) -> list[dict]:
    """Every version with metadata, oldest first, with which one is champion."""
    champion = (read_pointer(paths.champion) or {}).get("model_version")
    rows = []
    for meta in sorted(paths.models.glob("*/metadata.json")):
        m = read_pointer(meta)
        if m is None:
            continue
        # Before sweeps recorded an architecture, their models said preset "dense".
        rows.append({"version": m["model_version"], "preset": m["preset"] or "sweep",
                     "architecture": m.get("architecture", m["preset"]),
                     "created_at": m["created_at"], "test_accuracy": m["metrics"]["test_accuracy"],
                     "train_images": m["train_images"], "epochs": m["settings"]["epochs"],
                     "champion": m["model_version"] == champion})
    return sorted(rows, key=lambda r: r["created_at"])


def promote(paths: Paths, version: str, reason: str) -> dict:
    """Make `version` the champion (atomically) and record why."""
    current = read_pointer(paths.champion)
    return set_champion(paths, version, reason, current["model_version"] if current else None)


def set_champion(paths: Paths, version: str, reason: str, previous: str | None) -> dict:
    """`previous` is what a rollback from this champion returns to."""
    metadata = read_pointer(paths.models / version / "metadata.json")
    if metadata is None or not Path(metadata["model_path"]).is_file():
        raise ModelNotFound(f"no model version {version!r} in {paths.models}; "
                            f"`digitflow models` lists them")
    record = {"model_version": version, "model_path": metadata["model_path"],
              "test_accuracy": metadata["metrics"]["test_accuracy"], "reason": reason,
              "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "previous": previous}
    history = paths.promotions.read_text() if paths.promotions.exists() else ""
    write_bytes(paths.promotions, (history + json.dumps(record) + "\n").encode())
    write_json(paths.champion, record)
    return record


def rollback(paths: Paths) -> dict:
    """Make the champion before the current one champion again; rolling back again goes further
    back, as the promotion history says."""
    current = read_pointer(paths.champion)
    if current is None or current["previous"] is None:
        raise ModelNotFound("there is no earlier champion to roll back to")
    target = current["previous"]
    history = [json.loads(line) for line in paths.promotions.read_text().splitlines()]
    # What came before `target`: the champion its own latest promotion replaced.
    before = next((r["previous"] for r in reversed(history) if r["model_version"] == target), None)
    return set_champion(paths, target, f"rollback from {current['model_version']}", before)


def decide(challenger: Evaluation, champion: Evaluation | None, margin: float) -> GateDecision:
    """Promote the challenger unless it is worse than the champion by more than `margin`.

    Both are measured on the same test set (this run's: the champion is evaluated again), and
    only MNIST's own frozen one, by fingerprint: a run on any other test set is never promoted
    automatically.
    """
    new = challenger.accuracy
    numbers = {"challenger": challenger.version, "challenger_accuracy": new,
               "challenger_loss": challenger.loss, "test_set": challenger.test_set}
    if challenger.test_set != FROZEN_TEST_SET:
        return GateDecision(**numbers, promote=False,
                            reason=f"evaluated on test set {challenger.test_set}, not the frozen "
                                   f"MNIST test set {FROZEN_TEST_SET}, so there is no fair "
                                   f"comparison; `digitflow models promote {challenger.version}` "
                                   f"if you mean it")
    if champion is None:
        return GateDecision(**numbers, promote=True, reason="no champion yet")
    old = champion.accuracy
    numbers.update(champion=champion.version, champion_accuracy=old, champion_loss=champion.loss)
    if champion.version == challenger.version:
        verdict, reason = False, "the challenger is already the champion"
    elif new >= old - margin:
        verdict, reason = True, f"accuracy {new:.4f} is not worse than {old:.4f} (margin {margin})"
    else:
        verdict, reason = False, f"accuracy {new:.4f} is worse than {old:.4f} (margin {margin})"
    return GateDecision(**numbers, promote=verdict, reason=reason)


@task(name="record-model", cache_policy=NO_CACHE)
def record_model_task(paths: Paths, metadata: dict) -> str:
    return str(record_model(paths, metadata))


@task(name="gate-model", cache_policy=NO_CACHE)
def gate_model(paths: Paths, challenger: Evaluation, champion: Evaluation | None,
               margin: float) -> GateDecision:
    decision = decide(challenger, champion, margin)
    if decision.promote:
        promote(paths, challenger.version, f"gate: {decision.reason}")
    get_run_logger().info("gate: %s %s (%s)", "promoted" if decision.promote else "kept champion",
                          challenger.version if decision.promote else decision.champion,
                          decision.reason)
    return decision
