"""The sweep's grid, trial table and settings (the sweep flow itself runs in test_cluster)."""

import numpy as np
import pytest

from support import yours_with
from tasks.paths import Paths
from tasks.records import Normalized, StepRecord, TrainedModel, Trial
from tasks.settings import SweepSettings, parse_hidden
from tasks.store import write_manifest
from tasks.sweep import best_trial, fit_trial, trained_trial, trial_grid, trials_table


def test_hidden_sizes_parse_and_bad_ones_say_how_to_write_them():
    assert parse_hidden("256-64") == (256, 64) and parse_hidden("10") == (10,)
    for bad in ("", "128-", "a-b", "0-32", "-5"):
        with pytest.raises(ValueError, match="like 128-32"):
            parse_hidden(bad)


def test_grid_is_every_combination_numbered_in_order():
    grid = trial_grid(["128-32", "256-64"], [32, 128], [1e-3, 3e-3], [5])
    assert len(grid) == 8 and [t["trial"] for t in grid] == list(range(8))
    assert len({(t["hidden"], t["batch_size"], t["learning_rate"]) for t in grid}) == 8


def test_settings_refuse_a_bad_grid_before_anything_trains():
    with pytest.raises(ValueError, match="like 128-32"):
        SweepSettings(hidden=["128x32"])
    with pytest.raises(ValueError, match="learning rates"):
        SweepSettings(learning_rates=[5.0])
    with pytest.raises(ValueError):
        SweepSettings(batch_sizes=[])


def test_trial_table_puts_the_best_validation_accuracy_first():
    def trial(number, val):
        trained = TrainedModel(version=f"v{number}", preset=None, architecture="dense 8",
                               settings={"hidden": "8", "batch_size": 32, "learning_rate": 1e-3,
                                         "epochs": 1, "seed": 1},
                               train_images=10, params=10, epochs_run=1, fit_seconds=1.0,
                               step=StepRecord(files={}))
        return Trial(number=number, trained=trained, val_accuracy=val, val_loss=1 - val,
                     train_accuracy=val, process="h:1")

    trials = [trial(0, 0.90), trial(1, 0.95), trial(2, 0.95)]
    table = trials_table(trials)
    assert list(table["trial"]) == [1, 2, 0]  # ties: the earlier trial first
    assert "seed" not in table.columns
    assert best_trial(trials).number == 1


def test_a_trial_is_the_seed_network_with_other_sizes_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.random((200, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 200).astype(np.uint8)
    trial = {"trial": 0, "hidden": "128-32", "batch_size": 32, "learning_rate": 1e-3, "epochs": 1}
    model, history = fit_trial(x, y, trial, seed=3, log=lambda _: None)
    assert model.count_params() == 104_938  # the tutorial's sizes give the tutorial's network
    again, history_again = fit_trial(x, y, trial, seed=3, log=lambda _: None)
    assert history.equals(history_again)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights()))


def test_a_trial_learns_from_your_spans_as_training_does(tmp_path):
    rng = np.random.default_rng(1)
    arrays = tmp_path / "normalized.npz"
    np.savez(arrays, x_train=rng.random((300, 28, 28), dtype=np.float32),
             y_train=rng.integers(0, 10, 300).astype(np.uint8))
    normalized = Normalized("n", write_manifest(tmp_path / "n.json", {"arrays": arrays}, {}))
    yours = yours_with(tmp_path, 20)
    trial = {"trial": 0, "hidden": "16", "batch_size": 32, "learning_rate": 1e-3, "epochs": 1}
    quiet = {"log": lambda _: None}
    alone = trained_trial(Paths(tmp_path / "a"), normalized, None, trial, 3, False, **quiet)
    mixed = trained_trial(Paths(tmp_path / "b"), normalized, yours, trial, 3, False, **quiet)
    assert (alone.trained.spans, alone.trained.train_images) == ((), 300)
    # 240 of MNIST's rows fit: your 20 are repeated to about a tenth of the rows
    assert (mixed.trained.spans, mixed.trained.train_images) == (("s",), 320)
    assert mixed.trained.step.info["your_repeats"] == 2
    assert mixed.trained.version != alone.trained.version
