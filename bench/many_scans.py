"""`digitflow score` end to end on many scans: 100,000 by default, with either kind of server.

    .venv/bin/python bench/many_scans.py [--root ROOT] [--count 100000] [--runs 1]

Renders `count` scans as bench/score.py's scan folders are made (tasks/demo.py), in parts of
10,000 (the MNIST test set's size; each part its own seed), one part per core at a time, into
ROOT/scans-<count> (a part already whole is kept). Without --root, makes a bench root and trains
bench/score.py's model in it. Then the baseline and digitflow take turns on the folder
(bench/end_to_end.py), with Prefect's temporary server and with a running one. 100,000 scans are
about 8.6 GB; rendering them took under 47 minutes on 2 cores beside the test suite, and each
run 3.5–5 minutes.
"""

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common import REPO, bench_root, digitflow_env, fixed_costs, train_scoring_model
from end_to_end import report, take_turns
from score import best_possible

sys.path.insert(0, str(REPO))
from tasks.demo import make_demo_folder  # noqa: E402

PART = 10_000


def render_part(root: Path, folder: Path, part: int, count: int) -> None:
    if (folder / f"part-{part:02d}" / "labels.csv").exists():
        return  # written last: the part is whole
    with np.load(root / "data" / "raw" / "mnist.npz", allow_pickle=False) as npz:
        x, y = npz["x_test"], npz["y_test"]
    make_demo_folder(x, y, folder / f"part-{part:02d}", count=count, seed=part, bad_files=False)


def main() -> None:
    options = argparse.ArgumentParser()
    options.add_argument("--root", type=Path, help="a bench root with a model (bench/score.py's)")
    options.add_argument("--count", type=int, default=100_000)
    options.add_argument("--runs", type=int, default=1, help="runs per scorer and server")
    args = options.parse_args()
    root = args.root or bench_root()
    if not (root / "artifacts" / "models" / "latest.json").exists():
        train_scoring_model(root)
    folder = root / f"scans-{args.count}"
    sizes = [min(PART, args.count - start) for start in range(0, args.count, PART)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(render_part, [root] * len(sizes), [folder] * len(sizes), range(len(sizes)),
                      sizes))
    costs, baselines = fixed_costs(digitflow_env(root)), []
    for served in (False, True):
        baseline, digitflow = take_turns(root, folder, args.runs, served)
        report(folder, served, baseline, digitflow, target=1.8)
        baselines += baseline
    best_possible(baselines, costs)
    print(f"bench root: {root}")


if __name__ == "__main__":
    main()
