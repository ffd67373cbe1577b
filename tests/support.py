"""Helpers the tests share (fixtures stay in conftest.py): roots, the commands as a user runs
them, the Prefect API, pictures."""

import ast
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.records import EvaluationSet, YourDigits
from tasks.store import write_manifest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def new_root(folder: Path, mnist_npz: Path) -> Path:
    """`folder` made an empty digitflow root holding only the verified data (a copy: a test may
    tamper with its own)."""
    (folder / "data" / "raw").mkdir(parents=True)
    shutil.copy(mnist_npz, folder / "data" / "raw" / "mnist.npz")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect(env: dict, *args: str, timeout: int = 300) -> str:
    """Run the `prefect` CLI as a user would; its output, or a failure showing it."""
    done = subprocess.run([BIN / "prefect", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def end(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM, and after `grace` seconds SIGKILL to the process's whole group (a process worker
    may ignore SIGTERM: it passes SIGINT on to its worker process, which stays, as `make stop`
    finds too)."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def loaded_modules(code: str, watched: set[str], *args: object) -> tuple[list[str], list[str]]:
    """Run `code` in a new Python from the repository (`args` as sys.argv[1:]): the lines it
    printed, and which of the `watched` top-level packages it had loaded by its end."""
    probe = (f"{code}\nimport sys\n"
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(watched)!r}))")
    done = subprocess.run([sys.executable, "-c", probe, *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    return printed, ast.literal_eval(last)


def digitflow_env(root: Path, server_env: dict | None = None, **extra: str) -> dict:
    """The environment of a `digitflow` command writing under `root`: against the server whose
    environment is given, else Prefect's embedded default with the root's own Prefect home."""
    if server_env is not None:
        return {**server_env, "DIGITFLOW_ROOT": str(root), **extra}
    env = {**os.environ, "DIGITFLOW_ROOT": str(root), "PREFECT_HOME": str(root / ".prefect"), **extra}
    env.pop("PREFECT_API_URL", None)  # the embedded default, as on a fresh machine
    return env


def digitflow(root: Path, *args: object, server_env: dict | None = None, cwd: Path | None = None,
              timeout: int = 600, **extra_env: str) -> subprocess.CompletedProcess:
    """The installed `digitflow` console script, run to the end."""
    return subprocess.run([str(BIN / "digitflow"), *map(str, args)],
                          env=digitflow_env(root, server_env, **extra_env), cwd=cwd or root,
                          capture_output=True, text=True, timeout=timeout)


def start_digitflow(root: Path, *args: object) -> subprocess.Popen:
    """The command with its logs and output on one pipe, in a process group of its own."""
    return subprocess.Popen([str(BIN / "digitflow"), *map(str, args)], env=digitflow_env(root),
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def last_json(done: subprocess.CompletedProcess) -> dict:
    """The JSON summary a successful command ends with."""
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextmanager
def api_client(api_url: str | None = None):
    """A sync Prefect client, for the given server or the one the settings name."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: api_url} if api_url else {}
    with temporary_settings(updates), get_client(sync_client=True) as client:
        yield client


def set_parameters(client, deployment: str, **parameters) -> None:
    """Replace some of the deployment's parameters (the runs it starts from now on take them)."""
    from prefect.client.schemas.actions import DeploymentUpdate

    found = client.read_deployment_by_name(deployment)
    client.update_deployment(found.id, DeploymentUpdate(
        parameters={**found.parameters, **parameters}))


def run_artifacts(run_id, api_url: str | None = None) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with api_client(api_url) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **options) -> bytes:
    """A picture (or uint8 array) as the bytes of an image file."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def yours_with(folder: Path, n: int) -> YourDigits:
    """Your digits as training takes them in: n training pictures of one stroke (labels 0–9 in
    turn) and 2 test pictures, as arrays under `folder`, from span "s"."""
    x = np.zeros((n, 28, 28), dtype=np.float32)
    x[:, 10:18, 12:16] = 0.5  # a stroke with a margin: shifting moves it, never cuts it
    y = np.arange(n, dtype=np.uint8) % 10
    files = {}
    for name, array in (("x_train", x), ("y_train", y), ("x_test", x[:2]), ("y_test", y[:2])):
        files[name] = folder / f"{name}.npy"
        np.save(files[name], array)
    step = write_manifest(folder / "m.json", files, {})
    test = EvaluationSet("yours", "fp", "k", files["x_test"], files["y_test"])
    return YourDigits(key="k", spans=("s",), train_images=n, test_images=2, summaries=(),
                      conflicts=(), broken=(), test_set=test, step=step)


def write_pngs(folder: Path, digits: np.ndarray, name: str = "{i:05d}.png",
               invert: bool = False, size: int | None = None) -> list[Path]:
    """Each uint8 digit as a PNG under `folder` (dark ink on white with `invert`, enlarged to
    `size`×`size` if given)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, digit in enumerate(digits):
        image = Image.fromarray(255 - digit if invert else digit)
        if size:
            image = image.resize((size, size))
        paths.append(folder / name.format(i=i))
        image.save(paths[-1])
    return paths


def choose(page, field, choice: str) -> None:
    """Pick `choice` in a field of a paused run's form. The drop-down is Prefect's own list box,
    not a <select>: a click did not open it in headless Chromium; the keyboard does, as for a
    person tabbing through the form."""
    from playwright.sync_api import expect

    button = field.locator("button.p-select-button__control")
    button.scroll_into_view_if_needed()
    button.focus()
    page.keyboard.press("ArrowDown")
    options = page.get_by_role("listbox")
    options.get_by_role("option", name=choice, exact=True).click()
    expect(options).to_have_count(0)
    expect(button).to_have_text(choice)
