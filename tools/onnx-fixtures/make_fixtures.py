#!/usr/bin/env python3
"""Export the ONNX import fixtures with the real tools (not run by CI).

    make_fixtures.py --framework torch   # PyTorch, torch.onnx.export
    make_fixtures.py --framework keras   # TensorFlow/Keras, tf2onnx

Each framework trains three small Fashion-MNIST classifiers (a CNN with batch norm, one
with a residual Add, a depthwise-separable one) for eight epochs on the bundled subset
(data/fashion-mnist-subset), exports them to compressor/tests/fixtures/onnx/, and writes
the framework's own outputs on eight fixed test images (inputs.npy) as <model>.out.npy.
Every export is checked against onnxruntime before it is written. provenance.json
records the tool versions. See README.md next to this file.
"""

import argparse
import gzip
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "fashion-mnist-subset"
OUT = ROOT / "compressor" / "tests" / "fixtures" / "onnx"
EPOCHS = 8
SEED = 0
N_REF = 8
OPSET = 17


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load():
    """sprig's input normalization, (p - 128) / 128, NCHW float32."""
    norm = lambda x: ((x.astype(np.float32) - 128.0) / 128.0)[:, None, :, :]
    xtr = norm(idx(DATA / "train-images-idx3-ubyte.gz"))
    ytr = idx(DATA / "train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = norm(idx(DATA / "t10k-images-idx3-ubyte.gz"))
    yte = idx(DATA / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return xtr, ytr, xte, yte


def reference_inputs(xte):
    """The first eight test images (written once, shared by both frameworks)."""
    x = np.load(OUT / "inputs.npy") if (OUT / "inputs.npy").exists() else None
    if x is None:
        x = np.ascontiguousarray(xte[:N_REF])
        np.save(OUT / "inputs.npy", x)
    return x


def check_ort(path, x, expected):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # One image at a time: an export with a fixed batch of 1 takes no more.
    name = sess.get_inputs()[0].name
    got = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    err = float(np.abs(got - expected).max())
    assert err < 1e-4, f"{path.name}: onnxruntime differs from the framework by {err}"
    return err


def update_provenance(entries):
    p = OUT / "provenance.json"
    prov = json.loads(p.read_text()) if p.exists() else {}
    prov.update(entries)
    p.write_text(json.dumps(prov, indent=2, sort_keys=True) + "\n")


# ----- PyTorch ------------------------------------------------------------------------


def torch_models():
    import torch
    from torch import nn

    class CnnBn(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(16 * 7 * 7, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.stem(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            x = self.relu(x + y)
            x = self.pool(x)
            # x.size(0) with a dynamic batch: a Shape -> Gather -> Concat -> Reshape chain.
            return self.fc(x.view(x.size(0), -1))

    class DsCnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU6())
            self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU())
            self.pw = nn.Sequential(nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
            self.pool = nn.AvgPool2d(2)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

        def forward(self, x):
            return self.head(self.pool(self.pw(self.dw(self.stem(x)))))

    return {"torch_cnn_bn": CnnBn, "torch_residual": Residual, "torch_dscnn": DsCnn}


def make_torch():
    import onnx
    import torch

    torch.manual_seed(SEED)
    xtr, ytr, xte, yte = load()
    x_ref = reference_inputs(xte)
    prov = {}
    # How each is exported, to cover what users' files look like: the TorchScript
    # exporter keeping batch norms (training=PRESERVE), the TorchScript exporter with its
    # default Conv+BN folding and a dynamic batch, and the dynamo exporter.
    how = {
        "torch_cnn_bn": dict(dynamo=False, training=torch.onnx.TrainingMode.PRESERVE),
        "torch_residual": dict(dynamo=False, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}),
        # The dynamo exporter writes opset 18 natively (converting down fails), puts
        # weights in a side file unless told not to, and its optimizer folds batch norms
        # into the convs (optimize=False keeps them: a depthwise-separable net fine-tunes
        # after pruning far better with them).
        "torch_dscnn": dict(dynamo=True, external_data=False, opset_version=18, optimize=False),
    }
    for name, cls in torch_models().items():
        model = cls()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(SEED)
        for _ in range(EPOCHS):
            model.train()
            perm = torch.randperm(len(xtr), generator=g)
            for i in range(0, len(xtr), 64):
                b = perm[i : i + 64]
                loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(xtr[b.numpy()])), torch.from_numpy(ytr[b.numpy()]))
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean()
            ref = model(torch.from_numpy(x_ref)).numpy()
        path = OUT / f"{name}.onnx"
        kwargs = dict(input_names=["input"], output_names=["output"], opset_version=OPSET)
        kwargs.update(how[name])
        torch.onnx.export(model, (torch.from_numpy(x_ref[:1]),), str(path), **kwargs)
        onnx.checker.check_model(onnx.load(str(path)))
        err = check_ort(path, x_ref, ref)
        np.save(OUT / f"{name}.out.npy", ref)
        prov[name] = {
            "tool": f"torch {torch.__version__} torch.onnx.export({', '.join(f'{k}={v}' for k, v in kwargs.items() if k not in ('input_names', 'output_names'))})",
            "onnx": onnx.__version__,
            "test_accuracy": round(float(acc), 4),
            "onnxruntime_max_abs_diff": err,
            "python": platform.python_version(),
        }
        print(f"{name}: test accuracy {acc:.3f}, onnxruntime max diff {err:.2e}")
    update_provenance(prov)


# ----- TensorFlow / Keras ------------------------------------------------------------


def keras_models():
    from tensorflow import keras

    L = keras.layers
    # Keras' default momentum (0.99) leaves the running statistics far from the data's
    # after two short epochs; PyTorch's 0.1 (= Keras 0.9) does not.
    BN = lambda name: L.BatchNormalization(momentum=0.9, name=name)

    def cnn_bn():
        inp = keras.Input((28, 28, 1), name="input")
        x = inp
        for i, ch in [(1, 8), (2, 16)]:
            x = L.Conv2D(ch, 3, padding="same", name=f"conv{i}")(x)
            x = BN(f"bn{i}")(x)
            x = L.ReLU(name=f"relu{i}")(x)
            x = L.MaxPooling2D(2, name=f"pool{i}")(x)
        x = L.Flatten(name="flatten")(x)
        x = L.Dropout(0.1, name="dropout")(x)
        return keras.Model(inp, L.Dense(10, activation="softmax", name="fc")(x))

    def residual():
        inp = keras.Input((28, 28, 1), name="input")
        x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
        x = L.ReLU(name="stem_relu")(BN("stem_bn")(x))
        y = L.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(x)
        y = L.ReLU(name="relu1")(BN("bn1")(y))
        y = L.Conv2D(16, 3, padding="same", use_bias=False, name="conv2")(y)
        y = BN("bn2")(y)
        x = L.ReLU(name="relu2")(L.Add(name="add")([x, y]))
        x = L.MaxPooling2D(2, name="pool")(x)
        x = L.GlobalAveragePooling2D(name="gap")(x)
        return keras.Model(inp, L.Dense(10, name="fc")(x))

    def dscnn():
        inp = keras.Input((28, 28, 1), name="input")
        # Not a stride-2 "same" conv: on an even size TensorFlow pads it bottom/right
        # only, which sprig refuses (it pads symmetrically); stride 1 + pooling instead.
        x = L.Conv2D(32, 3, padding="same", name="stem")(inp)
        x = L.ReLU(6.0, name="stem_relu6")(BN("stem_bn")(x))
        x = L.MaxPooling2D(2, name="stem_pool")(x)
        x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
        x = L.ReLU(name="dw_relu")(BN("dw_bn")(x))
        x = L.Conv2D(32, 1, name="pw")(x)
        x = L.ReLU(name="pw_relu")(BN("pw_bn")(x))
        x = L.GlobalAveragePooling2D(name="gap")(x)
        x = L.Dropout(0.1, name="dropout")(x)
        return keras.Model(inp, L.Dense(10, activation="softmax", name="fc")(x))

    return {"keras_cnn_bn": (cnn_bn, True), "keras_residual": (residual, False), "keras_dscnn": (dscnn, True)}


def make_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import onnx
    import tensorflow as tf
    import tf2onnx
    from tensorflow import keras

    keras.utils.set_random_seed(SEED)
    xtr, ytr, xte, yte = load()
    x_ref = reference_inputs(xte)
    nhwc = lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    prov = {}
    for name, (build, softmax) in keras_models().items():
        model = build()
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax)
        model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=loss, metrics=["accuracy"])
        model.fit(nhwc(xtr), ytr, epochs=EPOCHS, batch_size=64, verbose=0)
        acc = model.evaluate(nhwc(xte), yte, verbose=0)[1]
        ref = model.predict(nhwc(x_ref), verbose=0)
        spec = (tf.TensorSpec((None, 28, 28, 1), tf.float32, name="input"),)
        # inputs_as_nchw: the ONNX model takes NCHW, as sprig feeds it.
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, inputs_as_nchw=["input"])
        path = OUT / f"{name}.onnx"
        onnx.save_model(proto, str(path))
        onnx.checker.check_model(onnx.load(str(path)))
        err = check_ort(path, x_ref, ref)
        np.save(OUT / f"{name}.out.npy", ref)
        prov[name] = {
            "tool": f"tensorflow-cpu {tf.__version__}, keras {keras.__version__}, tf2onnx {tf2onnx.__version__} "
            f"convert.from_keras(opset={OPSET}, inputs_as_nchw=['input'])",
            "onnx": onnx.__version__,
            "test_accuracy": round(float(acc), 4),
            "onnxruntime_max_abs_diff": err,
            "python": platform.python_version(),
            "softmax_output": softmax,
        }
        print(f"{name}: test accuracy {acc:.3f}, onnxruntime max diff {err:.2e}")
    update_provenance(prov)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", choices=["torch", "keras"], required=True)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    {"torch": make_torch, "keras": make_keras}[args.framework]()


if __name__ == "__main__":
    sys.exit(main())
