"""Metrics of predicted probabilities against true labels: loss, accuracy, per-class tables."""

from typing import TYPE_CHECKING

import numpy as np

from tasks.mnist import NUM_CLASSES

if TYPE_CHECKING:
    import pandas as pd

CLASSES = list(range(NUM_CLASSES))


def cross_entropy(y: np.ndarray, prob: np.ndarray) -> float:
    # The same clipping Keras applies in sparse_categorical_crossentropy.
    picked = np.clip(prob[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def evaluation_tables(y: np.ndarray, prob: np.ndarray) -> dict:
    """metrics (accuracy, loss, images) and the per-class, confusion and prediction tables."""
    # Imported here: a cached run never evaluates, and scikit-learn takes 1.3 s to import. Pandas
    # too: scoring reads calibration errors without it (tasks.calibrate, tasks.inference).
    import pandas as pd
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


def per_class_rows(per_class: "pd.DataFrame") -> list[dict]:
    # Plain Python values: JSON for the cache record, and table artifacts reject numpy scalars.
    return [{"digit": int(r.digit), "precision": round(float(r.precision), 4),
             "recall": round(float(r.recall), 4), "f1": round(float(r.f1), 4),
             "support": int(r.support)} for r in per_class.itertuples()]


def _confidence_bins(prob: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """(count, summed confidence, correct count) per equal-width confidence bin.

    Bin m holds confidences in ((m-1)/bins, m/bins], as in Guo et al. 2017; a confidence is at
    least 1/classes, so nothing falls at 0."""
    if len(y) == 0:
        raise ValueError("no predictions to bin")
    confidence = prob.max(axis=1).astype(np.float64)
    correct = (prob.argmax(axis=1) == y).astype(np.float64)
    index = np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], confidence, side="left")
    return (np.bincount(index, minlength=bins), np.bincount(index, confidence, minlength=bins),
            np.bincount(index, correct, minlength=bins))


def expected_calibration_error(prob: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE: |accuracy − mean confidence| per confidence bin, weighted by the bin's
    share of the predictions."""
    count, confidence, correct = _confidence_bins(prob, y, bins)
    return float(np.abs(correct - confidence).sum() / len(y))


def reliability_bins(prob: np.ndarray, y: np.ndarray, bins: int = 15) -> list[dict]:
    """Per confidence bin: lower, upper, mean confidence, accuracy (None when empty), count.
    Plain Python values: they go into metadata.json and the reliability diagram."""
    count, confidence, correct = _confidence_bins(prob, y, bins)
    edges = np.linspace(0, 1, bins + 1)
    return [{"lower": float(edges[m]), "upper": float(edges[m + 1]),
             "confidence": float(confidence[m] / count[m]) if count[m] else None,
             "accuracy": float(correct[m] / count[m]) if count[m] else None,
             "count": int(count[m])} for m in range(bins)]
