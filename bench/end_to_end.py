"""End to end only: `digitflow score` against the careful scorer on one folder, taking turns.

    .venv/bin/python bench/end_to_end.py ROOT FOLDER [--runs 5] [--served]

ROOT is a bench root that bench/score.py made (its model, its folders: pngs, scans, ...); FOLDER
one of its folders. Without --served, digitflow starts Prefect's temporary server as a user's
command does; with it, both run beside a `prefect server start`. A quicker check of one line of
bench/score.py's table (whose method this is), with more runs, for changes to the start of a run.
"""

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

from common import BIN, REPO, digitflow_env, prefect_server, run


def take_turns(root: Path, folder: Path, runs: int, served: bool) -> tuple[list[dict], list[dict]]:
    """`runs` runs each of the baseline and `digitflow score` on `folder`, alternating."""
    model = json.loads((root / "artifacts" / "models" / "latest.json").read_text())["model_path"]
    baseline, digitflow = [], []
    with prefect_server(root) if served else contextlib.nullcontext() as api:
        env = {**digitflow_env(root), **({"PREFECT_API_URL": api} if api else {})}
        for _ in range(runs):
            baseline.append(run([sys.executable, str(REPO / "bench" / "baseline_scorer.py"),
                                 str(folder), model, str(root / "baseline.parquet")]))
            digitflow.append(run([str(BIN / "digitflow"), "score", str(folder), "--model", model,
                                  "--output", str(root / "digitflow.parquet")], env, cwd=root))
    return baseline, digitflow


def report(folder: Path, served: bool, baseline: list[dict], digitflow: list[dict],
           target: float) -> float:
    """Print the medians and their ratio; returns the ratio."""
    a = statistics.median(r["wall"] for r in baseline)
    b = statistics.median(r["wall"] for r in digitflow)
    server = "a running Prefect server" if served else "Prefect's temporary server"
    print(f"{folder.name}, {server}: baseline {a:.1f} s, digitflow {b:.1f} s (medians of "
          f"{len(baseline)}): {a / b:.2f}× the baseline (target >= {target}); walls "
          f"{[round(r['wall'], 1) for r in baseline]} / {[round(r['wall'], 1) for r in digitflow]}")
    return a / b


def main() -> None:
    options = argparse.ArgumentParser()
    options.add_argument("root", type=Path)
    options.add_argument("folder")
    options.add_argument("--runs", type=int, default=5)
    options.add_argument("--served", action="store_true", help="against a running Prefect server")
    args = options.parse_args()
    folder = args.root / args.folder
    report(folder, args.served, *take_turns(args.root, folder, args.runs, args.served),
           target=1.5 if args.served else 1.0)


if __name__ == "__main__":
    main()
