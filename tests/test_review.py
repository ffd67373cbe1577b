"""The review queue and its answers: which pictures are asked about, the CSV and the UI form, and
the answers taken in as a span whole or not at all (skips, deleted pictures, two reviews)."""

import csv
import typing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from support import loaded_modules, write_pngs
from tasks.labels import NOT_DIGITS, list_spans, make_span, not_digits, take_in
from tasks.review import (CHOICES, ReviewError, answers_to_span, export_queue, field_name,
                          form_description, labels_form, review_locations, review_queue)
from tasks.store import file_sha256

NOW = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)


def bars(n: int) -> np.ndarray:
    """n different pictures of a "1": a bar moved one pixel further each time."""
    digits = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        digits[i, 5:23, 4 + i:8 + i] = 255
    return digits


def row(path: str, folder: Path, confidence: float, review: bool | None = True,
        scored_at: datetime = NOW, status: str = "ok", version: str = "v1") -> dict:
    """A prediction row for folder/path: its top digit (7) has `confidence`, then 1, then 9."""
    probs = np.full(10, 0.08 * (1 - confidence))
    probs[7], probs[1], probs[9] = confidence, 0.24 * (1 - confidence), 0.2 * (1 - confidence)
    ok = status == "ok"
    return {"path": path, "sha256": file_sha256(folder / path), "label": 7 if ok else None,
            "confidence": confidence if ok else None,
            **{f"prob_{d}": float(p) if ok else None for d, p in enumerate(probs)},
            "review": review if ok else None, "status": status,
            "error": None if ok else "no digit found", "model_version": version,
            "scored_at": pd.Timestamp(scored_at)}


