#!/usr/bin/env python3
"""ONNX Runtime beside benches/detect.rs and benches/export.rs, in the same run:

  - insightface 0.7.3's SCRFD (model_zoo/scrfd.py) with scrfd_500m_bnkps.onnx on ONNX Runtime's CPU
    provider, on the same 640x480 photo (t1 as OpenCV decodes it, resized to 640x480), letterboxed
    into 640x640 as insightface does: detect() end to end (resize, forward, decoding, NMS);
  - the w600k_mbf that `arcface export --format onnx` writes, batch 1, on ONNX Runtime, beside the
    original insightface file.

Usage: python tools/bench_peers_export.py EXPORTED.onnx  (2 threads; median of 30 after 5 warm-ups)
"""
import importlib.util
import os
import statistics
import sys
import time

import cv2
import numpy as np
import onnxruntime

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CACHE = os.path.join(ROOT, "datasets", "cache")


def median_ms(f, n=30):
    for _ in range(5):
        f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def session(path):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


spec = importlib.util.spec_from_file_location("scrfd", os.path.join(CACHE, "src", "insightface-0.7.3", "scrfd.py"))
scrfd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scrfd)
detector = scrfd.SCRFD(session=session(os.path.join(CACHE, "models", "scrfd_500m_bnkps.onnx")))
detector.prepare(-1, input_size=(640, 640))
photo = cv2.resize(cv2.imread(os.path.join(CACHE, "decoded", "t1.png")), (640, 480), interpolation=cv2.INTER_LINEAR)
faces = len(detector.detect(photo)[0])
print(f"detect_scrfd_500m/640x480_in_640x640 (insightface + ONNX Runtime {onnxruntime.__version__}): "
      f"median {median_ms(lambda: detector.detect(photo)):.2f} ms, {faces} faces")

x = np.full((1, 3, 112, 112), 0.1, dtype=np.float32)
for name, path in [("exported by arcface export", sys.argv[1]),
                   ("insightface's original", os.path.join(CACHE, "models", "w600k_mbf.onnx"))]:
    s = session(path)
    feed = {s.get_inputs()[0].name: x}
    print(f"embed_w600k_mbf/batch1 ONNX Runtime, {name}: median {median_ms(lambda: s.run(None, feed)):.2f} ms")
