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
from tasks.registry import gate_model, list_models, model_metadata, record_model_task
from tasks.report import publish_training_report, tag_run
from tasks.settings import TrainSettings
from tasks.train import train_model


def train_run_name() -> str:
    return f"train-{flow_run.parameters['preset']}-{datetime.now(timezone.utc):%Y-%m-%d}"


@flow(name="train-digits", flow_run_name=train_run_name)
def train_digits(
    preset: str = "seed",
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 42,
    limit: int | None = None,
    data: Path | None = None,
    allow_unverified_data: bool = False,
    no_cache: bool = False,
    speedups: bool = True,
    gate_margin: float = 0.0,
) -> dict:
    started = time.perf_counter()
    settings = TrainSettings(preset=preset, epochs=epochs, batch_size=batch_size, seed=seed,
                             limit=limit, data=data, allow_unverified_data=allow_unverified_data,
                             no_cache=no_cache, speedups=speedups, gate_margin=gate_margin)
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


def evaluate_and_gate(paths: Paths, dataset: dict, normalized: dict, trained: dict,
                      limit: int | None, gate_margin: float, refresh: bool) -> dict:
    """The end of every flow that makes a model (train-digits, sweep-digits), in its run."""
    # Evaluate
    evaluated = evaluate_model(paths=paths, trained=trained, normalized=normalized, refresh=refresh)
    plots = plot_training(paths=paths, trained=trained, evaluated=evaluated,
                          normalized=normalized, refresh=refresh)
    champion = evaluate_champion(paths=paths, normalized=normalized)
    # Gate and report
    steps = {"normalize": normalized, "train": trained, "evaluate": evaluated, "plots": plots}
    timings = {step: round(record["step_seconds"], 2) for step, record in steps.items()}
    metadata = model_metadata(dataset=dataset, trained=trained, evaluated=evaluated,
                              limit=limit, timings=timings, run_id=str(flow_run.id))
    record_model_task(paths=paths, metadata=metadata)
    decision = gate_model(paths=paths, metadata=metadata, champion=champion, margin=gate_margin)
    publish_training_report(metadata=metadata, trained=trained, evaluated=evaluated, plots=plots,
                            decision=decision, models=list_models(paths))
    tag_run(tags=[f"preset:{metadata['preset']}", f"model:{metadata['model_version']}",
                  "promoted" if decision["promote"] else "not-promoted"])
    return {
        "test_accuracy": evaluated["test_accuracy"],
        "model_path": metadata["model_path"],
        "model_version": metadata["model_version"],
        "cached_steps": [step for step, record in steps.items() if record["cached"]],
        "promoted": decision["promote"],
        "gate": decision["reason"],
    }

if __name__ == "__main__":
    print(train_digits(preset="seed", epochs=None, seed=42, limit=None))
