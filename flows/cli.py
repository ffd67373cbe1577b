"""The `digitflow` console script: one subcommand per job, a JSON summary as the last line."""

import argparse
import atexit
import contextlib
import dataclasses
import inspect
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tasks.presets import PRESETS

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


FLOW_COMMANDS = ("train", "score", "sweep")


def defaults(settings: str, wanted: bool) -> dict:
    """The settings' own defaults, for set_defaults: each option's default is declared once, in
    tasks.settings (the flows' signatures read them from there too). Its pydantic models cost
    0.1 s to import, so they are read only for a flow command (always the first word): a
    `predict` answers without them."""
    if not wanted:
        return {}
    from tasks import settings as models

    return {name: field.default for name, field in getattr(models, settings).model_fields.items()
            if not field.is_required()}


def parser(flow_defaults: bool = True) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="digitflow", description=__doc__.split("\n")[0])
    top.set_defaults(workers=None, dask_address=None)  # the commands without cluster options
    commands = top.add_subparsers(dest="command", required=True)
    # `dest` is always the flow's parameter name: the flow is called with what it declares.
    train = commands.add_parser("train", help="train, evaluate and report a model (train-digits flow)")
    train.set_defaults(handler=train_command, **defaults("TrainSettings", flow_defaults))
    train.add_argument("--preset", choices=list(PRESETS),
                       help="seed: the tutorial's model (default); tuned: regularised dense; cnn")
    train.add_argument("--epochs", type=positive, help="default: the preset's (25 for seed)")
    train.add_argument("--batch-size", type=positive, help="default: the preset's (32 for seed)")
    train.add_argument("--seed", type=int, help="random seed (default: %(default)s)")
    train.add_argument("--limit", type=positive, help="train on the first N training images only")
    add_data_options(train)
    train.add_argument("--no-cache", action="store_true", help="rerun every step, ignoring the cache")
    train.add_argument("--gate-margin", type=float,
                       help="accuracy a new model may lose against the champion and still replace it "
                            "(on your test set when there is one, else on MNIST's)")
    train.add_argument("--mnist-tolerance", type=float,
                       help="with your test set: accuracy a new model may lose on MNIST's "
                            "(default: %(default)s)")
    train.add_argument("--no-speedups", dest="speedups", action="store_false",
                       help="one plain call per batch, no XLA (to check the speedups change nothing)")

    score = commands.add_parser("score", help="score every image under FOLDER (score-folder flow)")
    score.set_defaults(handler=score_command, **defaults("ScoreSettings", flow_defaults))
    score.add_argument("folder", type=Path)
    sink = score.add_mutually_exclusive_group()
    sink.add_argument("--output", type=Path, help="Parquet file (default: under artifacts/predictions/)")
    sink.add_argument("--dataset", type=Path,
                      help="append to this partitioned dataset, skipping files this model scored")
    score.add_argument("--model", help=".keras file, model folder or version (default: the champion)")
    score.add_argument("--labels", type=Path, help="CSV with columns path,label: report accuracy")
    score.add_argument("--chunk-size", type=positive,
                       help="images per task (default: 10,000; with --workers or --dask-address, 2,000)")
    add_cluster_options(score)

    sweep = commands.add_parser("sweep", help="train a grid of dense networks, gate the best (sweep-digits flow)")
    sweep.set_defaults(handler=sweep_command, **defaults("SweepSettings", flow_defaults))
    sweep.add_argument("--hidden", nargs="+",
                       help="hidden layer sizes, e.g. 128-32 (default: %(default)s)")
    sweep.add_argument("--batch-size", dest="batch_sizes", nargs="+", type=positive,
                       help="(default: %(default)s)")
    sweep.add_argument("--learning-rate", dest="learning_rates", nargs="+", type=float,
                       help="(default: %(default)s)")
    sweep.add_argument("--epochs", nargs="+", type=positive, help="(default: %(default)s)")
    sweep.add_argument("--seed", type=int, help="(default: %(default)s)")
    sweep.add_argument("--limit", type=positive, help="train on the first N training images only")
    add_data_options(sweep)
    sweep.add_argument("--no-cache", action="store_true", help="retrain every trial")
    sweep.add_argument("--gate-margin", type=float, help="(default: %(default)s)")
    sweep.add_argument("--mnist-tolerance", type=float, help="(default: %(default)s)")
    add_cluster_options(sweep)

    predict = commands.add_parser("predict", help="predict a few images, and show what the model saw")
    predict.set_defaults(handler=predict_command)
    predict.add_argument("files", nargs="*", type=Path)
    predict.add_argument("--model", help=".keras file, model folder or version (default: the champion)")
    predict.add_argument("--show", type=Path, metavar="OUT.png",
                         help="write each picture beside the model's input and its probabilities")
    predict.add_argument("--json", action="store_true", help="one JSON object per file (table fields)")
    predict.add_argument("--mnist-test", type=int, metavar="INDEX",
                         help="predict X_test[INDEX] of the verified test set, as the tutorial does")

    label = commands.add_parser("label", help="take labelled pictures in as a new span of your digits")
    label.set_defaults(handler=label_command)
    label.add_argument("folder", type=Path, help="the pictures")
    how = label.add_mutually_exclusive_group(required=True)
    how.add_argument("--labels", type=Path, metavar="CSV",
                     help="columns path,label (paths relative to FOLDER; empty or 'skip': left out)")
    how.add_argument("--digit", type=int, help="every picture in FOLDER is this digit")
    label.add_argument("--span", help="the span's name (default: FOLDER's name and the UTC time)")

    review = commands.add_parser("review", help="export the pictures the model is unsure of, to "
                                                "label them in any tool (or in the UI: review-digits)")
    review.set_defaults(handler=review_command)
    review.add_argument("--export", type=Path, metavar="CSV", required=True,
                        help="path,sha256,top3 and an empty label column; fill it, then "
                             "`digitflow label FOLDER --labels CSV`")
    review.add_argument("--source", type=Path, default=Path("artifacts/predictions/inbox"),
                        help="a prediction table or dataset (default: %(default)s)")
    review.add_argument("--folder", type=Path, default=Path("data/inbox"),
                        help="where its pictures are (default: %(default)s)")
    review.add_argument("--limit", type=positive, default=100, help="(default: %(default)s)")

    labels = commands.add_parser("labels", help="list the spans of your labelled digits")
    labels.set_defaults(handler=labels_command)

    models = commands.add_parser("models", help="list model versions; promote one or roll back")
    models.set_defaults(handler=models_command)
    models.add_argument("action", nargs="?", choices=["list", "promote", "rollback"], default="list")
    models.add_argument("version", nargs="?", help="with promote: the version to make champion")

    prune = commands.add_parser("prune", help="delete what digitflow recomputes when needed "
                                "(caches, never-champion versions); never champions or predictions")
    prune.set_defaults(handler=prune_command)
    prune.add_argument("--older-than", type=float, default=7, metavar="DAYS",
                       help="only what nothing changed for this long (default 7): never a running job's")
    prune.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")

    fetch = commands.add_parser("fetch-data", help="get and verify MNIST into data/raw (no Prefect)")
    fetch.set_defaults(handler=fetch_data_command, data=None, allow_unverified_data=False)
    add_data_options(fetch)

    demo = commands.add_parser("demo-images", help="write a folder of scan-like digit images")
    demo.set_defaults(handler=demo_images_command)
    demo.add_argument("folder", type=Path, nargs="?", help="default: data/demo")
    demo.add_argument("--count", type=positive, default=300)
    demo.add_argument("--other-writers", action="store_true",
                      help="instead: the 1,797 optdigits of 43 other writers (scikit-learn), as "
                           "pictures of dark ink on paper with their labels.csv")
    return top


