"""The cache: hits on intact outputs, recomputes anything deleted or damaged, writes atomically."""

import os

import pytest

from tasks import store
from tasks.store import atomic_path, cached_step, content_key, read_manifest


def producer(path, calls):
    def produce():
        calls.append(1)
        path.write_bytes(b"result " * 1000)
        return {"out": path}, {"answer": 42}
    return produce


def test_second_call_is_a_hit(tmp_path):
    calls = []
    first = cached_step(tmp_path / "m.json", False, producer(tmp_path / "out.bin", calls))
    second = cached_step(tmp_path / "m.json", False, producer(tmp_path / "out.bin", calls))
    assert len(calls) == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.info["answer"] == 42 and second.path("out") == tmp_path / "out.bin"


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_damaged_output_is_recomputed_not_loaded(tmp_path, damage):
    calls, out = [], tmp_path / "out.bin"
    cached_step(tmp_path / "m.json", False, producer(out, calls))
    if damage == "delete":
        out.unlink()
    elif damage == "truncate":
        out.write_bytes(out.read_bytes()[:100])
    else:
        out.write_bytes(b"X" + out.read_bytes()[1:])  # same size, other content
    assert read_manifest(tmp_path / "m.json") is None
    again = cached_step(tmp_path / "m.json", False, producer(out, calls))
    assert len(calls) == 2 and not again.cached


def test_an_untouched_output_is_not_read_again(tmp_path, monkeypatch):
    cached_step(tmp_path / "m.json", False, producer(tmp_path / "out.bin", []))
    monkeypatch.setattr(store, "file_sha256", lambda path: pytest.fail(f"{path} was hashed again"))
    assert read_manifest(tmp_path / "m.json").info["answer"] == 42


def test_a_rewrite_that_restores_size_and_mtime_is_still_caught(tmp_path):
    out = tmp_path / "out.bin"
    cached_step(tmp_path / "m.json", False, producer(out, []))
    before = out.stat()
    out.write_bytes(b"X" + out.read_bytes()[1:])
    os.utime(out, ns=(before.st_atime_ns, before.st_mtime_ns))  # the ctime still moves
    assert read_manifest(tmp_path / "m.json") is None


def test_refresh_recomputes(tmp_path):
    calls = []
    cached_step(tmp_path / "m.json", False, producer(tmp_path / "out.bin", calls))
    cached_step(tmp_path / "m.json", True, producer(tmp_path / "out.bin", calls))
    assert len(calls) == 2


def test_corrupt_manifest_is_a_miss(tmp_path):
    (tmp_path / "m.json").write_text("{half")
    assert read_manifest(tmp_path / "m.json") is None


def test_failed_write_leaves_nothing_behind(tmp_path):
    final = tmp_path / "table.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half a table")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_content_key_depends_on_every_part():
    assert content_key("a", {"x": 1}) == content_key("a", {"x": 1})
    assert content_key("a", {"x": 1}) != content_key("a", {"x": 2})
    assert content_key("a", {"x": 1, "y": 2}) == content_key("a", {"y": 2, "x": 1})
