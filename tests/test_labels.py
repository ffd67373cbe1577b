"""Labelled spans: made whole or not at all, refused with the row to fix, immutable once taken in,
deduplicated by content, split by content, and prepared into the model's inputs."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from support import encode
from tasks import labels
from tasks.images import preprocess
from tasks.labels import (LabelError, SpanChanged, labelled_set, list_spans, make_span,
                          prepare_pictures, split_of, take_in)
from tasks.paths import Paths
from tasks.store import content_key


def digit_png(seed: int, size: int = 56) -> bytes:
    """A white bar on black (a "1"), different bytes for every seed below 400."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size, size), np.uint8)
    top, left = rng.integers(6, size // 3, 2)
    pixels[top:size - top, left:left + rng.integers(4, 9)] = 255
    # Faint corner pixels make each seed's bytes unique; preprocessing takes them for paper.
    pixels[-1, -1], pixels[-1, -2] = seed % 20 + 1, seed // 20 % 20 + 1
    return encode(pixels)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def source(folder: Path, files: dict[str, bytes | str]) -> Path:
    for name, data in files.items():
        write(folder / name, data)
    return folder


def write_csv(path: Path, rows: list[list], header=("path", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([list(header), *rows])
    return path


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    return Paths(tmp_path).labelled


@pytest.fixture
def sevens(tmp_path: Path) -> Path:
    return source(tmp_path / "sevens", {"a.png": digit_png(1), "b.PNG": digit_png(2),
                                        "sub/c.png": digit_png(3), "notes.txt": "not a picture"})


def manifest(span_folder: Path) -> dict:
    """span.json with the file records of files.parquet in place of its name."""
    record = json.loads((span_folder / "span.json").read_text())
    assert record["files"] == "files.parquet"
    return record | {"files": pq.read_table(span_folder / "files.parquet").to_pylist()}


# The split

def test_split_is_about_one_in_five_by_content_and_deterministic():
    rng = np.random.default_rng(0)
    hashes = [rng.bytes(32).hex() for _ in range(5000)]
    splits = [split_of(h) for h in hashes]
    assert 0.18 < splits.count("test") / len(splits) < 0.22
    assert splits == [split_of(h) for h in hashes]
    assert set(splits) == {"train", "test"}


def test_adding_a_span_moves_no_picture_between_splits(tmp_path, labelled):
    first = make_span(labelled, source(tmp_path / "one", {f"{i}.png": digit_png(i) for i in range(40)}),
                      digit=1, name="one")
    before = {c.sha256: c.split for c in labelled_set([first]).pictures}
    more = {f"{i}.png": digit_png(i) for i in range(30, 80)}  # 30..39 again: duplicates
    second = make_span(labelled, source(tmp_path / "two", more), digit=1, name="two")
    after = {c.sha256: c.split for c in labelled_set([first, second]).pictures}
    assert {sha: after[sha] for sha in before} == before
    assert "test" in before.values() and "train" in before.values()


# Making a span

def test_make_span_from_a_digit_folder_copies_bytes_and_records_them(labelled, sevens):
    span = make_span(labelled, sevens, digit=7, name="mine")
    folder = labelled / "mine"
    assert span.folder == folder and span.layout == "digits"
    assert sorted(f.path for f in span.files) == ["7/a.png", "7/b.PNG", "7/sub/c.png"]
    assert span.counts == (0,) * 7 + (3, 0, 0)
    record = manifest(folder)
    assert record["name"] == "mine" and record["created_at"].endswith("+00:00")
    for entry in record["files"]:
        original = (sevens / entry["path"].removeprefix("7/")).read_bytes()
        assert (folder / entry["path"]).read_bytes() == original
        assert entry["size"] == len(original) and entry["label"] == 7
        assert entry["sha256"] == labels.file_sha256(folder / entry["path"])
    assert not (folder / "7" / "notes.txt").exists()
    assert take_in(folder) == span


def test_make_span_from_a_csv_takes_labelled_rows_only(tmp_path, labelled):
    src = source(tmp_path / "review", {f"p{i}.png": digit_png(i) for i in range(6)})
    csv_path = write_csv(tmp_path / "review.csv",
                         [["p0.png", "0", "ab12", "3: 0.9"], ["p1.png", "", "cd34", ""],
                          ["p2.png", "skip", "", ""], ["p3.png", "Not a digit", "", ""],
                          ["p4.png", "4", "", ""], ["p5.png", "5.0", "", ""]],
                         header=("path", "label", "sha256", "top3"))
    span = make_span(labelled, src, labels=csv_path, name="review")
    assert {f.path: f.label for f in span.files} == {"p0.png": 0, "p4.png": 4, "p5.png": 5}
    assert span.skipped == 3 and span.layout == "csv"
    assert sorted(p.name for p in (labelled / "review").iterdir()) == \
        ["files.parquet", "labels.csv", "p0.png", "p4.png", "p5.png", "span.json"]
    assert (labelled / "review" / "p4.png").read_bytes() == (src / "p4.png").read_bytes()
    rows = list(csv.reader(open(labelled / "review" / "labels.csv")))
    assert rows == [["path", "label"], ["p0.png", "0"], ["p4.png", "4"], ["p5.png", "5"]]
    assert take_in(labelled / "review") == span
    # "Not a digit" is remembered, so that no review asks about p3.png again
    assert labels.not_digits(labelled) == {labels.file_sha256(src / "p3.png"): "p3.png"}


def test_a_csv_of_non_digits_only_makes_no_span_but_is_remembered(tmp_path, labelled):
    src = source(tmp_path / "junk", {f"p{i}.png": digit_png(i) for i in range(3)})
    csv_path = write_csv(tmp_path / "junk.csv", [["p0.png", "not a digit"], ["p1.png", "skip"],
                                                 ["gone.png", "not a digit"]])
    with pytest.raises(LabelError, match="1 answered 'not a digit', which no review will ask"):
        make_span(labelled, src, labels=csv_path, name="junk")
    assert labels.not_digits(labelled) == {labels.file_sha256(src / "p0.png"): "p0.png"}
    assert list_spans(labelled) == []  # the file beside the spans is no span


def test_default_name_is_the_source_and_utc_time(labelled, sevens):
    span = make_span(labelled, sevens, digit=7)
    assert span.name.startswith("sevens-") and span.name.endswith("Z")
    assert (labelled / span.name / "span.json").exists()


@pytest.mark.parametrize("rows, header, expected", [
    ([["p0.png", "11"]], ("path", "label"), ["line 2", "'11'"]),
    ([["p0.png", "3"], ["p1.png", "seven"]], ("path", "label"), ["line 3", "'seven'"]),
    ([["p0.png", "3"], ["gone.png", "4"]], ("path", "label"), ["line 3", "gone.png"]),
    ([["p0.png", "3"]], ("image", "choice"), ["path and label", "image, choice"]),
    ([["p0.png", ""], ["p1.png", "skip"]], ("path", "label"), ["no usable picture", "unlabelled"]),
    ([["../p0.png", "3"]], ("path", "label"), ["line 2", "../p0.png"]),
])
def test_a_bad_csv_is_refused_naming_the_row(tmp_path, labelled, rows, header, expected):
    src = source(tmp_path / "src", {"p0.png": digit_png(0), "p1.png": digit_png(1)})
    with pytest.raises(LabelError) as refused:
        make_span(labelled, src, labels=write_csv(tmp_path / "l.csv", rows, header), name="x")
    for words in expected:
        assert words in str(refused.value)
    assert not labelled.exists() or list(labelled.iterdir()) == []


def test_a_folder_without_pictures_is_refused(tmp_path, labelled):
    with pytest.raises(LabelError, match="no usable picture.*no image files"):
        make_span(labelled, source(tmp_path / "empty", {"a.txt": "x"}), digit=3)


@pytest.mark.parametrize("kwargs, words", [
    ({"digit": 10}, "0..9"), ({"digit": -1}, "0..9"), ({}, "either"),
    ({"digit": 7, "name": "../escape"}, "cannot be a span name"),
    ({"digit": 7, "name": ".hidden"}, "cannot be a span name"),
    ({"digit": 7, "name": "with space"}, "cannot be a span name"),
])
def test_bad_arguments_are_refused(labelled, sevens, kwargs, words):
    with pytest.raises(LabelError, match=words):
        make_span(labelled, sevens, **kwargs)


def test_an_existing_span_name_is_refused(labelled, sevens):
    make_span(labelled, sevens, digit=7, name="mine")
    with pytest.raises(LabelError, match="span mine already exists"):
        make_span(labelled, sevens, digit=7, name="mine")


def test_a_picture_labelled_otherwise_in_a_span_taken_in_is_refused(tmp_path, labelled, sevens):
    make_span(labelled, sevens, digit=7, name="mine")
    src = source(tmp_path / "more", {"new.png": digit_png(50), "again.png": digit_png(2)})
    with pytest.raises(LabelError) as refused:
        make_span(labelled, src, digit=1, name="more")
    message = str(refused.value)
    assert "again.png labelled 1" in message and "7/b.PNG in span mine labelled 7" in message
    assert "Fix the label, or leave that file out" in message
    assert not (labelled / "more").exists()
    make_span(labelled, src, digit=7, name="more")  # the same label is fine: counted once later


def test_the_same_picture_with_two_labels_in_one_csv_is_refused(tmp_path, labelled):
    src = source(tmp_path / "src", {"a.png": digit_png(5), "copy.png": digit_png(5)})
    rows = [["a.png", "3"], ["copy.png", "8"]]
    with pytest.raises(LabelError, match=r"a\.png .*line 2.* labelled 3 and copy\.png .*line 3.* labelled 8"):
        make_span(labelled, src, labels=write_csv(tmp_path / "l.csv", rows))
    rows = [["a.png", "3"], ["copy.png", "3"]]
    span = make_span(labelled, src, labels=write_csv(tmp_path / "l.csv", rows), name="twice")
    assert len(span.files) == 2  # both kept; they count once in the labelled set
    assert len(labelled_set([span]).pictures) == 1


def test_a_command_killed_while_copying_leaves_no_span(labelled, sevens, monkeypatch):
    copies = []
    real_copy = shutil.copyfile

    def copy_then_die(src, dst):
        if len(copies) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C between two files
        copies.append(src)
        return real_copy(src, dst)

    monkeypatch.setattr(labels.shutil, "copyfile", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        make_span(labelled, sevens, digit=7, name="mine")
    assert list(labelled.iterdir()) == []
    assert list_spans(labelled) == []
    monkeypatch.setattr(labels.shutil, "copyfile", real_copy)
    assert len(make_span(labelled, sevens, digit=7, name="mine").files) == 3


def test_a_half_built_span_from_a_kill_is_not_a_span(labelled, sevens):
    write(labelled / ".mine.1234abcd.tmp" / "7" / "a.png", digit_png(1))  # what kill -9 leaves
    assert list_spans(labelled) == []


# Taking in

@pytest.mark.parametrize("change, words", [
    ("modify", "modified: 7/a.png"), ("delete", "missing: 7/sub/c.png"),
    ("add", "added: 7/extra.png"), ("move", "missing: 7/a.png; added: 1/a.png"),
])
def test_a_changed_span_is_refused_by_name(labelled, sevens, change, words):
    make_span(labelled, sevens, digit=7, name="mine")
    folder = labelled / "mine"
    if change == "modify":  # same size, one byte different
        data = (folder / "7/a.png").read_bytes()
        (folder / "7/a.png").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif change == "delete":
        (folder / "7/sub/c.png").unlink()
    elif change == "add":
        write(folder / "7/extra.png", digit_png(60))
    else:
        write(folder / "1/a.png", (folder / "7/a.png").read_bytes())
        (folder / "7/a.png").unlink()
    with pytest.raises(SpanChanged) as refused:
        take_in(folder)
    message = str(refused.value)
    assert "span mine has changed" in message and words in message
    assert "put new or corrected pictures in a new span with `digitflow label" in message


def test_a_restored_span_is_taken_in_again(labelled, sevens):
    span = make_span(labelled, sevens, digit=7, name="mine")
    original = (labelled / "mine/7/a.png").read_bytes()
    (labelled / "mine/7/a.png").write_bytes(b"changed")
    with pytest.raises(SpanChanged):
        take_in(labelled / "mine")
    (labelled / "mine/7/a.png").write_bytes(original)
    assert take_in(labelled / "mine").files == span.files


def test_a_changed_labels_csv_is_refused(tmp_path, labelled):
    src = source(tmp_path / "src", {"a.png": digit_png(1), "b.png": digit_png(2)})
    make_span(labelled, src, labels=write_csv(tmp_path / "l.csv", [["a.png", 1], ["b.png", 2]]), name="s")
    write_csv(labelled / "s" / "labels.csv", [["a.png", 1], ["b.png", 3]])
    with pytest.raises(SpanChanged, match="labels.csv changed"):
        take_in(labelled / "s")


def test_an_untouched_span_is_not_hashed_again(labelled, sevens, monkeypatch):
    make_span(labelled, sevens, digit=7, name="mine")
    monkeypatch.setattr(labels, "file_sha256", lambda path: pytest.fail(f"{path} was hashed again"))
    assert len(take_in(labelled / "mine").files) == 3


def test_a_span_made_by_hand_is_fixed_when_taken_in(labelled):
    folder = labelled / "byhand"
    for digit in (3, 8):
        for i in range(3):
            write(folder / str(digit) / f"{i}.png", digit_png(digit * 10 + i))
    span = take_in(folder)
    assert span.counts[3] == 3 and span.counts[8] == 3 and span.layout == "digits"
    written = (folder / "span.json").read_bytes()
    again = take_in(folder)
    assert again.files == span.files and (folder / "span.json").read_bytes() == written
    write(folder / "8" / "late.png", digit_png(99))
    with pytest.raises(SpanChanged, match="added: 8/late.png"):
        take_in(folder)


def test_a_hand_made_csv_span_keeps_unlabelled_pictures_out(labelled):
    folder = source(labelled / "csvhand", {"a.png": digit_png(1), "b.png": digit_png(2),
                                           "c.png": digit_png(3)})
    write_csv(folder / "labels.csv", [["a.png", 4], ["b.png", "skip"]])
    span = take_in(folder)
    assert [(f.path, f.label) for f in span.files] == [("a.png", 4)]
    assert span.skipped == 2 and set(span.unlabelled) == {"b.png", "c.png"}
    assert take_in(folder).files == span.files


def test_a_hand_made_span_with_both_layouts_is_ambiguous(labelled):
    folder = source(labelled / "both", {"7/a.png": digit_png(1), "b.png": digit_png(2)})
    write_csv(folder / "labels.csv", [["b.png", 2]])
    with pytest.raises(LabelError, match="ambiguous"):
        take_in(folder)
    assert not (folder / "span.json").exists()


def test_pictures_outside_the_digit_folders_are_refused_by_name(labelled):
    folder = source(labelled / "stray", {"7/a.png": digit_png(1), "loose.png": digit_png(2),
                                         "seven/b.png": digit_png(3)})
    with pytest.raises(LabelError, match=r"loose\.png, seven/b\.png not in a digit folder"):
        take_in(folder)


def test_list_spans_reports_every_span_and_its_problem(tmp_path, labelled, sevens):
    make_span(labelled, sevens, digit=7, name="b-good")
    make_span(labelled, source(tmp_path / "o", {"x.png": digit_png(70)}), digit=1, name="a-broken")
    (labelled / "a-broken" / "1" / "x.png").unlink()
    source(labelled / "c-stray", {"loose.png": digit_png(71)})
    statuses = list_spans(labelled)
    assert [s.name for s in statuses] == ["a-broken", "b-good", "c-stray"]
    assert statuses[0].span is None and "missing: 1/x.png" in statuses[0].problem
    assert statuses[1].problem is None and statuses[1].span.counts[7] == 3
    assert "loose.png" in statuses[2].problem
    assert str(statuses[1].span.summary()).startswith("span b-good: 3 pictures (0: 0, ")


# The labelled set

def test_labelled_set_counts_the_same_picture_once_and_leaves_out_conflicts(labelled):
    one = source(labelled / "one", {"3/a.png": digit_png(1), "3/b.png": digit_png(2),
                                    "5/c.png": digit_png(3)})
    two = source(labelled / "two", {"3/a-again.png": digit_png(1), "8/c-again.png": digit_png(3),
                                    "9/d.png": digit_png(4)})
    result = labelled_set([take_in(two), take_in(one)])
    assert result.spans == ("one", "two")
    assert sorted((c.where, c.label) for c in result.pictures) == \
        [("one/3/a.png", 3), ("one/3/b.png", 3), ("two/9/d.png", 9)]
    assert [d.where for d in result.duplicates] == ["two/3/a-again.png"]
    [conflict] = result.conflicts
    assert {(c.where, c.label) for c in conflict.copies} == \
        {("one/5/c.png", 5), ("two/8/c-again.png", 8)}
    assert "one/5/c.png (5)" in str(conflict) and "two/8/c-again.png (8)" in str(conflict)
    assert all(c.split == split_of(c.sha256) for c in result.pictures)


def test_the_fingerprint_changes_with_a_new_span_only(tmp_path, labelled, sevens):
    mine = make_span(labelled, sevens, digit=7, name="mine")
    before = labelled_set([mine]).fingerprint
    assert labelled_set([take_in(labelled / "mine")]).fingerprint == before
    more = make_span(labelled, source(tmp_path / "m", {"z.png": digit_png(80)}), digit=2, name="more")
    after = labelled_set([mine, more]).fingerprint
    assert after != before and after.key != before.key
    assert after.spans == ("mine", "more")



def test_the_fingerprint_is_the_content_key_of_each_splits_pairs(tmp_path, labelled):
    pictures = {f"{i}.png": digit_png(i) for i in range(40)}
    span = make_span(labelled, source(tmp_path / "src", pictures), digit=1, name="ones")
    chosen = labelled_set([span])
    for split, key in (("train", chosen.fingerprint.train), ("test", chosen.fingerprint.test)):
        pairs = sorted([c.sha256, c.label] for c in chosen.pictures if c.split == split)
        assert pairs and key == content_key(pairs)  # as versions before Arrow columns made it


def test_a_span_made_before_files_parquet_is_taken_in_as_it_is(labelled, sevens):
    span = make_span(labelled, sevens, digit=7, name="old")
    folder = labelled / "old"
    record = manifest(folder)  # its records moved back into span.json, as older versions wrote it
    (folder / "files.parquet").unlink()
    (folder / "span.json").write_text(json.dumps(record))
    written = (folder / "span.json").read_bytes()
    again = take_in(folder)
    assert again.files == span.files and again.counts == span.counts
    assert labelled_set([again]).fingerprint == labelled_set([span]).fingerprint
    assert (folder / "span.json").read_bytes() == written and not (folder / "files.parquet").exists()


# Preparing the pictures

def test_prepare_pictures_writes_inputs_and_a_row_per_file(tmp_path, labelled):
    pictures = {f"{i}.png": digit_png(i) for i in range(24)}
    pictures["broken.png"] = "a text file with a picture's name"
    span = make_span(labelled, source(tmp_path / "src", pictures), digit=4, name="fours")
    dup = make_span(labelled, source(tmp_path / "dup", {"same.png": digit_png(0)}), digit=4, name="dup")
    chosen = labelled_set([span, dup])
    prepared = prepare_pictures(chosen, labelled, tmp_path / "prepared" / chosen.fingerprint.key)

    table = pq.read_table(prepared.files["pictures"]).to_pylist()
    by_path = {(r["span"], r["path"]): r for r in table}
    assert len(table) == 26
    broken = by_path[("fours", "4/broken.png")]
    assert broken["status"] == "error" and "not an image" in broken["error"] and broken["row"] is None
    # The first copy by span name is kept; the other is reported and counted once.
    kept, again = by_path[("dup", "4/same.png")], by_path[("fours", "4/0.png")]
    assert (kept["status"], again["status"]) == ("ok", "duplicate")
    assert again["error"] == "same bytes as dup/4/same.png: counted once"
    assert [(b.span, b.path) for b in prepared.broken] == [("fours", "4/broken.png")]
    assert sum(prepared.train) + sum(prepared.test) == 24 and prepared.train[4] + prepared.test[4] == 24

    for split in ("train", "test"):
        x, y = np.load(prepared.files[f"x_{split}"]), np.load(prepared.files[f"y_{split}"])
        assert x.dtype == np.float32 and x.shape == (sum(getattr(prepared, split)), 28, 28)
        assert y.tolist() == [4] * len(x)
        for r in table:
            if r["status"] == "ok" and r["split"] == split:
                data = (labelled / r["span"] / r["path"]).read_bytes()
                assert r["split"] == split_of(r["sha256"])
                assert np.array_equal(x[r["row"]], preprocess(data))
    [fours] = [s for s in prepared.spans if s.name == "fours"]
    assert (fours.pictures, fours.broken, fours.duplicates, fours.by_digit[4]) == (25, 1, 1, 25)
    assert [p.name for p in prepared.folder.parent.iterdir()] == [chosen.fingerprint.key]


def test_prepare_pictures_reports_conflicts_in_the_table(labelled):
    source(labelled / "a", {"1/x.png": digit_png(1), "1/y.png": digit_png(2)})
    source(labelled / "b", {"7/x.png": digit_png(1)})
    chosen = labelled_set([s.span for s in list_spans(labelled)])
    prepared = prepare_pictures(chosen, labelled, labelled.parent / "out")
    table = pq.read_table(prepared.files["pictures"]).to_pylist()
    assert {(r["span"], r["path"]): r["status"] for r in table} == \
        {("a", "1/x.png"): "conflict", ("b", "7/x.png"): "conflict", ("a", "1/y.png"): "ok"}
    assert len(prepared.conflicts) == 1


def test_prepare_pictures_refuses_a_set_with_nothing_usable(tmp_path, labelled):
    source(labelled / "junk", {"3/a.png": "text", "3/b.png": b""})
    chosen = labelled_set([take_in(labelled / "junk")])
    out = tmp_path / "prepared"
    with pytest.raises(LabelError, match=r"no usable picture in spans junk(.|\n)*junk/3/b.png: empty"):
        prepare_pictures(chosen, labelled, out)
    assert not out.exists() and list(tmp_path.glob(".prepared*")) == []


def test_importing_labels_loads_no_framework(tmp_path):
    code = ("import sys, tasks.labels; "
            "print([m for m in ('prefect', 'tensorflow', 'pandas') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ})
    assert done.stdout.strip() == "[]"


def test_a_run_without_spans_does_not_import_pyarrow(tmp_path):
    """The cached MNIST-only rerun is mostly imports: it reads no span, so it loads no Arrow."""
    (tmp_path / "data" / "labelled").mkdir(parents=True)
    code = ("import sys; from pathlib import Path; from tasks.paths import Paths; "
            "from tasks.yours import your_digits; "
            f"print(your_digits(Paths(Path({str(tmp_path)!r})), False), 'pyarrow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "False"]
