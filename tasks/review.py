"""The review queue: the predictions a person should check, and their answers taken in as a span.

The queue comes from a prediction table or dataset (tasks/score.py's SCHEMA): the rows the model
flagged (`review`), least confident first, one per picture (sha256), leaving out pictures a span
already holds and pictures a person answered "not a digit" (tasks.labels.NOT_DIGITS). A person
answers either in the Prefect UI (a form on the paused review run) or in a CSV (`export_queue`,
filled in any tool, taken back by `make_span`); both end in `make_span`, which writes a whole
span or nothing.

Importing this module loads neither Prefect nor TensorFlow: the form's RunInput is built inside
`labels_form`, so the command line can export a queue without starting either.
"""

import csv
import io
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import pandas as pd

from tasks.labels import (DIGITS, NOT_A_DIGIT, NOT_DIGITS, LabelError, Span, check_name,
                          list_spans, make_span, not_digits, remember_not_digits, spans_locked)
from tasks.mnist import NUM_CLASSES
from tasks.store import file_sha256, write_bytes

PROB_COLUMNS = [f"prob_{d}" for d in range(NUM_CLASSES)]  # as tasks.score's (which loads Keras)
SKIP = "skip"
CHOICES = (*DIGITS, NOT_A_DIGIT, SKIP)
QUEUE_COLUMNS = ["path", "sha256", "label", "confidence", *PROB_COLUMNS, "model_version",
                 "scored_at", "top3"]


class ReviewError(ValueError):
    """A review that cannot go on, and what to do about it."""


# The queue

def read_predictions(source: Path) -> pd.DataFrame:
    """Every row of a prediction table (one .parquet file) or dataset (a folder of parts)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    if source.is_dir():
        parts = pads.dataset(source, format="parquet", partitioning="hive")
        fragments = list(parts.get_fragments())
        if not fragments:
            raise ReviewError(f"{source} holds no prediction table parts (*.parquet): score a "
                              "folder into it first (digitflow score FOLDER --dataset DIR)")
        # Parts written before the `review` column existed lack it: unified, they read as null.
        schema = pa.unify_schemas([f.physical_schema for f in fragments],
                                  promote_options="permissive")
        table = pads.dataset(source, schema=schema, format="parquet",
                             partitioning="hive").to_table()
    elif source.is_file():
        table = pads.dataset(source, format="parquet").to_table()
    else:
        raise ReviewError(f"source {source}: no prediction table or dataset there; give the "
                          ".parquet table or the dataset folder `digitflow score` wrote")
    missing = {"path", "sha256", "confidence", "status", "scored_at", *PROB_COLUMNS} \
        - set(table.column_names)
    if missing:
        raise ReviewError(f"{source} is not a digitflow prediction table (no column "
                          f"{', '.join(sorted(missing))})")
    return table.to_pandas()


def top3_text(row) -> str:
    """The model's three most probable digits, e.g. "7: 0.41, 1: 0.30, 9: 0.12"."""
    probs = sorted(((float(getattr(row, c)), d) for d, c in enumerate(PROB_COLUMNS)), reverse=True)
    return ", ".join(f"{d}: {p:.2f}" for p, d in probs[:3])


def labelled_hashes(labelled: Path) -> dict[str, str]:
    """sha256 → the span holding it, over every span that can be taken in."""
    return {sha: status.name for status in list_spans(labelled) if status.span
            for sha in status.span.files.column("sha256")}


def unchanged(folder: Path, row) -> str | None:
    """Why the picture of a queue row is no longer the one scored, or None if it is."""
    location = folder / PurePosixPath(row.path)
    try:
        if file_sha256(location) == row.sha256:
            return None
        return f"{row.path} changed since it was scored"
    except FileNotFoundError:
        return f"{row.path} is no longer in {folder}"
    except OSError as exc:
        return f"{row.path} cannot be read ({exc.strerror or exc})"


