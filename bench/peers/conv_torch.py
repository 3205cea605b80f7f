#!/usr/bin/python3
"""conv_torch.py: the convolutions of bench_conv.c in PyTorch (conv2d forward, and forward + backward), same table and JSON lines.

Usage: conv_torch.py [--threads 1] [--reps 7] [--min-ms 50] [--quick] [--cpu-time] [--case NAME]
Each rep times enough calls to last --min-ms; the figures are the median, min and max per call over the
reps. "fwdbwd" runs torch.nn.functional.conv2d and backward with a random seed gradient into both the
input and the weight, as bench_conv does on the tape. --cpu-time measures process CPU time (busy machines).
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

CASES = [("l1_k3", 64, 1, 28, 28, 32, 3, 1), ("l1_k5", 64, 1, 28, 28, 32, 5, 1),
         ("l2_k3", 64, 32, 14, 14, 64, 3, 1), ("l2_k5", 64, 32, 14, 14, 64, 5, 1),
         ("l2_k1", 64, 32, 14, 14, 64, 1, 1), ("s2_k3", 64, 32, 28, 28, 64, 3, 2)]


def run(x, w, seed, k, stride, bwd):
    if not bwd:
        with torch.no_grad():
            return F.conv2d(x, w, stride=stride, padding=k // 2)
    x.grad = None
    w.grad = None
    y = F.conv2d(x, w, stride=stride, padding=k // 2)
    y.backward(seed)
    return y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--min-ms", type=float, default=50.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cpu-time", action="store_true")
    ap.add_argument("--case", default="", help="only the cases whose name contains this")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.min_ms = 3, 10.0
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"# pytorch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}")
    print(f"{'case':14s} {'shape':22s} {'med ms':>9s} {'min ms':>9s} {'max ms':>9s} {'GFLOP/s':>8s}")
    g = torch.Generator().manual_seed(1234)
    for name, n, c, h, wd, o, k, stride in CASES:
        if args.case and args.case not in name:
            continue
        oh, ow = (h + 2 * (k // 2) - k) // stride + 1, (wd + 2 * (k // 2) - k) // stride + 1
        x = (torch.rand(n, c, h, wd, generator=g) * 2 - 1).requires_grad_(True)
        w = ((torch.rand(o, c, k, k, generator=g) * 2 - 1) * 0.1).requires_grad_(True)
        seed = torch.rand(n, o, oh, ow, generator=g) * 2 - 1
        for bwd in (False, True):
            t0, it = clock(), 0  # the same warm-up as bench_conv: 0.1 s at least
            while clock() - t0 < max(args.min_ms / 4e3, 0.1) or it < 1:
                run(x, w, seed, k, stride, bwd)
                it += 1
            iters = int(args.min_ms / 1e3 / ((clock() - t0) / it)) + 1
            times = []
            for _ in range(args.reps):
                s = clock()
                for _ in range(iters):
                    run(x, w, seed, k, stride, bwd)
                times.append((clock() - s) / iters * 1e3)
            times.sort()
            med = times[len(times) // 2]
            flops = 2.0 * n * o * oh * ow * c * k * k * (3 if bwd else 1)
            case = ("fwdbwd_" if bwd else "fwd_") + name
            shape = f"{c}x{h}x{wd}->{o} k{k}" + (" s2" if stride == 2 else "")
            print(f"{case:14s} {shape:22s} {med:9.3f} {times[0]:9.3f} {times[-1]:9.3f} {flops / (med * 1e6):8.1f}")
            print(json.dumps({"bench": "conv2d_" + case, "impl": "torch", "threads": args.threads, "unit": "ms",
                              "median": med, "min": times[0], "max": times[-1], "gflops": flops / (med * 1e6)}))


if __name__ == "__main__":
    main()
