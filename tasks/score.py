"""Batch scoring: find the image files under a folder, score them in chunks, write one table.

The prediction table (one row per image file) is a contract; `SCHEMA` is its definition.
"""

import functools
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.images import EXTENSIONS, ImageError, preprocess
from tasks.mnist import NUM_CLASSES
from tasks.store import atomic_path
from tasks.train import model_version

PROB_COLUMNS = [f"prob_{d}" for d in range(NUM_CLASSES)]
SCHEMA = pa.schema(
    [("path", pa.string()), ("sha256", pa.string()), ("label", pa.int64()),
     ("confidence", pa.float32()), *[(c, pa.float32()) for c in PROB_COLUMNS],
     ("status", pa.string()), ("error", pa.string()), ("model_version", pa.string()),
     ("scored_at", pa.timestamp("us", tz="UTC"))]
)
MAX_FILE_BYTES = 256 * 1024 * 1024  # a digit image is kilobytes; anything this big is refused
OUTSIDE_LINK = "symbolic link leads outside the folder; not followed"


@dataclass(frozen=True)
class ImageFile:
    path: str  # relative to the folder, "/"-separated, printable (as in the table)
    location: str  # what open() needs, undecodable bytes and all
    problem: str | None = None  # known before reading: the file is an error row


def display_name(relative: str) -> str:
    # File names that are not UTF-8 reach Python as surrogate escapes, which Parquet cannot store.
    return os.fsencode(relative).decode("utf-8", "backslashreplace").replace(os.sep, "/")


def list_images(folder: Path) -> list[ImageFile]:
    """Every image file under `folder`, recursively, by extension in any case; sorted by path."""
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of images")
    root = folder.resolve()
    found = []

    def add(location: str, problem: str | None) -> None:
        found.append(ImageFile(display_name(os.path.relpath(location, folder)), location, problem))

    for dirpath, dirnames, filenames in os.walk(folder):
        for name in list(dirnames):
            location = os.path.join(dirpath, name)
            if os.path.islink(location):
                dirnames.remove(name)  # never descended: no loops, no escapes
                if not Path(location).resolve().is_relative_to(root):
                    add(location, OUTSIDE_LINK)
        for name in filenames:
            location = os.path.join(dirpath, name)
            if os.path.splitext(name)[1].lower() not in EXTENSIONS:
                continue
            outside = os.path.islink(location) and not Path(location).resolve().is_relative_to(root)
            add(location, OUTSIDE_LINK if outside else None)
    return sorted(found, key=lambda f: f.path)


@functools.lru_cache(maxsize=2)
def _load(path: str, mtime_ns: int) -> tuple[keras.Model, str]:
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return model, model_version(model)


def load_scoring_model(path: Path) -> tuple[keras.Model, str]:
    """The model and its version, loaded once per process (reloaded if the file changes)."""
    return _load(str(path), path.stat().st_mtime_ns)


def read_image(file: ImageFile) -> tuple[str | None, np.ndarray | None, str | None]:
    """(sha256, model input, error) for one file; never raises for a bad file."""
    if file.problem:
        return None, None, file.problem
    try:
        with open(file.location, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, None, f"cannot read file: {exc.strerror or exc}"
    sha = hashlib.sha256(data).hexdigest()
    if len(data) > MAX_FILE_BYTES:
        return sha, None, f"file larger than {MAX_FILE_BYTES // 2**20} MiB; not an image to score"
    try:
        return sha, preprocess(data), None
    except ImageError as exc:
        return sha, None, str(exc)


def score_files(files: list[ImageFile], model_path: Path) -> pd.DataFrame:
    """Prediction rows for `files`, in order: one batched predict for all readable images."""
    model, version = load_scoring_model(model_path)
    read = [read_image(f) for f in files]
    inputs = [x for _, x, _ in read if x is not None]
    probs = model.predict(np.stack(inputs), batch_size=1024, verbose=0) if inputs else \
        np.empty((0, NUM_CLASSES), dtype=np.float32)
    table = np.full((len(files), NUM_CLASSES), np.nan, dtype=np.float32)
    ok = np.array([x is not None for _, x, _ in read], dtype=bool)
    table[ok] = probs
    frame = pd.DataFrame(table, columns=PROB_COLUMNS)
    frame.insert(0, "path", [f.path for f in files])
    frame.insert(1, "sha256", [sha for sha, _, _ in read])
    frame.insert(2, "label", pd.array(np.nan_to_num(table).argmax(axis=1), dtype="Int64"))
    frame.loc[~ok, "label"] = pd.NA
    frame.insert(3, "confidence", table.max(axis=1))  # NaN (stored as null) for error rows
    frame["status"] = np.where(ok, "ok", "error")
    frame["error"] = [err for _, _, err in read]
    frame["model_version"] = version
    frame["scored_at"] = pd.Timestamp(datetime.now(timezone.utc))
    return frame


def write_table(frames: list[pd.DataFrame], output: Path) -> pd.DataFrame:
    """One table sorted by path, written atomically: the output is whole or absent."""
    frame = pd.concat(frames, ignore_index=True) if frames else \
        SCHEMA.empty_table().to_pandas()
    frame = frame.sort_values("path", ignore_index=True)
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    with atomic_path(output, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return frame


def summarize(frame: pd.DataFrame, labels: Path | None) -> dict:
    ok = frame[frame["status"] == "ok"]
    reasons = Counter(str(e).split(":")[0] for e in frame.loc[frame["status"] == "error", "error"])
    summary = {
        "scored": int(len(ok)), "errors": int(len(frame) - len(ok)),
        "by_label": {int(k): int(v) for k, v in ok["label"].value_counts().sort_index().items()},
        "error_reasons": dict(reasons.most_common()),
        "mean_confidence": round(float(ok["confidence"].mean()), 4) if len(ok) else None,
    }
    if labels is not None:
        truth = pd.read_csv(labels, dtype={"path": str, "label": "Int64"})
        joined = ok.merge(truth, on="path", suffixes=("", "_true"))
        summary["labelled"] = int(len(joined))
        summary["accuracy"] = round(float((joined["label"] == joined["label_true"]).mean()), 4) \
            if len(joined) else None
    return summary


@task(name="list-images", cache_policy=NO_CACHE)
def find_images(folder: Path) -> list[ImageFile]:
    return list_images(folder)


@task(name="score-images", cache_policy=NO_CACHE, task_run_name="score-images-{first}")
def score_images(files: list[ImageFile], model_path: Path, first: int) -> pd.DataFrame:
    return score_files(files, model_path)


@task(name="write-predictions", cache_policy=NO_CACHE)
def write_predictions(frames: list[pd.DataFrame], output: Path, labels: Path | None) -> dict:
    return summarize(write_table(frames, output), labels)