def review_queue(source: Path, labelled: Path, limit: int,
                 folder: Path | None = None) -> pd.DataFrame:
    """The flagged `ok` rows of `source`, least confident first, one per picture, none already
    in a span or answered "not a digit", at most `limit`.

    A picture scored several times (model versions, runs) counts by its most recent row. A table
    without a `review` column (scored before the flag existed) gives its least confident rows.
    With `folder` (where the pictures are), pictures deleted or changed since scoring are passed
    over too. What was decided is in `queue.attrs["notes"]`.
    """
    if limit < 1:
        raise ReviewError(f"limit must be at least 1, not {limit}")
    rows = read_predictions(source)
    notes = []
    rows = rows[rows["sha256"].notna()]
    # The newest row of each picture says what the current model thinks of it.
    rows = rows.sort_values(["scored_at", "path"], ascending=[False, True], kind="stable")
    rows = rows.drop_duplicates("sha256")
    rows = rows[rows["status"] == "ok"]
    if "review" in rows.columns and rows["review"].notna().any():
        flagged = rows[rows["review"].fillna(False).astype(bool)]
    else:
        flagged = rows
        notes.append(f"{source} has no review flags (scored before they existed): the least "
                     "confident predictions are queued instead")
    taken = labelled_hashes(labelled)
    waiting = flagged[~flagged["sha256"].isin(taken)]
    if len(waiting) < len(flagged):
        notes.append(f"{len(flagged) - len(waiting)} pictures to review are already in a span")
    refused = set(not_digits(labelled))
    if (answered := int(flagged["sha256"].isin(refused).sum())):
        waiting = waiting[~waiting["sha256"].isin(refused)]
        notes.append(f"{answered} pictures to review were answered {NOT_A_DIGIT!r} "
                     f"before; to be asked again, delete their lines in {labelled / NOT_DIGITS}")
    waiting = waiting.sort_values(["confidence", "path"], kind="stable")
    if folder is not None:  # pass over what is gone, until `limit` are found
        kept = []
        for row in waiting.itertuples():
            if len(kept) == limit:
                break
            if (why := unchanged(folder, row)) is None:
                kept.append(row.Index)
            else:
                notes.append(f"passed over: {why}")
        waiting = waiting.loc[kept]
    queue = waiting.head(limit).copy()
    for column in ("label", "model_version"):
        if column not in queue.columns:
            queue[column] = None
    queue["top3"] = [top3_text(r) for r in queue.itertuples()]
    queue = queue[QUEUE_COLUMNS].reset_index(drop=True)
    queue.attrs["notes"] = notes
    return queue


# Labelling outside the UI: a CSV that `digitflow label FOLDER --labels CSV` takes back

def export_queue(queue: pd.DataFrame, csv_path: Path) -> Path:
    """The queue as a CSV: path, sha256, top3 and an empty label column to fill (empty: skipped)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "sha256", "top3", "label"])
    writer.writerows([r.path, r.sha256, r.top3, ""] for r in queue.itertuples())
    write_bytes(csv_path, out.getvalue().encode())
    return csv_path


# Labelling in the Prefect UI: a form on the paused run

def field_name(i: int) -> str:
    """The form field of the queue's i-th row (the form's names must be identifiers)."""
    return f"pic_{i:03d}"


def picture_markdown(row, folder: Path) -> str:
    """The picture and the model's 28×28 input as data-URI images, then what the model said."""
    from tasks.report import thumbnails

    try:
        picture, seen = thumbnails(folder / PurePosixPath(row.path))
        images = f"![picture]({picture}) ![model input]({seen})"
    except (OSError, ValueError) as exc:  # gone or changed since queued: say so, ask anyway
        images = f"(the picture cannot be shown: {exc})"
    return (f"{images}\n\n`{row.path}` — model: **{row.label}** "
            f"({row.confidence:.2f}); top 3: {row.top3}")


