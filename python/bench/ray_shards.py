"""Throughput of `hybridvec.ray.ShardedSearch` against one in-process Executor, and the
fan-out-and-merge overhead per query batch.

    python python/bench/ray_shards.py [--rows 400000] [--dim 128] [--queries 64] [--reps 7]

Prints, for 1, 2 and 4 shards on a local Ray cluster of every core: the median seconds
per batch, queries per second, and the ratio to the local executor; then the overhead on
a tiny corpus (1000 rows a shard), where the search itself costs almost nothing.
"""

import argparse
import os
import statistics
import time

import numpy as np
import ray

import hybridvec as hv
from hybridvec.ray import ShardedSearch


def median_time(f, reps):
    f()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--metric", default="ip")
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    cores = os.cpu_count()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.rows, a.dim), dtype=np.float32)
    q = rng.standard_normal((a.queries, a.dim), dtype=np.float32)
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    ex = hv.Executor(device="cpu")
    corpus = hv.Corpus(x)
    local = median_time(lambda: ex.search(q, corpus, a.k, metric=a.metric), a.reps)
    print(f"{a.rows} x {a.dim}, Q = {a.queries}, k = {a.k}, {a.metric}; {cores} cores")
    print(f"local Executor: {local * 1e3:.1f} ms/batch, {a.queries / local:.0f} queries/s")
    want = ex.search(q, corpus, a.k, metric=a.metric)[1]
    for shards in (1, 2, 4):
        threads = max(1, cores // shards)
        with ShardedSearch.from_array(x, shards=shards, device="cpu", threads=threads) as index:
            assert np.array_equal(index.search(q, a.k, metric=a.metric)[1], want)
            t = median_time(lambda: index.search(q, a.k, metric=a.metric), a.reps)
            print(f"{shards} shard(s) x {threads} thread(s): {t * 1e3:.1f} ms/batch, "
                  f"{a.queries / t:.0f} queries/s, {local / t:.2f}x local")
    tiny = x[: 1000 * 4]
    ex_tiny = hv.Corpus(tiny)
    t_local = median_time(lambda: ex.search(q, ex_tiny, a.k, metric=a.metric), a.reps * 3)
    with ShardedSearch.from_array(tiny, shards=4, device="cpu", threads=1) as index:
        t_sharded = median_time(lambda: index.search(q, a.k, metric=a.metric), a.reps * 3)
    print(f"overhead (4 shards of 1000 rows): {t_sharded * 1e3:.2f} ms/batch sharded against "
          f"{t_local * 1e3:.2f} local: {(t_sharded - t_local) * 1e3:.2f} ms of fan-out and merge")
    ray.shutdown()


if __name__ == "__main__":
    main()
