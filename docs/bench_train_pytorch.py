"""PyTorch side of `cargo xtask bench train --pytorch PYTHON`.

Times the training step that `bench train` times in sprig, on the same CPU: LeNet-5
(conv 6@5x5 pad 2, ReLU, max pool 2, conv 16@5x5, ReLU, max pool 2, fc 120, fc 84,
fc 10), batch 64, cross-entropy, AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight
decay 1e-4), pixels normalized as (p - 128) / 128, a seeded shuffle of the first
`--images` training images, one warm-up batch, then images/s over the rest.

Prints one JSON line: {"images_per_s": ..., "torch": ..., "threads": ...}.
"""

import argparse
import gzip
import json
import time

import numpy as np
import torch
from torch import nn


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(data_dir, stem):
    for name in (stem + ".gz", stem):
        path = f"{data_dir}/{name}"
        try:
            open(path, "rb").close()
            return path
        except OSError:
            pass
    raise SystemExit(f"no {stem}[.gz] in {data_dir}")


def lenet5(classes=10):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, classes),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="folder with the IDX files")
    parser.add_argument("--images", type=int, default=6400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = read_idx(find(args.data, "train-images-idx3-ubyte"))[: args.images]
    labels = read_idx(find(args.data, "train-labels-idx1-ubyte"))[: args.images]
    images = torch.from_numpy(images.copy()).unsqueeze(1)  # [N, 1, 28, 28] uint8
    labels = torch.from_numpy(labels.astype(np.int64))

    model = lenet5()
    model.train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4
    )
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]

    def step(idx):
        x = (images[idx].float() - 128.0) / 128.0
        loss = loss_fn(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up, as sprig's bench does
    seen = 0
    started = time.perf_counter()
    for idx in batches[1:]:
        step(idx)
        seen += len(idx)
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "images_per_s": seen / elapsed,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