def write_table(rows: list[dict], path: Path, review: bool = True) -> Path:
    frame = pd.DataFrame(rows)
    if not review:
        frame = frame.drop(columns="review")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Six pictures a.png … f.png."""
    pictures = tmp_path / "inbox"
    for i, path in enumerate(write_pngs(pictures, bars(6))):
        path.rename(pictures / f"{'abcdef'[i]}.png")
    return pictures


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    return tmp_path / "labelled"


@pytest.fixture
def table(tmp_path: Path, folder: Path) -> Path:
    """a–d flagged (d the least confident), e confident and not flagged, f an error row."""
    return write_table([row("a.png", folder, 0.6), row("b.png", folder, 0.5),
                        row("c.png", folder, 0.4), row("d.png", folder, 0.3),
                        row("e.png", folder, 0.99, review=False),
                        row("f.png", folder, 0, status="error")], tmp_path / "scored.parquet")


# The queue

def test_queue_is_the_flagged_pictures_least_confident_first(table, labelled):
    queue = review_queue(table, labelled, limit=24)
    assert list(queue["path"]) == ["d.png", "c.png", "b.png", "a.png"]
    assert queue["top3"][0] == "7: 0.30, 1: 0.17, 9: 0.14"  # the three most probable, in order
    assert queue.attrs["notes"] == []
    assert list(review_queue(table, labelled, limit=2)["path"]) == ["d.png", "c.png"]


def test_queue_skips_pictures_already_in_a_span(table, folder, labelled, tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "c.png").write_bytes((folder / "c.png").read_bytes())  # the same bytes, another name
    make_span(labelled, done, digit=1, name="earlier")
    queue = review_queue(table, labelled, limit=24)
    assert list(queue["path"]) == ["d.png", "b.png", "a.png"]
    assert queue.attrs["notes"] == ["1 pictures to review are already in a span"]


def test_a_picture_scored_twice_counts_by_its_newest_row(tmp_path, folder, labelled):
    later = NOW + timedelta(hours=1)
    source = write_table([row("a.png", folder, 0.2, version="old"),  # the new model is sure
                          row("a.png", folder, 0.97, review=False, scored_at=later, version="new"),
                          row("b.png", folder, 0.3, version="old"),
                          row("b.png", folder, 0.6, scored_at=later, version="new"),
                          row("c.png", folder, 0.5, scored_at=later)], tmp_path / "t.parquet")
    queue = review_queue(source, labelled, limit=24)
    assert list(queue["path"]) == ["c.png", "b.png"]
    assert list(queue["model_version"]) == ["v1", "new"] and queue["confidence"][1] == 0.6


def test_a_dataset_folder_is_read_whole_older_parts_without_the_review_flag(tmp_path, folder,
                                                                             labelled):
    dataset = tmp_path / "dataset"
    write_table([row("a.png", folder, 0.2), row("b.png", folder, 0.3)],
                dataset / "date=2026-11-30" / "part-1.parquet", review=False)
    write_table([row("c.png", folder, 0.5), row("d.png", folder, 0.9, review=False)],
                dataset / "date=2026-12-01" / "part-1.parquet")
    queue = review_queue(dataset, labelled, limit=24)
    assert list(queue["path"]) == ["c.png"]  # the flags decide where there are any


def test_without_review_flags_the_least_confident_are_queued_and_it_says_so(tmp_path, folder,
                                                                            labelled):
    source = write_table([row(p, folder, c) for p, c in
                          [("a.png", 0.9), ("b.png", 0.4), ("c.png", 0.7)]],
                         tmp_path / "old.parquet", review=False)
    queue = review_queue(source, labelled, limit=2)
    assert list(queue["path"]) == ["b.png", "c.png"]
    assert "no review flags" in queue.attrs["notes"][0]


def test_with_the_folder_deleted_or_changed_pictures_are_passed_over(table, folder, labelled):
    (folder / "d.png").unlink()
    (folder / "c.png").write_bytes((folder / "e.png").read_bytes())
    queue = review_queue(table, labelled, limit=2, folder=folder)
    assert list(queue["path"]) == ["b.png", "a.png"]
    assert any("d.png is no longer" in n for n in queue.attrs["notes"])
    assert any("c.png changed since it was scored" in n for n in queue.attrs["notes"])


def test_a_missing_source_or_a_bad_limit_is_refused(tmp_path, labelled, table):
    with pytest.raises(ReviewError, match="no prediction table or dataset there"):
        review_queue(tmp_path / "nothing.parquet", labelled, limit=5)
    with pytest.raises(ReviewError, match="limit must be at least 1"):
        review_queue(table, labelled, limit=0)


def test_parameters_from_a_malformed_event_are_refused_naming_them(tmp_path, table, folder):
    # A payload without `output` renders the template "{{ event.payload.output }}" as "".
    with pytest.raises(ReviewError, match="'source' is missing"):
        review_locations(tmp_path, Path(""), folder)
    with pytest.raises(ReviewError, match="'folder' is missing"):
        review_locations(tmp_path, table, Path(""))
    with pytest.raises(ReviewError, match="folder .*not a folder of pictures"):
        review_locations(tmp_path, table, Path("nowhere"))
    assert review_locations(tmp_path, Path("scored.parquet"), Path("inbox")) == (table, folder)


# Labelling outside the UI: the CSV round trip

def test_an_exported_queue_filled_in_elsewhere_becomes_a_span(table, folder, labelled, tmp_path):
    exported = export_queue(review_queue(table, labelled, limit=24), tmp_path / "queue.csv")
    with open(exported, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [list(r) for r in rows[:1]] == [["path", "sha256", "top3", "label"]]
    assert [r["path"] for r in rows] == ["d.png", "c.png", "b.png", "a.png"]
    assert all(r["label"] == "" for r in rows) and rows[0]["top3"] == "7: 0.30, 1: 0.17, 9: 0.14"
    # A person fills two labels in a spreadsheet and leaves the rest empty.
    rows[0]["label"], rows[2]["label"] = "4", "1"
    with open(exported, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    span = make_span(labelled, folder, labels=exported, name="by-hand")
    assert {f.path: f.label for f in span.files} == {"d.png": 4, "b.png": 1}
    assert span.skipped == 2
    assert list(review_queue(table, labelled, limit=24)["path"]) == ["c.png", "a.png"]


# Labelling in the UI: the form

def test_the_form_has_a_drop_down_per_picture_defaulting_to_skip(table, folder, labelled):
    queue = review_queue(table, labelled, limit=3)
    form = labels_form(queue, folder)
    assert list(form.model_fields) == ["pic_000", "pic_001", "pic_002"] == \
        [field_name(i) for i in range(3)]
    for i, (name, info) in enumerate(form.model_fields.items()):
        assert typing.get_args(info.annotation) == CHOICES
        assert CHOICES == (*"0123456789", "not a digit", "skip")
        assert info.default == "skip"
        assert info.description.count("](data:image/png;base64,") == 2  # picture, model input
        assert queue["path"][i] in info.description and queue["top3"][i] in info.description
        assert info.title == f"{i + 1} of 3: {queue['path'][i]}"
        assert info.description.startswith("Pick the digit") == (i == 0)
    assert form().model_dump() == {"pic_000": "skip", "pic_001": "skip", "pic_002": "skip"}
    schema = form.model_json_schema()["properties"]["pic_000"]
    assert schema["enum"] == list(CHOICES) and schema["default"] == "skip"
    assert form_description(queue).startswith("## Label 3 pictures")
    with pytest.raises(ValueError):
        form(pic_000="eleven")


# The answers

def test_digits_become_a_span_and_skips_and_non_digits_stay_out(table, folder, labelled):
    queue = review_queue(table, labelled, limit=24)
    result = answers_to_span({"pic_000": "3", "pic_001": "not a digit", "pic_002": "skip",
                              "pic_003": "7"}, queue, folder, labelled, "mine")
    assert result.span == "mine" and result.labelled == {"d.png": 3, "a.png": 7}
    assert (result.skipped, result.not_a_digit, result.left_out) == (1, 1, [])
    assert {f.path: f.label for f in take_in(labelled / "mine").files} == {"d.png": 3, "a.png": 7}
    assert result.message.startswith("span mine: 2 of 4 pictures labelled")


def test_a_picture_answered_not_a_digit_is_never_asked_about_again(table, folder, labelled):
    queue = review_queue(table, labelled, limit=24)
    assert list(queue["path"][:2]) == ["d.png", "c.png"]
    result = answers_to_span({"pic_000": "not a digit", "pic_001": "skip"}, queue, folder,
                             labelled, "junk")
    assert result.span is None and (result.not_a_digit, result.skipped) == (1, 3)
    assert not_digits(labelled) == {file_sha256(folder / "d.png"): "d.png"}
    again = review_queue(table, labelled, limit=24)
    assert "d.png" not in set(again["path"]) and "c.png" in set(again["path"])
    assert any("answered 'not a digit' before" in note for note in again.attrs["notes"])
    # The same answer twice, and another picture's, keep one line each
    answers_to_span({"pic_000": "not a digit"}, again, folder, labelled, "junk-2")
    answers_to_span({"pic_000": "not a digit"}, queue, folder, labelled, "junk-3")
    lines = (labelled / NOT_DIGITS).read_text().splitlines()
    assert lines[0] == "sha256,path,answered_at,answered_in" and len(lines) == 3
    assert lines[2].endswith(",review junk-2")
    # A person who changes their mind deletes the line: the picture is queued again
    (labelled / NOT_DIGITS).write_text("\n".join(lines[:2]) + "\n")
    assert "c.png" in set(review_queue(table, labelled, limit=24)["path"])
    assert "d.png" not in set(review_queue(table, labelled, limit=24)["path"])


def test_every_answer_on_skip_makes_no_span(table, folder, labelled):
    queue = review_queue(table, labelled, limit=24)
    result = answers_to_span(labels_form(queue, folder)().model_dump(), queue, folder, labelled,
                             "nothing")
    assert result.span is None and result.skipped == 4
    assert "nothing labelled" in result.message and "no span made" in result.message
    assert not labelled.exists()  # not even the folder


def test_a_picture_deleted_or_changed_while_paused_is_left_out_the_rest_taken(table, folder,
                                                                             labelled):
    queue = review_queue(table, labelled, limit=24, folder=folder)
    (folder / "d.png").unlink()
    (folder / "c.png").write_bytes((folder / "e.png").read_bytes())
    result = answers_to_span({"pic_000": "3", "pic_001": "2", "pic_002": "5"}, queue, folder,
                             labelled, "rest")
    assert result.labelled == {"b.png": 5}
    assert result.left_out == [f"d.png is no longer in {folder}",
                               "c.png changed since it was scored"]
    assert "left out: d.png is no longer" in result.message


def test_when_every_labelled_picture_is_gone_no_span_is_made(table, folder, labelled):
    queue = review_queue(table, labelled, limit=1)
    (folder / "d.png").unlink()
    result = answers_to_span({"pic_000": "3"}, queue, folder, labelled, "gone")
    assert result.span is None and "no span made" in result.message
    assert not labelled.exists() or list_spans(labelled) == []


def test_a_second_review_of_the_same_queue_labels_nothing_twice(table, folder, labelled):
    first_queue = review_queue(table, labelled, limit=24)
    second_queue = review_queue(table, labelled, limit=24)  # both runs paused on the same pictures
    first = answers_to_span({"pic_000": "3", "pic_001": "2"}, first_queue, folder, labelled, "one")
    # The second person disagrees about d.png: no conflict, it is simply taken already.
    second = answers_to_span({"pic_000": "8", "pic_001": "2", "pic_002": "5"}, second_queue,
                             folder, labelled, "two")
    assert first.labelled == {"d.png": 3, "c.png": 2} and second.labelled == {"b.png": 5}
    meanwhile = "was put in span one meanwhile (another review of this queue?)"
    assert second.left_out == [f"d.png {meanwhile}", f"c.png {meanwhile}"]
    assert [s.name for s in list_spans(labelled) if s.span] == ["one", "two"]
    # And if the second one had nothing else, it makes no span.
    third = answers_to_span({"pic_000": "3"}, second_queue, folder, labelled, "three")
    assert third.span is None and not (labelled / "three").exists()


def test_answers_the_form_cannot_give_are_refused(table, folder, labelled):
    queue = review_queue(table, labelled, limit=2)
    with pytest.raises(ReviewError, match="not in this queue: pic_007"):
        answers_to_span({"pic_007": "3"}, queue, folder, labelled, "x")
    with pytest.raises(ReviewError, match="no choice of the form"):
        answers_to_span({"pic_000": "12"}, queue, folder, labelled, "x")
    assert not (labelled / "x").exists()


def test_importing_the_review_module_loads_neither_prefect_nor_tensorflow():
    assert loaded_modules("import tasks.review", {"prefect", "tensorflow", "keras"}) == ([], [])
