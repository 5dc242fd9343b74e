"""Writes the two .npz test fixtures in this folder from the bundled IDX subset.

Run from the repository root with numpy installed (outside the repo, e.g.
`python3 -m venv /tmp/np && /tmp/np/bin/pip install numpy`):

    /tmp/np/bin/python data/npz/make_fixtures.py

The first examples of each split are taken in file order, so the Rust tests can compare
them pixel for pixel with the IDX files (`compressor/src/data/npz/tests.rs`).
"""
import gzip
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUBSET = ROOT / "data" / "fashion-mnist-subset"
OUT = ROOT / "data" / "npz"


def idx(name, offset, shape):
    raw = gzip.open(SUBSET / name).read()
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


x_train = idx("train-images-idx3-ubyte.gz", 16, (-1, 28, 28))
y_train = idx("train-labels-idx1-ubyte.gz", 8, (-1,))
x_test = idx("t10k-images-idx3-ubyte.gz", 16, (-1, 28, 28))
y_test = idx("t10k-labels-idx1-ubyte.gz", 8, (-1,))

# As keras.datasets.fashion_mnist.load_data() returns them: (N, 28, 28) uint8, uint8
# labels; compressed (deflate entries).
np.savez_compressed(
    OUT / "fashion-keras-u8.npz",
    x_train=x_train[:200],
    y_train=y_train[:200],
    x_test=x_test[:100],
    y_test=y_test[:100],
)

# As a PyTorch pipeline would save tensors: (N, 1, 28, 28) float32 in [0, 1] (ToTensor),
# int64 labels; plain np.savez (stored entries).
np.savez(
    OUT / "fashion-torch-f32.npz",
    x_train=(x_train[:24, None] / 255.0).astype(np.float32),
    y_train=y_train[:24].astype(np.int64),
    x_test=(x_test[:12, None] / 255.0).astype(np.float32),
    y_test=y_test[:12].astype(np.int64),
)
