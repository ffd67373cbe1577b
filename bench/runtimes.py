"""The light runtime, chosen by measuring: ONNX in onnxruntime against LiteRT, for each preset.

    .venv/bin/python bench/runtimes.py [--repeat 5]

LiteRT's interpreter is not a dependency of digitflow: `pip install ai-edge-litert` first. For
each preset, a network after one epoch on 2,000 MNIST images is exported both ways by Keras
(`format="onnx"`, `format="litert"`, training-only layers left out as tasks.inference does),
then each runtime, as its own process, loads its file and answers for one picture (wall time
and peak RSS, median and most of `--repeat`), and in this process predicts 10,240 test digits
in batches of 1,024 (µs per picture, one thread and all cores) and is compared with Keras.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import BIN, REPO, run

sys.path.insert(0, str(REPO))
from tasks.inference import inference_model  # noqa: E402
from tasks.presets import PRESETS  # noqa: E402

# The child reports its own peak: a child's ru_maxrss starts at its parent's RSS when it forks,
# and this process holds TensorFlow.
PEAK = ("; import json; print(json.dumps({'peak_kb': int(open('/proc/self/status').read()"
        ".split('VmHWM:')[1].split()[0])}))")
ONE = {
    "onnxruntime": "import numpy as np, onnxruntime as ort, sys; s = ort.InferenceSession(sys.argv[1], "
                   "providers=['CPUExecutionProvider']); s.run(None, {s.get_inputs()[0].name: "
                   "np.zeros((1, 28, 28), np.float32)})",
    "litert": "import numpy as np, sys; from ai_edge_litert.interpreter import Interpreter; "
              "i = Interpreter(model_path=sys.argv[1]); i.allocate_tensors(); d = i.get_input_details()[0]; "
              "i.set_tensor(d['index'], np.zeros((1, 28, 28), np.float32)); i.invoke()",
}


def onnx_predict(path: Path, threads: int | None):
    """A predict function; threads None: the runtime's default (every core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def litert_predict(path: Path, threads: int | None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    given, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def predict(x):
        interpreter.resize_tensor_input(given, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(given, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)
    return predict


def per_picture_us(predict, x: np.ndarray) -> float:
    batches = [x[i:i + 1024] for i in range(0, len(x), 1024)]
    predict(batches[0])
    started = time.perf_counter()
    for batch in batches:
        predict(batch)
    return (time.perf_counter() - started) / len(x) * 1e6


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--repeat", type=int, default=5)
    args = options.parse_args()
    from tasks.models import build_model

    with np.load(REPO / "data" / "raw" / "mnist.npz") as npz:
        x_train, y_train = npz["x_train"][:2000] / 255, npz["y_train"][:2000]
        x = (npz["x_test"][:10240] / 255).astype(np.float32)
    folder = Path(tempfile.mkdtemp(prefix="digitflow-runtimes-"))
    print(f"{'preset':<7}{'runtime':<13}{'cold s':>8}{'cold MB':>9}{'µs/pic 1 thread':>17}"
          f"{'µs/pic all':>12}{'max |Δ| vs Keras':>18}")
    for preset in PRESETS:
        model = build_model(preset)
        model.fit(x_train, y_train, epochs=1, batch_size=128, verbose=0)
        expected = model.predict(x, batch_size=1024, verbose=0)
        light = inference_model(model)
        light.predict_on_batch(x[:1])
        files = {"onnxruntime": folder / f"{preset}.onnx", "litert": folder / f"{preset}.tflite"}
        light.export(str(files["onnxruntime"]), format="onnx", verbose=False)
        light.export(str(files["litert"]), format="litert", verbose=False)
        for runtime, make in (("onnxruntime", onnx_predict), ("litert", litert_predict)):
            cold = [run([str(BIN / "python"), "-c", ONE[runtime] + PEAK, str(files[runtime])])
                    for _ in range(args.repeat)]
            difference = float(np.abs(make(files[runtime], None)(x) - expected).max())
            print(f"{preset:<7}{runtime:<13}{statistics.median(c['wall'] for c in cold):8.2f}"
                  f"{max(c['result']['peak_kb'] for c in cold) * 1024 / 1e6:9.0f}"
                  f"{per_picture_us(make(files[runtime], 1), x):17.1f}"
                  f"{per_picture_us(make(files[runtime], None), x):12.1f}{difference:18.2g}")


if __name__ == "__main__":
    main()
