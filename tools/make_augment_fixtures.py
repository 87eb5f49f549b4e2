#!/usr/bin/env python3
"""Writes datasets/fixtures/augment/torchvision_functional.json: torchvision's functional outputs
for crates/face-augment's deterministic cores, on real aligned faces (datasets/cache/faces, made by
datasets/fetch_real.py), on uint8 tensors as torchvision's tensor path computes them.

Only numbers derived from the faces are committed: for each output, its mean, the sha256 of its
bytes (uint8 outputs), and its values at 512 fixed positions of the flattened CHW array (1.4% of
the values, not an image). The Rust test recomputes the whole output and checks those.

Usage: python tools/make_augment_fixtures.py   (torch 2.15.0, torchvision 0.29.2, numpy 2.4.6)
"""
import hashlib
import json
import os

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FACES = os.path.join(ROOT, "datasets", "cache", "faces")
OUT = os.path.join(ROOT, "datasets", "fixtures", "augment", "torchvision_functional.json")
NAMES = ["Tom_Hanks_54745_00.png", "gauss_00.png", "newton_00.png", "t1_00.png"]
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
ERASE = (20, 30, 25, 40)  # i, j, h, w


def ops():
    u8 = {
        "hflip": lambda x: F.hflip(x),
        "rotate_10": lambda x: F.rotate(x, 10.0, InterpolationMode.BILINEAR, fill=[0.0, 0.0, 0.0]),
        "rotate_-15": lambda x: F.rotate(x, -15.0, InterpolationMode.BILINEAR, fill=[0.0, 0.0, 0.0]),
        "rotate_7.3": lambda x: F.rotate(x, 7.3, InterpolationMode.BILINEAR, fill=[0.0, 0.0, 0.0]),
        "brightness_0.8": lambda x: F.adjust_brightness(x, 0.8),
        "brightness_1.2": lambda x: F.adjust_brightness(x, 1.2),
        "contrast_0.8": lambda x: F.adjust_contrast(x, 0.8),
        "contrast_1.2": lambda x: F.adjust_contrast(x, 1.2),
        "saturation_0.8": lambda x: F.adjust_saturation(x, 0.8),
        "saturation_1.2": lambda x: F.adjust_saturation(x, 1.2),
        "hue_0.05": lambda x: F.adjust_hue(x, 0.05),
        "hue_-0.1": lambda x: F.adjust_hue(x, -0.1),
        "greyscale": lambda x: F.rgb_to_grayscale(x, num_output_channels=3),
    }
    floats = {
        "to_tensor_normalize_imagenet": lambda x: F.normalize(x.float() / 255.0, *IMAGENET),
        "to_tensor_normalize_insightface": lambda x: F.normalize(x.float() / 255.0, [0.5] * 3, [0.5] * 3),
        "normalize_imagenet_erase": lambda x: F.erase(F.normalize(x.float() / 255.0, *IMAGENET), *ERASE,
                                                      v=torch.tensor(0.0)),
    }
    return u8, floats


def main():
    rng = np.random.default_rng(5)
    positions = np.sort(rng.choice(3 * 112 * 112, 512, replace=False))
    u8_ops, float_ops = ops()
    faces = {}
    for name in NAMES:
        img = torch.from_numpy(np.array(Image.open(os.path.join(FACES, name)).convert("RGB"))).permute(2, 0, 1)
        img = img.contiguous()
        outputs = {}
        for op, fn in {**u8_ops, **float_ops}.items():
            out = fn(img).contiguous()
            flat = out.reshape(-1).numpy()
            entry = {"mean": float(flat.astype(np.float64).mean()),
                     "values": (flat[positions].tolist() if out.dtype == torch.uint8
                                else [round(float(v), 6) for v in flat[positions]])}
            if out.dtype == torch.uint8:
                entry["sha256"] = hashlib.sha256(out.permute(1, 2, 0).contiguous().numpy().tobytes()).hexdigest()
            outputs[op] = entry
        faces[name] = outputs
    out = {"made_by": f"tools/make_augment_fixtures.py: torch {torch.__version__.split('+')[0]}, "
                      f"torchvision {torchvision.__version__.split('+')[0]}, numpy {np.__version__}",
           "positions": positions.tolist(), "erase": list(ERASE), "faces": faces}
    with open(OUT, "w") as f:
        json.dump(out, f)
    print(f"{len(NAMES)} faces x {len(u8_ops) + len(float_ops)} ops -> {OUT} ({os.path.getsize(OUT) // 1024} KiB)")


if __name__ == "__main__":
    main()
