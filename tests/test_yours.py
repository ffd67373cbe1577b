"""Your digits beside MNIST's: how many times they repeat, and the validation split."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from support import write_pngs, yours_with
from tasks.labels import LabelError
from tasks.paths import Paths
from tasks.yours import MAX_REPEAT, repeats, split_validation, training_mix, your_digits


def test_a_few_hundred_labels_are_repeated_to_about_a_tenth_of_training():
    times = repeats(240, 48_000)
    assert 0.09 <= 240 * times / (48_000 + 240 * times) <= 0.11
    assert repeats(3, 48_000) == MAX_REPEAT  # a handful is not repeated without bound
    assert repeats(100_000, 48_000) == 1  # many labels need no repeating
    assert repeats(0, 48_000) == 0


def test_the_split_is_keras_validation_split():
    x, y = np.arange(10), np.arange(10)
    (xt, _), (xv, _) = split_validation(x, y, 0.2)
    assert list(xt) == list(range(8)) and list(xv) == [8, 9]


def test_without_spans_the_mix_is_mnist_exactly():
    mnist = (np.zeros((100, 28, 28), np.float32), np.zeros(100, np.uint8))
    train, validation, times = training_mix(mnist, None, 0.2, seed=1)
    assert times == 0 and len(train[0]) == 80 and len(validation[0]) == 20
    assert np.shares_memory(train[0], mnist[0])  # the same rows, not a copy


def test_your_pictures_are_repeated_shifted_beside_mnist_and_do_not_validate(tmp_path):
    mnist = (np.zeros((1000, 28, 28), np.float32), np.zeros(1000, np.uint8))
    yours = yours_with(tmp_path, 20)
    train, validation, times = training_mix(mnist, yours, 0.2, seed=1)
    assert len(validation[0]) == 200 and (validation[0] == 0).all()  # MNIST's last fifth
    assert times == repeats(20, 800) and len(train[0]) == 800 + 20 * times
    pictures = np.load(yours.step.path("x_train"))
    copies = train[0][800:].reshape(times, 20, 28, 28)
    assert np.array_equal(copies[0], pictures)  # the first copy as it is
    assert all(c.sum() == pytest.approx(pictures.sum()) for c in copies)  # moved, never cut
    assert not all(np.array_equal(c, pictures) for c in copies[1:])
    again, _, _ = training_mix(mnist, yours, 0.2, seed=1)
    assert np.array_equal(again[0], train[0])  # the same seed, the same copies


def hand_made_span(root: Path, name: str, digits: np.ndarray, labels: np.ndarray) -> Path:
    """A span made by copying a digit-folder tree into data/labelled/NAME."""
    span = root / "data" / "labelled" / name
    for digit in set(labels.tolist()):
        write_pngs(span / str(digit), digits[labels == digit], name=f"{name}-{{i}}.png", invert=True,
                   size=56)
    return span


def test_no_spans_is_mnist_alone(tmp_path):
    assert your_digits(Paths(tmp_path), refresh=False) is None


def test_a_span_of_one_digit_and_an_all_broken_one_are_taken_in_and_reported(tmp_path, mnist):
    paths = Paths(tmp_path)
    sevens = mnist["y_test"] == 7
    hand_made_span(tmp_path, "sevens", mnist["x_test"][sevens][:30], mnist["y_test"][sevens][:30])
    broken = paths.labelled / "broken" / "3"
    broken.mkdir(parents=True)
    for i in range(3):
        (broken / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really" + bytes([i]))
    yours = your_digits(paths, refresh=False)
    assert yours.spans == ("broken", "sevens")
    assert yours.train_images + yours.test_images == 30
    assert len(yours.broken) == 3 and all(b.startswith("broken/3/") for b in yours.broken)
    assert any(line.startswith("span broken: 3 pictures") and "3 broken" in line
               for line in yours.summaries)
    again = your_digits(paths, refresh=False)
    assert again.step.cached and again.key == yours.key


def test_an_empty_span_or_only_broken_pictures_refuse_the_run_and_lose_nothing(tmp_path, mnist):
    paths = Paths(tmp_path)
    (paths.labelled / "empty").mkdir(parents=True)
    with pytest.raises(LabelError, match="span empty holds no labelled picture"):
        your_digits(paths, refresh=False)
    (paths.labelled / "empty").rmdir()
    only = paths.labelled / "only-broken" / "1"
    only.mkdir(parents=True)
    (only / "a.png").write_bytes(b"nothing")
    with pytest.raises(LabelError, match="no usable picture"):
        your_digits(paths, refresh=False)
    assert (only / "a.png").read_bytes() == b"nothing"  # the span stays as it was


def test_a_conflict_across_spans_is_left_out_with_both_paths(tmp_path, mnist):
    paths = Paths(tmp_path)
    digits, labels = mnist["x_test"][:20], mnist["y_test"][:20]
    hand_made_span(tmp_path, "first", digits, labels)
    second = paths.labelled / "second" / str((int(labels[0]) + 1) % 10)
    second.mkdir(parents=True)
    shutil.copy(next((paths.labelled / "first" / str(labels[0])).glob("first-0.png")),
                second / "copy.png")
    yours = your_digits(paths, refresh=False)
    assert yours.train_images + yours.test_images == 19
    assert len(yours.conflicts) == 1
    assert "first/" in yours.conflicts[0] and "second/" in yours.conflicts[0]
