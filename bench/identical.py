"""Whether a change to preparing images left every output as it was, and what it saved.

    .venv/bin/python bench/identical.py REVISION FOLDER...

Runs `preprocess` of tasks/images.py as it was at REVISION (a git revision) and as it is now on
every file under the FOLDERs: the same 28×28 input bit for bit, or the same error, for each.
Prints the files that differ, the count, and each version's time per file (one core, decoding
included, the faster of two passes).
"""

import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tasks import images  # noqa: E402
from tasks.files import EXTENSIONS  # noqa: E402


def module_at(revision: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{revision}:tasks/images.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"images_at_{revision}")
    exec(compile(source, f"{revision}:tasks/images.py", "exec"), module.__dict__)
    return module


def outcome(module: types.ModuleType, data: bytes):
    try:
        return module.preprocess(data)
    except Exception as exc:  # the error row's reason, compared as text
        return f"{type(exc).__name__}: {exc}"


def same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):  # an error row: the same one, by its reason
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a.dtype == b.dtype and np.array_equal(a, b)


def describe(result) -> str:
    return result if isinstance(result, str) else "an input"


def seconds(module: types.ModuleType, blobs: list[bytes]) -> float:
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for data in blobs:
            outcome(module, data)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    before = module_at(sys.argv[1])
    paths = [p for folder in sys.argv[2:] for p in sorted(Path(folder).rglob("*"))
             if p.is_file() and p.suffix.lower() in EXTENSIONS]
    blobs = [p.read_bytes() for p in paths]
    outcomes = [(path, outcome(before, data), outcome(images, data))
                for path, data in zip(paths, blobs)]
    differ = [(path, old, new) for path, old, new in outcomes if not same(old, new)]
    for path, old, new in differ[:20]:
        print(f"differs: {path}: {describe(old)} at {sys.argv[1]}, {describe(new)} now")
    then, now = seconds(before, blobs), seconds(images, blobs)
    print(f"{len(paths)} files, {len(differ)} differ; per file {1000 * then / len(paths):.2f} ms at "
          f"{sys.argv[1]}, {1000 * now / len(paths):.2f} ms now ({now / then:.2f}×)")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
