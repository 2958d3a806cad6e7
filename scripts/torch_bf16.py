#!/usr/bin/env python3
"""The BF16 row of the GPU peer: gpu_peers.py (../shared/bench) times torch at FP32, TF32
and FP16 only. This times normalize + matmul + topk with the operands in bfloat16, the same
way (its `bench`: CUDA events, median of 20 after 3 warm-ups), and prints one JSON line per
shape in its format.
Usage: python3 torch_bf16.py PEERS_DIR [QxNxDkK ...]
"""
import json, os, sys

sys.path.insert(0, os.path.abspath(sys.argv[1]))
import torch  # noqa: E402
from gpu_peers import bench  # noqa: E402


def run(q, n, d, k):
    g = torch.Generator(device="cuda").manual_seed(7)
    c = torch.randn(n, d, device="cuda", generator=g)
    x = torch.randn(q, d, device="cuda", generator=g)
    cn = torch.nn.functional.normalize(c, dim=1).to(torch.bfloat16)

    def f():
        xn = torch.nn.functional.normalize(x, dim=1).to(torch.bfloat16)
        return torch.topk(xn @ cn.T, k, dim=1)

    secs = bench(f)
    print(json.dumps(dict(peer="torch bf16", device=torch.cuda.get_device_name(), q=q, n=n, d=d,
                          k=k, secs=secs, gflops=2.0 * q * n * d / secs / 1e9)), flush=True)


if __name__ == "__main__":
    for spec in sys.argv[2:] or ["1x1000000x768k10", "1024x1000000x768k10"]:
        a, b = spec.split("k")
        q, n, d = map(int, a.split("x"))
        run(q, n, d, int(b))
