#!/usr/bin/env python3
"""PyTorch eager and torch.compile training step, the same step as benches/train_step.rs, in the same run
(tools/bench_train.sh): IResNet-18/50 and MobileFaceNet (insightface's "mbf", GDC head), batch 32,
forward + ArcFace (s 64, m 0.5, insightface's form) over 1000 classes + backward + SGD (lr 0.1,
momentum 0.9, weight decay 5e-4) on backbone and head; 2 threads; median of N steps after one
warm-up step (two for torch.compile, which compiles in them; PEER_MODES=eager,compile picks), then the
trained network's batch-1 embedding in evaluation mode. The ArcFace head is ../shared/peers/bench_torch_train.py's.

Needs torch (the version is printed). Usage: bench_peers_train.py [models] [steps]
"""
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_backbone_fixtures import IResNet, IRESNET_LAYERS, MobileFaceNet  # noqa: E402

torch.set_num_threads(2)
torch.set_num_interop_threads(1)


class ArcFaceHead(torch.nn.Module):
    def __init__(self, emb=512, num_classes=1000, s=64.0, m=0.5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.normal(0, 0.01, (num_classes, emb)))
        self.s, self.m = s, m

    def forward(self, emb, labels):
        logits = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1, 1)
        idx = torch.arange(labels.size(0))
        t = logits[idx, labels].clamp(-1 + 1e-7, 1 - 1e-7)
        logits = logits.index_put((idx, labels), torch.cos(torch.arccos(t) + self.m))
        return F.cross_entropy(logits * self.s, labels)


def build(name):
    return MobileFaceNet() if name == "mbf" else IResNet(IRESNET_LAYERS[name])


def time_step(name, mode, batch, steps):
    """Median seconds of `steps` training steps after warm-up; `mode` "compile" runs the backbone
    and head through torch.compile (inductor, the default backend: C++ kernels on the CPU), whose
    compilation happens in the two warm-up steps."""
    torch.manual_seed(0)
    net = build(name).train()
    head = ArcFaceHead()
    opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9,
                          weight_decay=5e-4)
    fnet, fhead = (torch.compile(net), torch.compile(head)) if mode == "compile" else (net, head)
    x = torch.rand(batch, 3, 112, 112) * 2 - 1
    y = torch.tensor([(i * 37) % 1000 for i in range(batch)])
    warmup = 2 if mode == "compile" else 1
    times = []
    for step in range(steps + warmup):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = fhead(fnet(x), y)
        loss.backward()
        opt.step()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), embed_latency(fnet.eval(), max(steps, 5))


def embed_latency(net, runs):
    """Median seconds of a batch-1 embedding in evaluation mode (one warm-up call)."""
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    times = []
    with torch.no_grad():
        net(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    models = (sys.argv[1] if len(sys.argv) > 1 else "r18,r50,mbf").split(",")
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    batch = 32
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": {}}
    modes = os.environ.get("PEER_MODES", "eager,compile").split(",")
    for mode in modes:
        for name in models:
            med, embed = time_step(name, mode, batch, steps)
            out["results"][f"{name}/{mode}"] = {"step_ms": med * 1e3, "img_per_s": batch / med,
                                                "embed_b1_ms": embed * 1e3}
            print(f"torch {mode:7} {name:5} batch {batch} {med * 1e3:8.0f} ms/step {batch / med:6.2f} img/s"
                  f"  embed batch 1 {embed * 1e3:7.2f} ms", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
