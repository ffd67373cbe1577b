"""Test-set metrics of a model version: accuracy and loss, per-class table, confusion matrix."""

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.calibrate import Calibration, calibration_record
from tasks.drift import make_reference
from tasks.metrics import evaluation_tables, per_class_rows, reliability_bins
from tasks.paths import Paths
from tasks.records import (
    Evaluation, EvaluationSet, MnistCopy, Normalized, StepRecord, TrainedModel, YourDigits)
from tasks.store import (
    cached_step, code_version, content_key, read_json, write_bytes, write_json, write_parquet)
from tasks.yours import split_validation


def test_sets(dataset: MnistCopy, normalized: Normalized,
              yours: YourDigits | None) -> dict[str, EvaluationSet]:
    """MNIST's test set, and yours when your spans put any picture in it."""
    sets = {"mnist": EvaluationSet(name="mnist", fingerprint=dataset.test_set, key=normalized.key,
                                   x=normalized.arrays, y=normalized.arrays)}
    if yours is not None and yours.test_images:
        sets["yours"] = yours.test_set
    return sets


def evaluated_model(paths: Paths, version: str, model_path: Path, test: EvaluationSet,
                    refresh: bool) -> Evaluation:
    """The model's metrics on a test set, written beside the model."""
    key = content_key("evaluate", version, test.key, code_version(__name__, "tasks.metrics"))
    out = model_path.parent / ("evaluation" if test.name == "mnist" else f"evaluation-{test.name}")

    def produce() -> tuple[dict[str, Path], dict]:
        x, y = test.load()
        import keras  # here: a cached run never loads TensorFlow

        model = keras.saving.load_model(model_path, compile=False)
        tables = evaluation_tables(y, model.predict(x, batch_size=1024, verbose=0))
        files = {"metrics": out / "metrics.json"}
        write_json(files["metrics"], tables["metrics"])
        for name in ("per_class", "confusion", "predictions"):
            files[name] = out / f"{name}.parquet"
            write_parquet(tables[name], files[name])
        # In the record too, so a cached run's report reads no Parquet (pyarrow: 0.45 s to import)
        return files, {"key": key, **tables["metrics"],
                       "per_class": per_class_rows(tables["per_class"]),
                       "confusion": tables["confusion"].drop(columns="true").to_numpy().tolist()}

    step = cached_step(paths.cache / f"evaluate-{key}.json", refresh, produce)
    return Evaluation(key=key, version=version, test_set=test.fingerprint,
                      accuracy=step.info["test_accuracy"], loss=step.info["test_loss"],
                      images=step.info["test_images"], per_class=step.info["per_class"], step=step,
                      name=test.name, confusion=step.info["confusion"])


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(paths: Paths, trained: TrainedModel, tests: dict[str, EvaluationSet],
                   refresh: bool) -> dict[str, Evaluation]:
    """The model on every test set: MNIST's, and yours if there is one."""
    evaluations = {name: evaluated_model(paths, trained.version, trained.model_path, test, refresh)
                   for name, test in tests.items()}
    for name, e in evaluations.items():
        get_run_logger().info("%s test set (%d images): accuracy %.4f, loss %.4f%s", name, e.images,
                              e.accuracy, e.loss, " (cached)" if e.step.cached else "")
    return evaluations


@task(name="evaluate-champion", cache_policy=NO_CACHE)
def evaluate_champion(paths: Paths,
                      tests: dict[str, EvaluationSet]) -> dict[str, Evaluation] | None:
    """The champion on this run's test sets, so the gate compares like with like (and measures
    it again whenever your test set has grown)."""
    pointer = read_json(paths.champion)
    if pointer is None:
        return None
    if not Path(pointer["model_path"]).is_file():
        get_run_logger().warning("champion %s has no model file at %s; treating as no champion",
                                 pointer["model_version"], pointer["model_path"])
        return None
    return {name: evaluated_model(paths, pointer["model_version"], Path(pointer["model_path"]),
                                  test, refresh=False) for name, test in tests.items()}


def calibrated_model(paths: Paths, trained: TrainedModel, normalized: Normalized,
                     tests: dict[str, EvaluationSet], refresh: bool) -> StepRecord:
    """The model's temperature and review threshold, fitted on MNIST's validation split (the
    tutorial's last 20 % of the training images, which the model never fit), with calibration
    error before and after on every test set and a reliability diagram, beside the model."""
    key = content_key("calibrate", trained.version, normalized.key,
                      sorted(t.key for t in tests.values()),
                      code_version(__name__, "tasks.calibrate", "tasks.metrics", "tasks.plots",
                                   "tasks.drift"))
    out = trained.folder / "calibration"

    def produce() -> tuple[dict[str, Path], dict]:
        import keras  # here: a cached run never loads TensorFlow

        from tasks.plots import png_bytes, reliability_figure

        with np.load(normalized.arrays, allow_pickle=False) as npz:
            _, (x_val, y_val) = split_validation(npz["x_train"], npz["y_train"],
                                                 trained.settings["validation_split"])
        model = keras.saving.load_model(trained.model_path, compile=False)

        def predict(x: np.ndarray) -> np.ndarray:
            return model.predict(x, batch_size=1024, verbose=0)

        val_prob = predict(x_val)
        arrays = {name: test.load() for name, test in tests.items()}
        labelled = {name: (predict(x), y) for name, (x, y) in arrays.items()}
        record = calibration_record(val_prob, y_val, labelled)
        calibration = Calibration.from_record(record)
        # What scoring compares its runs with (tasks.drift): each test set as the model sees it
        references = {name: make_reference(calibration.probabilities(prob), arrays[name][0],
                                           calibration.threshold)
                      for name, (prob, _) in labelled.items()}
        diagram = reliability_figure({
            name: (reliability_bins(prob, y), reliability_bins(calibration.probabilities(prob), y))
            for name, (prob, y) in labelled.items()})
        files = {"calibration": out / "calibration.json", "reliability": out / "reliability.png",
                 "reference": out / "reference.json"}
        write_json(files["calibration"], record)
        write_json(files["reference"], references)
        write_bytes(files["reliability"], png_bytes(diagram))
        return files, {"key": key, "calibration": record}

    return cached_step(paths.cache / f"calibrate-{key}.json", refresh, produce)


@task(name="calibrate-model", cache_policy=NO_CACHE)
def calibrate_model(paths: Paths, trained: TrainedModel, normalized: Normalized,
                    tests: dict[str, EvaluationSet], refresh: bool) -> StepRecord:
    step = calibrated_model(paths, trained, normalized, tests, refresh)
    c = step.info["calibration"]
    get_run_logger().info(
        "temperature %.3f; review below confidence %.4f; MNIST test ECE %.4f → %.4f%s",
        c["temperature"], c["threshold"], c["tests"]["mnist"]["ece_before"],
        c["tests"]["mnist"]["ece_after"], " (cached)" if step.cached else "")
    return step
