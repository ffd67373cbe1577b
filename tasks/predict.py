"""The tutorial's last step, for any files: predict a few images and show what the model saw."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.files import ImageFile, display_name, read_images
from tasks.images import decode
from tasks.ingest import ensure_mnist
from tasks.paths import Paths
from tasks.score import load_scoring_model, prediction_frame, top3


def predict_files(files: list[Path], model_path: Path) -> tuple[pd.DataFrame, list]:
    """Table rows for `files` (the same code as `digitflow score`) and the inputs the model saw."""
    entries = [ImageFile(display_name(str(f)), str(f)) for f in files]
    read = read_images(entries)
    return prediction_frame(entries, read, load_scoring_model(model_path)), [x for _, x, _ in read]


def predict_mnist_test(x_test: np.ndarray, index: int, model_path: Path) -> tuple[pd.DataFrame, list]:
    """X_test[index] from the verified test set, fed to the model as the tutorial does (÷255)."""
    x = x_test[index].astype(np.float32) / 255
    entry = ImageFile(f"mnist-test/{index}", "")
    read = [(hashlib.sha256(x_test[index].tobytes()).hexdigest(), x, None)]
    return prediction_frame([entry], read, load_scoring_model(model_path)), [x]


def predict_images(paths: Paths, files: list[Path], model_path: Path,
                   mnist_test: int | None) -> tuple[pd.DataFrame, list, list]:
    """(table rows, pictures as given, model inputs) for the files, then X_test[mnist_test]."""
    rows, inputs = predict_files(files, model_path)
    originals = [original_picture(str(f)) for f in files]
    if mnist_test is not None:
        # Progress goes to stderr: stdout holds only the predictions (one JSON object each).
        found = ensure_mnist(paths, log=lambda message: print(message, file=sys.stderr))
        with np.load(found.path, allow_pickle=False) as npz:
            x_test = npz["x_test"]
        if not 0 <= mnist_test < len(x_test):
            raise ValueError(f"--mnist-test {mnist_test}: the test set has images 0 to "
                             f"{len(x_test) - 1}")
        extra, seen = predict_mnist_test(x_test, mnist_test, model_path)
        rows = pd.concat([rows, extra], ignore_index=True) if files else extra
        inputs, originals = inputs + seen, originals + [x_test[mnist_test] / 255]
    return rows, originals, inputs


def row_json(row) -> str:
    """A row as JSON with the prediction table's fields; missing values as null."""
    values = row._asdict()
    values.pop("Index")
    plain = {k: None if pd.isna(v) else v.item() if isinstance(v, np.generic) else v
             for k, v in values.items()}
    return json.dumps(plain, default=lambda timestamp: timestamp.isoformat())


def describe(row) -> str:
    """One line for a person: the file, the digit, its confidence and the runners-up."""
    if row.status != "ok":
        return f"{row.path}: error: {row.error}"
    top = ", ".join(f"{d}: {p:.3f}" for d, p in top3(row))
    return f"{row.path}: {row.label} (confidence {row.confidence:.3f}; top 3 {top})"


def original_picture(location: str) -> np.ndarray | None:
    try:
        # As given, colours and transparency too (the model's input is shown beside it)
        return np.asarray(decode(Path(location).read_bytes()).convert("RGBA"))
    except (OSError, ValueError):
        return None
