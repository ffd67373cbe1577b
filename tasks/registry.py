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
from prefect.events import emit_event
from prefect.cache_policies import NO_CACHE

from tasks.inference import ensure_light
from tasks.mnist import FROZEN_TEST_SET
from tasks.modelfiles import ModelNotFound
from tasks.paths import Paths
from tasks.records import Evaluation, GateDecision, MnistCopy, TrainedModel
from tasks.store import read_json, write_bytes, write_json

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "scikit-learn", "prefect")


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = package_version(name)
        except Exception:  # not installed (tensorflow vs tensorflow-cpu)
            continue
    return found


def model_metadata(dataset: MnistCopy, trained: TrainedModel, evaluated: dict[str, Evaluation],
                   calibration: dict, limit: int | None, timings: dict[str, float],
                   run_id: str | None) -> dict:
    """What metadata.json says of a version (a file format: keys stay as they are)."""
    mnist, yours = evaluated["mnist"], evaluated.get("yours")
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
        "metrics": {"test_accuracy": mnist.accuracy, "test_loss": mnist.loss,
                    "test_images": mnist.images},
        # The temperature and review threshold scoring reads (tasks.calibrate), and their figures
        "calibration": calibration,
        "spans": list(trained.spans),  # your labelled spans it was trained on
        "your_test_set": yours.test_set if yours else None,
        "your_metrics": {"test_accuracy": yours.accuracy, "test_loss": yours.loss,
                         "test_images": yours.images} if yours else None,
        "run_id": run_id,
    }


def record_model(paths: Paths, metadata: dict) -> Path:
    """Make the version's light file (if it has none yet), write its metadata.json and make it the
    latest model: a version that is recorded can be scored without TensorFlow."""
    folder = Path(metadata["model_path"]).parent
    ensure_light(Path(metadata["model_path"]))
    write_json(folder / "metadata.json", metadata)
    write_json(paths.latest_model, {"model_version": metadata["model_version"],
                                    "model_path": metadata["model_path"]})
    return folder / "metadata.json"


def list_models(paths: Paths) -> list[dict]:
    """Every version with metadata, oldest first, with which one is champion."""
    champion = (read_json(paths.champion) or {}).get("model_version")
    rows = []
    for meta in sorted(paths.models.glob("*/metadata.json")):
        m = read_json(meta)
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
    current = read_json(paths.champion)
    return set_champion(paths, version, reason, current["model_version"] if current else None)


def set_champion(paths: Paths, version: str, reason: str, previous: str | None) -> dict:
    """`previous` is what a rollback from this champion returns to."""
    metadata = read_json(paths.models / version / "metadata.json")
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
    current = read_json(paths.champion)
    if current is None or current["previous"] is None:
        raise ModelNotFound("there is no earlier champion to roll back to")
    target = current["previous"]
    history = [json.loads(line) for line in paths.promotions.read_text().splitlines()]
    # What came before `target`: the champion its own latest promotion replaced.
    before = next((r["previous"] for r in reversed(history) if r["model_version"] == target), None)
    return set_champion(paths, target, f"rollback from {current['model_version']}", before)


# With your test set, a challenger may lose at most this much accuracy on MNIST's (0.3 points):
# learning your hand may cost a little of MNIST's, never much.
MNIST_TOLERANCE = 0.003


def decide(challenger: dict[str, Evaluation], champion: dict[str, Evaluation] | None,
           margin: float, mnist_tolerance: float = MNIST_TOLERANCE) -> GateDecision:
    """Promote the challenger unless the champion is better on the same test sets.

    Both are measured on this run's test sets (the champion is evaluated again). MNIST's must be
    its own frozen one, by fingerprint: a run on any other is never promoted automatically.
    Without your test set, the challenger may be worse on MNIST's by at most `margin`; with it,
    worse on yours by at most `margin` and on MNIST's by at most `mnist_tolerance`.
    """
    new, yours = challenger["mnist"], challenger.get("yours")
    numbers = {"challenger": new.version, "challenger_accuracy": new.accuracy,
               "challenger_loss": new.loss, "test_set": new.test_set,
               "your_test_set": yours.test_set if yours else None,
               "challenger_your_accuracy": yours.accuracy if yours else None}
    if new.test_set != FROZEN_TEST_SET:
        return GateDecision(**numbers, promote=False,
                            reason=f"evaluated on test set {new.test_set}, not the frozen "
                                   f"MNIST test set {FROZEN_TEST_SET}, so there is no fair "
                                   f"comparison; `digitflow models promote {new.version}` "
                                   f"if you mean it")
    if champion is None:
        return GateDecision(**numbers, promote=True, reason="no champion yet")
    old = champion["mnist"]
    numbers.update(champion=old.version, champion_accuracy=old.accuracy, champion_loss=old.loss,
                   champion_your_accuracy=champion["yours"].accuracy if yours else None)
    if old.version == new.version:
        return GateDecision(**numbers, promote=False,
                            reason="nothing new: the challenger is already the champion (the same "
                                   "data, spans, settings and code make the same model)")
    if yours is None:  # as before spans existed
        verdict = new.accuracy >= old.accuracy - margin
        return GateDecision(**numbers, promote=verdict,
                            reason=f"accuracy {new.accuracy:.4f} is {'not ' if verdict else ''}worse "
                                   f"than {old.accuracy:.4f} (margin {margin})")
    mnist_says = f"MNIST accuracy {new.accuracy:.4f} against {old.accuracy:.4f}"
    mine = champion["yours"]
    yours_ok = yours.accuracy >= mine.accuracy - margin
    mnist_ok = new.accuracy >= old.accuracy - mnist_tolerance
    yours_says = (f"on your test set {yours.accuracy:.4f} against {mine.accuracy:.4f} "
                  f"({'not ' if yours_ok else ''}worse, margin {margin})")
    mnist_says += f" ({'within' if mnist_ok else 'beyond'} the tolerance {mnist_tolerance})"
    # The set that refused it, when only one did; otherwise both had their say.
    decided_by = {(False, True): "your test set", (True, False): "MNIST's test set"}.get(
        (yours_ok, mnist_ok), "both test sets")
    return GateDecision(**numbers, promote=yours_ok and mnist_ok, decided_by=decided_by,
                        reason=f"{yours_says}; {mnist_says}")


@task(name="record-model", cache_policy=NO_CACHE)
def record_model_task(paths: Paths, metadata: dict) -> str:
    return str(record_model(paths, metadata))


@task(name="gate-model", cache_policy=NO_CACHE)
def gate_model(paths: Paths, challenger: dict[str, Evaluation],
               champion: dict[str, Evaluation] | None, margin: float,
               mnist_tolerance: float) -> GateDecision:
    decision = decide(challenger, champion, margin, mnist_tolerance)
    if decision.promote:
        promote(paths, decision.challenger, f"gate: {decision.reason}")
        # score-inbox's trigger: the inbox is rescored with the new champion at once
        emit_event(event="digitflow.model.promoted",
                   resource={"prefect.resource.id": f"digitflow.model.{decision.challenger}"},
                   payload={"model_version": decision.challenger, "previous": decision.champion,
                            "reason": decision.reason})
    get_run_logger().info("gate: %s %s (%s)", "promoted" if decision.promote else "kept champion",
                          decision.challenger if decision.promote else decision.champion,
                          decision.reason)
    return decision
