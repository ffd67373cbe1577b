"""Model presets: each a `build_*()` that reads like the Keras examples, plus its fit defaults."""

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers


def build_seed() -> keras.Model:
    """The tutorial's network, exactly: 104,938 trainable parameters."""
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(32, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ],
        name="seed",
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


@dataclass(frozen=True)
class Preset:
    build: Callable[[], keras.Model]
    epochs: int
    batch_size: int
    validation_split: float
    description: str


PRESETS = {
    "seed": Preset(build_seed, epochs=25, batch_size=32, validation_split=0.2,
                   description="the Keras tutorial as written: Dense 128-32-10, Adam, 25 epochs"),
}
