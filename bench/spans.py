"""Taking a span in: `digitflow label` and training's take-in step against a careful one-core loop.

    .venv/bin/python bench/spans.py [--sizes 10000 100000] [--keep]

Makes its pictures once from the verified MNIST *training* digits: 28×28 PNGs, and every fifth one
enlarged to 140×140 and inverted (dark ink on white, as a scan), so decoding is real work. Beyond
60,000 the digits repeat with one corner pixel changed, so every file is distinct content and
nothing is deduplicated away. For each size, in a fresh root, each as its own process:

1. `digitflow label FOLDER --labels CSV --span NAME` (copy, hash, span.json);
2. the take-in and preparation (`tasks.yours.your_digits(get_paths(), refresh=True)`), then the
   cached rerun (`refresh=False`), which should read no picture;
3. the careful one-core script over the same files (`preprocess` in a loop, results in a list).

Floors: the RSS of a process that only imports what the take-in imports, and the size of the
x_train/x_test arrays. The prepared arrays are memory-mapped, so the take-in's peak should not grow
with them. Peak RSS as `common.run` reports it is the largest single process of the tree (the
kernel's ru_maxrss of the process and its reaped children); the take-in also samples /proc to split
its own memory into anonymous (heap) and file-backed (mapped files, which includes the written
pages of the memory-mapped arrays) and to sum the whole tree. Needs about 2 GB of disk.
"""

import argparse
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from common import BIN, REPO, bench_root, digitflow_env, run

ENLARGED_EVERY = 5  # one picture in five is a 140×140 inverted "scan"
ENLARGED = 140
PER_FOLDER = 1000
ARRAY_BYTES = 28 * 28 * 4  # one prepared picture: float32 28×28

# Stdlib only, so it adds nothing to the floor it is measured against: a thread that samples the
# memory of this process and of every descendant (the reader pool) from /proc.
SAMPLER = r'''
import json, os, sys, threading, time

def _status(pid):
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    fields[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return fields

def _descendants(root):
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parents[int(name)] = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found

class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"main_rss": 0.0, "main_anon": 0.0, "main_file": 0.0, "tree_rss": 0.0,
                     "tree_anon": 0.0, "worker_rss": 0.0, "processes": 1}
        self.done = threading.Event()

    def sample(self):
        me = _status(os.getpid())
        others = [_status(p) for p in _descendants(os.getpid())]
        p = self.peak
        p["main_rss"] = max(p["main_rss"], me.get("VmRSS", 0))
        p["main_anon"] = max(p["main_anon"], me.get("RssAnon", 0))
        p["main_file"] = max(p["main_file"], me.get("RssFile", 0) + me.get("RssShmem", 0))
        tree_rss = me.get("VmRSS", 0) + sum(o.get("VmRSS", 0) for o in others)
        tree_anon = me.get("RssAnon", 0) + sum(o.get("RssAnon", 0) for o in others)
        p["tree_rss"], p["tree_anon"] = max(p["tree_rss"], tree_rss), max(p["tree_anon"], tree_anon)
        p["worker_rss"] = max([p["worker_rss"], *(o.get("VmRSS", 0) for o in others)])
        p["processes"] = max(p["processes"], 1 + len(others))

    def run(self):
        while not self.done.wait(0.2):
            self.sample()

    def stop(self):
        self.done.set()
        self.join()
        self.sample()
        return self.peak

_sampler = Sampler()
_sampler.start()
'''

TAKE_IN = SAMPLER + r'''
import tasks.files
from tasks.paths import get_paths
from tasks.yours import your_digits

started = time.perf_counter()
yours = your_digits(get_paths(), refresh=sys.argv[1] == "refresh", log=lambda line: None)
seconds = time.perf_counter() - started
peak = _sampler.stop()
with open("/proc/self/io") as f:
    counters = dict(line.split(": ") for line in f.read().splitlines())
print(json.dumps({"seconds": seconds, "key": yours.key, "cached": yours.step.cached, "pictures":
                  yours.train_images + yours.test_images, "train": yours.train_images,
                  "test": yours.test_images, "broken": len(yours.broken),
                  "pool_started": tasks.files._pool is not None,
                  "read_mib": int(counters["rchar"]) / 2**20, **peak}))
'''

# The careful one-core script: every picture prepared in one process, the results kept in a list.
BASELINE = r'''
import csv, json, sys, time
from pathlib import Path
from tasks.images import preprocess

folder = Path(sys.argv[1])
files = [folder / row["path"] for row in csv.DictReader(open(sys.argv[2]))]
started = time.perf_counter()
inputs = [preprocess(open(f, "rb").read()) for f in files]
print(json.dumps({"work_seconds": time.perf_counter() - started, "pictures": len(inputs)}))
'''


