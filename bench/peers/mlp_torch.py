#!/usr/bin/python3
"""mlp_torch.py: bench_mlp.c's workload in PyTorch (784-256-128-10 ReLU MLP, Fashion-MNIST), same output lines.

Usage: mlp_torch.py [--threads N] [--epochs N] [--sgd] [--quick] [--data DIR] [--pipeline like|idiomatic]

Two input pipelines:
  like (default, impl "torch"): pixels kept as uint8 and converted per batch with fancy indexing,
      as bench_mlp's batcher does;
  idiomatic (impl "torch_idiomatic"): the training set converted once (before timing) to one
      float tensor, each epoch's shuffled copy sliced into batches, as a PyTorch user writes it.
"""
import argparse
import gzip
import json
import resource
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
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--sgd", action="store_true")
    ap.add_argument("--quick", action="store_true", help="200 steps per epoch")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--pipeline", choices=["like", "idiomatic"], default="like")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(42)

    # pixels kept as uint8 and scaled per batch, as bench_mlp's batcher does
    images = torch.from_numpy(load_idx(f"{a.data}/train-images-idx3-ubyte.gz", 16).reshape(-1, 784).copy())
    labels = torch.from_numpy(load_idx(f"{a.data}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    n, batch = images.shape[0], 64
    idiomatic = a.pipeline == "idiomatic"
    x_all = images.float().mul_(1.0 / 255.0) if idiomatic else None

    net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                              torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = (torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9) if a.sgd
           else torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8))
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(1)

    secs, loss = [], None
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=g)
        if idiomatic:
            xs, ys = x_all[perm], labels[perm]
        for step, i in enumerate(range(0, n, batch)):
            if a.quick and step >= 200:
                break
            if idiomatic:
                x, y = xs[i:i + batch], ys[i:i + batch]
            else:
                idx = perm[i:i + batch]
                x, y = images[idx].float().mul_(1.0 / 255.0), labels[idx]
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
        secs.append(time.perf_counter() - t0)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    name = "mlp_200_steps" if a.quick else "mlp_epoch"
    med = statistics.median(secs)
    print(f"{name:14s} {'sgd' if a.sgd else 'adam'} threads={a.threads}  median {med:.3f} s  min {min(secs):.3f}"
          f"  max {max(secs):.3f}  ({a.epochs} epochs, last loss {loss.item():.4f})")
    print(f"peak RSS {rss:.1f} MiB")
    peer = "pytorch " + torch.__version__
    impl = "torch_idiomatic" if idiomatic else "torch"
    print(json.dumps({"bench": name, "impl": impl, "threads": a.threads, "unit": "s", "median": med,
                      "min": min(secs), "max": max(secs), "peer": peer}))
    print(json.dumps({"bench": "mlp_peak_rss", "impl": impl, "threads": a.threads, "unit": "MiB", "median": rss,
                      "min": rss, "max": rss, "peer": peer}))


if __name__ == "__main__":
    main()
