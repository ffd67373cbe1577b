"""The presets' networks: each a `build_*()` that reads like the Keras examples."""

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


def build_tuned() -> keras.Model:
    """Still dense, but wider and regularised: the seed's curves show it overfitting by epoch 6."""
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            layers.Reshape((28, 28, 1)),
            # Digits shifted by up to 2 pixels: the network must learn shapes, not positions.
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant"),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.3),  # the seed memorises its training set; dropout stops that
            layers.Dense(256, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(10, activation="softmax"),
        ],
        name="tuned",
    )
    compile_with_cosine_decay(model, epochs=30, alpha=0.02)
    return model


def build_cnn() -> keras.Model:
    """A small convolutional network, after keras-io's mnist_convnet."""
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            layers.Reshape((28, 28, 1)),
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.4),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.4),
            layers.Dense(10, activation="softmax"),
        ],
        name="cnn",
    )
    compile_with_cosine_decay(model, epochs=12, alpha=0.05)
    return model


def build_dense(hidden: tuple[int, ...], learning_rate: float, seed: int) -> keras.Model:
    """The seed's network with other hidden sizes and step size: what `sweep-digits` varies.

    Each layer's initial weights come from `seed` itself, not from the process's global random
    state, which other threads (Prefect's, a Dask worker's) may draw from at any moment.
    """
    init = [keras.initializers.GlorotUniform(seed=seed + i) for i in range(len(hidden) + 1)]
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            layers.Flatten(),
            *[layers.Dense(units, activation="relu", kernel_initializer=init[i])
              for i, units in enumerate(hidden)],
            layers.Dense(10, activation="softmax", kernel_initializer=init[-1]),
        ],
        name="dense",
    )
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
    return model


def compile_with_cosine_decay(model: keras.Model, epochs: int, alpha: float) -> None:
    """Adam whose step size decays so the last epochs settle instead of bouncing around a minimum.

    The decay spans `epochs` epochs of 48,000 images at batch 128 (375 steps), the presets' fit;
    with --limit or other epochs it ends earlier or later, which trains all the same.
    """
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=epochs * 375, alpha=alpha)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(schedule),
                  metrics=["accuracy"])


BUILDERS = {"seed": build_seed, "tuned": build_tuned, "cnn": build_cnn}


def build_model(preset: str) -> keras.Model:
    return BUILDERS[preset]()
