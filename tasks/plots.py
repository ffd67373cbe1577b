"""PNG plots of a training run: the tutorial's curves, the confusion matrix, the mistakes."""

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.paths import Paths
from tasks.records import Evaluation, Normalized, StepRecord, TrainedModel
from tasks.store import cached_step, code_version, content_key, write_bytes

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

DPI = 80  # small PNGs (tens of KB) so the report can embed them in the Prefect UI


def new_figure(width: float, height: float) -> "Figure":
    # Imported when a plot is drawn (a cached run draws none: 0.7 s saved). No pyplot: no global
    # state, safe in worker threads.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png_bytes(fig: "Figure", tight: bool = True) -> bytes:
    """The figure as PNG; tight=False keeps the figure's own size (inches × DPI)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    return buffer.getvalue()


def curves_figure(history: "pd.DataFrame") -> "Figure":
    fig = new_figure(10, 4)
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        ax.plot(history["epoch"], history[metric], marker=".", label=metric)
        if f"val_{metric}" in history:
            ax.plot(history["epoch"], history[f"val_{metric}"], marker=".", label=f"val_{metric}")
        ax.set(title=metric, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_figure(confusion: "pd.DataFrame") -> "Figure":
    counts = confusion.drop(columns="true").to_numpy()
    fig = new_figure(6, 5)
    ax = fig.subplots()
    image = ax.imshow(np.log1p(counts), cmap="Blues")  # log: the diagonal would drown the errors
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                color="white" if i == j else "black")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
           title="confusion matrix (test set)")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    return fig


def misclassified_figure(x: np.ndarray, predictions: "pd.DataFrame", limit: int = 24) -> "Figure":
    wrong = predictions[predictions["true"] != predictions["pred"]]
    wrong = wrong.sort_values("confidence", ascending=False).head(limit)
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig = new_figure(cols * 1.2, rows * 1.45)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, row in zip(axes, wrong.itertuples()):
        ax.imshow(x[row.index], cmap="gray_r")
        ax.set_title(f"true {row.true} → {row.pred}\n{row.confidence:.0%}", fontsize=8)
    fig.suptitle(f"{len(predictions[predictions['true'] != predictions['pred']])} misclassified "
                 f"test digits; most confident mistakes first")
    return fig


def training_plots(paths: Paths, trained: TrainedModel, evaluated: Evaluation,
                   normalized: Normalized, refresh: bool) -> StepRecord:
    key = content_key("plots", trained.version, evaluated.key, code_version(__name__))
    out = trained.folder / "plots"

    def produce() -> tuple[dict[str, Path], dict]:
        import pandas as pd  # here: a cached run (which draws nothing) never loads pandas

        history = pd.read_parquet(trained.history_path)
        confusion = pd.read_parquet(evaluated.confusion_path)
        predictions = pd.read_parquet(evaluated.predictions_path)
        with np.load(normalized.arrays, allow_pickle=False) as npz:
            x_test = npz["x_test"]
        figures = {"curves": curves_figure(history), "confusion": confusion_figure(confusion),
                   "misclassified": misclassified_figure(x_test, predictions)}
        files = {}
        for name, fig in figures.items():
            files[name] = out / f"{name}.png"
            write_bytes(files[name], png_bytes(fig))
        return files, {"key": key}

    return cached_step(paths.cache / f"plots-{key}.json", refresh, produce)


@task(name="plot-training", cache_policy=NO_CACHE)
def plot_training(paths: Paths, trained: TrainedModel, evaluated: Evaluation,
                  normalized: Normalized, refresh: bool) -> StepRecord:
    plots = training_plots(paths, trained, evaluated, normalized, refresh)
    get_run_logger().info("plots in %s", plots.path("curves").parent)
    return plots


def prediction_figure(rows: list[dict], originals: list, inputs: list) -> "Figure":
    """Per image: the picture as given, the 28×28 input the model received, the ten probabilities.

    9 × 2.6 inches per image: at DPI 80, 720 × 208 pixels each."""
    fig = new_figure(9, 2.6 * len(rows))
    axes = np.atleast_2d(fig.subplots(len(rows), 3))
    for (picture, seen, bars), row, original, x in zip(axes, rows, originals, inputs):
        for ax in (picture, seen):
            ax.axis("off")
        picture.set_title(str(row["path"])[-40:], fontsize=9)
        if original is not None:
            picture.imshow(original, cmap="gray", vmin=0, vmax=1)  # (the map is for gray only)
        if x is None:
            seen.set_title("not read", fontsize=9)
            bars.text(0.5, 0.5, str(row["error"])[:60], ha="center", va="center", fontsize=8, wrap=True)
            bars.axis("off")
            continue
        seen.imshow(x, cmap="gray", vmin=0, vmax=1)
        seen.set_title("model input (28×28)", fontsize=9)
        probs = [row[f"prob_{d}"] for d in range(10)]
        bars.bar(range(10), probs, color=["tab:orange" if d == row["label"] else "tab:blue" for d in range(10)])
        bars.set(xticks=range(10), ylim=(0, 1), title=f"predicted {row['label']} ({row['confidence']:.0%})")
    fig.tight_layout()
    return fig


def reliability_figure(bins_by_set: dict[str, tuple[list[dict], list[dict]]]) -> "Figure":
    """Reliability diagrams, one per test set: accuracy against mean confidence per bin (of
    tasks.metrics.reliability_bins), before and after calibration; on the diagonal is calibrated.

    A marker's area grows with its bin's share: a bin of three pictures is noise, not a finding."""
    fig = new_figure(4.2 * len(bins_by_set), 4.4)
    axes = np.atleast_1d(fig.subplots(1, len(bins_by_set)))
    for ax, (name, (before, after)) in zip(axes, bins_by_set.items()):
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
        eces = []
        for label, bins, color in (("before", before, "tab:red"), ("after", after, "tab:blue")):
            full = [b for b in bins if b["count"]]
            total = sum(b["count"] for b in full)
            eces.append(sum(abs(b["accuracy"] - b["confidence"]) * b["count"] for b in full) / total)
            confidence, accuracy = [b["confidence"] for b in full], [b["accuracy"] for b in full]
            ax.plot(confidence, accuracy, color=color, linewidth=0.8, alpha=0.6)
            ax.scatter(confidence, accuracy, s=[6 + 120 * (b["count"] / total) ** 0.5 for b in full],
                       color=color, label=f"{label} (ECE {eces[-1]:.4f})")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="mean confidence in bin",
               ylabel="accuracy in bin", title=f"{name}: ECE {eces[0]:.4f} → {eces[1]:.4f}")
        ax.grid(alpha=0.3)
        for handle in ax.legend(loc="upper left", fontsize=8).legend_handles:
            handle.set_sizes([20])  # the legend's markers all alike, whatever their bins' counts
    return fig
