"""The `digitflow` console script: one subcommand per job, a JSON summary as the last line."""

import argparse
import json
import os
import sys
from pathlib import Path

from flows import server
from tasks.presets import PRESETS
from tasks.settings import SweepSettings

# Offline, quiet defaults; anything the caller set wins. Set before Prefect or TF is imported.
ENVIRONMENT = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",  # 2 cores start it slowly
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "warning",  # not every worker's comings and goings
}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="digitflow", description=__doc__.split("\n")[0])
    commands = top.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, evaluate and report a model (train-digits flow)")
    train.add_argument("--preset", default="seed", choices=list(PRESETS),
                       help="seed: the tutorial's model (default); tuned: regularised dense; cnn")
    train.add_argument("--epochs", type=positive, help="default: the preset's (25 for seed)")
    train.add_argument("--batch-size", type=positive, help="default: the preset's (32 for seed)")
    train.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    train.add_argument("--limit", type=positive, help="train on the first N training images only")
    add_data_options(train)
    train.add_argument("--no-cache", action="store_true", help="rerun every step, ignoring the cache")
    train.add_argument("--gate-margin", type=float, default=0.0,
                       help="accuracy a new model may lose against the champion and still replace it")
    train.add_argument("--no-speedups", action="store_true",
                       help="one plain call per batch, no XLA (to check the speedups change nothing)")

    score = commands.add_parser("score", help="score every image under FOLDER (score-folder flow)")
    score.add_argument("folder", type=Path)
    score.add_argument("--output", type=Path, help="Parquet file (default: under artifacts/predictions/)")
    score.add_argument("--dataset", type=Path,
                       help="append to this partitioned dataset, skipping files this model scored")
    score.add_argument("--model", help=".keras file, model folder or version (default: the champion)")
    score.add_argument("--labels", type=Path, help="CSV with columns path,label: report accuracy")
    score.add_argument("--chunk-size", type=positive, default=2000, help="images per task (default: 2000)")

    add_cluster_options(score)

    sweep = commands.add_parser("sweep", help="train a grid of dense networks, gate the best (sweep-digits flow)")
    # The field defaults, not SweepSettings(): validating imports Prefect, too early here.
    grid = {name: field.default for name, field in SweepSettings.model_fields.items()}
    sweep.add_argument("--hidden", nargs="+", default=grid["hidden"],
                       help=f"hidden layer sizes, e.g. 128-32 (default: {' '.join(grid['hidden'])})")
    sweep.add_argument("--batch-size", nargs="+", type=positive, default=grid["batch_sizes"])
    sweep.add_argument("--learning-rate", nargs="+", type=float, default=grid["learning_rates"])
    sweep.add_argument("--epochs", nargs="+", type=positive, default=grid["epochs"])
    sweep.add_argument("--seed", type=int, default=42)
    sweep.add_argument("--limit", type=positive, help="train on the first N training images only")
    add_data_options(sweep)
    sweep.add_argument("--no-cache", action="store_true", help="retrain every trial")
    sweep.add_argument("--gate-margin", type=float, default=0.0)
    add_cluster_options(sweep)

    predict = commands.add_parser("predict", help="predict a few images, and show what the model saw")
    predict.add_argument("files", nargs="*", type=Path)
    predict.add_argument("--model", help=".keras file, model folder or version (default: the champion)")
    predict.add_argument("--show", type=Path, metavar="OUT.png",
                         help="write each picture beside the model's input and its probabilities")
    predict.add_argument("--json", action="store_true", help="one JSON object per file (table fields)")
    predict.add_argument("--mnist-test", type=int, metavar="INDEX",
                         help="predict X_test[INDEX] of the verified test set, as the tutorial does")

    models = commands.add_parser("models", help="list model versions; promote one or roll back")
    models.add_argument("action", nargs="?", choices=["list", "promote", "rollback"], default="list")
    models.add_argument("version", nargs="?", help="with promote: the version to make champion")

    fetch = commands.add_parser("fetch-data", help="get and verify MNIST into data/raw (no Prefect)")
    add_data_options(fetch)

    demo = commands.add_parser("demo-images", help="write a folder of scan-like digit images")
    demo.add_argument("folder", type=Path, nargs="?", help="default: data/demo")
    demo.add_argument("--count", type=positive, default=300)
    return top


def add_cluster_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--workers", type=positive, metavar="N",
                         help="run the tasks on a local Dask cluster of N worker processes")
    command.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                         help="run the tasks on an existing Dask cluster (sharing this filesystem)")


def on_cluster(flow, args: argparse.Namespace):
    """The flow as it is, or with its tasks on Dask if the command line asks for it."""
    from tasks.cluster import dask_runner

    runner = dask_runner(args.workers, args.dask_address)
    if runner is None:
        return flow
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        print("digitflow: note: no Prefect server configured (PREFECT_API_URL), so each Dask "
              "worker starts a temporary one and records its task runs there, not beside this "
              "flow run. Start a server (`make ui`) and point PREFECT_API_URL at it.", file=sys.stderr)
    return flow.with_options(task_runner=runner)


