"""How each preset is trained. Kept apart from the networks so reading it does not load Keras."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    epochs: int
    batch_size: int
    validation_split: float
    description: str
    patience: int | None = None  # early stopping on val_loss, best weights restored
    xla: bool = False  # compile the training loop with XLA (see tasks.fit.fit)


PRESETS = {
    "seed": Preset(epochs=25, batch_size=32, validation_split=0.2, xla=True,
                   description="the Keras tutorial as written: Dense 128-32-10, Adam, 25 epochs"),
    "tuned": Preset(epochs=30, batch_size=128, validation_split=0.2, patience=6,
                    description="dense 512-256-10, shifted digits, dropout, cosine-decayed Adam"),
    "cnn": Preset(epochs=12, batch_size=128, validation_split=0.2, patience=4,
                  description="small convnet (3 conv layers), shifted digits, dropout, cosine-decayed Adam"),
}
