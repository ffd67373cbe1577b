"""Training: the tutorial script against `digitflow train`, in one run on one machine.

    .venv/bin/python bench/train.py

Runs, each as its own process: the tutorial as written (bench/tutorial.py); `digitflow train
--no-cache` (the whole flow: Prefect's temporary server, ingest, normalize, train, evaluate,
plots, report); the same command again without --no-cache (the cached rerun); then both again
against a running Prefect server instead of the temporary one. Prints wall time, peak RSS and
test accuracy of each, the ratios the targets are stated in, and the floor under a cached rerun:
importing Prefect, and with the temporary server, that server importing itself.
"""

import statistics
import sys

from common import BIN, REPO, bench_root, digitflow_env, fixed_costs, prefect_server, run


RERUNS = 5  # cached reruns against the running server: one varies by ±0.5 s on 2 cores


def main() -> None:
    root = bench_root()
    env = digitflow_env(root)
    # Warm Prefect's database once, as on any machine after its first run.
    run([str(BIN / "digitflow"), "train", "--limit", "500", "--epochs", "1"], env, cwd=root)

    tutorial = run([sys.executable, str(REPO / "bench" / "tutorial.py"),
                    str(root / "data" / "raw" / "mnist.npz")])
    fresh = run([str(BIN / "digitflow"), "train", "--no-cache"], env, cwd=root)
    cached = run([str(BIN / "digitflow"), "train"], env, cwd=root)

    print(f"{'run':<32}{'wall s':>8}{'peak RSS MiB':>14}{'test acc':>10}")
    for name, r in (("tutorial script", tutorial), ("digitflow train --no-cache", fresh),
                    ("digitflow train (cached rerun)", cached)):
        print(f"{name:<32}{r['wall']:>8.1f}{r['rss_mib']:>14.0f}{r['result']['test_accuracy']:>10.4f}")
    print(f"train wall ratio (target <= 0.5): {fresh['wall'] / tutorial['wall']:.2f}")
    print(f"peak RSS ratio (target <= 1.0): {fresh['rss_mib'] / tutorial['rss_mib']:.2f}")
    print(f"accuracy difference, points (target within ±0.5): "
          f"{100 * (fresh['result']['test_accuracy'] - tutorial['result']['test_accuracy']):+.2f}")
    print(f"cached rerun / first run (target <= 0.1): {cached['wall'] / fresh['wall']:.2f} "
          f"(in-flow seconds: {cached['result']['seconds']:.1f} / {fresh['result']['seconds']:.1f})")

    # The same pair against a running `prefect server start`, as under `make serve`: no
    # temporary server to start in every process.
    with prefect_server(root) as api:
        served = {**env, "PREFECT_API_URL": api}
        fresh_served = run([str(BIN / "digitflow"), "train", "--no-cache"], served, cwd=root)
        reruns = sorted(run([str(BIN / "digitflow"), "train"], served, cwd=root)["wall"]
                        for _ in range(RERUNS))
    cached_wall = statistics.median(reruns)
    print(f"with a running Prefect server: first {fresh_served['wall']:.1f} s, cached rerun "
          f"{cached_wall:.1f} s, median of {RERUNS} ({reruns[0]:.2f}–{reruns[-1]:.2f}; "
          f"ratio {cached_wall / fresh_served['wall']:.3f}, target <= 0.1); "
          f"train wall ratio against the tutorial {fresh_served['wall'] / tutorial['wall']:.2f}")
    # The floor: a rerun cannot end before Prefect is imported, nor, with the temporary server,
    # before that server has imported itself and can answer.
    costs = fixed_costs(env)
    for setting, floor, first in (("the temporary server", costs["server"]["wall"], fresh),
                                  ("a running server", costs["prefect"]["wall"], fresh_served)):
        print(f"floor of a cached rerun with {setting}: {floor:.1f} s "
              f"(= {floor / first['wall']:.2f}× the first run)")
    print(f"bench root: {root}")


if __name__ == "__main__":
    main()
