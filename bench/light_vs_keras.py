"""A prediction table against Keras: does the light runtime answer as the `.keras` model does?

    .venv/bin/python bench/light_vs_keras.py TABLE.parquet FOLDER

TABLE is what `digitflow score FOLDER` wrote (e.g. `make run`'s artifacts/predictions/demo-*.parquet).
Every readable picture of FOLDER is prepared as scoring prepares it, predicted by the table's
model in Keras and calibrated with its temperature, and compared with the table's probabilities.
Prints the pictures compared, whether every label agrees, and the largest probability difference.
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tasks.calibrate import calibrated  # noqa: E402
from tasks.files import list_images, read_image  # noqa: E402
from tasks.inference import PROB_COLUMNS  # noqa: E402


def main() -> None:
    table_path, folder = Path(sys.argv[1]), Path(sys.argv[2])
    table = pd.read_parquet(table_path).set_index("path")
    version = table["model_version"].dropna().unique()
    if len(version) != 1:
        raise SystemExit(f"{table_path}: expected one model version, found {list(version)}")
    root = table_path.resolve().parents[2]  # artifacts/predictions/TABLE → the digitflow root
    metadata = json.loads((root / "artifacts" / "models" / version[0] / "metadata.json").read_text())
    model = keras.saving.load_model(metadata["model_path"], compile=False, safe_mode=True)
    read = [(f.path, read_image(f)[1]) for f in list_images(folder)]
    ok = [(path, x) for path, x in read if x is not None]
    keras_probs = calibrated(model.predict(np.stack([x for _, x in ok]), verbose=0),
                             metadata["calibration"]["temperature"])
    light_probs = table.loc[[path for path, _ in ok], PROB_COLUMNS].to_numpy()
    print(json.dumps({"pictures": len(ok), "model_version": version[0],
                      "labels_equal": bool((light_probs.argmax(1) == keras_probs.argmax(1)).all()),
                      "max_probability_difference": float(np.abs(light_probs - keras_probs).max())}))


if __name__ == "__main__":
    main()
