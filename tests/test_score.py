"""Batch scoring: which files are found, one row per file, bad files as error rows, the schema."""

import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import wait
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.models import build_seed
from tasks.files import list_images
from tasks.inference import load_scoring_model
from tasks import score
from tasks.score import SCHEMA, DatasetSink, score_chunk, score_files, summarize, write_table
from tasks.modelfiles import model_version
from tasks.store import file_sha256
from support import encode, loaded_modules


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_seed().save(path)
    return path


@pytest.fixture
def folder(tmp_path, mnist) -> Path:
    root = tmp_path / "inbox"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.png").write_bytes(encode(mnist["x_test"][0]))
    (root / "sub" / "B.PNG").write_bytes(encode(mnist["x_test"][1]))
    (root / "sub" / "deeper" / "c.Jpeg").write_bytes(encode(mnist["x_test"][2]))  # wrong extension
    (root / "notes.txt").write_text("ignored")
    (root / "empty.gif").write_bytes(b"")
    (root / "broken.webp").write_bytes(b"RIFF....WEBPVP8 garbage")
    outside = tmp_path / "secret.png"
    outside.write_bytes(encode(mnist["x_test"][3]))
    os.symlink(outside, root / "link-out.png")
    os.symlink(root / "a.png", root / "link-in.png")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "dir-out")
    os.symlink(root, root / "sub" / "loop")  # inside the folder: neither listed nor entered
    return root


def test_finds_images_by_extension_in_any_case_recursively(folder):
    found = {f.path: f.problem for f in list_images(folder)}
    assert sorted(found) == ["a.png", "broken.webp", "dir-out", "empty.gif", "link-in.png",
                             "link-out.png", "sub/B.PNG", "sub/deeper/c.Jpeg"]
    assert found["link-out.png"] == found["dir-out"] == \
        "symbolic link leads outside the folder; not followed"
    assert found["link-in.png"] is None


def test_scans_and_phone_photos_are_listed_and_heif_says_what_to_do(tmp_path, mnist, model_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "scan.PGM").write_bytes(encode(mnist["x_test"][0], "PPM"))
    (tmp_path / "x" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(99))
    (tmp_path / "x" / "scan.pdf").write_bytes(b"%PDF-1.4")  # not a picture: not listed
    rows = score_files(list_images(tmp_path / "x"), model_path).to_pandas().set_index("path")
    assert sorted(rows.index) == ["IMG_0001.HEIC", "scan.PGM"]
    assert rows.loc["scan.PGM", "status"] == "ok"
    assert rows.loc["IMG_0001.HEIC", "error"].startswith("a HEIF/HEIC photo")
    assert "convert it to JPEG or PNG" in rows.loc["IMG_0001.HEIC", "error"]
    assert len(rows.loc["IMG_0001.HEIC", "sha256"]) == 64


def test_non_utf8_file_names_are_scored_and_stored_printably(tmp_path, mnist):
    name = b"caf\xe9-\xff.png"  # Latin-1 bytes, not UTF-8
    (tmp_path / "x").mkdir()
    with open(os.path.join(os.fsencode(tmp_path / "x"), name), "wb") as f:
        f.write(encode(mnist["x_test"][0]))
    [found] = list_images(tmp_path / "x")
    assert found.path == "caf\\xe9-\\xff.png"
    found.path.encode("utf-8")  # storable in Parquet


def test_a_chunk_scored_in_pieces_gives_what_it_gives_in_one(folder, model_path, monkeypatch):
    files = list_images(folder)
    whole = score_chunk(files, model_path)
    monkeypatch.setattr(score, "PIECE", 3)  # 8 files: pieces of 3, 3 and 2, errors among them
    pieces = score_chunk(files, model_path)
    assert pieces.table.drop(["scored_at"]).equals(whole.table.drop(["scored_at"]))
    assert whole.inputs.keys() == pieces.inputs.keys() and len(whole.inputs["ink"]) == 4
    # (the same statistics, up to how BLAS rounds a matrix product of another size)
    assert all(np.allclose(whole.inputs[k], pieces.inputs[k], rtol=1e-12) for k in whole.inputs)
    assert len(score_chunk([], model_path).table) == 0


def test_pieces_read_by_the_reader_processes_while_others_are_predicted(tmp_path, mnist, model_path,
                                                                        monkeypatch):
    from tasks import files as reading

    for i in range(2 * reading.PARALLEL_FROM + 50):
        (tmp_path / f"{i:04d}.png").write_bytes(encode(mnist["x_test"][i]) if i % 97 else b"broken")
    files = list_images(tmp_path)
    try:
        whole = score_chunk(files, model_path)  # one piece, by the readers
        monkeypatch.setattr(score, "PIECE", reading.PARALLEL_FROM)  # two by the readers, one in-process
        pieces = score_chunk(files, model_path)
    finally:
        reading.stop_readers()
    assert pieces.table.drop(["scored_at"]).equals(whole.table.drop(["scored_at"]))
    assert pieces.table["path"].to_pylist() == [f.path for f in files]
    assert pieces.table["error"].null_count == len(files) - 5


