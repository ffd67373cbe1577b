"""Fit a preset on the normalized training images and save it as a content-addressed version."""

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.paths import Paths
from tasks.presets import PRESETS
from tasks.settings import TrainSettings
from tasks.store import (
    atomic_path, cached_step, code_version, content_key, write_bytes, write_parquet)


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


def train_preset(x: np.ndarray, y: np.ndarray, fit_settings: dict, log: Callable[[str], None],
                 checkpoint: Path | None = None):
    """(model, history) for the preset and settings; deterministic for a given seed."""
    import keras  # here, not at the top: a fully cached run never loads TensorFlow

    from tasks.fit import fit
    from tasks.models import build_model

    preset = PRESETS[fit_settings["preset"]]
    keras.utils.set_random_seed(fit_settings["seed"])
    model = build_model(fit_settings["preset"])
    history = fit(model, x, y, epochs=fit_settings["epochs"], batch_size=fit_settings["batch_size"],
                  validation_split=fit_settings["validation_split"], seed=fit_settings["seed"],
                  patience=preset.patience, speedups=fit_settings["speedups"], xla=preset.xla,
                  log=log, checkpoint=checkpoint)
    return model, history


def save_model(model, history: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """The model, its history and summary in `folder`, each file renamed into place whole:
    a reader never sees half a model."""
    with atomic_path(folder / "model.keras", suffix=".keras") as tmp:
        model.save(tmp)
    write_parquet(history, folder / "history.parquet")
    write_bytes(folder / "summary.txt", model_summary(model).encode())
    return {"model": folder / "model.keras", "history": folder / "history.parquet",
            "summary": folder / "summary.txt"}


def trained_model(paths: Paths, normalized: dict, settings: TrainSettings,
                  log: Callable[[str], None] = print) -> dict:
    fit_settings = settings.fit_settings()
    key = content_key("train", normalized["key"], fit_settings,
                      code_version("tasks.models", "tasks.presets", "tasks.fit", "tasks.evaluate",
                                   __name__))

    def produce() -> dict:
        with np.load(normalized["files"]["arrays"]["path"], allow_pickle=False) as npz:
            x, y = npz["x_train"], npz["y_train"]
        checkpoint = paths.cache / f"train-{key}.checkpoint.npz"
        if settings.no_cache:
            checkpoint.unlink(missing_ok=True)  # every step reruns, training from epoch 1 too
        started = time.perf_counter()
        model, history = train_preset(x, y, fit_settings, log, checkpoint)
        seconds = time.perf_counter() - started
        version = model_version(model)
        files = save_model(model, history, paths.models / version)
        checkpoint.unlink(missing_ok=True)
        return {
            "files": files,
            "key": key, "version": version, "fit_settings": fit_settings,
            "train_images": int(len(x)), "params": int(model.count_params()),
            "epochs_run": int(len(history)), "fit_seconds": round(seconds, 2),
        }

    return cached_step(paths.cache / f"train-{key}.json", settings.no_cache, produce)


@task(name="train-model", cache_policy=NO_CACHE)
def train_model(paths: Paths, normalized: dict, settings: TrainSettings) -> dict:
    logger = get_run_logger()
    record = trained_model(paths, normalized, settings, log=logger.info)
    logger.info("model %s at %s%s", record["version"], Path(record["files"]["model"]["path"]).parent,
                " (cached)" if record["cached"] else "")
    return record
