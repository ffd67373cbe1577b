"""The tutorial's last step, for any files: predict a few images and show what the model saw.

Light on purpose: numpy, Pillow, scipy.ndimage and onnxruntime, no TensorFlow, Prefect or pandas,
so that `digitflow predict one.png` answers in well under a second. The rows have the prediction
table's fields (tasks.score.SCHEMA), from the same preparation and the same model.
"""

import hashlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tasks.files import ImageFile, display_name, read_images
from tasks.images import decode
from tasks.inference import PROB_COLUMNS, ScoringModel, load_scoring_model, top3
from tasks.paths import Paths


def prediction_rows(files: list[ImageFile], read: list[tuple], scoring: ScoringModel) -> list[dict]:
    """One row per file, with the prediction table's fields in its order; None where it has null."""
    said = scoring.predict(read)
    scored_at = datetime.now(timezone.utc)
    rows = []
    for i, (file, (sha, _, error)) in enumerate(zip(files, read)):
        ok = bool(said.ok[i])
        rows.append({
            "path": file.path, "sha256": sha, "label": int(said.label[i]) if ok else None,
            "confidence": float(said.confidence[i]) if ok else None,
            **{c: float(p) if ok else None for c, p in zip(PROB_COLUMNS, said.probs[i])},
            "review": bool(said.review[i]) if ok else None, "status": "ok" if ok else "error",
            "error": error, "model_version": scoring.version, "scored_at": scored_at})
    return rows


def predict_files(files: list[Path], model_path: Path) -> tuple[list[dict], list]:
    """Rows for `files` (prepared as `digitflow score` prepares them) and the inputs the model saw."""
    entries = [ImageFile(display_name(str(f)), str(f)) for f in files]
    read = read_images(entries)
    return prediction_rows(entries, read, load_scoring_model(model_path)), [x for _, x, _ in read]


def predict_mnist_test(x_test: np.ndarray, index: int, model_path: Path) -> tuple[list[dict], list]:
    """X_test[index] from the verified test set, fed to the model as the tutorial does (÷255)."""
    x = x_test[index].astype(np.float32) / 255
    entry = ImageFile(f"mnist-test/{index}", "")
    read = [(hashlib.sha256(x_test[index].tobytes()).hexdigest(), x, None)]
    return prediction_rows([entry], read, load_scoring_model(model_path)), [x]


def predict_images(paths: Paths, files: list[Path], model_path: Path,
                   mnist_test: int | None) -> tuple[list[dict], list, list]:
    """(rows, pictures as given, model inputs) for the files, then X_test[mnist_test]."""
    rows, inputs = predict_files(files, model_path)
    originals = [original_picture(str(f)) for f in files]
    if mnist_test is not None:
        from tasks.ingest import ensure_mnist  # only for the tutorial's example

        # Progress goes to stderr: stdout holds only the predictions (one JSON object each).
        found = ensure_mnist(paths, log=lambda message: print(message, file=sys.stderr))
        with np.load(found.path, allow_pickle=False) as npz:
            x_test = npz["x_test"]
        if not 0 <= mnist_test < len(x_test):
            raise ValueError(f"--mnist-test {mnist_test}: the test set has images 0 to "
                             f"{len(x_test) - 1}")
        extra, seen = predict_mnist_test(x_test, mnist_test, model_path)
        rows, inputs, originals = rows + extra, inputs + seen, originals + [x_test[mnist_test] / 255]
    return rows, originals, inputs


def row_json(row: dict) -> str:
    return json.dumps(row, default=lambda timestamp: timestamp.isoformat())


def describe(row: dict) -> str:
    """One line for a person: the file, the digit, its confidence and the runners-up."""
    if row["status"] != "ok":
        return f"{row['path']}: error: {row['error']}"
    top = ", ".join(f"{d}: {p:.3f}" for d, p in top3([row[c] for c in PROB_COLUMNS]))
    return f"{row['path']}: {row['label']} (confidence {row['confidence']:.3f}; top 3 {top})"


def original_picture(location: str) -> np.ndarray | None:
    try:
        # As given, colours and transparency too (the model's input is shown beside it)
        return np.asarray(decode(Path(location).read_bytes()).convert("RGBA"))
    except (OSError, ValueError):
        return None
