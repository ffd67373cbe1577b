"""Fit a preset on the normalized training images and save it as a content-addressed version."""

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.modelfiles import model_version, save_model
from tasks.paths import Paths
from tasks.presets import PRESETS
from tasks.records import Normalized, TrainedModel, YourDigits
from tasks.settings import TrainSettings
from tasks.store import cached_step, code_version, content_key
from tasks.yours import mix_key, mix_record, training_mix


def train_preset(train: tuple, validation: tuple, fit_settings: dict, log: Callable[[str], None],
                 checkpoint: Path | None = None):
    """(model, history) for the preset and settings; deterministic for a given seed."""
    import keras  # here, not at the top: a fully cached run never loads TensorFlow

    from tasks.fit import fit
    from tasks.models import build_model

    preset = PRESETS[fit_settings["preset"]]
    keras.utils.set_random_seed(fit_settings["seed"])
    model = build_model(fit_settings["preset"])
    history = fit(model, *train, validation=validation, epochs=fit_settings["epochs"],
                  batch_size=fit_settings["batch_size"],
                  validation_split=fit_settings["validation_split"], seed=fit_settings["seed"],
                  patience=preset.patience, speedups=fit_settings["speedups"], xla=preset.xla,
                  log=log, checkpoint=checkpoint)
    return model, history


def trained_model(paths: Paths, normalized: Normalized, yours: YourDigits | None,
                  settings: TrainSettings, log: Callable[[str], None] = print) -> TrainedModel:
    """MNIST's training images plus your training pictures (if any span exists), fit."""
    fit_settings = settings.fit_settings()
    key = content_key("train", mix_key(normalized, yours), fit_settings,
                      code_version("tasks.models", "tasks.presets", "tasks.fit", "tasks.metrics",
                                   "tasks.modelfiles", "tasks.yours", __name__))

    def produce() -> tuple[dict[str, Path], dict]:
        with np.load(normalized.arrays, allow_pickle=False) as npz:
            mnist = npz["x_train"], npz["y_train"]
        train, validation, times = training_mix(mnist, yours, fit_settings["validation_split"],
                                                fit_settings["seed"])
        checkpoint = paths.cache / f"train-{key}.checkpoint.npz"
        if settings.no_cache:
            checkpoint.unlink(missing_ok=True)  # every step reruns, training from epoch 1 too
        started = time.perf_counter()
        if times:
            log(f"your {yours.train_images} training pictures, repeated {times}× (shifted copies) "
                f"beside MNIST's: {len(train[0])} rows to fit, {len(validation[0])} to validate")
        model, history = train_preset(train, validation, fit_settings, log, checkpoint)
        seconds = time.perf_counter() - started
        version = model_version(model)
        files = save_model(model, history, paths.models / version)
        checkpoint.unlink(missing_ok=True)
        return files, {
            "key": key, "version": version, "preset": settings.preset,
            "architecture": settings.preset, "fit_settings": fit_settings,
            **mix_record(len(mnist[0]), yours, times), "params": int(model.count_params()),
            "epochs_run": int(len(history)), "fit_seconds": round(seconds, 2),
        }

    return TrainedModel.from_step(cached_step(paths.cache / f"train-{key}.json", settings.no_cache, produce))


@task(name="train-model", cache_policy=NO_CACHE)
def train_model(paths: Paths, normalized: Normalized, yours: YourDigits | None,
                settings: TrainSettings) -> TrainedModel:
    logger = get_run_logger()
    trained = trained_model(paths, normalized, yours, settings, log=logger.info)
    logger.info("model %s at %s%s", trained.version, trained.folder,
                " (cached)" if trained.step.cached else "")
    return trained