def add_cluster_options(command: argparse.ArgumentParser) -> None:
    cluster = command.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=positive, metavar="N",
                         help="run the tasks on a local Dask cluster of N worker processes")
    cluster.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                         help="run the tasks on an existing Dask cluster (sharing this filesystem)")


def add_data_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--data", type=Path,
                         help="MNIST as a Keras-layout .npz or a folder of the four IDX files")
    command.add_argument("--allow-unverified-data", action="store_true",
                         help="use --data even if it does not match the MNIST fingerprints")


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


def run_flow(flow, args: argparse.Namespace, early_server: tuple | None) -> dict:
    """Call `flow` with the command line's values of the parameters it declares."""
    declared = inspect.signature(flow.fn).parameters
    # Paths as typed, from the shell's folder (a flow takes relative ones from the digitflow root)
    parameters = {name: Path.cwd() / value if isinstance(value, Path) else value
                  for name, value in vars(args).items() if name in declared}
    from flows import server

    with server.prefect_api(early_server), without_heartbeats():  # the server booted during imports
        return flow(**parameters)


@contextlib.contextmanager
def without_heartbeats() -> Iterator[None]:
    """No flow-run heartbeats for a command's run, unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY asks.
    They feed Prefect's zombie-run automation, which digitflow does not set up, and a command's
    run ends with its process in a person's terminal; their thread sleeps in whole seconds, and
    every run waits for it before it can end: 0.5 s of each command on average. (A deployment's
    runs, in a worker's processes, keep Prefect's default.)"""
    if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in os.environ:
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def train_command(args: argparse.Namespace, early_server: tuple | None) -> dict:
    from flows.train import train_digits

    return run_flow(train_digits, args, early_server)