HOW_TO = ("Pick the digit each picture shows. **skip** (the default) leaves a picture in the "
          "queue for later; **not a digit** leaves it out of training and of every later review. "
          "On Submit the labelled pictures become a new span of your digits.")


def labels_form(queue: pd.DataFrame, folder: Path) -> type:
    """A prefect RunInput with one drop-down per queued picture (field_name(i) ↔ row i), each
    defaulting to "skip", the picture and the model's top three in its description."""
    import pydantic
    from prefect.input import RunInput

    choice = Literal[CHOICES]  # the UI shows a Literal of strings as a drop-down
    fields = {}
    for i, row in enumerate(queue.itertuples()):
        # The UI squeezes the form's own description to nothing once the fields overflow the
        # dialog (prefect 3.9.1): the first field says what to do as well.
        how_to = f"{HOW_TO}\n\n" if i == 0 else ""
        fields[field_name(i)] = (choice, pydantic.Field(
            default=SKIP, title=f"{i + 1} of {len(queue)}: {row.path}",
            description=how_to + picture_markdown(row, folder)))
    return pydantic.create_model("DigitLabels", __base__=RunInput, **fields)


def form_description(queue: pd.DataFrame) -> str:
    """The markdown above the form."""
    notes = "".join(f"\n- {note}" for note in queue.attrs.get("notes", []))
    return f"## Label {len(queue)} pictures\n\n{HOW_TO}" + (f"\n{notes}" if notes else "")


# The answers, taken in

@dataclass
class ReviewResult:
    span: str | None  # the new span, or None when nothing was labelled
    labelled: dict[str, int] = field(default_factory=dict)  # path → digit, in the span
    skipped: int = 0
    not_a_digit: int = 0
    left_out: list[str] = field(default_factory=list)  # labelled, but not taken: why
    message: str = ""

    @property
    def pictures(self) -> int:
        return len(self.labelled)

    def to_dict(self) -> dict:
        counts = Counter(self.labelled.values())
        return {"span": self.span, "pictures": self.pictures, "skipped": self.skipped,
                "not_a_digit": self.not_a_digit, "left_out": self.left_out,
                "by_digit": {d: counts[int(d)] for d in DIGITS if counts[int(d)]},
                "message": self.message}


def chosen_labels(answers: dict, queue: pd.DataFrame) -> dict[int, str]:
    """Row → choice, refusing an answer the form could not have given."""
    names = {field_name(i): i for i in range(len(queue))}
    unknown = sorted(set(answers) - set(names))
    if unknown:
        raise ReviewError(f"answers for pictures not in this queue: {', '.join(unknown)}")
    bad = {k: v for k, v in answers.items() if v not in CHOICES}
    if bad:
        raise ReviewError(f"answers that are no choice of the form: {bad}")
    return {names[k]: v for k, v in answers.items()}


def answers_to_span(answers: dict, queue: pd.DataFrame, folder: Path, labelled: Path,
                    name: str) -> ReviewResult:
    """The pictures answered with a digit as the new span `name`, whole or not at all.

    Left out, each with a message: pictures deleted or changed while the run waited, and
    pictures a span took in meanwhile (another review of the same queue). Nothing labelled (all
    "skip" or "not a digit") makes no span. Pictures answered "not a digit" are remembered
    (tasks.labels.NOT_DIGITS): no later review asks about them.
    """
    chosen = chosen_labels(answers, queue)
    result = ReviewResult(None)
    result.skipped = len(queue) - sum(v != SKIP for v in chosen.values())
    result.not_a_digit = sum(v == NOT_A_DIGIT for v in chosen.values())
    picks, refused = {}, {}
    for i, choice in sorted(chosen.items()):
        if choice != SKIP:
            row = next(queue.iloc[[i]].itertuples())
            if (why := unchanged(folder, row)) is not None:
                result.left_out.append(why)
            elif choice == NOT_A_DIGIT:
                refused[row.sha256] = row.path
            else:
                picks[row.path] = (row.sha256, int(choice))
    if picks or refused:
        with spans_locked(labelled):
            if refused:
                remember_not_digits(labelled, refused, f"review {name}")
            taken = labelled_hashes(labelled)
            for path, (sha, _) in list(picks.items()):
                if sha in taken:
                    result.left_out.append(f"{path} was put in span {taken[sha]} meanwhile "
                                           "(another review of this queue?)")
                    del picks[path]
            if picks:
                span = _make_span(labelled, folder, {p: d for p, (_, d) in picks.items()}, name)
                result.span = span.name
                result.labelled = dict(zip(span.files.column("path"), span.files.column("label")))
    result.message = _message(result, len(queue))
    return result


