"""Batch scoring: find the image files under a folder, score them in chunks, write one table.

The prediction table (one row per image file) is a contract; `SCHEMA` is its definition.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from tasks.drift import INPUT_STATISTICS, drift_against, drift_event_payload, input_statistics
from tasks.files import Files, ImageFile, list_images, start_reading
from tasks.inference import PROB_COLUMNS, ScoringModel, load_scoring_model, top3
from tasks.paths import Paths
from tasks.progress import advanced
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
    table: pa.Table  # the prediction rows, in SCHEMA
    inputs: dict[str, np.ndarray]  # statistics of the readable pictures' inputs (tasks.drift)
    shown: int = 0  # rows already counted by the flow's progress, piece by piece


PIECE = 1_000  # files a scoring task reads and predicts at a time; it holds two pieces at most


def score_chunk(files: list[ImageFile], model_path: Path) -> ScoredChunk:
    """Prediction rows for `files`, in order, and what the drift check needs of their inputs,
    a piece at a time: a chunk can be large (few Prefect task runs) with little memory."""
    scoring = load_scoring_model(model_path)
    # (no files: one empty piece, which gives the empty table)
    pieces = [files[i:i + PIECE] for i in range(0, len(files) or 1, PIECE)]
    scored, reading, shown = [], start_reading(pieces[0]), 0
    for piece, following in zip(pieces, pieces[1:] + [None]):
        read = reading()
        if following is not None:
            reading = start_reading(following)  # read while this piece is predicted
        scored.append(score_piece(piece, read, scoring))
        shown += len(piece) if advanced(len(piece)) else 0
    measured = [piece.inputs for piece in scored if piece.inputs]
    return ScoredChunk(pa.concat_tables([piece.table for piece in scored]),
                       {name: np.concatenate([m[name] for m in measured]) for name in INPUT_STATISTICS}
                       if measured else {}, shown)


def score_piece(files: list[ImageFile], read: list[tuple], scoring: ScoringModel) -> ScoredChunk:
    inputs = [x for _, x, _ in read if x is not None]
    return ScoredChunk(prediction_table(files, read, scoring),
                       input_statistics(np.stack(inputs)) if inputs else {})


def score_files(files: list[ImageFile], model_path: Path) -> pa.Table:
    return score_chunk(files, model_path).table


def prediction_table(files: list[ImageFile], read: list[tuple], scoring: ScoringModel) -> pa.Table:
    """Table rows from (sha256, model input or None, error or None) per file."""
    said = scoring.predict(read)
    now = np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None), "us").astype(np.int64)
    columns = [strings([f.path for f in files]), strings([sha for sha, _, _ in read]),
               numbers(said.label, pa.int64(), said.ok), numbers(said.confidence, pa.float32(), said.ok),
               *[numbers(said.probs[:, d], pa.float32(), said.ok) for d in range(len(PROB_COLUMNS))],
               numbers(said.review, pa.bool_(), said.ok),
               strings(np.where(said.ok, "ok", "error").tolist()), strings([err for _, _, err in read]),
               strings([scoring.version] * len(files)),
               numbers(np.full(len(files), now), SCHEMA.field("scored_at").type)]
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    table.validate(full=True)
    return table


# Arrow arrays built from their buffers, not with pa.array: pa.array imports pandas wherever it is
# installed, which would cost a Dask worker that scores 45 MB of its 300 (issue #14).
def bitmap(valid: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def numbers(values: np.ndarray, kind: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """`values` as an Arrow array of `kind`, null where not `valid`."""
    data = np.packbits(values, bitorder="little") if kind == pa.bool_() else np.ascontiguousarray(values)
    nulls = 0 if valid is None else int(len(valid) - valid.sum())
    return pa.Array.from_buffers(kind, len(values), [None if valid is None else bitmap(valid),
                                                     pa.py_buffer(data)], nulls)


def strings(values: list[str | None]) -> pa.Array:
    """UTF-8 strings (what cannot be encoded, backslash-escaped), null for None."""
    encoded = [(v or "").encode("utf-8", "backslashreplace") for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    valid = np.array([v is not None for v in values], dtype=bool)
    return pa.Array.from_buffers(pa.string(), len(values), [bitmap(valid), pa.py_buffer(offsets),
                                                            pa.py_buffer(b"".join(encoded))],
                                 int(len(valid) - valid.sum()))


def combine(tables: list[pa.Table]) -> pa.Table:
    """The chunks' rows as one table sorted by path."""
    return (pa.concat_tables(tables) if tables else SCHEMA.empty_table()).sort_by("path")


