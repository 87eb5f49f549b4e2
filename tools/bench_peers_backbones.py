#!/usr/bin/env python3
"""Peer timings for docs/performance.md, measured in the same run as our criterion bench
(tools/bench_backbones.sh): PyTorch eager IResNet-18/50 and ONNX Runtime w600k_mbf.onnx, fp32,
2 threads, batch-1 latency (median of 20) and batch-32 throughput (median of 5), after warm-up.

Needs: torch, onnxruntime, numpy (the versions are printed). Prints one JSON object.
"""
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_backbone_fixtures import IResNet, IRESNET_LAYERS  # noqa: E402

torch.set_num_threads(2)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def median_time(fn, runs, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    out = {"versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
           "results": {}}
    for name in ["r18", "r50"]:
        torch.manual_seed(0)
        m = IResNet(IRESNET_LAYERS[name]).eval()
        with torch.inference_mode():
            x1, x32 = torch.rand(1, 3, 112, 112) * 2 - 1, torch.rand(32, 3, 112, 112) * 2 - 1
            b1 = median_time(lambda: m(x1), 20)
            b32 = median_time(lambda: m(x32), 5)
        out["results"][f"{name} pytorch_eager"] = {"batch1_ms": b1 * 1e3, "batch32_img_s": 32 / b32}
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    s = ort.InferenceSession(os.path.join(ROOT, "datasets/cache/models/w600k_mbf.onnx"), so,
                             providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    x1 = np.random.uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
    x32 = np.random.uniform(-1, 1, (32, 3, 112, 112)).astype(np.float32)
    b1 = median_time(lambda: s.run(None, {name: x1}), 20)
    b32 = median_time(lambda: s.run(None, {name: x32}), 5)
    out["results"]["mbf_w600k onnxruntime"] = {"batch1_ms": b1 * 1e3, "batch32_img_s": 32 / b32}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
