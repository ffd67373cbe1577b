"""Batch scoring: find the image files under a folder, score them in chunks, write one table.

The prediction table (one row per image file) is a contract; `SCHEMA` is its definition.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from tasks.drift import INPUT_STATISTICS, drift_against, drift_event_payload, input_statistics
from tasks.files import Files, ImageFile, list_images, read_images
from tasks.inference import PROB_COLUMNS, ScoringModel, load_scoring_model, top3
from tasks.paths import Paths
from tasks.settings import ScoreSettings
from tasks.store import atomic_path, file_sha256, write_json

SCHEMA = pa.schema(
    [("path", pa.string()), ("sha256", pa.string()), ("label", pa.int64()),
     ("confidence", pa.float32()), *[(c, pa.float32()) for c in PROB_COLUMNS],
     ("review", pa.bool_()),
     ("status", pa.string()), ("error", pa.string()), ("model_version", pa.string()),
     ("scored_at", pa.timestamp("us", tz="UTC"))]
)


@dataclass(frozen=True)
class ScoredChunk:
    frame: pd.DataFrame  # the prediction rows
    inputs: dict[str, np.ndarray]  # statistics of the readable pictures' inputs (tasks.drift)


def score_chunk(files: list[ImageFile], model_path: Path) -> ScoredChunk:
    """Prediction rows for `files`, in order (one batched predict for all readable images), and
    what the drift check needs of their inputs."""
    read = read_images(files)
    inputs = [x for _, x, _ in read if x is not None]
    return ScoredChunk(prediction_frame(files, read, load_scoring_model(model_path)),
                       input_statistics(np.stack(inputs)) if inputs else {})


def score_files(files: list[ImageFile], model_path: Path) -> pd.DataFrame:
    return score_chunk(files, model_path).frame


def prediction_frame(files: list[ImageFile], read: list[tuple], scoring: ScoringModel) -> pd.DataFrame:
    """Table rows from (sha256, model input or None, error or None) per file."""
    said = scoring.predict(read)
    frame = pd.DataFrame(said.probs, columns=PROB_COLUMNS)
    frame.insert(0, "path", [f.path for f in files])
    frame.insert(1, "sha256", [sha for sha, _, _ in read])
    frame.insert(2, "label", pd.array(said.label, dtype="Int64"))
    frame.loc[~said.ok, "label"] = pd.NA
    frame.insert(3, "confidence", said.confidence)  # NaN (stored as null) for error rows
    frame["review"] = pd.array(said.review, dtype="boolean")
    frame.loc[~said.ok, "review"] = pd.NA
    frame["status"] = np.where(said.ok, "ok", "error")
    frame["error"] = [err for _, _, err in read]
    frame["model_version"] = scoring.version
    frame["scored_at"] = pd.Timestamp(datetime.now(timezone.utc))
    return frame


def combine(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The chunks' rows as one frame sorted by path."""
    frame = pd.concat(frames, ignore_index=True) if frames else SCHEMA.empty_table().to_pandas()
    return frame.sort_values("path", ignore_index=True)


