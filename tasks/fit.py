"""The training loop: `model.fit`'s arithmetic, without its per-step overhead.

Keras's `fit` spends most of an epoch of the seed model dispatching 1,500 tiny steps, not doing
arithmetic. Here an epoch's full batches run as one compiled TensorFlow loop (with XLA where the
preset asks for it) over arrays that already sit in memory as tensors. Same model, optimizer, loss, batch size, epochs and validation
split as `fit`: each epoch shuffles the training part, the last `validation_split` of the data is
held out (as Keras does), and the history has Keras's keys. With `speedups=False` the same steps
run one call per batch without XLA; the two agree up to the floating-point reordering that XLA's
operator fusion introduces.
"""

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tasks.metrics import cross_entropy
from tasks.store import atomic_path

EVAL_BATCH = 2048  # forward passes only: batch size changes nothing but the speed


class Trainer:
    def __init__(self, model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int,
                 speedups: bool, xla: bool):
        self.model, self.batch, self.speedups = model, batch_size, speedups
        jit = speedups and xla
        self.x, self.y = tf.constant(x), tf.constant(y.astype(np.int32))
        self.loss = keras.losses.SparseCategoricalCrossentropy()
        model.optimizer.build(model.trainable_variables)
        self.step = tf.function(self._step, jit_compile=jit)
        self.full_batches = tf.function(self._full_batches, jit_compile=jit)
        self.forward = tf.function(lambda x: model(x, training=False), jit_compile=jit)

    def _step(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One optimizer step on the rows `index`; returns (summed loss, correct count)."""
        x, y = tf.gather(self.x, index), tf.gather(self.y, index)
        with tf.GradientTape() as tape:
            prob = self.model(x, training=True)
            loss = self.loss(y, prob)
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.model.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        size = tf.cast(tf.shape(index)[0], tf.float32)
        correct = tf.reduce_sum(tf.cast(tf.argmax(prob, 1, output_type=tf.int32) == y, tf.float32))
        return loss * size, correct

    def _full_batches(self, order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(tf.shape(order)[0] // self.batch):
            loss, hits = self._step(tf.reshape(tf.slice(order, [i * self.batch], [self.batch]),
                                               [self.batch]))
            loss_sum, correct = loss_sum + loss, correct + hits
        return loss_sum, correct

    def epoch(self, order: np.ndarray) -> dict[str, float]:
        """One pass over the training rows in `order`; Keras's `loss` and `accuracy`."""
        full = len(order) // self.batch * self.batch
        if self.speedups:
            loss_sum, correct = (float(v) for v in self.full_batches(tf.constant(order[:full])))
        else:
            loss_sum = correct = 0.0
            for start in range(0, full, self.batch):
                loss, hits = self.step(tf.constant(order[start:start + self.batch]))
                loss_sum, correct = loss_sum + float(loss), correct + float(hits)
        if full < len(order):  # the last, smaller batch
            loss, hits = self.step(tf.constant(order[full:]))
            loss_sum, correct = loss_sum + float(loss), correct + float(hits)
        return {"loss": loss_sum / len(order), "accuracy": correct / len(order)}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.forward(tf.constant(x[i:i + EVAL_BATCH])).numpy()
                               for i in range(0, len(x), EVAL_BATCH)])


