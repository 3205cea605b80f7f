#!/usr/bin/python3
"""cnn_torch.py: bench_cnn.c's workload in PyTorch (examples/cnn_fashion's network, Adam, batch 64), same output lines.

Usage: cnn_torch.py [--threads N] [--reps N] [--steps N] [--quick] [--data DIR]
The network: Conv2d(1, 32, 3, padding=1), ReLU, MaxPool2d(2), Conv2d(32, 64, 3, padding=1), ReLU,
MaxPool2d(2), Flatten, Linear(3136, 128), ReLU, Linear(128, 10); cross-entropy; Adam lr 1e-3.
The training set is held as one float tensor [60000, 1, 28, 28] (converted once, before timing)
and each shuffled epoch sliced into batches of 64, as a PyTorch user writes it.
"""
import argparse
import gzip
import json
import statistics
import time

import numpy as np
import torch


def load_idx(path, header):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.steps = 1, 50
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    images = load_idx(f"{a.data}/train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    x_all = torch.from_numpy(images.astype(np.float32) / 255.0)
    y_all = torch.from_numpy(load_idx(f"{a.data}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    n, batch = x_all.shape[0], 64
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(1)
    state = {"xs": None, "ys": None, "pos": n}

    def next_batch():
        if state["pos"] + batch > n:
            perm = torch.randperm(n, generator=g)
            state["xs"], state["ys"], state["pos"] = x_all[perm], y_all[perm], 0
        i = state["pos"]
        state["pos"] += batch
        return state["xs"][i:i + batch], state["ys"][i:i + batch]

    secs, loss = [], None
    for r in range(-1, a.reps):
        steps = 5 if r < 0 else a.steps
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = next_batch()
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
        if r >= 0:
            secs.append(time.perf_counter() - t0)
    med = statistics.median(secs)
    name = f"cnn_{a.steps}_steps"
    print(f"{name}  threads={a.threads}  median {med:.3f} s  min {min(secs):.3f}  max {max(secs):.3f}"
          f"  ({a.reps} reps, last loss {loss.item():.4f})")
    print(json.dumps({"bench": name, "impl": "torch", "threads": a.threads, "unit": "s", "median": med,
                      "min": min(secs), "max": max(secs), "peer": "pytorch " + torch.__version__}))


if __name__ == "__main__":
    main()
