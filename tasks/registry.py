"""Trained model versions under artifacts/models/<version>/, their metadata, and which is latest."""

import json
import platform
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.paths import Paths
from tasks.store import write_json

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


def model_metadata(dataset: dict, trained: dict, evaluated: dict, limit: int | None,
                   timings: dict[str, float], run_id: str | None) -> dict:
    return {
        "model_version": trained["version"],
        "model_path": trained["files"]["model"]["path"],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_fingerprint": dataset["fingerprint"],
        "data_verified": dataset["verified"],
        "data_source": dataset["source"],
        "preset": trained["fit_settings"]["preset"],
        "settings": {**trained["fit_settings"], "limit": limit},
        "seed": trained["fit_settings"]["seed"],
        "train_images": trained["train_images"],
        "params": trained["params"],
        "libraries": library_versions(),
        "timings_seconds": {**timings, "fit": trained["fit_seconds"]},
        "metrics": {k: evaluated[k] for k in ("test_accuracy", "test_loss", "test_images")},
        "run_id": run_id,
    }


def record_model(paths: Paths, metadata: dict) -> Path:
    """Write the version's metadata.json and make it the latest model."""
    folder = Path(metadata["model_path"]).parent
    write_json(folder / "metadata.json", metadata)
    write_json(paths.latest_model, {"model_version": metadata["model_version"],
                                    "model_path": metadata["model_path"]})
    return folder / "metadata.json"


def resolve_model(paths: Paths, model: Path | None) -> Path:
    """A .keras file from a path to one, a model folder, or (None) the latest trained model."""
    if model is None:
        try:
            model = Path(json.loads(paths.latest_model.read_text())["model_path"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelNotFound(f"no trained model in {paths.models}: run `digitflow train` first, "
                                f"or pass --model PATH") from exc
    model = Path(model)
    if model.is_dir():
        model = model / "model.keras"
    if not model.is_file():
        raise ModelNotFound(f"model file {model} does not exist")
    return model


@task(name="record-model", cache_policy=NO_CACHE)
def record_model_task(paths: Paths, metadata: dict) -> str:
    return str(record_model(paths, metadata))
