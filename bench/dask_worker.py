"""A scoring Dask worker's memory: peak RSS of a `dask worker` process that scored a folder.

    .venv/bin/python bench/dask_worker.py [--images 4000] [--scans 1000]

Starts a Prefect server, `dask scheduler` and one `dask worker --nworkers 1 --nthreads 1`
(the worker process is the nanny's child; its pid comes from the scheduler), trains a seed model
briefly, then runs `digitflow score FOLDER --dask-address ...` on 28×28 PNGs and on scan-like
pictures. Prints the worker's resident memory when idle and its peak (VmHWM) after each folder,
beside the floor: a process that imports what a worker must (distributed, prefect) and, for
comparison, one that also imports Keras, as every worker did before #14. Target: ≤ 300 MB.
"""

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import BIN, REPO, bench_root, digitflow_env, prefect_server, run
from score import png_folder  # the PNG folders bench/score.py scores

sys.path.insert(0, str(REPO))
from tasks.demo import make_demo_folder  # noqa: E402

TARGET_MB = 300


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[key].split()[0]) * 1024 / 1e6 for name, key in (("now", "VmRSS"),
                                                                              ("peak", "VmHWM"))}


def floor_mb(modules: str, env: dict) -> float:
    return run([str(BIN / "python"), "-c", f"import {modules}"], env)["rss_mib"] * 2**20 / 1e6


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--images", type=int, default=4000)
    options.add_argument("--scans", type=int, default=1000)
    args = options.parse_args()
    root = bench_root()
    with np.load(REPO / "data" / "raw" / "mnist.npz") as npz:
        x, y = npz["x_test"], npz["y_test"]
    png_folder(root / "pngs", x, args.images)
    make_demo_folder(x, y, root / "scans", count=args.scans, bad_files=False)

    with prefect_server(root) as api:
        env = {**os.environ, **digitflow_env(root), "PREFECT_API_URL": api}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        address = f"tcp://127.0.0.1:{port}"
        processes = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                                       "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        processes.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--host",
                                           "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                                           "--dashboard-address", "127.0.0.1:0"], env=env, cwd=REPO,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            from distributed import Client

            with Client(address, timeout=60) as client:
                client.wait_for_workers(1, timeout=120)
                (pid,) = client.run(os.getpid).values()
            run([str(BIN / "digitflow"), "train", "--limit", "2000", "--epochs", "1"], env, cwd=root)
            time.sleep(1)
            idle = memory_mb(pid)
            print(f"scoring Dask worker (pid {pid}), target peak ≤ {TARGET_MB} MB")
            print(f"  floor: import distributed, prefect           "
                  f"{floor_mb('distributed, prefect', env):5.0f} MB")
            print(f"  floor: import distributed, prefect, keras    "
                  f"{floor_mb('distributed, prefect, keras', env):5.0f} MB (every worker before #14)")
            print(f"  worker idle                                  {idle['now']:5.0f} MB")
            for folder in ("pngs", "scans"):
                result = run([str(BIN / "digitflow"), "score", str(root / folder),
                              "--dask-address", address], env, cwd=root)["result"]
                seen = memory_mb(pid)
                print(f"  after scoring {folder:<5} ({result['scored']:>5} scored)          "
                      f"{seen['now']:5.0f} MB now, {seen['peak']:5.0f} MB peak"
                      f"  {'met' if seen['peak'] <= TARGET_MB else 'NOT met'}")
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=60)


if __name__ == "__main__":
    main()