def fit(model: keras.Model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
        validation_split: float, seed: int, patience: int | None = None, speedups: bool = True,
        xla: bool = True, log: Callable[[str], None] = print, checkpoint: Path | None = None,
        validation: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """Train `model` in place; returns the per-epoch history (epoch, loss, accuracy, val_*).

    `xla` is the preset's: XLA fuses the many tiny ops of a small dense network, but for larger
    matmuls, convolutions and random augmentation TensorFlow's own CPU kernels are faster.
    With `patience`, stop when val_loss has not improved for that many epochs and restore the
    best epoch's weights (Keras's EarlyStopping with restore_best_weights=True).
    With `checkpoint`, the state after every epoch is saved there, and a run killed half-way
    resumes after its last finished epoch (like Keras's BackupAndRestore); the caller deletes the
    file once the model is saved.
    With `validation` (Keras's validation_data), all of x trains and validation_split is unused.
    """
    if validation is None:
        split = math.ceil(len(x) * (1 - validation_split))  # keras: the last rows are validation
        x, y, validation = x[:split], y[:split], (x[split:], y[split:])
    split = len(x)
    trainer = Trainer(model, x, y, batch_size, speedups, xla)
    x_val, y_val = validation[0], validation[1].astype(np.int64)
    shuffle = np.random.default_rng(seed)
    history, best_weights, stopped = [], None, False
    if checkpoint is not None and checkpoint.exists():
        try:
            history, best_weights, stopped = restore_checkpoint(checkpoint, model, shuffle)
            log(f"resuming after epoch {len(history)} from {checkpoint}")
        except (OSError, ValueError, KeyError) as exc:
            log(f"ignoring an unusable checkpoint {checkpoint}: {exc}")
    while len(history) < epochs and not stopped:
        epoch = len(history) + 1
        started = time.perf_counter()
        row = {"epoch": epoch, **trainer.epoch(shuffle.permutation(split).astype(np.int32))}
        if len(x_val):
            prob = trainer.predict(x_val)
            row["val_loss"] = cross_entropy(y_val, prob)
            row["val_accuracy"] = float(np.mean(prob.argmax(axis=1) == y_val))
        history.append(row)
        log(f"Epoch {epoch}/{epochs} - {time.perf_counter() - started:.1f}s - " +
            " - ".join(f"{k}: {v:.4f}" for k, v in row.items() if k != "epoch"))
        if patience and len(x_val):
            best_epoch = 1 + int(np.argmin([h["val_loss"] for h in history]))
            if best_epoch == epoch:
                best_weights = model.get_weights()
            elif epoch - best_epoch >= patience:
                log(f"early stop: val_loss has not improved for {patience} epochs")
                stopped = True
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, shuffle, history, best_weights, stopped)
    if best_weights is not None:
        model.set_weights(best_weights)
    return pd.DataFrame(history)


def save_checkpoint(path: Path, model: keras.Model, rng: np.random.Generator, history: list[dict],
                    best_weights: list | None, stopped: bool) -> None:
    """Everything the next epoch depends on, in one file written atomically: the model's
    variables (random-layer seeds included), the optimizer's, the shuffling RNG and the history."""
    arrays = {f"variable_{i}": v.numpy() for i, v in enumerate(model.variables)}
    arrays |= {f"optimizer_{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)}
    arrays |= {f"best_{i}": w for i, w in enumerate(best_weights or [])}
    arrays["state"] = np.array(json.dumps({"history": history, "rng": rng.bit_generator.state,
                                           "stopped": stopped, "best": best_weights is not None}))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def restore_checkpoint(path: Path, model: keras.Model,
                       rng: np.random.Generator) -> tuple[list[dict], list | None, bool]:
    """The state `save_checkpoint` wrote, put back; ValueError, with nothing changed, if it does
    not fit this model."""
    variables = [*model.variables, *model.optimizer.variables]
    with np.load(path, allow_pickle=False) as npz:
        state = json.loads(str(npz["state"]))
        values = [npz[f"variable_{i}"] for i in range(len(model.variables))]
        values += [npz[f"optimizer_{i}"] for i in range(len(model.optimizer.variables))]
        best = [npz[f"best_{i}"] for i in range(len(model.get_weights()))] if state["best"] else None
    if [v.shape for v in values] != [tuple(v.shape) for v in variables]:
        raise ValueError("its variables do not match this model's")
    for variable, value in zip(variables, values):
        variable.assign(value)
    rng.bit_generator.state = state["rng"]
    return state["history"], best, state["stopped"]
