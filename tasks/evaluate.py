"""Test-set metrics: accuracy and loss, per-class precision/recall/F1, the confusion matrix."""

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.mnist import NUM_CLASSES
from tasks.paths import Paths
from tasks.registry import read_pointer
from tasks.store import cached_step, code_version, content_key, write_json, write_parquet

CLASSES = list(range(NUM_CLASSES))


def cross_entropy(y: np.ndarray, prob: np.ndarray) -> float:
    # The same clipping Keras applies in sparse_categorical_crossentropy.
    picked = np.clip(prob[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def evaluation_tables(y: np.ndarray, prob: np.ndarray) -> dict:
    # Imported here: a cached run never evaluates, and scikit-learn takes 1.3 s to import.
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    pred = prob.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=CLASSES, zero_division=0)
    per_class = pd.DataFrame({"digit": CLASSES, "precision": precision, "recall": recall,
                              "f1": f1, "support": support})
    confusion = pd.DataFrame(confusion_matrix(y, pred, labels=CLASSES),
                             columns=[f"pred_{c}" for c in CLASSES])
    confusion.insert(0, "true", CLASSES)
    predictions = pd.DataFrame({"index": np.arange(len(y)), "true": y.astype(np.int64),
                                "pred": pred, "confidence": prob.max(axis=1)})
    metrics = {"test_accuracy": float(accuracy_score(y, pred)), "test_loss": cross_entropy(y, prob),
               "test_images": int(len(y))}
    return {"metrics": metrics, "per_class": per_class, "confusion": confusion,
            "predictions": predictions}


def per_class_rows(per_class: pd.DataFrame) -> list[dict]:
    # Plain Python values: JSON for the cache record, and table artifacts reject numpy scalars.
    return [{"digit": int(r.digit), "precision": round(float(r.precision), 4),
             "recall": round(float(r.recall), 4), "f1": round(float(r.f1), 4),
             "support": int(r.support)} for r in per_class.itertuples()]


def evaluated_model(paths: Paths, trained: dict, normalized: dict, refresh: bool) -> dict:
    key = content_key("evaluate", trained["version"], normalized["key"],
                      code_version(__name__))
    out = Path(trained["files"]["model"]["path"]).parent / "evaluation"

    def produce() -> dict:
        with np.load(normalized["files"]["arrays"]["path"], allow_pickle=False) as npz:
            x, y = npz["x_test"], npz["y_test"]
        import keras  # here: a cached run never loads TensorFlow

        model = keras.saving.load_model(trained["files"]["model"]["path"], compile=False)
        tables = evaluation_tables(y, model.predict(x, batch_size=1024, verbose=0))
        files = {"metrics": out / "metrics.json"}
        write_json(files["metrics"], tables["metrics"])
        for name in ("per_class", "confusion", "predictions"):
            files[name] = out / f"{name}.parquet"
            write_parquet(tables[name], files[name])
        # In the record too, so a cached run's report reads no Parquet (pyarrow: 0.45 s to import)
        return {"files": files, "key": key, **tables["metrics"],
                "per_class": per_class_rows(tables["per_class"])}

    return cached_step(paths.cache / f"evaluate-{key}.json", refresh, produce)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(paths: Paths, trained: dict, normalized: dict, refresh: bool) -> dict:
    record = evaluated_model(paths, trained, normalized, refresh)
    get_run_logger().info("test accuracy %.4f, loss %.4f%s", record["test_accuracy"],
                          record["test_loss"], " (cached)" if record["cached"] else "")
    return record


@task(name="evaluate-champion", cache_policy=NO_CACHE)
def evaluate_champion(paths: Paths, normalized: dict) -> dict | None:
    """The champion's accuracy on this run's test set, so the gate compares like with like."""
    pointer = read_pointer(paths.champion)
    if pointer is None:
        return None
    if not Path(pointer["model_path"]).is_file():
        get_run_logger().warning("champion %s has no model file at %s; treating as no champion",
                                 pointer["model_version"], pointer["model_path"])
        return None
    champion = {"version": pointer["model_version"], "files": {"model": {"path": pointer["model_path"]}}}
    record = evaluated_model(paths, champion, normalized, refresh=False)
    return {"version": pointer["model_version"], "test_accuracy": record["test_accuracy"],
            "test_loss": record["test_loss"]}