def write_table(frames: list[pd.DataFrame], output: Path) -> pd.DataFrame:
    """One table sorted by path, written atomically: the output is whole or absent."""
    frame = combine(frames)
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    with atomic_path(output, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return frame


CONFIDENCE_BINS = [0.0, 0.5, 0.8, 0.95, 0.99, 1.0001]
REVIEW_SIZE = 16  # lowest-confidence predictions shown for a person to check


def summarize(frame: pd.DataFrame, labels: Path | None) -> dict:
    ok = frame[frame["status"] == "ok"]
    reasons = Counter(str(e).split(":")[0] for e in frame.loc[frame["status"] == "error", "error"])
    bins = pd.cut(ok["confidence"], CONFIDENCE_BINS, right=False).value_counts(sort=False)
    # The gallery: what the model flagged for review first, least confident first
    doubtful = ok.assign(flagged=ok["review"].fillna(False).astype(bool)).sort_values(
        ["flagged", "confidence"], ascending=[False, True]).head(REVIEW_SIZE)
    summary = {
        "scored": int(len(ok)), "errors": int(len(frame) - len(ok)),
        "flagged": int(ok["review"].fillna(False).sum()),
        "by_label": {int(k): int(v) for k, v in ok["label"].value_counts().sort_index().items()},
        "error_reasons": dict(reasons.most_common()),
        "mean_confidence": round(float(ok["confidence"].mean()), 4) if len(ok) else None,
        "confidence_bins": {f"{i.left:.2f}–{min(i.right, 1):.2f}": int(n) for i, n in bins.items()},
        "review": [{"path": r.path, "label": int(r.label), "confidence": round(float(r.confidence), 4),
                    "flagged": bool(r.flagged), "top3": top3([getattr(r, c) for c in PROB_COLUMNS])} for r in doubtful.itertuples()],
    }
    if labels is not None:
        truth = pd.read_csv(labels, dtype={"path": str, "label": "Int64"})
        joined = ok.merge(truth, on="path", suffixes=("", "_true"))
        summary["labelled"] = int(len(joined))
        summary["accuracy"] = round(float((joined["label"] == joined["label_true"]).mean()), 4) \
            if len(joined) else None
    return summary


def scored_before(dataset: Path, version: str) -> set[str]:
    """SHA-256 of every file the model `version` already scored into the dataset."""
    if not any(dataset.rglob("*.parquet")):
        return set()
    # Imported here: the flow selects, the workers that score never do (pyarrow.dataset: +53 MB)
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(dataset, format="parquet", partitioning="hive").to_table(
        columns=["sha256"], filter=pc.field("model_version") == version)
    return set(table.column("sha256").drop_null().to_pylist())


def unscored(files: list[ImageFile], dataset: Path, version: str) -> list[ImageFile]:
    """The files whose content the model `version` has not scored into the dataset yet."""
    done = scored_before(dataset, version)

    def is_new(file: ImageFile) -> bool:
        try:
            return file.problem is not None or file_sha256(Path(file.location)) not in done
        except OSError:
            return True  # unreadable: scoring it records the error

    return [f for f in files if is_new(f)]


@dataclass(frozen=True)
class TableSink:
    """Predictions as one Parquet table, written whole when every chunk is scored."""
    output: Path

    @property
    def location(self) -> Path:
        return self.output

    @property
    def folder(self) -> Path:
        return self.output.parent

    def select(self, files: list[ImageFile], version: str) -> list[ImageFile]:
        return files

    def part(self, run_id: str, first: int) -> None:
        return None

    def finish(self, frames: list[pd.DataFrame]) -> pd.DataFrame:
        return write_table(frames, self.output)

    def record_drift(self, report: dict, run_id: str) -> None:
        pass  # one table: the drift is in the run's summary and report


@dataclass(frozen=True)
class DatasetSink:
    """Predictions appended to a dataset partitioned by date, skipping what the model has scored.

    Each chunk is its own part file, written when it is scored: a run killed half-way keeps the
    chunks it finished, and the rerun scores only the rest.
    """
    dataset: Path

    @property
    def location(self) -> Path:
        return self.dataset

    @property
    def folder(self) -> Path:
        return self.dataset

    def select(self, files: list[ImageFile], version: str) -> list[ImageFile]:
        return unscored(files, self.dataset, version)

    def part(self, run_id: str, first: int) -> Path:
        """A new file in today's partition."""
        now = datetime.now(timezone.utc)
        return self.dataset / f"date={now:%Y-%m-%d}" / f"part-{now:%H%M%S}-{run_id[:8]}-{first:08d}.parquet"

    def finish(self, frames: list[pd.DataFrame]) -> pd.DataFrame:
        return combine(frames)  # the chunks wrote their parts already

    def record_drift(self, report: dict, run_id: str) -> None:
        """The run's drift report beside its parts ("_" keeps it out of the Parquet dataset)."""
        for partition in {p.parent for p in self.dataset.glob(f"date=*/part-*-{run_id[:8]}-*.parquet")}:
            write_json(partition / f"_drift-{run_id[:8]}.json", report)


def scoring_sink(paths: Paths, settings: ScoreSettings) -> TableSink | DatasetSink:
    """Where a scoring run writes: --dataset, --output, or a new table under artifacts/predictions."""
    if settings.dataset is not None:
        return DatasetSink(settings.dataset)
    return TableSink(settings.output or default_output(paths, settings.folder))


def default_output(paths: Paths, folder: Path) -> Path:
    """artifacts/predictions/<folder name>-<UTC time>.parquet"""
    return paths.predictions / f"{folder.resolve().name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.parquet"


@task(name="list-images", cache_policy=NO_CACHE)
def find_images(folder: Path) -> list[ImageFile]:
    return list_images(folder)


def drift_of_run(chunks: list[ScoredChunk], scoring: ScoringModel) -> dict:
    """The run's predictions and inputs against the model's references (tasks.drift)."""
    if not scoring.references or scoring.threshold is None:
        return {"alarm": False, "scores": {}, "reference": None,
                "note": "the model has no drift reference (trained before digitflow made them)"}
    if not chunks:
        return {"alarm": False, "scores": {}, "reference": None, "note": "nothing new was scored"}
    ok = pd.concat([c.frame for c in chunks])
    ok = ok[ok["status"] == "ok"]
    values = {"predicted_digit": ok["label"].to_numpy(dtype=np.float64),
              "confidence": ok["confidence"].to_numpy(dtype=np.float64),
              "review_rate": ok["review"].to_numpy(dtype=np.float64),
              **{name: np.concatenate([c.inputs[name] for c in chunks if c.inputs] or [np.empty(0)])
                 for name in INPUT_STATISTICS}}
    return drift_against(scoring.references, values, len(ok))


@task(name="score-images", cache_policy=NO_CACHE, task_run_name="score-images-{first}")
def score_images(files: Files, model_path: Path, first: int,
                 part: Path | None = None) -> ScoredChunk:
    chunk = score_chunk(files.files, model_path)
    if part is not None:
        write_table([chunk.frame], part)
    return chunk


@task(name="select-unscored", cache_policy=NO_CACHE)
def select_unscored(files: Files, sink: TableSink | DatasetSink, version: str) -> list[ImageFile]:
    return sink.select(files.files, version)


@task(name="write-predictions", cache_policy=NO_CACHE)
def write_predictions(chunks: list[ScoredChunk], sink: TableSink | DatasetSink,
                      labels: Path | None) -> dict:
    """The predictions written (or, for a dataset, gathered) and summarized."""
    return summarize(sink.finish([c.frame for c in chunks]), labels)


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(chunks: list[ScoredChunk], model_path: Path, sink: TableSink | DatasetSink,
                folder: Path, run_id: str) -> dict:
    """Drift of this run; over threshold, the event digitflow.scoring.drift (review-queue's
    trigger), naming the run, the model, the scores, and the table and folder to review."""
    scoring = load_scoring_model(model_path)
    report = drift_of_run(chunks, scoring)
    sink.record_drift(report, run_id)
    if report["alarm"]:
        emit_event(event="digitflow.scoring.drift",
                   resource={"prefect.resource.id": f"digitflow.scoring.{run_id}"},
                   payload={**drift_event_payload(report, run_id, scoring.version),
                            "output": str(sink.location), "folder": str(folder)})
        get_run_logger().warning("drift: %s changed beyond their thresholds (%s)",
                                 ", ".join(report["alarming"]), report["scores"])
    return report
