#!/usr/bin/python3
"""matmul_torch.py: the square products of bench_matmul.c in PyTorch, printing the same table and JSON lines.

Usage: matmul_torch.py [--sizes 64,256,1024] [--threads 1] [--dtypes f32,f64] [--reps 11] [--min-ms 20]
                       [--cpu-time] [--quick]
Each rep times enough torch.mm calls (into a preallocated output) to last --min-ms; the figures are
the median, min and max over the reps of the time per call, as in bench_matmul (--cpu-time: CPU
time of the process, time.process_time, instead of wall-clock time).
"""
import argparse
import json
import statistics
import time

import torch


def bench_case(dtype, n, reps, min_s, clock):
    g = torch.Generator().manual_seed(1234)
    a = torch.rand(n, n, generator=g, dtype=dtype) - 0.5
    b = torch.rand(n, n, generator=g, dtype=dtype) - 0.5
    c = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=c)
    t0, it = clock(), 0
    while clock() - t0 < min_s / 4:
        torch.mm(a, b, out=c)
        it += 1
    iters = int(min_s / max((clock() - t0) / it, 1e-9)) + 1
    times = []
    for _ in range(reps):
        t0 = clock()
        for _ in range(iters):
            torch.mm(a, b, out=c)
        times.append(max(clock() - t0, 1e-12) / iters)
    return times, iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,256,1024")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="f32,f64")
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--min-ms", type=float, default=20.0)
    ap.add_argument("--cpu-time", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.min_ms = 3, 5.0
    torch.set_num_threads(args.threads)
    peer = "pytorch " + torch.__version__
    print(f"# {peer}, torch.get_num_threads() = {torch.get_num_threads()}")
    print(f"{'type':4s} {'n':>5s} {'thr':>3s}  {'impl':9s} {'med ms':>9s} {'min ms':>9s} {'max ms':>9s} {'GFLOP/s':>8s}")
    for dt in args.dtypes.split(","):
        dtype = {"f32": torch.float32, "f64": torch.float64}[dt]
        for n in (int(s) for s in args.sizes.split(",")):
            clock = time.process_time if args.cpu_time else time.perf_counter
            times, iters = bench_case(dtype, n, args.reps, args.min_ms * 1e-3, clock)
            med, mn, mx = statistics.median(times), min(times), max(times)
            flops = 2.0 * n * n * n
            print(f"{dt:4s} {n:5d} {args.threads:3d}  {'torch':9s} {med * 1e3:9.3f} {mn * 1e3:9.3f} {mx * 1e3:9.3f} "
                  f"{flops / med * 1e-9:8.1f}")
            print(json.dumps({"bench": f"matmul_{dt}_n{n}", "impl": "torch", "kernel": peer,
                              "threads": args.threads, "unit": "ms", "median": med * 1e3, "min": mn * 1e3,
                              "max": mx * 1e3, "gflops": round(flops / med * 1e-9, 2),
                              "gflops_best": round(flops / mn * 1e-9, 2), "reps": args.reps, "iters": iters,
                              "clock": "cpu" if args.cpu_time else "wall"}),
                  flush=True)


if __name__ == "__main__":
    main()
