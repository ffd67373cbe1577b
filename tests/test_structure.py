"""How the code is put together: imports run one way, and the fact modules stay light."""

import ast
from pathlib import Path

from support import REPO, loaded_modules

PACKAGES = ("flows", "tasks")
# Facts and preparation: what a light process (a reader, a predictor, the CLI's parser) imports.
LIGHT = ("tasks.settings", "tasks.presets", "tasks.mnist", "tasks.paths", "tasks.images",
         "tasks.files", "tasks.records", "tasks.modelfiles", "tasks.metrics", "tasks.store",
         "tasks.calibrate", "tasks.inference", "tasks.predict", "tasks.ingest")


def imports_of(path: Path) -> set[str]:
    """Every flows./tasks. module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from tasks import registry` names a module too
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    modules = {f"{p}.{f.stem}" for p in PACKAGES for f in (REPO / p).glob("*.py")}
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    return {f"{package}.{path.stem}": imports_of(path)
            for package in PACKAGES for path in (REPO / package).glob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_flows_and_tasks():
    assert find_cycle(import_graph()) is None, " → ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_tasks_never_import_flows():
    graph = import_graph()
    assert not {(m, i) for m, deps in graph.items() if m.startswith("tasks.") for i in deps
                if i.startswith("flows.")}


def test_fact_and_image_modules_load_neither_prefect_nor_tensorflow():
    assert loaded_modules(f"import {', '.join(LIGHT)}", {"prefect", "tensorflow", "keras"}) == ([], [])


def test_scoring_and_its_workers_never_load_tensorflow():
    """A scoring process or Dask worker runs the light runtime (tasks.inference): TensorFlow's
    seconds and hundreds of MB are for training and evaluation only."""
    code = "import flows.score, flows.review, tasks.score, tasks.report"
    assert loaded_modules(code, {"tensorflow", "keras"}) == ([], [])