def write_table(tables: list[pa.Table], output: Path) -> pa.Table:
    """One table sorted by path, written atomically: the output is whole or absent."""
    table = combine(tables)
    with atomic_path(output, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return table


CONFIDENCE_BINS = [0.0, 0.5, 0.8, 0.95, 0.99, 1.0001]
REVIEW_SIZE = 16  # lowest-confidence predictions shown for a person to check


def summarize(table: pa.Table, labels: Path | None) -> dict:
    is_ok = pc.equal(table["status"], "ok")
    ok = table.filter(is_ok)
    reasons = Counter(e.split(":")[0] for e in table.filter(pc.invert(is_ok))["error"].to_pylist())
    confidence = ok["confidence"].to_numpy()
    flagged = ok["review"].fill_null(False).to_numpy(zero_copy_only=False)
    digits, counts = np.unique(ok["label"].to_numpy(), return_counts=True)
    in_bins, _ = np.histogram(confidence, CONFIDENCE_BINS)
    # The gallery: what the model flagged for review first, least confident first
    doubtful = np.lexsort((confidence, ~flagged))[:REVIEW_SIZE]
    probs = np.column_stack([ok[c].to_numpy() for c in PROB_COLUMNS]) if len(ok) else np.empty((0, 10))
    paths, predicted = ok["path"].to_pylist(), ok["label"].to_pylist()
    summary = {
        "scored": len(ok), "errors": len(table) - len(ok), "flagged": int(flagged.sum()),
        "by_label": {int(d): int(n) for d, n in zip(digits, counts)},
        "error_reasons": dict(reasons.most_common()),
        "mean_confidence": round(float(confidence.mean(dtype=np.float64)), 4) if len(ok) else None,
        "confidence_bins": {f"{low:.2f}–{min(high, 1):.2f}": int(n) for low, high, n
                            in zip(CONFIDENCE_BINS, CONFIDENCE_BINS[1:], in_bins)},
        "review": [{"path": paths[i], "label": predicted[i], "confidence": round(float(confidence[i]), 4),
                    "flagged": bool(flagged[i]), "top3": top3(probs[i])} for i in doubtful],
    }
    if labels is not None:
        types = {"path": pa.string(), "label": pa.int64()}
        truth = pacsv.read_csv(labels, convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=list(types)))
        joined = ok.select(["path", "label"]).join(truth, "path", right_suffix="_true")
        summary["labelled"] = len(joined)
        right = pc.mean(pc.equal(joined["label"], joined["label_true"]).cast(pa.float64())).as_py()
        summary["accuracy"] = round(right, 4) if right is not None else None
    return summary


def scored_before(dataset: Path, version: str) -> set[str]:
    """SHA-256 of every file the model `version` already scored into the dataset."""
    if not any(dataset.rglob("*.parquet")):
        return set()
    # Imported here: the flow selects, the workers that score never do (pyarrow.dataset: +53 MB)
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

    def finish(self, tables: list[pa.Table]) -> pa.Table:
        return write_table(tables, self.output)

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

    def finish(self, tables: list[pa.Table]) -> pa.Table:
        return combine(tables)  # the chunks wrote their parts already

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
    rows = pa.concat_tables([c.table for c in chunks])
    ok = rows.filter(pc.equal(rows["status"], "ok"))
    values = {"predicted_digit": ok["label"].to_numpy().astype(np.float64),
              "confidence": ok["confidence"].to_numpy().astype(np.float64),
              "review_rate": ok["review"].to_numpy(zero_copy_only=False).astype(np.float64),
              **{name: np.concatenate([c.inputs[name] for c in chunks if c.inputs] or [np.empty(0)])
                 for name in INPUT_STATISTICS}}
    return drift_against(scoring.references, values, len(ok))


@task(name="score-images", cache_policy=NO_CACHE, task_run_name="score-images-{first}")
def score_images(files: Files, model_path: Path, first: int,
                 part: Path | None = None) -> ScoredChunk:
    chunk = score_chunk(files.files, model_path)
    if part is not None:  # a dataset's part, written as soon as its chunk is scored
        write_table([chunk.table], part)
    return chunk


@task(name="select-unscored", cache_policy=NO_CACHE)
def select_unscored(files: Files, sink: TableSink | DatasetSink, version: str) -> list[ImageFile]:
    return sink.select(files.files, version)


@task(name="write-predictions", cache_policy=NO_CACHE)
def write_predictions(chunks: list[ScoredChunk], sink: TableSink | DatasetSink,
                      labels: Path | None) -> dict:
    """The predictions written (or, for a dataset, gathered) and summarized."""
    return summarize(sink.finish([c.table for c in chunks]), labels)


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
