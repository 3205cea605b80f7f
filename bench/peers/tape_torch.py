#!/usr/bin/python3
"""tape_torch.py: the workloads of bench_tape.c in PyTorch, printing the same JSON lines."""
import json
import statistics
import sys
import time

import torch


def stats(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def emit(name, unit, v, threads):
    s = stats(v)
    print(f"{name:28s} {s['median']:12.3f} {s['min']:12.3f} {s['max']:12.3f}  {unit}")
    print(json.dumps({"bench": name, "impl": "torch", "unit": unit, **s, "threads": threads, "peer": "pytorch " + torch.__version__}))


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    torch.set_num_threads(threads)
    dt = torch.float64
    a = torch.tensor(0.1, dtype=dt, requires_grad=True)
    b = torch.tensor(0.2, dtype=dt, requires_grad=True)
    c = torch.tensor(0.3, dtype=dt, requires_grad=True)
    times = []
    for r in range(reps + 2):
        t0 = time.perf_counter()
        acc = torch.tensor(0.0, dtype=dt)
        for _ in range(2500):
            acc = acc + torch.tanh(a * b + c)
        acc.backward()
        if r >= 2:
            times.append((time.perf_counter() - t0) / 10000 * 1e9)
    emit("scalar_graph_10k_ops", "ns/op", times, threads)
    # per node: 10,000 ops + 3 leaves + the initial constant, as in bench_tape
    emit("scalar_graph_per_node", "ns/node", [v * 10000 / 10004 for v in times], threads)
    times = []
    for r in range(reps + 2):
        t0 = time.perf_counter()
        acc = torch.tensor(0.0, dtype=dt)
        for i in range(2500):
            acc = acc + torch.tanh(a * torch.tensor(0.001 * i, dtype=dt) + c)
        acc.backward()
        if r >= 2:
            times.append((time.perf_counter() - t0) / 12503 * 1e9)  # 2,500 x (leaf + 4 ops) + 2 params + 1
    emit("scalar_graph_leaves_per_node", "ns/node", times, threads)

    g = torch.Generator().manual_seed(42)
    for n in (4, 32, 256):
        w = (torch.randn(n, n, generator=g) / n).requires_grad_()
        bias = torch.zeros(n, requires_grad=True)
        x = torch.randn(n, generator=g)
        inner = 1000 if n <= 32 else 100
        times = []
        for r in range(reps + 1):
            t0 = time.perf_counter()
            for _ in range(inner):
                y = torch.tanh(w @ x + bias).sum()
                y.backward()
            if r >= 1:
                times.append((time.perf_counter() - t0) / inner * 1e6)
        emit(f"sum_tanh_matvec_n{n}", "us/it", times, threads)


if __name__ == "__main__":
    main()