def score_command(args: argparse.Namespace, early_server: tuple | None) -> dict:
    from flows.score import score_folder
    from tasks.paths import get_paths
    from tasks.modelfiles import resolve_model

    resolve_model(get_paths(), args.model)  # no model: say so before Prefect starts
    return run_flow(on_cluster(score_folder, args), args, early_server)


def sweep_command(args: argparse.Namespace, early_server: tuple | None) -> dict:
    from flows.sweep import sweep_digits

    return run_flow(on_cluster(sweep_digits, args), args, early_server)


def fetch_data_command(args: argparse.Namespace, _early_server: None) -> dict:
    return dataclasses.asdict(verified_mnist(args.data, args.allow_unverified_data))


def demo_images_command(args: argparse.Namespace, _early_server: None) -> dict:
    import numpy as np

    from tasks.demo import make_demo_folder
    from tasks.paths import get_paths

    folder = args.folder or get_paths().demo_images
    if args.other_writers:
        from tasks.demo import make_other_writers_folder

        labels = make_other_writers_folder(folder)
        return {"folder": str(folder), "images": len(labels), "labels": str(folder / "labels.csv")}
    with np.load(verified_mnist().path, allow_pickle=False) as npz:
        labels = make_demo_folder(npz["x_test"], npz["y_test"], folder, args.count)
    return {"folder": str(folder), "images": len(labels), "labels": str(folder / "labels.csv")}


def verified_mnist(data: Path | None = None, allow_unverified: bool = False):
    from tasks.ingest import ensure_mnist
    from tasks.paths import get_paths

    return ensure_mnist(get_paths(), data, allow_unverified, log=lambda m: print(m, file=sys.stderr))


def predict_command(args: argparse.Namespace, _early_server: None) -> None:
    """One line (or JSON object) per file on stdout; unreadable files say why on their line."""
    from tasks.paths import get_paths
    from tasks.predict import describe, predict_images, row_json
    from tasks.modelfiles import resolve_model

    if not args.files and args.mnist_test is None:
        raise ValueError("name image files, or --mnist-test INDEX")
    paths = get_paths()
    rows, originals, inputs = predict_images(paths, args.files, resolve_model(paths, args.model),
                                             args.mnist_test)
    for row in rows:
        print(row_json(row) if args.json else describe(row))
    if args.show:
        from tasks.plots import png_bytes, prediction_figure
        from tasks.store import write_bytes

        write_bytes(args.show, png_bytes(prediction_figure(rows, originals, inputs), tight=False))
        print(f"wrote {args.show}", file=sys.stderr)


def label_command(args: argparse.Namespace, _early_server: None) -> dict:
    from tasks.labels import NOT_DIGITS, make_span, not_digits
    from tasks.paths import get_paths

    labelled = get_paths().labelled
    before = len(not_digits(labelled))
    span = make_span(labelled, args.folder, labels=args.labels, digit=args.digit, name=args.span)
    print(f"{span.summary()}; the next `digitflow train` learns from it", file=sys.stderr)
    refused = len(not_digits(labelled)) - before
    if refused:
        print(f"{refused} pictures answered 'not a digit' added to {labelled / NOT_DIGITS}: no "
              "review asks about them again", file=sys.stderr)
    return {"span": span.name, "folder": str(span.folder), "pictures": len(span.files),
            "by_digit": list(span.counts), "skipped": span.skipped, "not_a_digit": refused}


def review_command(args: argparse.Namespace, _early_server: None) -> dict:
    from tasks.paths import get_paths
    from tasks.review import export_queue, review_locations, review_queue

    paths = get_paths()
    source, folder = review_locations(paths.root, args.source, args.folder)
    queue = review_queue(source, paths.labelled, args.limit, folder=folder)
    for note in queue.attrs["notes"]:
        print(f"digitflow review: {note}", file=sys.stderr)
    export_queue(queue, args.export)
    print(f"{len(queue)} pictures to label in {args.export}; then `digitflow label {folder} "
          f"--labels {args.export}`", file=sys.stderr)
    return {"queued": len(queue), "csv": str(args.export), "folder": str(folder)}


