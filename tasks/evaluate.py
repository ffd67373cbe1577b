"""Test-set metrics of a model version: accuracy and loss, per-class table, confusion matrix."""

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.metrics import evaluation_tables, per_class_rows
from tasks.paths import Paths
from tasks.records import Evaluation, MnistCopy, Normalized, TrainedModel
from tasks.registry import read_pointer
from tasks.store import cached_step, code_version, content_key, write_json, write_parquet


def evaluated_model(paths: Paths, version: str, model_path: Path, normalized: Normalized,
                    test_set: str, refresh: bool) -> Evaluation:
    """The model's metrics on the normalized test arrays, written beside the model."""
    key = content_key("evaluate", version, normalized.key, code_version(__name__, "tasks.metrics"))
    out = model_path.parent / "evaluation"

    def produce() -> tuple[dict[str, Path], dict]:
        with np.load(normalized.arrays, allow_pickle=False) as npz:
            x, y = npz["x_test"], npz["y_test"]
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
                       "per_class": per_class_rows(tables["per_class"])}

    step = cached_step(paths.cache / f"evaluate-{key}.json", refresh, produce)
    return Evaluation(key=key, version=version, test_set=test_set,
                      accuracy=step.info["test_accuracy"], loss=step.info["test_loss"],
                      images=step.info["test_images"], per_class=step.info["per_class"], step=step)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(paths: Paths, trained: TrainedModel, normalized: Normalized,
                   dataset: MnistCopy, refresh: bool) -> Evaluation:
    evaluation = evaluated_model(paths, trained.version, trained.model_path, normalized,
                                 dataset.test_set, refresh)
    get_run_logger().info("test accuracy %.4f, loss %.4f%s", evaluation.accuracy, evaluation.loss,
                          " (cached)" if evaluation.step.cached else "")
    return evaluation


@task(name="evaluate-champion", cache_policy=NO_CACHE)
def evaluate_champion(paths: Paths, normalized: Normalized, dataset: MnistCopy) -> Evaluation | None:
    """The champion's metrics on this run's test set, so the gate compares like with like."""
    pointer = read_pointer(paths.champion)
    if pointer is None:
        return None
    if not Path(pointer["model_path"]).is_file():
        get_run_logger().warning("champion %s has no model file at %s; treating as no champion",
                                 pointer["model_version"], pointer["model_path"])
        return None
    return evaluated_model(paths, pointer["model_version"], Path(pointer["model_path"]), normalized,
                           dataset.test_set, refresh=False)
