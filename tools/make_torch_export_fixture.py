#!/usr/bin/env python3
"""Writes datasets/fixtures/backbones/torch_export.json: PyTorch loading the `.pth` files that
`arcface export --format pth` writes, into arcface_torch's own architectures, and what they compute.

For each case the script runs our exporter (cargo run -p arcface-cli -- export), then in PyTorch:
torch.load(path) (weights_only=True, the default since 2.6), model.load_state_dict(sd, strict=True)
on arcface_torch's IResNet / MobileFaceNet (as tools/make_backbone_fixtures.py writes them from
backbones/iresnet.py and backbones/mobilefacenet.py), eval mode, and a forward pass:

  w600k_mbf   insightface's w600k_mbf.onnx imported and exported; MobileFaceNet with its conv-fc
              head; input: the first 8 real aligned faces (datasets/cache/faces, RGB, (x-127.5)/127.5)
  tiny_iresnet  backbones/tiny_iresnet.pth imported and exported; input: the fixed formula input

It records the sha256 of each exported file PyTorch loaded and PyTorch's outputs, so the Rust test
(crates/iresnet/tests/export.rs) checks that today's exporter writes those same bytes and that our
forward matches PyTorch's on them.

Usage (torch 2.15.0, numpy, pillow-free; the versions go into the file):
    python3 datasets/fetch_real.py
    python tools/make_torch_export_fixture.py
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_backbone_fixtures as arcface_torch  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CACHE = os.path.join(ROOT, "datasets", "cache")
OUT = os.path.join(ROOT, "datasets", "fixtures", "backbones", "torch_export.json")
FACES = 8


def export(source, out):
    subprocess.run(["cargo", "run", "--quiet", "-p", "arcface-cli", "--", "export", "--model", source,
                    "--format", "pth", "--out", out], cwd=ROOT, check=True)
    return hashlib.sha256(open(out, "rb").read()).hexdigest()


def real_faces():
    import cv2
    names = sorted(os.listdir(os.path.join(CACHE, "faces")))[:FACES]
    rgb = [cv2.cvtColor(cv2.imread(os.path.join(CACHE, "faces", n)), cv2.COLOR_BGR2RGB) for n in names]
    x = (np.stack(rgb).astype(np.float32) - 127.5) / 127.5
    return names, torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def run(model, path, x):
    state = torch.load(path)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        return model(x).numpy()


def main():
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w600k_mbf.pth")
        sha = export(os.path.join(CACHE, "models", "w600k_mbf.onnx"), path)
        names, x = real_faces()
        y = run(arcface_torch.MobileFaceNet(head="conv_fc"), path, x)
        cases["w600k_mbf"] = {"sha256": sha, "faces": names, "output": [[float(v) for v in r] for r in y]}

        path = os.path.join(tmp, "tiny_iresnet.pth")
        sha = export(os.path.join(ROOT, "datasets", "fixtures", "backbones", "tiny_iresnet.pth"), path)
        tiny = arcface_torch.IResNet([2, 1, 2, 1], widths=(8, 16, 24, 32), num_features=24)
        y = run(tiny, path, arcface_torch.fixed_input(2))
        cases["tiny_iresnet"] = {"sha256": sha, "output": [[float(v) for v in r] for r in y]}
    fixture = {"made_by": f"tools/make_torch_export_fixture.py, torch {torch.__version__}, "
                          f"numpy {np.__version__}, python {sys.version.split()[0]}",
               "load": "torch.load (weights_only=True) + load_state_dict(strict=True)", "cases": cases}
    with open(OUT + ".tmp", "w") as fh:
        json.dump(fixture, fh)
    os.replace(OUT + ".tmp", OUT)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
