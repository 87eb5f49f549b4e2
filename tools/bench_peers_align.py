#!/usr/bin/env python3
"""skimage + OpenCV timing of the alignment benches/align.rs measures: insightface's norm_crop
(SimilarityTransform.estimate to the ArcFace template, cv2.warpAffine to 112x112, border 0) from a
640x480 RGB image, per face; plus estimate-only and warp-only. Same landmarks as benches/lib.rs.

Usage: python tools/bench_peers_align.py   (scikit-image 0.26.0, opencv 5.0.0; 1 OpenCV thread,
the per-face work is single-threaded on both sides; median of 5 repeats of 2000 calls)
"""
import statistics
import time
import warnings

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

warnings.filterwarnings("ignore")
cv2.setNumThreads(1)
ARCFACE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                    [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
LANDMARKS = np.array([[290, 200], [350, 198], [322, 235], [296, 268], [347, 266]], dtype=np.float32)
y, x = np.mgrid[0:480, 0:640]
IMAGE = np.stack([(x * 7 + y * 3) % 256, (x * 13 + y * 5) % 256, (x ^ y) % 256], -1).astype(np.uint8)


def estimate():
    t = SimilarityTransform()
    t.estimate(LANDMARKS, ARCFACE)
    return t.params[:2]


M = estimate()


def warp():
    return cv2.warpAffine(IMAGE, M, (112, 112), borderValue=0.0)


def norm_crop():
    return cv2.warpAffine(IMAGE, estimate(), (112, 112), borderValue=0.0)


def per_call_us(fn, n=2000, repeats=5):
    for _ in range(n // 10):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


for name, fn in [("estimate_and_warp (norm_crop)", norm_crop), ("estimate (skimage)", estimate),
                 ("warp_bilinear (cv2)", warp)]:
    print(f"align_640x480/{name}: median {per_call_us(fn):.1f} us")
