"""The seed preset is the tutorial's model, exactly."""

import keras
import numpy as np
import pytest

from tasks.models import build_seed
from tasks.presets import PRESETS
from tasks.settings import TrainSettings
from tasks.modelfiles import model_version


def test_seed_is_the_tutorial_network():
    model = build_seed()
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten", "Dense", "Dense", "Dense"]
    assert [layer.units for layer in model.layers[1:]] == [128, 32, 10]
    assert [layer.activation.__name__ for layer in model.layers[1:]] == ["relu", "relu", "softmax"]
    assert model.input_shape == (None, 28, 28)
    assert sum(keras.ops.size(w) for w in model.trainable_weights) == 104_938
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)  # the default, as written
    assert model.loss == "sparse_categorical_crossentropy"


def test_a_model_version_depends_on_the_model_not_on_keras_layer_numbering():
    keras.utils.set_random_seed(3)
    first = build_seed()
    keras.utils.set_random_seed(3)
    second = build_seed()  # Keras names its layers dense_3, dense_4, ... this time
    assert first.layers[1].name != second.layers[1].name
    assert model_version(first) == model_version(second)
    second.layers[1].kernel.assign(second.layers[1].kernel + 1e-6)
    assert model_version(first) != model_version(second)


def test_seed_fit_settings_are_the_tutorials():
    assert TrainSettings().fit_settings() == {
        "preset": "seed", "epochs": 25, "batch_size": 32, "validation_split": 0.2, "seed": 42,
        "speedups": True}
    assert TrainSettings(epochs=1, seed=7).fit_settings()["epochs"] == 1
    assert set(PRESETS) == {"seed", "tuned", "cnn"}


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'huge'; choose from seed, tuned, cnn"):
        TrainSettings(preset="huge")


def test_speedups_change_nothing_but_floating_point_order(mnist):
    # XLA and the in-graph epoch loop against one plain call per batch: same data order, same
    # steps, so the weights agree up to the reordering of floating-point sums that XLA fuses.
    from tasks.train import train_preset
    from tasks.yours import split_validation

    x, y = mnist["x_train"][:1000] / np.float32(255), mnist["y_train"][:1000]
    runs = [train_preset(*split_validation(x, y, 0.2), {"preset": "seed", "epochs": 2, "batch_size": 32,
                                "validation_split": 0.2, "seed": 5, "speedups": fast}, log=print)
            for fast in (True, False)]
    for fast_w, slow_w in zip(runs[0][0].get_weights(), runs[1][0].get_weights()):
        np.testing.assert_allclose(fast_w, slow_w, atol=1e-4)
    np.testing.assert_allclose(runs[0][1].to_numpy(), runs[1][1].to_numpy(), atol=1e-4)


def test_early_stopping_restores_the_best_epoch(mnist):
    from tasks.fit import fit

    x, y = mnist["x_train"][:600] / np.float32(255), mnist["y_train"][:600]
    keras.utils.set_random_seed(0)
    model = build_seed()
    logs = []
    history = fit(model, x, y, epochs=60, batch_size=32, validation_split=0.2, seed=0, patience=2,
                  log=logs.append)
    assert len(history) < 60 and "early stop" in logs[-1]
    best = history["val_loss"].min()
    prob = model.predict(x[480:], verbose=0)
    loss = -np.mean(np.log(np.clip(prob[np.arange(120), y[480:]], 1e-7, 1)))
    assert loss == pytest.approx(best, rel=1e-4)  # the weights are the best epoch's


def test_a_run_resumed_from_its_checkpoint_ends_where_an_unbroken_run_does(mnist, tmp_path):
    """Killed after epoch 2 of 4, resumed: the same weights and history as 4 epochs in one go,
    random augmentation and dropout included (the tuned preset has both)."""
    from tasks.fit import fit
    from tasks.models import build_tuned

    x, y = mnist["x_train"][:800] / np.float32(255), mnist["y_train"][:800]

    def run(epochs, checkpoint):
        keras.utils.set_random_seed(7)
        model = build_tuned()
        logs = []
        history = fit(model, x, y, epochs=epochs, batch_size=64, validation_split=0.2, seed=7,
                      xla=False, log=logs.append, checkpoint=checkpoint)
        return model, history, logs

    unbroken, history, _ = run(4, None)
    checkpoint = tmp_path / "train.checkpoint.npz"
    run(2, checkpoint)  # as if killed after epoch 2: its checkpoint is what survives
    resumed, resumed_history, logs = run(4, checkpoint)
    assert logs[0].startswith("resuming after epoch 2") and len(logs) == 3  # + epochs 3 and 4
    assert resumed_history.equals(history)
    for a, b in zip(unbroken.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_that_does_not_fit_the_model_is_ignored_not_half_loaded(mnist, tmp_path):
    from tasks.fit import fit, restore_checkpoint
    from tasks.models import build_dense

    x, y = mnist["x_train"][:300] / np.float32(255), mnist["y_train"][:300]
    checkpoint = tmp_path / "train.checkpoint.npz"
    keras.utils.set_random_seed(1)
    fit(build_seed(), x, y, epochs=1, batch_size=32, validation_split=0.2, seed=1,
        log=lambda _: None, checkpoint=checkpoint)
    logs = []
    keras.utils.set_random_seed(1)
    other = build_dense((64,), 1e-3, seed=1)
    other.optimizer.build(other.trainable_variables)
    before = [w.copy() for w in other.get_weights()]
    with pytest.raises(ValueError, match="do not match"):
        restore_checkpoint(checkpoint, other, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))  # untouched
    history = fit(other, x, y, epochs=2, batch_size=32, validation_split=0.2, seed=1,
                  log=logs.append, checkpoint=checkpoint)
    assert logs[0].startswith("ignoring an unusable checkpoint") and list(history["epoch"]) == [1, 2]
