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


def main() -> None:
    options = argparse.ArgumentParser()
    options.add_argument("root", type=Path)
    options.add_argument("folder")
    options.add_argument("--runs", type=int, default=5)
    options.add_argument("--served", action="store_true", help="against a running Prefect server")
    args = options.parse_args()
    root, folder = args.root, args.root / args.folder
    model = json.loads((root / "artifacts" / "models" / "latest.json").read_text())["model_path"]
    baseline, digitflow = [], []
    with prefect_server(root) if args.served else contextlib.nullcontext() as api:
        env = {**digitflow_env(root), **({"PREFECT_API_URL": api} if api else {})}
        for _ in range(args.runs):
            baseline.append(run([sys.executable, str(REPO / "bench" / "baseline_scorer.py"),
                                 str(folder), model, str(root / "baseline.parquet")])["wall"])
            digitflow.append(run([str(BIN / "digitflow"), "score", str(folder), "--model", model,
                                  "--output", str(root / "digitflow.parquet")], env, cwd=root)["wall"])
    a, b = statistics.median(baseline), statistics.median(digitflow)
    server = "a running Prefect server" if args.served else "Prefect's temporary server"
    print(f"{folder.name}, {server}: baseline {a:.1f} s, digitflow {b:.1f} s (medians of "
          f"{args.runs}): {a / b:.2f}× the baseline (target >= {1.5 if args.served else 1.0}); "
          f"walls {[round(w, 1) for w in baseline]} / {[round(w, 1) for w in digitflow]}")


if __name__ == "__main__":
    main()
