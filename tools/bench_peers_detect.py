#!/usr/bin/env python3
"""PyTorch timing of the reference RetinaFace MobileNet-0.25 (facesdk 0.0.8's code and weights)
on the same 640x480 photo benches/detect.rs uses (t1.jpg as OpenCV decodes it, resized with
cv2.INTER_LINEAR), batch 1, forward + priors + decode + NMS as its detector does.

Usage: python tools/bench_peers_detect.py   (torch 2.15.0, 2 threads; median of 20 after 3 warm-ups)
"""
import os
import statistics
import sys
import time

import cv2
import numpy as np


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_retinaface_fixture import CACHE, detect as reference_detect, import_reference, load_model  # noqa: E402

reference = import_reference()
model = load_model(reference[0], reference[2])
img = cv2.resize(cv2.imread(os.path.join(CACHE, "decoded", "t1.png")), (640, 480),
                 interpolation=cv2.INTER_LINEAR).astype(np.float32)


def detect():
    return reference_detect(reference, model, img, 0.5)[0]


for _ in range(3):
    detect()
times = []
for _ in range(20):
    t0 = time.perf_counter()
    detect()
    times.append(time.perf_counter() - t0)
print(f"detect_retinaface_mnet025/640x480 (PyTorch eager): median {statistics.median(times) * 1e3:.2f} ms, "
      f"{len(detect())} faces")
