"""The seed tutorial as written, for benchmarks: the baseline every digitflow figure is against.

The one change: `keras.datasets.mnist.load_data()` cannot download here, so the same arrays are
read from the verified data/raw/mnist.npz. Prints one line of JSON.
"""

import json
import sys
import time

started = time.perf_counter()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import accuracy_score  # noqa: E402
from tensorflow import keras  # noqa: E402
from tensorflow.keras import Sequential  # noqa: E402
from tensorflow.keras.layers import Dense, Flatten  # noqa: E402

with np.load(sys.argv[1] if len(sys.argv) > 1 else "data/raw/mnist.npz", allow_pickle=False) as npz:
    (X_train, y_train), (X_test, y_test) = (npz["x_train"], npz["y_train"]), (npz["x_test"], npz["y_test"])
X_train = X_train / 255
X_test = X_test / 255

model = Sequential()
model.add(Flatten(input_shape=(28, 28)))
model.add(Dense(128, activation="relu"))
model.add(Dense(32, activation="relu"))
model.add(Dense(10, activation="softmax"))
model.summary()
model.compile(loss="sparse_categorical_crossentropy", optimizer="Adam", metrics=["accuracy"])
fit_started = time.perf_counter()
history = model.fit(X_train, y_train, epochs=25, validation_split=0.2, verbose=2)
fit_seconds = time.perf_counter() - fit_started

y_prob = model.predict(X_test)
y_pred = y_prob.argmax(axis=1)
accuracy = accuracy_score(y_test, y_pred)

plt.plot(history.history["loss"])
plt.plot(history.history["val_loss"])
plt.plot(history.history["accuracy"])
plt.plot(history.history["val_accuracy"])
plt.savefig("/dev/null", format="png")
plt.imshow(X_test[1])
model.predict(X_test[1].reshape(1, 28, 28)).argmax(axis=1)

print(json.dumps({"test_accuracy": float(accuracy), "fit_seconds": round(fit_seconds, 2),
                  "seconds": round(time.perf_counter() - started, 2)}))
