#!/usr/bin/env python3
"""Recall@k of the compressed peers against the exact answer, on peers.py's data.

Usage: recall.py [QxNxDkK]   (default 100x1000000x768k10; the corpus and the first
query are those of ../shared/bench/peers.py's workloads with the same N and D)
PEERS: comma list of faiss-sq8, faiss-fp16, usearch-i8, usearch-f16, simsimd-i8
(default: all). Prints one JSON line per peer: recall@k averaged over the queries.
The exact answer is cosine in float64 over the float32 data; hybridvec's certified int8
path returns exactly that (recall 1.0 by construction; its tests check bit identity).
"""
import json, os, sys
for _v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_v, None)
import numpy as np

spec = sys.argv[1] if len(sys.argv) > 1 else "100x1000000x768k10"
shape, k = spec.split("k")
q, n, d = (int(v) for v in shape.split("x"))
k = int(k)
peers = os.environ.get("PEERS", "faiss-sq8,faiss-fp16,usearch-i8,usearch-f16,simsimd-i8").split(",")

rng = np.random.default_rng(7)
c = rng.standard_normal((n, d), dtype=np.float32)
x = rng.standard_normal((q, d), dtype=np.float32)

cn = c / np.linalg.norm(c.astype(np.float64), axis=1, keepdims=True).astype(np.float32)
xn = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True).astype(np.float32)
exact = []
for i in range(q):
    s = cn.astype(np.float64) @ xn[i].astype(np.float64) if n * d <= 2e8 else (cn @ xn[i]).astype(np.float64)
    top = np.argpartition(-s, k)[: 4 * k]
    exact.append(set(top[np.argsort(-s[top], kind="stable")][:k].tolist()))


def recall(found):
    return float(np.mean([len(set(f[:k]) & e) / k for f, e in zip(found, exact)]))


def out(name, found):
    print(json.dumps({"peer": name, "q": q, "n": n, "d": d, "k": k, "recall": recall(found)}), flush=True)


if "faiss-sq8" in peers or "faiss-fp16" in peers:
    import faiss
    for kind in ("sq8", "fp16"):
        if f"faiss-{kind}" not in peers:
            continue
        qt = faiss.ScalarQuantizer.QT_8bit if kind == "sq8" else faiss.ScalarQuantizer.QT_fp16
        index = faiss.IndexScalarQuantizer(d, qt, faiss.METRIC_INNER_PRODUCT)
        index.train(cn)
        index.add(cn)
        _, ids = index.search(xn, k)
        out(f"faiss-{kind}", [list(r) for r in ids])

for dt, name in ((np.int8, "usearch-i8"), (np.float16, "usearch-f16")):
    if name in peers:
        from usearch.index import search, MetricKind
        if dt is np.int8:
            scale = 127.0 / np.abs(c).max()
            cc, xx = np.round(c * scale).astype(np.int8), np.round(x * scale).astype(np.int8)
        else:
            cc, xx = c.astype(dt), x.astype(dt)
        m = search(cc, xx, k, MetricKind.Cos, exact=True, threads=0)
        out(name, [list(m.keys[i]) for i in range(q)])

if "simsimd-i8" in peers:
    import simsimd
    scale = 127.0 / np.abs(c).max()
    cc, xx = np.round(c * scale).astype(np.int8), np.round(x * scale).astype(np.int8)
    found = []
    for i in range(0, q, 10):
        block = np.ascontiguousarray(xx[i : i + 10])
        dists = np.asarray(simsimd.cdist(block, cc, metric="cosine", threads=0))
        for dist in dists:
            top = np.argpartition(dist, k)[:k]
            found.append(list(top[np.argsort(dist[top])]))
    out("simsimd-i8", found)