def _make_span(labelled: Path, folder: Path, labels: dict[str, int], name: str) -> Span:
    # make_span takes a path,label CSV; it is written outside both folders and removed after.
    with tempfile.TemporaryDirectory(prefix="digitflow-review-") as tmp:
        labels_csv = Path(tmp) / "labels.csv"
        with open(labels_csv, "w", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["path", "label"])
            writer.writerows(sorted(labels.items()))
        try:
            return make_span(labelled, folder, labels=labels_csv, name=name)
        except LabelError as exc:
            raise ReviewError(f"no span was made: {exc}") from exc


def _message(result: ReviewResult, queued: int) -> str:
    left_out = f"; left out: {'; '.join(result.left_out)}" if result.left_out else ""
    if result.span:
        return (f"span {result.span}: {result.pictures} of {queued} pictures labelled, "
                f"{result.skipped} skipped, {result.not_a_digit} not a digit{left_out}")
    if not result.left_out:
        return (f"nothing labelled: {result.skipped} of {queued} pictures skipped, "
                f"{result.not_a_digit} not a digit; no span made, the queue is as it was")
    return f"no span made: no labelled picture could be taken{left_out}"


def review_markdown(result: ReviewResult, source: Path, folder: Path) -> str:
    """The review run's report."""
    summary = result.to_dict()
    lines = [f"# Review of `{source}`", "", result.message, "",
             "| | |", "|---|---|",
             f"| span | {f'`{result.span}`' if result.span else 'none'} |",
             f"| pictures labelled | {result.pictures} |",
             f"| skipped (still in the queue) | {result.skipped} |",
             f"| not a digit | {result.not_a_digit} |",
             f"| pictures folder | `{folder}` |"]
    if summary["by_digit"]:
        lines += ["", "| digit | pictures |", "|---|---|",
                  *[f"| {d} | {n} |" for d, n in summary["by_digit"].items()]]
    if result.left_out:
        lines += ["", "## Left out", "", *[f"- {why}" for why in result.left_out]]
    return "\n".join(lines)


# The review run's parameters (a deployment's may come from an event's payload)

def review_locations(root: Path, source: Path, folder: Path) -> tuple[Path, Path]:
    """`source` and `folder` under the digitflow root, refused with the parameter named when
    missing: an event whose payload lacks a field renders it as an empty string."""
    for parameter, value, what in (("source", source, "prediction table or dataset"),
                                   ("folder", folder, "pictures folder")):
        if str(value).strip() in ("", "."):
            raise ReviewError(f"the parameter {parameter!r} is missing or empty (a run started by "
                              "an event takes it from the event's payload: does the payload name "
                              f"the {what}?)")
    source, folder = root / source, root / folder
    if not source.exists():
        raise ReviewError(f"source {source}: no prediction table or dataset there")
    if not folder.is_dir():
        raise ReviewError(f"folder {folder}: not a folder of pictures (the folder that was "
                          "scored into the source)")
    return source, folder


def check_new_span(labelled: Path, name: str) -> None:
    """Refuse a span name before a person labels anything, not after."""
    check_name(name)
    if (labelled / name).exists():
        raise ReviewError(f"span {name} already exists in {labelled}; spans never change once "
                          "made: choose another name")
