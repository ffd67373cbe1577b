"""The seed preset is the tutorial's model, exactly."""

import keras
import pytest

from tasks.models import PRESETS, build_seed
from tasks.settings import TrainSettings


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


def test_seed_fit_settings_are_the_tutorials():
    assert TrainSettings().fit_settings() == {
        "preset": "seed", "epochs": 25, "batch_size": 32, "validation_split": 0.2, "seed": 42}
    assert TrainSettings(epochs=1, seed=7).fit_settings()["epochs"] == 1
    assert set(PRESETS) >= {"seed"}


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'huge'; choose from seed"):
        TrainSettings(preset="huge")
