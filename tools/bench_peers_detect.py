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
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_retinaface_fixture import CACHE, import_reference  # noqa: E402

cfg, PriorBox, RetinaFace, decode, decode_landm, nms = import_reference()
state = torch.load(os.path.join(CACHE, "models", "retinaface_mnet025.pth"), map_location="cpu")
model = RetinaFace(cfg=cfg, phase="test")
model.load_state_dict({k.split("module.", 1)[-1]: v for k, v in state.items()})
model.eval()
torch.set_num_threads(2)
img = cv2.resize(cv2.imread(os.path.join(CACHE, "decoded", "t1.png")), (640, 480),
                 interpolation=cv2.INTER_LINEAR).astype(np.float32)


def detect():
    h, w = img.shape[:2]
    x = torch.from_numpy((img - (104, 117, 123)).transpose(2, 0, 1).copy()).unsqueeze(0).float()
    with torch.no_grad():
        loc, conf, landms = model(x)
    priors = PriorBox(cfg, image_size=(h, w)).forward()
    boxes = (decode(loc[0], priors, cfg["variance"]) * torch.tensor([w, h, w, h])).numpy()
    decode_landm(landms[0], priors, cfg["variance"])
    scores = conf[0, :, 1].numpy()
    keep = np.where(scores > 0.5)[0]
    dets = np.hstack((boxes[keep], scores[keep, None])).astype(np.float32)
    return nms(dets, 0.4)


for _ in range(3):
    detect()
times = []
for _ in range(20):
    t0 = time.perf_counter()
    detect()
    times.append(time.perf_counter() - t0)
print(f"detect_retinaface_mnet025/640x480 (PyTorch eager): median {statistics.median(times) * 1e3:.2f} ms, "
      f"{len(detect())} faces")
