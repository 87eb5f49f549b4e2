#!/usr/bin/env python3
"""PyTorch (CPU, eager) timing of the same margin head as benches/heads.rs: batch 128, D = 512,
10k and 100k classes, full and Partial FC 0.1, forward + backward. The head is arcface_torch's:
F.normalize on embeddings and centres, linear, clamp, the straight-through ArcFace margin
(CombinedMarginLoss with m2 = 0.5, s = 64), cross-entropy; Partial FC as PartialFC_V2 samples
(positives + random negatives via topk over a random permutation, index the centres), and the
dense torch.optim.SGD step PartialFC_V2 is trained with, for comparison with our row-sparse step.

Usage: python tools/bench_peers_heads.py   (made with torch 2.15.0; median of 10 runs after warm-up)
"""
import math
import statistics
import time

import torch
import torch.nn.functional as F

B, D, S, M = 128, 512, 64.0, 0.5


def head_step(weight, emb, labels, rate):
    num_classes = weight.shape[0]
    if rate < 1.0:
        num_sample = int(rate * num_classes)
        positive = torch.unique(labels, sorted=True)
        perm = torch.rand(num_classes)
        perm[positive] = 2.0
        index = torch.topk(perm, k=num_sample)[1].sort()[0]
        labels = torch.searchsorted(index, labels)
        w = weight[index]
    else:
        w = weight
    logits = F.linear(F.normalize(emb), F.normalize(w)).clamp(-1, 1)
    target = logits[torch.arange(B), labels].view(-1, 1)
    with torch.no_grad():
        theta = target.acos().clamp(1e-5, math.pi)
        shift = (theta + M).clamp(max=math.pi).cos() - target
    logits = logits.scatter_add(1, labels.view(-1, 1), shift) * S
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    return weight.grad, emb.grad


def main():
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for classes in (10_000, 100_000):
        for rate in (1.0, 0.1):
            weight = torch.nn.Parameter(torch.normal(0, 0.01, (classes, D)))
            emb = torch.randn(B, D, requires_grad=True)
            labels = torch.tensor([(i * 7919) % classes for i in range(B)])
            times = []
            for i in range(12):
                weight.grad = None
                emb.grad = None
                t0 = time.perf_counter()
                head_step(weight, emb, labels, rate)
                if i >= 2:
                    times.append(time.perf_counter() - t0)
            name = "partial_fc_0.1" if rate < 1 else "full"
            print(f"head_forward_backward/{name}/{classes}: median {statistics.median(times) * 1e3:.2f} ms")
            if rate < 1:
                # PartialFC_V2 leaves the update to torch.optim.SGD over the whole [K, D] weight
                # (decay and momentum touch every row): time that step on the gradient just made.
                opt = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=5e-4)
                steps = []
                for i in range(12):
                    t0 = time.perf_counter()
                    opt.step()
                    if i >= 2:
                        steps.append(time.perf_counter() - t0)
                print(f"head_sgd_step (dense torch.optim.SGD)/{classes}: median {statistics.median(steps) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