def picture(digit: np.ndarray, i: int) -> bytes:
    """PNG bytes of training digit `digit`, as the i-th picture (distinct content for every i)."""
    repeat = i // 60_000
    if i % ENLARGED_EVERY == ENLARGED_EVERY - 1:
        image = 255 - np.asarray(Image.fromarray(digit).resize((ENLARGED, ENLARGED), Image.BICUBIC))
        image[0, 0] = 255 - repeat
    else:
        image = digit.copy()
        image[0, 0] = repeat
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


def write_pictures(folder: Path, sizes: list[int]) -> dict[int, Path]:
    """max(sizes) pictures under `folder`, and a labels CSV per size naming the first N of them."""
    with np.load(REPO / "data" / "raw" / "mnist.npz", allow_pickle=False) as npz:
        x, y = npz["x_train"], npz["y_train"]
    rows = []
    for i in range(max(sizes)):
        path = f"{i // PER_FOLDER:03d}/{i:06d}.png"
        if i % PER_FOLDER == 0:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(picture(x[i % len(x)], i))
        rows.append(f"{path},{y[i % len(y)]}\n")
    csvs = {}
    for n in sizes:
        csvs[n] = folder / f"labels-{n}.csv"
        csvs[n].write_text("path,label\n" + "".join(rows[:n]))
    return csvs


def loads() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def measure(folder: Path, labels: Path, n: int, keep: bool) -> dict:
    root = bench_root()
    env = digitflow_env(root)
    figures = {"root": root, "load_before": loads()}
    try:
        figures["label"] = run([str(BIN / "digitflow"), "label", str(folder),
                                "--labels", str(labels), "--span", f"bench-{n}"], env, cwd=root)
        baseline = [str(BIN / "python"), "-c", BASELINE, str(folder), str(labels)]
        # The baseline before and after the take-in: the machine's load may change meanwhile.
        figures["baselines"] = [run(baseline, cwd=REPO)]
        figures["take_in"] = run([str(BIN / "python"), "-c", TAKE_IN, "refresh"], env, cwd=root)
        figures["cached"] = run([str(BIN / "python"), "-c", TAKE_IN, "cached"], env, cwd=root)
        keys = (figures["take_in"]["result"]["key"], figures["cached"]["result"]["key"])
        figures["edited"] = keys[0] != keys[1]
        if figures["edited"]:
            # The source of tasks.yours/labels/images/files changed between the two calls (its
            # code version is in the cache key), so that rerun prepared again under a new key;
            # now that key is prepared, and a further rerun is the cached one.
            figures["cached"] = run([str(BIN / "python"), "-c", TAKE_IN, "cached"], env, cwd=root)
        figures["baselines"].append(run(baseline, cwd=REPO))
        figures["baseline"] = max(figures["baselines"], key=lambda r: r["rss_mib"])
        figures["baseline_loop"] = sum(r["result"]["work_seconds"]
                                       for r in figures["baselines"]) / 2
        figures["baseline_wall"] = sum(r["wall"] for r in figures["baselines"]) / 2
        figures["baseline_cpu"] = sum(r["cpu"] for r in figures["baselines"]) / 2
    finally:
        figures["load_after"] = loads()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return figures


