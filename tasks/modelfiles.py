"""A model version's files: its content hash, saving it whole, its summary, finding it.

Scoring, training and sweeps all name and save models through here. Nothing here imports Keras:
the functions take a model that is already built or loaded.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from tasks.paths import Paths
from tasks.store import atomic_path, read_json, write_bytes, write_parquet


class ModelNotFound(RuntimeError):
    pass


def model_version(model) -> str:
    """Content hash of the architecture and weights: the same model always gets the same name.

    Uses get_config(), not to_json(): the latter includes the compile settings, which a model
    loaded for scoring (compile=False) does not have. Names are left out: Keras numbers them by
    how many layers the process made before (`dense`, `dense_3`), which says nothing about the model.
    """
    digest = hashlib.sha256(json.dumps(without_names(model.get_config()), sort_keys=True).encode())
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:12]


def without_names(config):
    """The config without the model's and layers' names (a dtype policy's name stays)."""
    if isinstance(config, dict):
        named = "trainable" in config or "batch_shape" in config  # a layer's or the model's own
        return {k: without_names(v) for k, v in config.items() if not (named and k == "name")}
    if isinstance(config, list):
        return [without_names(v) for v in config]
    return config


def model_summary(model) -> str:
    """Keras's `model.summary()`: layers, output shapes, parameter counts."""
    lines = []
    model.summary(print_fn=lambda line, *_, **__: lines.append(line), line_length=80)
    return "\n".join(lines)


def save_model(model, history, folder: Path) -> dict[str, Path]:
    """The model, its history (a DataFrame) and summary in `folder`, each file renamed into place
    whole: a reader never sees half a model."""
    with atomic_path(folder / "model.keras", suffix=".keras") as tmp:
        model.save(tmp)
    write_parquet(history, folder / "history.parquet")
    write_bytes(folder / "summary.txt", model_summary(model).encode())
    return {"model": folder / "model.keras", "history": folder / "history.parquet",
            "summary": folder / "summary.txt"}


def resolve_model(paths: Paths, model: Path | str | None) -> Path:
    """A .keras file from a path, a model folder or a version; None: the champion, else latest."""
    if model is None:
        pointer = read_json(paths.champion) or read_json(paths.latest_model)
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
