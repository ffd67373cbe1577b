"""Your digits beside MNIST's: how many times they repeat, and the validation split."""

import numpy as np

from tasks.records import EvaluationSet, StepRecord, YourDigits
from tasks.store import write_manifest
from tasks.yours import MAX_REPEAT, repeats, split_validation, training_mix


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


def yours_with(tmp_path, n: int) -> YourDigits:
    x = np.full((n, 28, 28), 0.5, dtype=np.float32)
    y = np.arange(n, dtype=np.uint8) % 10
    files = {}
    for name, array in (("x_train", x), ("y_train", y), ("x_test", x[:2]), ("y_test", y[:2])):
        files[name] = tmp_path / f"{name}.npy"
        np.save(files[name], array)
    step = write_manifest(tmp_path / "m.json", files, {})
    test = EvaluationSet("yours", "fp", "k", files["x_test"], files["y_test"])
    return YourDigits(key="k", spans=("s",), train_images=n, test_images=2, summaries=(),
                      conflicts=(), broken=(), test_set=test, step=step)


def test_without_spans_the_mix_is_mnist_exactly():
    mnist = (np.zeros((100, 28, 28), np.float32), np.zeros(100, np.uint8))
    train, validation, times = training_mix(mnist, None, 0.2)
    assert times == 0 and len(train[0]) == 80 and len(validation[0]) == 20
    assert np.shares_memory(train[0], mnist[0])  # the same rows, not a copy


def test_your_pictures_validate_too_and_repeat_only_in_training(tmp_path):
    mnist = (np.zeros((1000, 28, 28), np.float32), np.zeros(1000, np.uint8))
    train, validation, times = training_mix(mnist, yours_with(tmp_path, 20), 0.2)
    assert len(validation[0]) == 200 + 4  # MNIST's last fifth and yours
    assert (validation[0][-4:] == 0.5).all() and (validation[0][:200] == 0).all()
    assert times == repeats(16, 800) and len(train[0]) == 800 + 16 * times
    assert (train[0][800:] == 0.5).all()
