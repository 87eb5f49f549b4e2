#!/usr/bin/env python3
"""Reference numbers for crates/eval's verification metrics, computed on committed score arrays
(datasets/fixtures/eval/verification.json).

The procedure is insightface's recognition/arcface_torch/eval/verification.py (written out here):
squared L2 distance `dist` of L2-normalised embeddings, thresholds i*0.01 for i in 0..400, predict
"same" iff dist < threshold, 10 contiguous folds (sklearn KFold without shuffling: the first n%10 folds
one pair longer), best threshold = first argmax of the 9 training folds' accuracy, mean and population
std of the test-fold accuracies; VAL@FAR=1e-3 on thresholds i*0.001 with the "slinear" interpolation
of old scipy (the last threshold whose train FAR <= 1e-3 and the next one, linearly; 0 when no threshold
reaches 1e-3; recent scipy refuses the repeated FAR values). ROC, AUC and TAR@FAR on cosine scores with
sklearn.metrics.roc_curve / auc (TAR at the ROC point nearest each FAR, as insightface's eval_ijb.py
reads it); EER at the ROC point where |FNR - FPR| is smallest.

Each case is drawn in float64 from a seeded generator and written with its dist and cosine arrays
(repr floats, so they round-trip exactly), the labels, and the expected numbers.
Run: python tools/make_eval_fixtures.py   (numpy, scipy, scikit-learn; versions recorded in the file)
"""
import json
import os

import numpy as np
import scipy
import sklearn
from sklearn.metrics import auc, roc_curve
from sklearn.model_selection import KFold

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FARS = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]


def accuracy(thr, dist, same):
    pred = dist < thr
    tp = np.sum(pred & same)
    fp = np.sum(pred & ~same)
    tn = np.sum(~pred & ~same)
    fn = np.sum(~pred & same)
    tpr = 0.0 if tp + fn == 0 else tp / (tp + fn)
    fpr = 0.0 if fp + tn == 0 else fp / (fp + tn)
    return tpr, fpr, (tp + tn) / dist.size


def ten_fold(dist, same):
    thresholds = np.arange(0, 4, 0.01)
    folds = KFold(n_splits=10, shuffle=False).split(np.arange(len(dist)))
    accs, best = [], []
    tprs = np.zeros((10, len(thresholds)))
    fprs = np.zeros((10, len(thresholds)))
    for f, (train, test) in enumerate(folds):
        train_acc = np.array([accuracy(t, dist[train], same[train])[2] for t in thresholds])
        b = int(np.argmax(train_acc))
        for k, t in enumerate(thresholds):
            tprs[f, k], fprs[f, k], _ = accuracy(t, dist[test], same[test])
        accs.append(accuracy(thresholds[b], dist[test], same[test])[2])
        best.append(float(thresholds[b]))
    return np.array(accs), best, tprs.mean(0), fprs.mean(0)


def old_slinear(x, y, x_new):
    order = np.argsort(x, kind="mergesort")
    x, y = x[order], y[order]
    if x_new >= x[-1]:
        return float(y[-1])
    i = int(np.searchsorted(x, x_new, side="right")) - 1
    return float(y[i] + (y[i + 1] - y[i]) * (x_new - x[i]) / (x[i + 1] - x[i]))


def val_at_far(dist, same, target=1e-3):
    thresholds = np.arange(0, 4, 0.001)
    vals, fars, thrs = [], [], []
    for train, test in KFold(n_splits=10, shuffle=False).split(np.arange(len(dist))):
        far_train = np.array([np.sum((dist[train] < t) & ~same[train]) / np.sum(~same[train]) for t in thresholds])
        thr = old_slinear(far_train, thresholds, target) if far_train.max() >= target else 0.0
        pred = dist[test] < thr
        vals.append(np.sum(pred & same[test]) / np.sum(same[test]))
        fars.append(np.sum(pred & ~same[test]) / np.sum(~same[test]))
        thrs.append(thr)
    return float(np.mean(vals)), float(np.std(vals)), float(np.mean(fars)), thrs


def roc_numbers(cos, same):
    fpr, tpr, thr = roc_curve(same.astype(int), cos)
    ff, tf = np.flipud(fpr), np.flipud(tpr)
    tars = {}
    for t in FARS:
        _, i = min(zip(np.abs(ff - t), range(len(ff))))
        tars[f"{t:.0e}"] = float(tf[i])
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return {
        "auc": float(auc(fpr, tpr)),
        "tar_at_far": tars,
        "eer": float((fpr[i] + fnr[i]) / 2),
        "eer_threshold": float(thr[i]),
        "roc_fpr": [float(v) for v in fpr],
        "roc_tpr": [float(v) for v in tpr],
        "roc_thresholds": [float(v) if np.isfinite(v) else None for v in thr],
    }


def case(rng, n, d, pattern, genuine=(0.9, 1.6), quantise=None):
    if pattern == "lfw":
        block = max(2, n // 10)
        same = np.array([(i % block) < block // 2 for i in range(n)])
    else:
        same = np.array([i % 2 == 0 for i in range(n)])
    a = rng.standard_normal((n, d))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    o = rng.standard_normal((n, d))
    o /= np.linalg.norm(o, axis=1, keepdims=True)
    partner = a + rng.uniform(*genuine, (n, 1)) * o
    hard = rng.random(n) < 0.03
    imp = o.copy()
    imp[hard] += 0.8 * a[hard]
    b = np.where(same[:, None], partner, imp)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    cos = np.sum(a * b, 1)
    if quantise:  # ties: scores on a coarse grid
        cos = np.round(cos * quantise) / quantise
    dist = 2.0 - 2.0 * cos
    return dist, cos, same


def main():
    rng = np.random.default_rng(20261129)
    cases = {
        "lfw_like_2000": case(rng, 2000, 128, "lfw"),
        "uneven_1234": case(rng, 1234, 64, "alt"),
        "tiny_25": case(rng, 25, 8, "alt"),
        "ties_600": case(rng, 600, 32, "lfw", quantise=20),
        "easy_600": case(rng, 600, 64, "lfw", genuine=(0.1, 0.3)),
    }
    out = {"made_by": f"tools/make_eval_fixtures.py, numpy {np.__version__}, scipy {scipy.__version__}, "
                      f"scikit-learn {sklearn.__version__}", "cases": {}}
    for name, (dist, cos, same) in cases.items():
        accs, best, tpr, fpr = ten_fold(dist, same)
        val, val_std, far, val_thr = val_at_far(dist, same)
        out["cases"][name] = {
            "dist": [float(v) for v in dist], "cos": [float(v) for v in cos], "same": [bool(v) for v in same],
            "accuracy_mean": float(accs.mean()), "accuracy_std": float(accs.std()),
            "accuracy_per_fold": [float(v) for v in accs], "best_threshold_per_fold": best,
            "val": val, "val_std": val_std, "far": far, "val_threshold_per_fold": val_thr,
            "mean_tpr": [float(v) for v in tpr], "mean_fpr": [float(v) for v in fpr],
            **roc_numbers(cos, same),
        }
        print(name, out["cases"][name]["accuracy_mean"], val, out["cases"][name]["auc"])
    path = os.path.join(ROOT, "datasets/fixtures/eval/verification.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
