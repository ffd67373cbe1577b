"""Scale raw uint8 pixels to float32 in [0, 1], as the tutorial does (÷255)."""

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.paths import Paths
from tasks.records import MnistCopy, Normalized
from tasks.store import atomic_path, cached_step, code_version, content_key


def normalize_images(x: np.ndarray) -> np.ndarray:
    # float32 straight from uint8: no float64 copy of 60,000 images on the way.
    return np.divide(x, np.float32(255), dtype=np.float32)


def normalize_dataset(raw: Path, out: Path, limit: int | None) -> None:
    with np.load(raw, allow_pickle=False) as npz:
        arrays = {
            "x_train": normalize_images(npz["x_train"][:limit]),
            "y_train": npz["y_train"][:limit],
            "x_test": normalize_images(npz["x_test"]),
            "y_test": npz["y_test"],
        }
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def normalized_dataset(paths: Paths, dataset: MnistCopy, limit: int | None,
                       refresh: bool) -> Normalized:
    key = content_key("normalize", dataset.fingerprint, limit, code_version(__name__))
    out = paths.normalized / f"mnist-{dataset.fingerprint}-{key}.npz"

    def produce() -> tuple[dict[str, Path], dict]:
        normalize_dataset(Path(dataset.path), out, limit)
        return {"arrays": out}, {"key": key, "limit": limit}

    return Normalized(key=key, step=cached_step(paths.cache / f"normalize-{key}.json", refresh,
                                                produce))


@task(name="normalize", cache_policy=NO_CACHE)
def normalize(paths: Paths, dataset: MnistCopy, limit: int | None, refresh: bool) -> Normalized:
    normalized = normalized_dataset(paths, dataset, limit, refresh)
    get_run_logger().info("normalized arrays: %s%s", normalized.arrays,
                          " (cached)" if normalized.step.cached else "")
    return normalized