def test_progress_moves_with_each_piece_and_counts_each_file_once(folder, model_path, monkeypatch):
    import tasks.progress

    steps = []
    monkeypatch.setattr(tasks.progress, "_open", [steps.append])  # a progress open in this process
    monkeypatch.setattr(score, "PIECE", 3)
    files = list_images(folder)  # 8
    assert score_chunk(files, model_path).shown == 8 and steps == [3, 3, 2]
    monkeypatch.setattr(tasks.progress, "_open", [])  # none (a Dask worker's case)
    assert score_chunk(files, model_path).shown == 0


def test_the_ui_progress_is_updated_at_most_once_a_second_and_at_the_end(monkeypatch):
    import tasks.progress

    clock, sent = [100.0], []
    monkeypatch.setattr(tasks.progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(tasks.progress, "create_progress_artifact", lambda **_: "artifact")
    monkeypatch.setattr(tasks.progress, "update_progress_artifact",
                        lambda artifact, progress: sent.append(progress))
    with tasks.progress.progress(10, "scoring"):
        for second in (0.3, 0.6, 1.2, 1.5, 2.4):  # what pieces report, as they finish
            clock[0] = 100 + second
            assert tasks.progress.advanced(2)
    assert sent == [60.0, 100.0, 100.0]  # at 1.2 s and 2.4 s; then on closing
    assert not tasks.progress.advanced(2)


def test_one_row_per_file_with_clear_errors(folder, model_path, tmp_path):
    table = score_files(list_images(folder), model_path)
    rows = table.to_pandas().set_index("path")
    assert rows.loc["a.png", "status"] == "ok" and 0 <= rows.loc["a.png", "label"] <= 9
    assert rows.loc["sub/deeper/c.Jpeg", "status"] == "ok"  # content counts, not the name
    assert rows.loc["empty.gif", "error"] == "empty file"
    assert rows.loc["broken.webp", "error"].startswith("truncated or damaged image")
    assert pd.isna(rows.loc["link-out.png", "sha256"])  # never read
    errors = rows[rows["status"] == "error"]
    assert errors["label"].isna().all() and errors["confidence"].isna().all()
    ok = rows[rows["status"] == "ok"]
    probs = ok[[f"prob_{d}" for d in range(10)]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert np.allclose(ok["confidence"], probs.max(axis=1))

    write_table([table], tmp_path / "out" / "p.parquet")
    table = pq.read_table(tmp_path / "out" / "p.parquet")
    assert table.schema.equals(SCHEMA)
    assert table.num_rows == 8
    assert table.column("label").null_count == 4  # 2 bad files + 2 links outside
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["p.parquet"]  # no temp left over


def test_text_bombs_and_huge_files_are_error_rows_with_their_reasons(folder, model_path, mnist,
                                                                      monkeypatch):
    import hashlib

    import tasks.files

    (folder / "letter.png").write_text("Dear digitflow, this is not a picture.")
    (folder / "bomb.png").write_bytes(encode(np.zeros((200, 200), dtype=np.uint8)))
    (folder / "huge.bmp").write_bytes(b"BM" + bytes(5000))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # Pillow's limit and ours, scaled down
    monkeypatch.setattr(tasks.files, "MAX_FILE_BYTES", 4096)
    rows = score_files(list_images(folder), model_path).to_pandas().set_index("path")
    assert rows.loc["letter.png", "error"] == \
        "not an image Pillow can read (unknown or corrupt format)"
    assert rows.loc["bomb.png", "error"].startswith("refused as a decompression bomb")
    assert rows.loc["huge.bmp", "error"] == "file larger than 0 MiB; not an image to score"
    assert rows.loc["huge.bmp", "sha256"] == hashlib.sha256((folder / "huge.bmp").read_bytes()).hexdigest()
    assert rows.loc["a.png", "status"] == "ok"


def test_files_are_read_whole_where_the_file_system_gives_short_reads(folder, model_path,
                                                                      monkeypatch):
    import tasks.files

    whole = score_files(list_images(folder), model_path).drop(["scored_at"])
    read = os.read
    monkeypatch.setattr(tasks.files.os, "read", lambda fd, n: read(fd, min(n, 100)))  # as FUSE may
    assert score_files(list_images(folder), model_path).drop(["scored_at"]).equals(whole)
    assert tasks.files.read_bytes(str(folder / "a.png"), 150) == (folder / "a.png").read_bytes()[:150]


def test_unreadable_file_is_an_error_row(folder, model_path):
    os.symlink(folder / "gone.png", folder / "dangling.png")  # inside the folder, but missing
    rows = score_files(list_images(folder), model_path).to_pandas().set_index("path")
    assert rows.loc["dangling.png", "error"] == "cannot read file: No such file or directory"


def test_file_without_read_permission_is_an_error_row(mnist):
    """As root permissions are not enforced, so then the check runs as `nobody` in a user
    namespace of its own (unprivileged), where they are. A readable file beside it is the control."""
    base = Path(tempfile.mkdtemp())  # not under pytest's tmp_path, which `nobody` cannot enter
    try:
        base.chmod(0o755)
        for name, mode in (("open.png", 0o644), ("secret.png", 0)):
            (base / name).write_bytes(encode(mnist["x_test"][0]))
            (base / name).chmod(mode)
        code = ("import sys; from tasks.files import ImageFile, read_image; "
                "print([read_image(ImageFile(p, p))[2] for p in sys.argv[1:]])")
        command = [sys.executable, "-c", code, str(base / "open.png"), str(base / "secret.png")]
        if os.geteuid() == 0:
            command = ["unshare", "--user", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
        if done.returncode and "unshare:" in done.stderr:
            pytest.skip(f"needs an unprivileged user namespace: {done.stderr.strip()}")
        assert done.stdout.strip() == "[None, 'cannot read file: Permission denied']", done.stderr
    finally:
        shutil.rmtree(base)


def test_version_survives_save_and_load(tmp_path):
    # The version recorded at training must be the one the scorer reports.
    model = build_seed()
    model.save(tmp_path / "m.keras")
    assert load_scoring_model(tmp_path / "m.keras").version == model_version(model)


def test_summary_counts_and_accuracy_against_labels(folder, model_path, tmp_path):
    table = score_files(list_images(folder), model_path)
    labels = tmp_path / "labels.csv"
    truth = table.to_pandas().query("status == 'ok'")[["path", "label"]].astype({"label": int})
    truth.to_csv(labels, index=False)
    summary = summarize(table, labels)
    assert summary["scored"] == 4 and summary["errors"] == 4
    assert summary["accuracy"] == 1.0 and summary["labelled"] == 4
    assert summary["error_reasons"]["symbolic link leads outside the folder; not followed"] == 2


def test_reading_in_worker_processes_gives_the_same_rows_in_order(tmp_path, mnist, monkeypatch):
    from tasks import files as reading

    for i in range(reading.PARALLEL_FROM + 50):
        (tmp_path / f"{i:04d}.png").write_bytes(encode(mnist["x_test"][i]))
    (tmp_path / "0100.png").write_bytes(b"")  # an error row in the middle keeps its place
    found = list_images(tmp_path)
    parallel = reading.read_images(found)
    reading.stop_readers()
    monkeypatch.setattr(reading, "PARALLEL_FROM", 10**9)
    serial = reading.read_images(found)
    assert [r[0] for r in parallel] == [r[0] for r in serial]
    assert [r[2] for r in parallel] == [r[2] for r in serial]
    assert parallel[100][2] == "empty file"
    for (_, a, _), (_, b, _) in zip(parallel, serial):
        assert (a is None and b is None) or np.array_equal(a, b)


def test_reader_processes_yield_the_cpu_to_the_command_and_prefects_server():
    from tasks import files as reading

    reading.stop_readers()
    try:
        niceness = reading.worker_pool().submit(os.nice, 0).result(timeout=120)
    finally:
        reading.stop_readers()
    assert niceness == min(os.nice(0) + reading.READER_NICENESS, 19)


def same_rows(got: list[tuple], expected: list[tuple]) -> bool:
    return all(a[0] == b[0] and a[2] == b[2] and (a[1] is None and b[1] is None or np.array_equal(a[1], b[1]))
               for a, b in zip(got, expected, strict=True))


def test_what_was_read_ahead_is_what_reading_gives_and_a_changed_file_is_read_again(tmp_path, mnist):
    from tasks import files as reading

    for i in range(reading.PARALLEL_FROM + 50):
        (tmp_path / f"{i:04d}.png").write_bytes(encode(mnist["x_test"][i]))
    (tmp_path / "0007.png").write_bytes(b"")
    found = list_images(tmp_path)
    try:
        reading.read_ahead(tmp_path, limit=200)
        ahead = reading._ahead
        ahead.listing.join()
        assert len(ahead.read) == 200  # the first 200 in the flow's order, not the rest
        batch, _ = ahead.read[found[3].location]
        batch.result()
        (tmp_path / "0003.png").write_bytes(encode(mnist["x_test"][1000]))  # changed since
        os.utime(tmp_path / "0003.png", ns=(1, 1))
        got = reading.read_images(found)
        assert not ahead.read  # every result read ahead was taken
    finally:
        reading.stop_readers()
    expected = [reading.read_image(f) for f in found]
    assert same_rows(got, expected)
    assert got[7][2] == "empty file" and got[3][0] == file_sha256(tmp_path / "0003.png")


def test_a_folder_too_small_for_reader_processes_starts_none(tmp_path, mnist):
    from tasks import files as reading

    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(encode(mnist["x_test"][i]))
    reading.stop_readers()
    reading.read_ahead(tmp_path)
    try:
        reading._ahead.listing.join()
        assert reading._pool is None
        found = list_images(tmp_path)
        assert same_rows(reading.read_images(found), [reading.read_image(f) for f in found])
        assert reading._pool is None
    finally:
        reading.stop_readers()


def test_stopping_the_readers_cancels_the_read_ahead_they_have_not_started(tmp_path, mnist):
    """A run that fails early (an unwritable output, say) exits without reading the folder."""
    from tasks import files as reading

    for i in range(20 * reading.AHEAD_BATCH):
        (tmp_path / f"{i:04d}.png").write_bytes(encode(mnist["x_test"][i]))
    reading.read_ahead(tmp_path)
    ahead = reading._ahead
    reading.stop_readers()
    batches = {id(future): future for future, _ in ahead.read.values()}.values()
    wait(batches, timeout=60)  # the pool cancels in its own thread
    assert len(batches) == 20 and sum(f.cancelled() for f in batches) >= 10
    assert reading._ahead is None and reading._pool is None


def test_incremental_scoring_skips_what_this_model_already_scored(folder, model_path, tmp_path):
    sink = DatasetSink(tmp_path / "dataset")
    version = load_scoring_model(model_path).version
    files = list_images(folder)
    assert sink.select(files, version) == files  # an empty dataset: everything is new
    done = {"a.png", "broken.webp"}  # one scored, one an error row: both are recorded
    write_table([score_files([f for f in files if f.path in done], model_path)],
                sink.part("run-one", 0))
    remaining = sink.select(files, version)
    same_bytes_as_a = "link-in.png"  # content already scored, under another name: skipped too
    assert [f.path for f in remaining] == \
        [f.path for f in files if f.path not in done | {same_bytes_as_a}]

    (folder / "a.png").write_bytes((folder / "sub" / "B.PNG").read_bytes())  # changed content
    assert "a.png" in [f.path for f in sink.select(list_images(folder), version)]


def test_a_new_model_version_rescores_everything(folder, model_path, tmp_path):
    sink = DatasetSink(tmp_path / "dataset")
    table = score_files(list_images(folder), model_path)
    table = table.set_column(table.schema.get_field_index("model_version"), "model_version",
                             pa.array(["someoldmodel"] * len(table)))
    write_table([table], sink.part("old-run", 0))
    assert len(sink.select(list_images(folder), load_scoring_model(model_path).version)) == len(table)


def test_scoring_a_chunk_and_writing_its_part_loads_no_pandas(folder, model_path, tmp_path):
    """What a Dask worker runs: read, predict, write a dataset's part (the summary is the flow's).
    Without pandas, which pyarrow's pa.array imports, a worker stays under 300 MB (issue #14)."""
    load_scoring_model(model_path)  # its light file made here, with Keras
    code = ("import sys; from pathlib import Path; from tasks.files import list_images; "
            "from tasks.score import score_files, write_table; "
            "table = write_table([score_files(list_images(Path(sys.argv[1])), Path(sys.argv[2]))], "
            "Path(sys.argv[3])); print(table['status'].to_pylist().count('ok'))")
    printed, heavy = loaded_modules(code, {"pandas", "tensorflow", "keras"}, folder, model_path,
                                    tmp_path / "p.parquet")
    assert printed == ["4"] and heavy == []
    assert pq.read_table(tmp_path / "p.parquet").schema.equals(SCHEMA)


def test_table_columns_built_from_buffers_keep_nulls_and_any_text():
    from tasks.score import numbers, strings

    assert strings(["a", None, "", "é", "bad \udcff"]).to_pylist() == ["a", None, "", "é", "bad \\udcff"]
    valid = np.arange(11) % 3 != 0
    assert numbers(np.arange(11) % 2 == 0, pa.bool_(), valid).to_pylist() == \
        [None if not v else i % 2 == 0 for i, v in enumerate(valid)]
    assert numbers(np.arange(4, dtype=np.float32), pa.float32()).to_pylist() == [0, 1, 2, 3]