def labels_command(args: argparse.Namespace, _early_server: None) -> dict:
    from tasks.labels import NOT_DIGITS, list_spans, not_digits
    from tasks.paths import get_paths
    from tasks.store import read_json  # not via tasks.registry, which imports Prefect

    paths = get_paths()
    champion = read_json(paths.champion) or {}
    metadata = read_json(paths.models / str(champion.get("model_version")) / "metadata.json") or {}
    trained_on = set(metadata.get("spans", []))
    rows = []
    for status in list_spans(paths.labelled):
        row = {"span": status.name, "in_champion": status.name in trained_on,
               "problem": status.problem}
        if status.span:
            row |= {"pictures": len(status.span.files), "by_digit": list(status.span.counts)}
        rows.append(row)
        seen = "the champion was trained on it" if row["in_champion"] else "not in the champion yet"
        print(f"{status.span.summary() if status.span else f'span {status.name}'}; "
              f"{'PROBLEM: ' + status.problem if status.problem else seen}", file=sys.stderr)
    gone = sorted(trained_on - {r["span"] for r in rows})
    for name in gone:
        print(f"span {name}: the champion was trained on it, but it is gone; the next retrain "
              f"leaves it out", file=sys.stderr)
    refused = len(not_digits(paths.labelled))
    if refused:
        print(f"{refused} pictures answered 'not a digit', never asked about again "
              f"({paths.labelled / NOT_DIGITS})", file=sys.stderr)
    return {"spans": rows, "gone": gone, "champion": champion.get("model_version"),
            "not_digits": refused}


def models_command(args: argparse.Namespace, _early_server: None) -> dict:
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


def prune_command(args: argparse.Namespace, _early_server: None) -> dict:
    from tasks.paths import get_paths
    from tasks.prune import prune

    pruned = prune(get_paths(), args.older_than, args.dry_run)
    for path in pruned.removed:
        print(f"{'would delete' if args.dry_run else 'deleted'} {path}", file=sys.stderr)
    print(f"{pruned.freed_bytes / 2**20:.1f} MiB {'to free' if args.dry_run else 'freed'}; kept "
          f"the versions ever champion, and the latest: {', '.join(pruned.kept_versions) or 'none'}",
          file=sys.stderr)
    return vars(pruned)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(flow_defaults=bool(argv) and argv[0] in FLOW_COMMANDS).parse_args(argv)
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # A flow's command starts Prefect's temporary server first, to boot while the imports run;
    # on Dask, Prefect's own start-up is kept (see on_cluster).
    flow_command = args.command in FLOW_COMMANDS
    on_dask = bool(args.workers or args.dask_address)
    if flow_command and not on_dask:
        from flows import server  # only here: `predict` answers without it

        early = server.start()
    else:
        early = None
    if args.command == "score" and not on_dask:
        from tasks.files import READ_AHEAD, read_ahead

        # The reader processes start, and read the first files, while this one imports and
        # Prefect's server starts. A dataset's run skips what was scored before: nothing read ahead.
        read_ahead(Path.cwd() / args.folder, limit=0 if args.dataset else READ_AHEAD)
    try:
        result = args.handler(args, early)
    except Exception as exc:  # the run failed: say why in one line, exit non-zero
        print(f"digitflow {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.command == "score" and not on_dask:
            from tasks.files import stop_readers

            stop_readers()  # a failed run's read-ahead is not waited for
    if result is not None:  # predict prints its own lines
        print(json.dumps(result, default=str))
    return 0


def run() -> None:
    """The console script: main(), then Python's exit handlers (Prefect's send the run's last logs
    and events; the temporary server is stopped), then out. What it skips is the interpreter's
    teardown, which frees every object one at a time: 0.5–1 s of every flow command here."""
    code = 1  # if an exception escapes main

    def leave() -> None:  # registered before anything else, so it runs after every other handler
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    atexit.register(leave)
    try:
        code = main()
    except SystemExit as done:  # argparse's --help and usage errors
        code = 0 if done.code is None else done.code if isinstance(done.code, int) else 1
        raise


if __name__ == "__main__":
    run()
