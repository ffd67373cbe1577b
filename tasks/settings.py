"""The settings object of each flow, validated once at the flow boundary."""

from pathlib import Path

from pydantic import BaseModel, Field, PositiveInt

from tasks.presets import PRESETS


class TrainSettings(BaseModel, frozen=True):
    preset: str = "seed"
    epochs: PositiveInt | None = None  # None: the preset's own
    batch_size: PositiveInt | None = None
    seed: int = 42
    limit: PositiveInt | None = None  # train on the first N training images only
    data: Path | None = None
    allow_unverified_data: bool = False
    no_cache: bool = False
    speedups: bool = True  # False: the plain per-batch loop, to check speedups change nothing
    gate_margin: float = Field(default=0.0, ge=0, le=1)  # accuracy a challenger may lose
    # With your test set: accuracy a challenger may lose on MNIST's (tasks.registry.MNIST_TOLERANCE)
    mnist_tolerance: float = Field(default=0.003, ge=0, le=1)

    def model_post_init(self, _context: object) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")

    def fit_settings(self) -> dict:
        """Everything that decides the trained weights (the training step's cache key)."""
        preset = PRESETS[self.preset]
        return {
            "preset": self.preset,
            "epochs": self.epochs or preset.epochs,
            "batch_size": self.batch_size or preset.batch_size,
            "validation_split": preset.validation_split,
            "seed": self.seed,
            "speedups": self.speedups,
        }


class ScoreSettings(BaseModel, frozen=True):
    folder: Path
    output: Path | None = None
    model: Path | None = None  # a .keras file or a model folder; default: the latest trained
    labels: Path | None = None  # optional CSV of true labels (path,label): reports accuracy
    dataset: Path | None = None  # append to this partitioned dataset, skipping files scored before
    chunk_size: PositiveInt | None = Field(
        default=None, description="images per scoring task; default: 10,000, or 2,000 on Dask")

    def model_post_init(self, _context: object) -> None:
        if self.output is not None and self.dataset is not None:
            raise ValueError("give --output (one table) or --dataset (appended partitions), not both")

    def under(self, root: Path) -> "ScoreSettings":
        """Relative locations taken from the digitflow root, as every other path is: a deployment
        runs in its checkout, but writes under its DIGITFLOW_ROOT. (The command line passes the
        paths a person typed made absolute against their shell's folder.)"""
        return self.model_copy(update={name: root / value for name in ("folder", "output", "labels",
                                                                      "dataset")
                                       if (value := getattr(self, name)) is not None})


def parse_hidden(text: str) -> tuple[int, ...]:
    """'256-64' → (256, 64): the hidden layers' sizes, input side first."""
    try:
        sizes = tuple(int(part) for part in text.split("-"))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ValueError(f"hidden sizes {text!r}: write them like 128-32 (positive integers)")
    return sizes


class SweepSettings(BaseModel, frozen=True):
    """The grid of `sweep-digits`: every combination of these is one trial."""
    hidden: list[str] = Field(default=["128-32", "256-64", "512-128"], min_length=1)
    batch_sizes: list[PositiveInt] = Field(default=[32, 128], min_length=1)
    learning_rates: list[float] = Field(default=[1e-3], min_length=1)
    epochs: list[PositiveInt] = Field(default=[10], min_length=1)
    seed: int = 42
    limit: PositiveInt | None = None
    data: Path | None = None
    allow_unverified_data: bool = False
    no_cache: bool = False
    gate_margin: float = Field(default=0.0, ge=0, le=1)
    mnist_tolerance: float = Field(default=0.003, ge=0, le=1)

    def model_post_init(self, _context: object) -> None:
        for text in self.hidden:
            parse_hidden(text)
        if not all(0 < lr < 1 for lr in self.learning_rates):
            raise ValueError(f"learning rates must be between 0 and 1, got {self.learning_rates}")
