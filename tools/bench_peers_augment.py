#!/usr/bin/env python3
"""torchvision timing of the pipeline benches/augment.rs measures, single process, on a 112x112
image: RandomHorizontalFlip(0.5), RandomRotation(15), ColorJitter(0.2, 0.2, 0.2), ToTensor,
Normalize(ImageNet), RandomErasing(p=0.3, scale=(0.02, 0.1)); on a PIL image (the usual training
path, as ../shared/peer-baselines.md measured it) and on a uint8 tensor (the path whose
semantics face-augment follows); and insightface's minimal pipeline (flip, ToTensor, 0.5/0.5).

Usage: python tools/bench_peers_augment.py   (torch 2.15.0, torchvision 0.29.2; 1 torch thread;
images/s, median of 5 runs of 2000 images)
"""
import statistics
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

torch.set_num_threads(1)
y, x = np.mgrid[0:112, 0:112]
ARR = np.stack([(x * 7 + y * 3) % 256, (x * 13 + y * 5) % 256, (x ^ y) % 256], -1).astype(np.uint8)
PIL_IMG = Image.fromarray(ARR)
TENSOR = torch.from_numpy(ARR).permute(2, 0, 1).contiguous()
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

default_pil = T.Compose([T.RandomHorizontalFlip(0.5), T.RandomRotation(15), T.ColorJitter(0.2, 0.2, 0.2),
                         T.ToTensor(), T.Normalize(*IMAGENET), T.RandomErasing(p=0.3, scale=(0.02, 0.1))])
default_tensor = T.Compose([T.RandomHorizontalFlip(0.5), T.RandomRotation(15), T.ColorJitter(0.2, 0.2, 0.2),
                            T.ConvertImageDtype(torch.float32), T.Normalize(*IMAGENET),
                            T.RandomErasing(p=0.3, scale=(0.02, 0.1))])
minimal = T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])


def rate(fn, img, n=2000, repeats=5):
    for _ in range(200):
        fn(img)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(img)
        runs.append(n / (time.perf_counter() - t0))
    return statistics.median(runs)


for name, fn, img in [("arcface_default (PIL)", default_pil, PIL_IMG),
                      ("arcface_default (uint8 tensor)", default_tensor, TENSOR),
                      ("insightface_minimal (PIL)", minimal, PIL_IMG)]:
    print(f"augment_112/{name}: {rate(fn, img):.0f} img/s")
