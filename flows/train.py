"""train-digits: ingest → normalize → train → evaluate → plot → gate → report."""

import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from tasks.evaluate import evaluate_champion, evaluate_model
from tasks.ingest import load_mnist
from tasks.normalize import normalize
from tasks.paths import Paths, get_paths
from tasks.plots import plot_training
from tasks.records import MnistCopy, Normalized, TrainedModel
from tasks.registry import gate_model, list_models, model_metadata, record_model_task
from tasks.report import publish_training_report, tag_run
from tasks.settings import TrainSettings
from tasks.train import train_model


def train_run_name() -> str:
    return f"train-{flow_run.parameters['preset']}-{datetime.now(timezone.utc):%Y-%m-%d}"


DEFAULTS = TrainSettings()  # the one place the defaults live; the CLI and the UI's form show them


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
) -> dict:
    settings = TrainSettings(**locals())  # the parameters above (all there is so far), validated
    started = time.perf_counter()
    paths = get_paths()

    # Load
    dataset = load_mnist(paths=paths, data=settings.data,
                         allow_unverified=settings.allow_unverified_data)
    # Prepare
    normalized = normalize(paths=paths, dataset=dataset, limit=settings.limit,
                           refresh=settings.no_cache)
    # Train
    trained = train_model(paths=paths, normalized=normalized, settings=settings)
    # Evaluate, gate and report
    return {**evaluate_and_gate(paths=paths, dataset=dataset, normalized=normalized,
                                trained=trained, limit=settings.limit,
                                gate_margin=settings.gate_margin, refresh=settings.no_cache),
            "run_id": str(flow_run.id), "seconds": round(time.perf_counter() - started, 2)}


def evaluate_and_gate(paths: Paths, dataset: MnistCopy, normalized: Normalized,
                      trained: TrainedModel, limit: int | None, gate_margin: float,
                      refresh: bool) -> dict:
    """The end of every flow that makes a model (train-digits, sweep-digits), in its run."""
    # Evaluate
    evaluated = evaluate_model(paths=paths, trained=trained, normalized=normalized,
                               dataset=dataset, refresh=refresh)
    plots = plot_training(paths=paths, trained=trained, evaluated=evaluated,
                          normalized=normalized, refresh=refresh)
    champion = evaluate_champion(paths=paths, normalized=normalized, dataset=dataset)
    # Gate and report
    steps = {"normalize": normalized.step, "train": trained.step, "evaluate": evaluated.step,
             "plots": plots}
    timings = {name: round(step.seconds, 2) for name, step in steps.items()}
    metadata = model_metadata(dataset=dataset, trained=trained, evaluated=evaluated,
                              limit=limit, timings=timings, run_id=str(flow_run.id))
    record_model_task(paths=paths, metadata=metadata)
    decision = gate_model(paths=paths, challenger=evaluated, champion=champion, margin=gate_margin)
    publish_training_report(metadata=metadata, trained=trained, evaluated=evaluated, plots=plots,
                            decision=decision, models=list_models(paths))
    tag_run(tags=[*([f"preset:{trained.preset}"] if trained.preset else []),
                  f"model:{trained.version}", "promoted" if decision.promote else "not-promoted"])
    return {
        "test_accuracy": evaluated.accuracy,
        "model_path": str(trained.model_path),
        "model_version": trained.version,
        "cached_steps": [name for name, step in steps.items() if step.cached],
        "promoted": decision.promote,
        "gate": decision.reason,
    }


if __name__ == "__main__":
    print(train_digits(preset="seed", epochs=None, seed=42, limit=None))
