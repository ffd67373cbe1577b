"""train-digits: ingest → normalize → train → evaluate → plot → gate → report."""

import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks.evaluate import calibrate_model, evaluate_champion, evaluate_model, test_sets
from tasks.ingest import ensure_mnist
from tasks.normalize import normalize
from tasks.paths import Paths, get_paths
from tasks.plots import plot_training
from tasks.records import MnistCopy, Normalized, TrainedModel, YourDigits
from tasks.registry import gate_model, list_models, model_metadata, record_model_task
from tasks.report import publish_training_report, tag_run
from tasks.settings import SweepSettings, TrainSettings
from tasks.train import train_model
from tasks.yours import take_in_labels


def train_run_name() -> str:
    return f"train-{flow_run.parameters['preset']}-{datetime.now(timezone.utc):%Y-%m-%d}"


DEFAULTS = TrainSettings()  # the one place the defaults live; the CLI and the UI's form show them


# tasks/ingest.py stays free of Prefect (predict --mnist-test reads through it): its task is here.
@task(name="load-mnist", cache_policy=NO_CACHE)
def load_mnist(paths: Paths, data: Path | None, allow_unverified: bool) -> MnistCopy:
    return ensure_mnist(paths, data, allow_unverified, log=get_run_logger().info)


@flow(name="train-digits", flow_run_name=train_run_name)
def train_digits(
    preset: str = DEFAULTS.preset,
    epochs: int | None = DEFAULTS.epochs,
    batch_size: int | None = DEFAULTS.batch_size,
    seed: int = DEFAULTS.seed,
    limit: int | None = DEFAULTS.limit,
    data: Path | None = DEFAULTS.data,
    allow_unverified_data: bool = DEFAULTS.allow_unverified_data,
    no_cache: bool = DEFAULTS.no_cache,
    speedups: bool = DEFAULTS.speedups,
    gate_margin: float = DEFAULTS.gate_margin,
    mnist_tolerance: float = DEFAULTS.mnist_tolerance,
) -> dict:
    settings = TrainSettings(**locals())  # the parameters above (all there is so far), validated
    started = time.perf_counter()
    paths = get_paths()

    # Load: MNIST, and every span of your labelled digits
    dataset = load_mnist(paths=paths, data=settings.data,
                         allow_unverified=settings.allow_unverified_data)
    yours = take_in_labels(paths=paths, refresh=settings.no_cache)
    # Prepare
    normalized = normalize(paths=paths, dataset=dataset, limit=settings.limit,
                           refresh=settings.no_cache)
    # Train on MNIST's training images and your training pictures
    trained = train_model(paths=paths, normalized=normalized, yours=yours, settings=settings)
    # Evaluate on both test sets, gate and report
    return {**evaluate_and_gate(paths=paths, dataset=dataset, normalized=normalized, yours=yours,
                                trained=trained, settings=settings),
            "run_id": str(flow_run.id), "seconds": round(time.perf_counter() - started, 2)}


def evaluate_and_gate(paths: Paths, dataset: MnistCopy, normalized: Normalized,
                      yours: YourDigits | None, trained: TrainedModel,
                      settings: TrainSettings | SweepSettings) -> dict:
    """The end of every flow that makes a model (train-digits, sweep-digits), in its run."""
    refresh = settings.no_cache
    # Evaluate on MNIST's test set and yours
    tests = test_sets(dataset=dataset, normalized=normalized, yours=yours)
    evaluated = evaluate_model(paths=paths, trained=trained, tests=tests, refresh=refresh)
    calibration = calibrate_model(paths=paths, trained=trained, normalized=normalized, tests=tests,
                                  refresh=refresh)
    plots = plot_training(paths=paths, trained=trained, evaluated=evaluated["mnist"],
                          normalized=normalized, refresh=refresh)
    champion = evaluate_champion(paths=paths, tests=tests)
    # Gate and report
    steps = {"normalize": normalized.step, **({"labels": yours.step} if yours else {}),
             "train": trained.step, "evaluate": evaluated["mnist"].step, "calibrate": calibration,
             "plots": plots}
    timings = {name: round(step.seconds, 2) for name, step in steps.items()}
    metadata = model_metadata(dataset=dataset, trained=trained, evaluated=evaluated,
                              calibration=calibration.info["calibration"], limit=settings.limit,
                              timings=timings, run_id=str(flow_run.id))
    record_model_task(paths=paths, metadata=metadata)
    decision = gate_model(paths=paths, challenger=evaluated, champion=champion,
                          margin=settings.gate_margin, mnist_tolerance=settings.mnist_tolerance)
    publish_training_report(metadata=metadata, trained=trained, evaluated=evaluated, plots=plots,
                            calibration=calibration, decision=decision, yours=yours,
                            models=list_models(paths))
    tag_run(tags=[*([f"preset:{trained.preset}"] if trained.preset else []),
                  f"model:{trained.version}", "promoted" if decision.promote else "not-promoted"])
    return {
        "test_accuracy": evaluated["mnist"].accuracy,
        **({"your_test_accuracy": evaluated["yours"].accuracy,
            "your_test_images": evaluated["yours"].images} if "yours" in evaluated else {}),
        "spans": list(trained.spans),
        "model_path": str(trained.model_path),
        "model_version": trained.version,
        "cached_steps": [name for name, step in steps.items() if step.cached],
        "promoted": decision.promote,
        "gate": decision.reason,
    }


if __name__ == "__main__":
    print(train_digits(preset="seed", epochs=None, seed=42, limit=None))
