#!/usr/bin/env python3
"""Writes datasets/fixtures/losses/margin_heads.json: a NumPy (float64) reference for every margin
head of crates/arcface-loss, at target angles near 0, near pi - m (both sides of the classic
ArcFace fallback), near pi and in between.

The formulas are written out here independently of the Rust code, from the papers and from
insightface's arcface_torch/losses.py (CombinedMarginLoss, ArcFace, CosFace):
  - ArcFace straight-through (arcface_torch): value cos(min(clip(acos t, 1e-5, pi) + m, pi)).
  - ArcFace classic (insightface's original): t cos m - sin(theta) sin m where t > cos(pi - m),
    else t - sin(pi - m) m; easy_margin: the margin only where t > 0.
  - CosFace: t - m.
  - Combined: psi(m1 acos t + m2) - m3 with SphereFace's psi(a) = (-1)^k cos a - 2k, k = floor(a/pi).
Non-target logits are s * cos(theta_j); inter-class filtering zeroes non-target cosines above the
threshold; the loss is the mean cross-entropy against (1 - eps) onehot + eps / K.

Inputs are rounded to float32 first and the reference computed in float64 from those values, so
the Rust test can run the same inputs in f64 (tight tolerance) and in f32.

Usage: python3 tools/make_loss_fixtures.py   (needs numpy; made with numpy 2.4.6)
"""
import json
import math
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "datasets", "fixtures", "losses", "margin_heads.json")

K, D = 7, 16
# Target angles: near 0, mid, both sides of pi - 0.5 (ArcFace m = 0.5) and of pi - 0.3 (combined
# m2 = 0.3), beyond pi - m, near pi, and a pair where pi/4 splits SphereFace's branches (m1 = 4).
ANGLES = [1e-3, 0.02, 0.7, 1.3, math.pi / 2, math.pi - 0.52, math.pi - 0.48,
          math.pi - 0.31, math.pi - 0.29, 2.9, math.pi - 1e-3, math.pi / 4 - 0.01, math.pi / 4 + 0.01]


def build_inputs(rng):
    centres = rng.normal(0.0, 1.0, (K, D)) * rng.uniform(0.05, 3.0, (K, 1))
    # Class 6 is a near-duplicate of class 2 (cosine ~0.9), for inter-class filtering.
    centres[6] = centres[2] + 0.25 * np.linalg.norm(centres[2]) * rng.normal(0, 1, D) / math.sqrt(D)
    labels = [i % 6 for i in range(len(ANGLES))]
    embeddings = []
    for theta, y in zip(ANGLES, labels):
        w = centres[y] / np.linalg.norm(centres[y])
        u = rng.normal(0.0, 1.0, D)
        u -= u.dot(w) * w
        u /= np.linalg.norm(u)
        embeddings.append(rng.uniform(0.5, 20.0) * (math.cos(theta) * w + math.sin(theta) * u))
    return (np.array(embeddings).astype(np.float32).astype(np.float64),
            centres.astype(np.float32).astype(np.float64), labels)


def cosines(e, w):
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-6)
    w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-6)
    return np.clip(e @ w.T, -1.0, 1.0)


def target_logit(margin, t):
    kind = margin["kind"]
    if kind == "cos_face":
        return t - margin["margin"]
    if kind == "combined":
        a = margin["m1"] * np.arccos(t) + margin["m2"]
        k = np.floor(a / math.pi)
        return (-1.0) ** k * np.cos(a) - 2 * k - margin["m3"]
    m = margin["margin"]
    form = margin["form"]
    if form["kind"] == "straight_through":
        theta = np.clip(np.arccos(t), 1e-5, math.pi)
        return np.cos(np.minimum(theta + m, math.pi))
    phi = t * math.cos(m) - np.sqrt(np.maximum(1.0 - t * t, 0.0)) * math.sin(m)
    if form.get("easy_margin", False):
        return np.where(t > 0, phi, t)
    return np.where(t > math.cos(math.pi - m), phi, t - math.sin(math.pi - m) * m)


def head(config, e, w, labels):
    cos = cosines(e, w)
    n = len(labels)
    rows = np.arange(n)
    x = cos.copy()
    if config["interclass_filter"] is not None:
        dirty = x > config["interclass_filter"]
        dirty[rows, labels] = False
        x[dirty] = 0.0
    x[rows, labels] = target_logit(config["margin"], cos[rows, labels])
    logits = config["margin"]["scale"] * x
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    eps = config["label_smoothing"]
    target = np.full_like(log_p, eps / log_p.shape[1])
    target[rows, labels] += 1.0 - eps
    loss = float(-(target * log_p).sum(axis=1).mean())
    return cos, logits, loss


def config(margin, smoothing=0.0, interclass=None):
    return {"num_classes": K, "embedding_dim": D, "margin": margin, "sample_rate": 1.0,
            "label_smoothing": smoothing, "interclass_filter": interclass, "seed": 0}


def arc(form, s=64.0, m=0.5):
    return {"kind": "arc_face", "scale": s, "margin": m, "form": form}


CASES = {
    "arcface_straight_through": config(arc({"kind": "straight_through"})),
    "arcface_classic": config(arc({"kind": "classic", "easy_margin": False})),
    "arcface_classic_easy_margin": config(arc({"kind": "classic", "easy_margin": True})),
    "cosface": config({"kind": "cos_face", "scale": 64.0, "margin": 0.4}),
    "combined_arc_cos": config({"kind": "combined", "scale": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}),
    "combined_sphereface": config({"kind": "combined", "scale": 30.0, "m1": 4.0, "m2": 0.0, "m3": 0.0}),
    "arcface_label_smoothing": config(arc({"kind": "classic", "easy_margin": False}), smoothing=0.1),
    "cosface_label_smoothing_interclass": config({"kind": "cos_face", "scale": 64.0, "margin": 0.4},
                                                 smoothing=0.1, interclass=0.6),
}


def main():
    rng = np.random.default_rng(20261129)
    e, w, labels = build_inputs(rng)
    cases = []
    for name, cfg in CASES.items():
        cos, logits, loss = head(cfg, e, w, labels)
        cases.append({"name": name, "config": cfg, "logits": logits.tolist(), "loss": loss})
    actual = np.arccos(cos[np.arange(len(labels)), labels])
    out = {
        "generator": "tools/make_loss_fixtures.py",
        "numpy": np.__version__,
        "embeddings": e.tolist(),
        "centres": w.tolist(),
        "labels": labels,
        "target_angles": actual.tolist(),
        "cosine": cos.tolist(),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {OUT}: {len(cases)} heads, target angles {np.round(actual, 4).tolist()}")
    print("near-duplicate cosine (class 6 vs 2):", float(cosines(w[6:7], w[2:3])[0, 0]))
    dirty = cos > 0.6
    dirty[np.arange(len(labels)), labels] = False
    print("entries the 0.6 inter-class filter zeroes:", int(dirty.sum()))


if __name__ == "__main__":
    main()
