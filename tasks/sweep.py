"""Hyper-parameter trials of the tutorial's dense network, compared on the validation split only.

Each trial fits what `digitflow train` fits: MNIST's training images and, if there are spans,
your training pictures beside them (tasks.yours.training_mix); validation is MNIST's split.

Each trial is one grid point trained in its own task, so a Dask cluster runs them side by side.
Trials are cached steps like training: a sweep killed half-way reruns only the unfinished ones.
The test set is touched once, by the flow, for the best trial.
"""

import itertools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.modelfiles import model_version, save_model
from tasks.paths import Paths
from tasks.records import Normalized, TrainedModel, Trial, YourDigits
from tasks.settings import parse_hidden
from tasks.store import cached_step, code_version, content_key, write_bytes, write_parquet
from tasks.yours import mix_key, mix_record, training_mix

VALIDATION_SPLIT = 0.2  # the tutorial's


def trial_grid(hidden: list[str], batch_sizes: list[int], learning_rates: list[float],
               epochs: list[int]) -> list[dict]:
    """Every combination, numbered in a stable order."""
    return [{"trial": i, "hidden": h, "batch_size": b, "learning_rate": lr, "epochs": e}
            for i, (h, b, lr, e) in enumerate(itertools.product(hidden, batch_sizes,
                                                                 learning_rates, epochs))]


def fit_trial(x: np.ndarray, y: np.ndarray, trial: dict, seed: int, log: Callable[[str], None],
              validation: tuple[np.ndarray, np.ndarray] | None = None):
    """(model, history) of one trial; deterministic for a given seed. Without `validation` the
    last rows of x validate, as Keras's validation_split does."""
    import keras  # here: importing this module (the flow does) must not load TensorFlow

    from tasks.fit import fit
    from tasks.models import build_dense

    keras.utils.set_random_seed(seed)
    model = build_dense(parse_hidden(trial["hidden"]), trial["learning_rate"], seed)
    history = fit(model, x, y, epochs=trial["epochs"], batch_size=trial["batch_size"],
                  validation_split=VALIDATION_SPLIT, seed=seed, xla=True, log=log,
                  validation=validation)
    return model, history


def trained_trial(paths: Paths, normalized: Normalized, yours: YourDigits | None, trial: dict,
                  seed: int, refresh: bool, log: Callable[[str], None] = print) -> Trial:
    settings = {k: v for k, v in trial.items() if k != "trial"}
    key = content_key("trial", mix_key(normalized, yours), settings, seed,
                      code_version("tasks.models", "tasks.fit", "tasks.modelfiles", "tasks.yours",
                                   __name__))

    def produce() -> tuple[dict[str, Path], dict]:
        with np.load(normalized.arrays, allow_pickle=False) as npz:
            mnist = npz["x_train"], npz["y_train"]
        train, validation, times = training_mix(mnist, yours, VALIDATION_SPLIT, seed)
        started = time.perf_counter()
        model, history = fit_trial(*train, trial, seed, log, validation=validation)
        seconds = time.perf_counter() - started
        last = history.iloc[-1]
        return save_model(model, history, paths.sweeps / "trials" / key), {
            "key": key, "version": model_version(model), "preset": None,
            "architecture": f"dense {trial['hidden']}", **mix_record(len(mnist[0]), yours, times),
            "params": int(model.count_params()), "epochs_run": int(len(history)),
            "fit_seconds": round(seconds, 2),
            "fit_settings": {**settings, "validation_split": VALIDATION_SPLIT, "seed": seed,
                             "speedups": True},
            "val_accuracy": float(last["val_accuracy"]), "val_loss": float(last["val_loss"]),
            "train_accuracy": float(last["accuracy"]),
            "process": f"{socket.gethostname()}:{os.getpid()}",  # where it ran: which Dask worker
        }

    step = cached_step(paths.cache / f"trial-{key}.json", refresh, produce)
    return Trial(number=trial["trial"], trained=TrainedModel.from_step(step),
                 val_accuracy=step.info["val_accuracy"], val_loss=step.info["val_loss"],
                 train_accuracy=step.info["train_accuracy"], process=step.info["process"])


def trials_table(trials: list[Trial]) -> pd.DataFrame:
    """One row per trial, best validation accuracy first."""
    rows = [{"trial": t.number, **{k: v for k, v in t.trained.settings.items()
                                   if k in ("hidden", "batch_size", "learning_rate", "epochs")},
             "val_accuracy": t.val_accuracy, "val_loss": t.val_loss,
             "train_accuracy": t.train_accuracy, "params": t.trained.params,
             "fit_seconds": t.trained.fit_seconds, "cached": t.trained.step.cached,
             "process": t.process, "model_version": t.trained.version} for t in trials]
    return pd.DataFrame(rows).sort_values(["val_accuracy", "trial"], ascending=[False, True],
                                          ignore_index=True)


def registered_trial(paths: Paths, trial: Trial) -> TrainedModel:
    """The trial's model copied into models/<version>, so it is a version like any trained one."""
    folder = paths.models / trial.trained.version

    def produce() -> tuple[dict[str, Path], dict]:
        files = {}
        for name, source in trial.trained.step.paths().items():
            files[name] = folder / source.name
            write_bytes(files[name], source.read_bytes())
        return files, trial.trained.step.info

    return TrainedModel.from_step(cached_step(paths.cache / f"register-{trial.trained.version}.json",
                                      False, produce))


@task(name="train-trial", cache_policy=NO_CACHE, task_run_name="train-trial-{trial[trial]}")
def train_trial(paths: Paths, normalized: Normalized, yours: YourDigits | None, trial: dict,
                seed: int, refresh: bool) -> Trial:
    logger = get_run_logger()
    done = trained_trial(paths, normalized, yours, trial, seed, refresh, log=logger.info)
    logger.info("trial %d %s: val accuracy %.4f%s", done.number, trial, done.val_accuracy,
                " (cached)" if done.trained.step.cached else "")
    return done


@task(name="record-trials", cache_policy=NO_CACHE)
def record_trials(paths: Paths, trials: list[Trial], sweep_id: str) -> dict:
    table = trials_table(trials)
    path = paths.sweeps / f"sweep-{sweep_id}.parquet"
    write_parquet(table, path)
    return {"path": str(path), "table": table.to_dict(orient="records")}


def best_trial(trials: list[Trial]) -> Trial:
    return max(trials, key=lambda t: (t.val_accuracy, -t.number))


@task(name="register-best", cache_policy=NO_CACHE)
def register_best(paths: Paths, best: Trial) -> TrainedModel:
    get_run_logger().info("best: trial %d, val accuracy %.4f", best.number, best.val_accuracy)
    return registered_trial(paths, best)
