"""sweep-digits: a grid of dense networks → the best by validation accuracy → test → gate → report."""

import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, unmapped
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.train import evaluate_and_gate, load_mnist
from tasks.normalize import normalize
from tasks.paths import get_paths
from tasks.report import publish_sweep_report
from tasks.settings import SweepSettings
from tasks.sweep import best_trial, record_trials, register_best, train_trial, trial_grid
from tasks.yours import take_in_labels


DEFAULTS = SweepSettings()  # the one place the defaults live; the CLI and the UI's form show them


def sweep_run_name() -> str:
    return f"sweep-dense-{datetime.now(timezone.utc):%Y-%m-%d}"


# One trial at a time in this process: TensorFlow already uses every core for one fit, and
# Keras's random seed is per process. `--workers N` / `--dask-address` run trials side by side.
@flow(name="sweep-digits", flow_run_name=sweep_run_name, task_runner=ThreadPoolTaskRunner(max_workers=1))
def sweep_digits(
    hidden: list[str] = DEFAULTS.hidden,  # never mutated; the UI shows them
    batch_sizes: list[int] = DEFAULTS.batch_sizes,
    learning_rates: list[float] = DEFAULTS.learning_rates,
    epochs: list[int] = DEFAULTS.epochs,
    seed: int = DEFAULTS.seed,
    limit: int | None = DEFAULTS.limit,
    data: Path | None = DEFAULTS.data,
    allow_unverified_data: bool = DEFAULTS.allow_unverified_data,
    no_cache: bool = DEFAULTS.no_cache,
    gate_margin: float = DEFAULTS.gate_margin,
    mnist_tolerance: float = DEFAULTS.mnist_tolerance,
) -> dict:
    settings = SweepSettings(**locals())  # the parameters above (all there is so far), validated
    started = time.perf_counter()
    paths = get_paths()

    # Load
    dataset = load_mnist(paths=paths, data=settings.data,
                         allow_unverified=settings.allow_unverified_data)
    yours = take_in_labels(paths=paths, refresh=settings.no_cache)
    # Prepare
    normalized = normalize(paths=paths, dataset=dataset, limit=settings.limit,
                           refresh=settings.no_cache)
    # Train every trial on MNIST and your training pictures; compare them on validation only
    grid = trial_grid(settings.hidden, settings.batch_sizes, settings.learning_rates, settings.epochs)
    trials = [f.result() for f in train_trial.map(
        paths=unmapped(paths), normalized=unmapped(normalized), yours=unmapped(yours), trial=grid,
        seed=unmapped(settings.seed), refresh=unmapped(settings.no_cache))]
    table = record_trials(paths=paths, trials=trials, sweep_id=str(flow_run.id)[:8])
    best = best_trial(trials)
    publish_sweep_report(table=table, best=best)
    # Evaluate the best once on the test set, gate and report
    registered = register_best(paths=paths, best=best)
    return {**evaluate_and_gate(paths=paths, dataset=dataset, normalized=normalized, yours=yours,
                                trained=registered, settings=settings),
            "trials": len(trials), "best_trial": best.number, "val_accuracy": best.val_accuracy,
            "trials_table": table["path"], "run_id": str(flow_run.id),
            "seconds": round(time.perf_counter() - started, 2)}


if __name__ == "__main__":
    print(sweep_digits(hidden=["128-32", "256-64"], batch_sizes=[32, 128], learning_rates=[1e-3],
                       epochs=[10], seed=42, limit=None))
