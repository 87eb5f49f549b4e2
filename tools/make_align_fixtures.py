#!/usr/bin/env python3
"""Writes datasets/fixtures/align/similarity.json for crates/face-align's parity tests:

- `random`: skimage's SimilarityTransform estimated on random 5-point sets (plus collinear,
  mirrored and badly scaled ones), src -> dst, as 3x3 matrices;
- `real`: the same on the real landmarks of datasets/fixtures/faces/landmarks.json (scrfd
  detections on the registry photos) to insightface's ArcFace template at 112, 224 and 128 px;
- `warps`: for the first real faces, the sha256 and mean of cv2.warpAffine's 112x112 crop (RGB
  bytes) with the skimage matrix, border 0, for INTER_LINEAR, INTER_NEAREST and INTER_CUBIC.
  datasets/fetch_real.py rewrites those crops into datasets/cache/warps/ with the pinned OpenCV and
  checks these hashes, so the photos' pixels never enter the repository.

Usage: python tools/make_align_fixtures.py   (scikit-image 0.26.0, opencv-python-headless 5.0.0.93,
numpy 2.4.6; needs datasets/cache/photos from datasets/fetch_real.py)
"""
import hashlib
import json
import os
import warnings

import cv2
import numpy as np
import skimage
from skimage.transform import SimilarityTransform

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "datasets", "fixtures", "align", "similarity.json")
LANDMARKS = os.path.join(ROOT, "datasets", "fixtures", "faces", "landmarks.json")
PHOTOS = os.path.join(ROOT, "datasets", "cache", "photos")
ARCFACE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                    [41.5493, 92.3655], [70.7299, 92.2041]])
INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "bicubic": cv2.INTER_CUBIC}
NUM_WARPED = 8


def template(size):
    """insightface's estimate_norm: scaled for multiples of 112, else the 128-based variant."""
    if size % 112 == 0:
        return ARCFACE * (size / 112.0)
    ratio = size / 128.0
    t = ARCFACE * ratio
    t[:, 0] += 8.0 * ratio
    return t


def estimate(src, dst):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0.26 deprecates .estimate in favour of from_estimate
        t = SimilarityTransform()
        assert t.estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    return t.params


def random_cases(rng):
    cases = []
    for i in range(24):
        src = rng.uniform(0, 640, (5, 2))
        dst = template(112) if i % 2 == 0 else rng.uniform(-50, 300, (5, 2))
        cases.append(("random", src, dst))
    for n in (2, 3, 4, 7, 68):
        cases.append((f"{n}_points", rng.uniform(0, 500, (n, 2)), rng.uniform(0, 112, (n, 2))))
    line = np.stack([np.linspace(10, 90, 5), np.linspace(20, 60, 5)], axis=1)
    cases.append(("collinear_src", line, template(112)))
    face = rng.uniform(100, 200, (5, 2))
    cases.append(("mirrored", face * [-1, 1], template(112)))
    cases.append(("tiny_face", face * 1e-3, template(112)))
    cases.append(("huge_coordinates", face * 1e4 + 1e6, template(112)))
    out = []
    for name, src, dst in cases:
        out.append({"name": name, "src": src.tolist(), "dst": np.asarray(dst).tolist(),
                    "matrix": estimate(src, dst).tolist()})
    return out


def main():
    rng = np.random.default_rng(112)
    photos = json.load(open(LANDMARKS))["photos"]
    real, warps = [], []
    for photo, faces in photos.items():
        for i, face in enumerate(faces):
            if face.get("aligned"):
                continue
            for size in (112, 224, 128):
                m = estimate(face["landmarks"], template(size))
                real.append({"photo": photo, "face": i, "size": size, "landmarks": face["landmarks"],
                             "template": template(size).tolist(), "matrix": m.tolist()})
                if size != 112 or len(warps) >= NUM_WARPED * len(INTERPOLATIONS):
                    continue
                image = cv2.imread(os.path.join(PHOTOS, photo), cv2.IMREAD_COLOR)
                for name, flag in INTERPOLATIONS.items():
                    crop = cv2.warpAffine(image, m[:2], (112, 112), flags=flag, borderValue=0.0)
                    rgb = np.ascontiguousarray(crop[:, :, ::-1])
                    warps.append({"photo": photo, "face": i, "interpolation": name,
                                  "file": f"{os.path.splitext(photo)[0]}_{i:02d}_{name}.png",
                                  "matrix": m[:2].tolist(),
                                  "sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
                                  "mean": float(rgb.mean())})
    out = {"made_by": f"tools/make_align_fixtures.py: scikit-image {skimage.__version__}, "
                      f"opencv {cv2.__version__}, numpy {np.__version__}",
           "random": random_cases(rng), "real": real, "warps": warps}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{len(out['random'])} random, {len(real)} real, {len(warps)} OpenCV warps -> {OUT}")


if __name__ == "__main__":
    main()