def report(sizes: list[int], results: dict[int, dict], floor: dict, reader_floor: dict,
           pyarrow_floor: dict, bytes_by_size: dict[int, int]) -> None:
    print("| N | label wall s | take-in wall s | pictures/s | vs one-core baseline | peak RSS MiB "
          "(take-in) | baseline peak RSS MiB | import floor MiB | cached rerun s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        r = results[n]
        t, b = r["take_in"], r["baseline"]
        rate, base = n / t["result"]["seconds"], n / r["baseline_loop"]
        print(f"| {n:,} | {r['label']['wall']:.1f} | {t['wall']:.1f} | {rate:,.0f} | "
              f"{rate / base:.2f}× (end to end {r['baseline_wall'] / t['wall']:.2f}×) | "
              f"{t['rss_mib']:.0f} | {b['rss_mib']:.0f} | {floor['rss_mib']:.0f} | "
              f"{r['cached']['wall']:.1f} |")
    print()
    print("pictures/s: N over the your_digits call (the baseline: over its loop, mean of the runs "
          "before and after the take-in), imports excluded; end to end: over each process's whole "
          "wall. 2 cores allow up to 2×. Baseline peak RSS: the larger of its two runs.")
    print(f"floors: `import tasks.yours` {floor['rss_mib']:.0f} MiB ({floor['wall']:.1f} s); plus "
          f"pyarrow.parquet (imported by prepare_pictures) {pyarrow_floor['rss_mib']:.0f} MiB; "
          f"a reader "
          f"process (`import tasks.files`) {reader_floor['rss_mib']:.0f} MiB")
    print()
    print("| N | output arrays MiB | floor + arrays MiB | take-in: main peak RSS | main anon | "
          "main file-backed | tree sum RSS (processes) | tree anon | label peak RSS MiB | "
          "baseline loop s (before, after) | CPU ms per picture: baseline, take-in | "
          "take-in call s / CPU s | cached: read MiB, pool, CPU s | load before → after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        r = results[n]
        t, c = r["take_in"], r["cached"]
        tr, cr = t["result"], c["result"]
        arrays = tr["pictures"] * ARRAY_BYTES / 2**20
        loops = ", ".join(f"{x['result']['work_seconds']:.1f}" for x in r["baselines"])
        print(f"| {n:,} | {arrays:.0f} | {floor['rss_mib'] + arrays:.0f} | {tr['main_rss']:.0f} | "
              f"{tr['main_anon']:.0f} | {tr['main_file']:.0f} | {tr['tree_rss']:.0f} "
              f"({tr['processes']}) | {tr['tree_anon']:.0f} | {r['label']['rss_mib']:.0f} | "
              f"{r['baseline_loop']:.1f} ({loops}) | "
              f"{1000 * r['baseline_cpu'] / n:.2f}, {1000 * t['cpu'] / n:.2f} | "
              f"{tr['seconds']:.1f} / {t['cpu']:.1f} | "
              f"{cr['read_mib']:.1f}, {'started' if cr['pool_started'] else 'not started'}, "
              f"{c['cpu']:.1f} | {r['load_before']} → {r['load_after']} |")
    for n in sizes:
        tr, cr = results[n]["take_in"]["result"], results[n]["cached"]["result"]
        if results[n]["edited"]:
            print(f"N={n:,}: the take-in's source was edited between the prepared run and the "
                  "cached rerun (new code version, new cache key): the rerun was made again")
        if tr["pictures"] != n or tr["broken"] or not cr["cached"]:
            print(f"WARNING N={n}: {tr['pictures']} pictures kept ({tr['broken']} broken), "
                  f"cached rerun cached={cr['cached']}")
        print(f"N={n:,}: {tr['train']:,} train + {tr['test']:,} test; pictures on disk "
              f"{bytes_by_size[n] / 2**20:.0f} MiB; cached rerun read {cr['read_mib']:.1f} MiB")
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        a, b = results[small], results[large]
        ratio = b["take_in"]["rss_mib"] / a["take_in"]["rss_mib"]
        anon = b["take_in"]["result"]["main_anon"] / a["take_in"]["result"]["main_anon"]
        print()
        print(f"bounded? take-in peak RSS at {large:,} / at {small:,}: {ratio:.2f} (main process "
              f"anonymous memory {anon:.2f}; {large // small}× the pictures); label peak RSS "
              f"{b['label']['rss_mib'] / a['label']['rss_mib']:.2f}; baseline "
              f"{b['baseline']['rss_mib'] / a['baseline']['rss_mib']:.2f}")


def main() -> None:
    options = argparse.ArgumentParser()
    options.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    options.add_argument("--keep", action="store_true", help="keep the pictures and roots")
    args = options.parse_args()
    sizes = sorted(args.sizes)
    print(f"load average (1/5/15 min) at start: {loads()} on {os.cpu_count()} cores")
    pictures = Path(tempfile.mkdtemp(prefix="digitflow-spans-"))
    results = {}
    try:
        csvs = write_pictures(pictures, sizes)
        bytes_by_size = {n: sum((pictures / line.split(",")[0]).stat().st_size
                                for line in csvs[n].read_text().splitlines()[1:]) for n in sizes}
        floor = run([str(BIN / "python"), "-c", "import tasks.yours"], cwd=REPO)
        pyarrow_floor = run([str(BIN / "python"), "-c", "import tasks.yours, pyarrow.parquet"],
                            cwd=REPO)
        reader_floor = run([str(BIN / "python"), "-c", "import tasks.files"], cwd=REPO)
        for n in sizes:
            results[n] = measure(pictures, csvs[n], n, args.keep)
            load = f"{results[n]['load_before']} → {results[n]['load_after']}"
            print(f"N={n:,} measured (load {load})", flush=True)
        print()
        report(sizes, results, floor, reader_floor, pyarrow_floor, bytes_by_size)
    finally:
        if args.keep:
            print(f"kept: {pictures} and the roots {[str(r['root']) for r in results.values()]}")
        else:
            shutil.rmtree(pictures, ignore_errors=True)
    print(f"load average at end: {loads()}")


if __name__ == "__main__":
    main()
