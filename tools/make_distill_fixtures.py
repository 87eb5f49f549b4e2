#!/usr/bin/env python3
"""Writes datasets/fixtures/distill/losses.json: the distillation losses and their gradients with
respect to the student's embeddings, computed with PyTorch's own functions, for crates/distill.

  embedding  1 - F.cosine_similarity(s, t) averaged; ((F.normalize(s) - F.normalize(t))**2).sum(1).mean()
  logit      F.kl_div(log_softmax(scale*cos(s,W)/T), softmax(scale*cos(t,W)/T), reduction="batchmean") * T**2
             (Hinton et al. 2015's KD loss as PyTorch users write it)
  relational similarity-preserving KD as Tung & Mori's reference code computes it:
             G = f f^T, G = F.normalize(G) (rows), ((G_t - G_s)**2).sum() / b**2, here on F.normalize(f)

Inputs are formulas both sides compute (no random generator to agree on):
  student[i, j] = sin(0.7*i + 0.31*j + 0.2),  teacher[i, j] = cos(0.45*i - 0.27*j + 0.1) + 0.3*student[i, j]
  centres[c, j] = sin(1.3*c + 0.17*j*(c + 1))          (N = 6, D = 8, C = 5)

Usage: python tools/make_distill_fixtures.py   (torch; its version goes into the file)
"""
import json
import math
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "datasets", "fixtures", "distill", "losses.json")
N, D, C = 6, 8, 5


def inputs():
    s = torch.tensor([[math.sin(0.7 * i + 0.31 * j + 0.2) for j in range(D)] for i in range(N)], dtype=torch.float64)
    t = torch.tensor([[math.cos(0.45 * i - 0.27 * j + 0.1) for j in range(D)] for i in range(N)], dtype=torch.float64) + 0.3 * s
    w = torch.tensor([[math.sin(1.3 * c + 0.17 * j * (c + 1)) for j in range(D)] for c in range(C)], dtype=torch.float64)
    return s, t, w


def cos_logits(e, w, scale, temperature):
    return scale * F.normalize(e) @ F.normalize(w).t() / temperature


def losses(s, t, w):
    out = {
        "embedding_cosine": (1 - F.cosine_similarity(s, t)).mean(),
        "embedding_l2": ((F.normalize(s) - F.normalize(t)) ** 2).sum(1).mean(),
    }
    for scale, temperature in [(64.0, 4.0), (10.0, 2.0)]:
        out[f"logit_s{scale:g}_t{temperature:g}"] = F.kl_div(
            F.log_softmax(cos_logits(s, w, scale, temperature), 1),
            F.softmax(cos_logits(t, w, scale, temperature), 1), reduction="batchmean") * temperature ** 2
    fs, ft = F.normalize(s), F.normalize(t)
    gs, gt = F.normalize(fs @ fs.t()), F.normalize(ft @ ft.t())
    out["relational"] = ((gt - gs) ** 2).sum() / (N * N)
    return out


def main():
    s, t, w = inputs()
    result = {}
    for name in losses(s, t, w):
        sg = s.clone().requires_grad_(True)
        value = losses(sg, t, w)[name]
        value.backward()
        result[name] = {"value": value.item(), "grad_student": sg.grad.flatten().tolist()}
    fixture = {"made_by": f"tools/make_distill_fixtures.py, torch {torch.__version__} (float64)",
               "n": N, "d": D, "c": C, "losses": result}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(fixture, fh, indent=1)
    print({k: v["value"] for k, v in result.items()})


if __name__ == "__main__":
    main()
