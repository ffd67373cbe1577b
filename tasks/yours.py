"""Your digits in training: every labelled span taken in, prepared as scoring prepares pictures,
split by content into training and your own test set, and mixed into MNIST's training images.
"""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.paths import Paths
from tasks.records import EvaluationSet, Normalized, YourDigits
from tasks.store import cached_step, code_version, content_key, read_json

# Your training pictures are repeated until they are about this share of the rows a model is fit
# on: 300 labels beside 48,000 MNIST images are 0.6 % of the gradient and barely move the model;
# at 10 % they teach it a new hand without crowding out MNIST. Every copy but the first is
# shifted by up to SHIFT pixels, so the copies teach shapes, not 25 identical images (measured
# with the seed preset, 244 optdigits pictures repeated 25×: other writers 0.939 plain, 0.957
# shifted; MNIST 0.979 and 0.981; bench/mix.py, docs/BENCHMARKS.md).
YOURS_SHARE = 0.10
MAX_REPEAT = 30  # beyond this a small span is memorised rather than learnt
SHIFT = 2  # pixels, as the tuned and cnn presets' RandomTranslation(0.08) shifts MNIST


def your_digits(paths: Paths, refresh: bool, log: Callable[[str], None] = print) -> YourDigits | None:
    """Every span under data/labelled, prepared; None when there is none. A span that changed
    since it was taken in (or cannot be taken in at all) stops the run, by name."""
    if not paths.labelled.is_dir() or not any(paths.labelled.iterdir()):
        return None  # and a cached MNIST-only run never imports pyarrow, which tasks.labels does
    from tasks.labels import LabelError, labelled_set, list_spans, prepare_pictures

    statuses = list_spans(paths.labelled)
    problems = [s.problem for s in statuses if s.problem]
    if problems:
        raise LabelError("cannot take in the labelled spans:\n  " + "\n  ".join(problems))
    if not statuses:
        return None
    labelled = labelled_set([s.span for s in statuses])
    key = content_key("yours", labelled.fingerprint.key,
                      code_version(__name__, "tasks.labels", "tasks.images", "tasks.files"))
    out = paths.prepared_labels / key

    def produce() -> tuple[dict[str, Path], dict]:
        prepared = prepare_pictures(labelled, paths.labelled, out)
        return prepared.files, {
            "key": key, "spans": list(labelled.spans), "test_set": labelled.fingerprint.test,
            "train_by_digit": list(prepared.train), "test_by_digit": list(prepared.test),
            "summaries": [str(s) for s in prepared.spans],
            "conflicts": [str(c) for c in prepared.conflicts],
            "broken": [f"{b.span}/{b.path}: {b.error}" for b in prepared.broken]}

    step = cached_step(paths.cache / f"yours-{key}.json", refresh, produce)
    info = step.info
    for line in [*info["summaries"], *(f"left out: {c}" for c in info["conflicts"])]:
        log(line)
    return YourDigits(key=key, spans=tuple(info["spans"]), train_images=sum(info["train_by_digit"]),
                      test_images=sum(info["test_by_digit"]), summaries=tuple(info["summaries"]),
                      conflicts=tuple(info["conflicts"]), broken=tuple(info["broken"]), step=step,
                      test_set=EvaluationSet(name="yours", fingerprint=info["test_set"], key=key,
                                             x=step.path("x_test"), y=step.path("y_test")))


def dropped_spans(paths: Paths, yours: YourDigits | None) -> list[str]:
    """Spans the champion was trained on that are gone now: this retrain leaves them out."""
    champion = read_json(paths.champion) or {}
    metadata = read_json(paths.models / str(champion.get("model_version")) / "metadata.json")
    present = set(yours.spans) if yours else set()
    return [name for name in (metadata or {}).get("spans", []) if name not in present]


def repeats(yours: int, mnist: int) -> int:
    """How many times your training pictures are repeated (see YOURS_SHARE)."""
    if yours == 0:
        return 0
    return max(1, min(MAX_REPEAT, math.ceil(YOURS_SHARE * mnist / ((1 - YOURS_SHARE) * yours))))


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[tuple, tuple]:
    """(training, validation) as Keras's validation_split makes them: the last rows validate."""
    split = math.ceil(len(x) * (1 - fraction))
    return (x[:split], y[:split]), (x[split:], y[split:])


def shifted(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each 28×28 picture moved by up to SHIFT pixels each way, the border filled with black."""
    padded = np.pad(x, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT)))
    out = np.empty_like(x)
    for i, (dy, dx) in enumerate(rng.integers(0, 2 * SHIFT + 1, (len(x), 2))):
        out[i] = padded[i, dy:dy + x.shape[1], dx:dx + x.shape[2]]
    return out


def mix_key(normalized: Normalized, yours: YourDigits | None) -> str | list[str]:
    """What a fit learns from, for its cache key. Without spans it is what it always was: the
    same data and settings, the same model."""
    return normalized.key if yours is None else [normalized.key, yours.key]


def mix_record(mnist_rows: int, yours: YourDigits | None, repeats: int) -> dict:
    """A fit's data as its model's record says it (train-digits and sweep trials alike)."""
    return {"train_images": mnist_rows + (yours.train_images if yours else 0),
            "spans": list(yours.spans) if yours else [], "your_repeats": repeats}


def training_mix(mnist: tuple[np.ndarray, np.ndarray], yours: YourDigits | None,
                 fraction: float, seed: int) -> tuple[tuple, tuple, int]:
    """(training, validation, repeats): MNIST's training images split as the tutorial's
    validation_split=0.2 does, then all your training pictures repeated beside MNIST's fitting
    part (each copy but the first shifted). Validation is MNIST's alone: your pictures are too few
    to spare, and your own test set measures the model on them. Without spans: exactly MNIST's."""
    train, validation = split_validation(*mnist, fraction)
    if yours is None or yours.train_images == 0:
        return train, validation, 0
    x, y = np.load(yours.step.path("x_train")), np.load(yours.step.path("y_train"))
    times = repeats(len(x), len(train[0]))
    rng = np.random.default_rng(seed)
    copies = [x] + [shifted(x, rng) for _ in range(times - 1)]
    return (np.concatenate([train[0], *copies]), np.concatenate([train[1], *[y] * times])), \
        validation, times


@task(name="take-in-labels", cache_policy=NO_CACHE)
def take_in_labels(paths: Paths, refresh: bool) -> YourDigits | None:
    logger = get_run_logger()
    yours = your_digits(paths, refresh, log=logger.info)
    for name in dropped_spans(paths, yours):
        logger.warning("span %s, which the champion was trained on, is gone from %s: this retrain "
                       "leaves it out", name, paths.labelled)
    if yours is None:
        logger.info("no labelled spans in %s: training on MNIST alone", paths.labelled)
    else:
        logger.info("your digits: %d for training, %d in your test set, from %s%s",
                    yours.train_images, yours.test_images, ", ".join(yours.spans),
                    " (cached)" if yours.step.cached else "")
    return yours