def add_data_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--data", type=Path,
                         help="MNIST as a Keras-layout .npz or a folder of the four IDX files")
    command.add_argument("--allow-unverified-data", action="store_true",
                         help="use --data even if it does not match the MNIST fingerprints")


def run(args: argparse.Namespace, early_server: tuple | None = None) -> dict | None:
    def flow_run(flow, **parameters) -> dict:
        with server.prefect_api(early_server):  # after the imports, which ran while it booted
            return flow(**parameters)

    if args.command == "train":
        from flows.train import train_digits

        return flow_run(train_digits, preset=args.preset, epochs=args.epochs,
                        batch_size=args.batch_size, seed=args.seed, limit=args.limit,
                        data=args.data, allow_unverified_data=args.allow_unverified_data,
                        no_cache=args.no_cache, speedups=not args.no_speedups,
                        gate_margin=args.gate_margin)
    if args.command == "score":
        from flows.score import score_folder
        from tasks.paths import get_paths
        from tasks.registry import resolve_model

        resolve_model(get_paths(), args.model)  # no model: say so before Prefect starts

        return flow_run(on_cluster(score_folder, args), folder=args.folder, output=args.output,
                        model=args.model, labels=args.labels, dataset=args.dataset,
                        chunk_size=args.chunk_size)
    if args.command == "sweep":
        from flows.sweep import sweep_digits

        return flow_run(on_cluster(sweep_digits, args), hidden=args.hidden,
                        batch_sizes=args.batch_size, learning_rates=args.learning_rate,
                        epochs=args.epochs, seed=args.seed, limit=args.limit, data=args.data,
                        allow_unverified_data=args.allow_unverified_data,
                        no_cache=args.no_cache, gate_margin=args.gate_margin)
    if args.command == "models":
        return manage_models(args)
    if args.command == "predict":
        return predict(args)

    from tasks.ingest import ensure_mnist
    from tasks.paths import get_paths

    paths = get_paths()
    dataset = ensure_mnist(paths, args.data if args.command == "fetch-data" else None,
                           getattr(args, "allow_unverified_data", False),
                           log=lambda m: print(m, file=sys.stderr))
    if args.command == "fetch-data":
        return dataset

    import numpy as np

    from tasks.demo import make_demo_folder

    folder = args.folder or paths.demo_images
    with np.load(dataset["path"], allow_pickle=False) as npz:
        labels = make_demo_folder(npz["x_test"], npz["y_test"], folder, args.count)
    return {"folder": str(folder), "images": len(labels), "labels": str(folder / "labels.csv")}


def predict(args: argparse.Namespace) -> None:
    """One line (or JSON object) per file on stdout; unreadable files say why on their line."""
    from tasks.paths import get_paths
    from tasks.predict import describe, predict_images, row_json
    from tasks.registry import resolve_model

    if not args.files and args.mnist_test is None:
        raise ValueError("name image files, or --mnist-test INDEX")
    paths = get_paths()
    rows, originals, inputs = predict_images(paths, args.files, resolve_model(paths, args.model),
                                             args.mnist_test)
    for row in rows.itertuples():
        print(row_json(row) if args.json else describe(row))
    if args.show:
        from tasks.plots import png_bytes, prediction_figure
        from tasks.store import write_bytes

        write_bytes(args.show, png_bytes(prediction_figure(rows, originals, inputs), tight=False))
        print(f"wrote {args.show}", file=sys.stderr)


def manage_models(args: argparse.Namespace) -> dict:
    from tasks import registry
    from tasks.paths import get_paths

    paths = get_paths()
    if args.action == "promote":
        if not args.version:
            raise ValueError("which version? `digitflow models` lists them")
        return registry.promote(paths, args.version, "promoted by hand")
    if args.action == "rollback":
        return registry.rollback(paths)
    rows = registry.list_models(paths)
    for r in rows:
        print(f"{'*' if r['champion'] else ' '} {r['version']}  {r['preset']:<6} "
              f"{r['test_accuracy']:.4f}  {r['train_images']:>6} images  {r['epochs']:>3} epochs  "
              f"{r['created_at']}", file=sys.stderr)
    return {"models": rows}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # A flow's command starts Prefect's temporary server first, to boot while the imports run;
    # on Dask, Prefect's own start-up is kept (see on_cluster).
    dask = getattr(args, "workers", None) or getattr(args, "dask_address", None)
    early = server.start() if args.command in ("train", "score", "sweep") and not dask else None
    if args.command == "score" and not dask:
        from tasks.files import start_readers

        start_readers()  # the reader processes import while this one does
    try:
        result = run(args, early)
    except Exception as exc:  # the run failed: say why in one line, exit non-zero
        print(f"digitflow {args.command}: error: {exc}", file=sys.stderr)
        return 1
    if result is not None:  # predict prints its own lines
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
