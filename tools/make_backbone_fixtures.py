#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures for the `iresnet` crate.

PyTorch builds of insightface arcface_torch's IResNet and MobileFaceNet, written here from the
published architecture (backbones/iresnet.py, backbones/mobilefacenet.py), produce:

  datasets/fixtures/backbones/param_counts.json   exact parameter counts (r18..r200, mbf, mbf_large)
  datasets/fixtures/backbones/state_dict_keys.json  every state_dict key and shape of r18 and mbf
  datasets/fixtures/backbones/tiny_iresnet.pth    a reduced-width IResNet (same code path), seed 0,
                                                 with randomised BN statistics and PReLU slopes
  datasets/fixtures/backbones/tiny_iresnet.onnx   the same network through torch.onnx.export (eval mode,
                                                 BatchNorms folded where the exporter can)
  datasets/fixtures/backbones/tiny_iresnet_variant.onnx  the same graph rewritten into the other forms
                                                 exporters produce: Gemm as MatMul + Add, and the stem's
                                                 folded BN restored as an explicit BatchNormalization
                                                 node (epsilon 0.1) after the biased conv, the embedding
                                                 BN on an Unsqueeze/Squeeze view; same function
  datasets/fixtures/backbones/tiny_iresnet_io.json  its eval-mode outputs on fixed inputs
  datasets/fixtures/backbones/tiny_iresnet_train.json  one training-mode forward/backward of the tiny IResNet
                                                 (batch 4): outputs, loss, gradients of selected parameters
                                                 and the BatchNorm running statistics after the step
  datasets/fixtures/backbones/tiny_mbf.pth        a small MobileFaceNet (GDC head, blocks (2,1,1,1), scale 1,
                                                 D=32), seed 0, randomised BN statistics and PReLU slopes,
                                                 stored in float16 (the forward below uses the same rounded
                                                 weights in float32)
  datasets/fixtures/backbones/tiny_mbf_io.json    its eval-mode outputs on fixed inputs

Run:  python tools/make_backbone_fixtures.py   (needs torch; the versions used are written into the files)
The fixed inputs are a formula both sides compute: x[n,c,h,w] = sin(0.37*(n+1) + 0.11*c + 0.013*h*(c+1) + 0.029*w).
"""
import json
import math
import os
import sys

import torch
from torch import nn

OUT = os.path.join(os.path.dirname(__file__), "..", "datasets", "fixtures", "backbones")


# ---------------- IResNet (arcface_torch backbones/iresnet.py) ----------------
class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class IResNet(nn.Module):
    def __init__(self, layers, widths=(64, 128, 256, 512), num_features=512, dropout=0.0):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(widths[0], layers[0], 2)
        self.layer2 = self._make_layer(widths[1], layers[1], 2)
        self.layer3 = self._make_layer(widths[2], layers[2], 2)
        self.layer4 = self._make_layer(widths[3], layers[3], 2)
        self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-05)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(widths[3] * 49, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)

    def _make_layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes, eps=1e-05))
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


IRESNET_LAYERS = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3],
                  "r100": [3, 13, 30, 3], "r200": [6, 26, 60, 6]}


# ---------------- MobileFaceNet (arcface_torch backbones/mobilefacenet.py) ----------------
class ConvBlock(nn.Module):
    def __init__(self, in_c, out_c, kernel=1, stride=1, padding=0, groups=1, act=True):
        super().__init__()
        mods = [nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
                nn.BatchNorm2d(out_c)]
        if act:
            mods.append(nn.PReLU(out_c))
        self.layers = nn.Sequential(*mods)

    def forward(self, x):
        return self.layers(x)


class DepthWise(nn.Module):
    def __init__(self, in_c, out_c, residual=False, stride=2, groups=1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvBlock(in_c, groups),
                                    ConvBlock(groups, groups, 3, stride, 1, groups=groups),
                                    ConvBlock(groups, out_c, act=False))

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, c, num_block, groups):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, True, 1, groups) for _ in range(num_block)])

    def forward(self, x):
        return self.layers(x)


class GDC(nn.Module):
    def __init__(self, embedding_size):
        super().__init__()
        self.layers = nn.Sequential(ConvBlock(512, 512, 7, 1, 0, groups=512, act=False), nn.Flatten(),
                                    nn.Linear(512, embedding_size, bias=False), nn.BatchNorm1d(embedding_size))

    def forward(self, x):
        return self.layers(x)


class ConvFcHead(nn.Module):
    """The head of insightface's released w600k_mbf (buffalo_s): 1x1 conv to 64 channels, PReLU,
    flatten, Linear(64*7*7 -> D) with bias, BatchNorm1d (read off the ONNX graph's nodes)."""

    def __init__(self, embedding_size):
        super().__init__()
        self.conv = ConvBlock(512, 64)
        self.fc = nn.Linear(64 * 49, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x):
        return self.features(self.fc(torch.flatten(self.conv(x), 1)))


class MobileFaceNet(nn.Module):
    def __init__(self, num_features=512, blocks=(1, 4, 6, 2), scale=2, head="gdc"):
        super().__init__()
        s = scale
        self.layers = nn.ModuleList()
        self.layers.append(ConvBlock(3, 64 * s, 3, 2, 1))
        if blocks[0] == 1:
            self.layers.append(ConvBlock(64 * s, 64 * s, 3, 1, 1, groups=64))
        else:
            self.layers.append(Residual(64 * s, blocks[0], 128))
        self.layers.extend([
            DepthWise(64 * s, 64 * s, stride=2, groups=128), Residual(64 * s, blocks[1], 128),
            DepthWise(64 * s, 128 * s, stride=2, groups=256), Residual(128 * s, blocks[2], 256),
            DepthWise(128 * s, 128 * s, stride=2, groups=512), Residual(128 * s, blocks[3], 256)])
        self.conv_sep = ConvBlock(128 * s, 512)
        self.features = GDC(num_features) if head == "gdc" else ConvFcHead(num_features)

    def forward(self, x):
        for f in self.layers:
            x = f(x)
        return self.features(self.conv_sep(x))


def count(m):
    return sum(p.numel() for p in m.parameters())


def fixed_input(n):
    x = torch.empty(n, 3, 112, 112, dtype=torch.float64)
    for b in range(n):
        for c in range(3):
            h = torch.arange(112, dtype=torch.float64).view(112, 1)
            w = torch.arange(112, dtype=torch.float64).view(1, 112)
            x[b, c] = torch.sin(0.37 * (b + 1) + 0.11 * c + 0.013 * h * (c + 1) + 0.029 * w)
    return x.float()


def randomise(model, frozen=()):
    """Non-trivial BN statistics, affine terms and PReLU slopes so every parameter matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m not in frozen:
                    m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            elif isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.5)
            elif isinstance(m, nn.Conv2d):
                m.weight.mul_(0.5)  # keeps activations moderate through the residual stack


def write_tiny_mbf(made_by):
    torch.manual_seed(0)
    for m in (mbf := MobileFaceNet(num_features=32, blocks=(2, 1, 1, 1), scale=1)).modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    randomise(mbf)
    mbf.eval()
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in mbf.state_dict().items()}
    torch.save(half, os.path.join(OUT, "tiny_mbf.pth"))
    mbf.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    with torch.no_grad():
        y = mbf(fixed_input(2))
    json.dump({"made_by": made_by, "blocks": [2, 1, 1, 1], "scale": 1, "embedding_dim": 32, "head": "gdc",
               "weights": "float16 in the .pth; outputs computed from the same rounded weights in float32",
               "input": "x[n,c,h,w] = sin(0.37*(n+1) + 0.11*c + 0.013*h*(c+1) + 0.029*w), n in 0..2",
               "output": y.tolist()}, open(os.path.join(OUT, "tiny_mbf_io.json"), "w"), indent=1)


def loss_weights(n, d):
    """Fixed weights for a scalar loss both sides compute: w[i,j] = sin(0.7*i + 0.3*j + 0.1)."""
    i = torch.arange(n, dtype=torch.float64).view(n, 1)
    j = torch.arange(d, dtype=torch.float64).view(1, d)
    return torch.sin(0.7 * i + 0.3 * j + 0.1).float()


def write_training_step(model, made_by):
    """Training-mode semantics: batch statistics, PyTorch's running-stat update (unbiased variance)."""
    import copy
    m = copy.deepcopy(model).train()
    x = fixed_input(4)
    y = m(x)
    loss = (y * loss_weights(*y.shape)).sum()
    loss.backward()
    named = dict(m.named_parameters())
    grads = {k: named[k].grad.flatten()[:300].tolist() for k in
             ["conv1.weight", "bn1.weight", "prelu.weight", "layer1.0.bn1.bias", "layer4.0.conv2.weight",
              "layer4.0.downsample.0.weight", "fc.weight", "fc.bias", "features.bias"]}
    state = m.state_dict()
    running = {k: state[k].flatten().tolist() for k in
               ["bn1.running_mean", "bn1.running_var", "layer2.0.bn3.running_var", "features.running_mean",
                "features.running_var"]}
    json.dump({"made_by": made_by, "batch": 4, "loss": "sum(y * w), w[i,j] = sin(0.7*i + 0.3*j + 0.1)",
               "grads_note": "first 300 values of each flattened gradient",
               "output": y.tolist(), "loss_value": loss.item(), "grads": grads, "running": running,
               "features_weight_grad_is_none": named["features.weight"].grad is None},
              open(os.path.join(OUT, "tiny_iresnet_train.json"), "w"))


def write_variant(src, dst):
    """Rewrites an exported graph into an equivalent one with MatMul+Add and an explicit BN node."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(src)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = list(g.node)
    out = []
    for node in nodes:
        if node.op_type == "Gemm":
            w = numpy_helper.to_array(inits[node.input[1]])  # [out, in], transB=1
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "fc_matmul_weight"))
            out.append(helper.make_node("MatMul", [node.input[0], "fc_matmul_weight"], ["fc_matmul_out"]))
            out.append(helper.make_node("Add", ["fc_matmul_out", node.input[2]], list(node.output)))
        elif node.op_type == "Conv" and node.input[0] == g.input[0].name:
            c = numpy_helper.to_array(inits[node.input[1]]).shape[0]
            eps = 0.1  # far from 1e-5, so a lost epsilon correction shows
            for name, value in [("stem_bn_scale", np.ones(c)), ("stem_bn_bias", np.zeros(c)),
                                ("stem_bn_mean", np.zeros(c)), ("stem_bn_var", np.full(c, 1.0 - eps))]:
                g.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
            conv_out = node.output[0] + "_prebn"
            out.append(helper.make_node("Conv", list(node.input), [conv_out], name=node.name,
                                        **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
            out.append(helper.make_node("BatchNormalization", [conv_out, "stem_bn_scale", "stem_bn_bias",
                                                              "stem_bn_mean", "stem_bn_var"],
                                        list(node.output), epsilon=eps))
        elif node.op_type == "BatchNormalization" and node.output[0] == g.output[0].name:
            # The embedding BN as some exporters write BatchNorm1d: on an unsqueezed [N, C, 1] view.
            out.append(helper.make_node("Unsqueeze", [node.input[0]], ["features_in_3d"], axes=[2]))
            out.append(helper.make_node("BatchNormalization", ["features_in_3d"] + list(node.input[1:]),
                                        ["features_out_3d"],
                                        **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
            out.append(helper.make_node("Squeeze", ["features_out_3d"], list(node.output), axes=[2]))
        else:
            out.append(node)
    del g.node[:]
    g.node.extend(out)
    onnx.checker.check_model(model)
    onnx.save(model, dst)


def main():
    os.makedirs(OUT, exist_ok=True)
    made_by = f"tools/make_backbone_fixtures.py, torch {torch.__version__}, python {sys.version.split()[0]}"
    counts = {n: count(IResNet(l)) for n, l in IRESNET_LAYERS.items()}
    counts["mbf"] = count(MobileFaceNet())
    counts["mbf_w600k"] = count(MobileFaceNet(head="conv_fc"))
    counts["mbf_large"] = count(MobileFaceNet(blocks=(2, 8, 12, 4), scale=4))
    json.dump({"made_by": made_by, "params": counts}, open(os.path.join(OUT, "param_counts.json"), "w"), indent=1)
    print(counts)

    keys = {name: [[k, list(v.shape)] for k, v in model.state_dict().items()]
            for name, model in [("r18", IResNet(IRESNET_LAYERS["r18"])), ("mbf", MobileFaceNet())]}
    json.dump({"made_by": made_by, "keys": keys}, open(os.path.join(OUT, "state_dict_keys.json"), "w"))

    torch.manual_seed(0)
    tiny = IResNet([2, 1, 2, 1], widths=(8, 16, 24, 32), num_features=24)
    randomise(tiny, frozen=(tiny.features,))
    tiny.eval()
    torch.save(tiny.state_dict(), os.path.join(OUT, "tiny_iresnet.pth"))
    with torch.no_grad():
        y = tiny(fixed_input(2))
    # The same network through PyTorch's ONNX exporter in eval mode: it folds most BatchNorms into
    # the convolutions (which gain a bias) and keeps the ones that precede a convolution, like
    # insightface's released graphs. Numeric initializer names, as in those files.
    torch.onnx.export(tiny, fixed_input(1), os.path.join(OUT, "tiny_iresnet.onnx"), opset_version=11,
                      input_names=["input.1"], do_constant_folding=True, dynamo=False,
                      training=torch.onnx.TrainingMode.EVAL)
    write_variant(os.path.join(OUT, "tiny_iresnet.onnx"), os.path.join(OUT, "tiny_iresnet_variant.onnx"))
    write_tiny_mbf(made_by)
    write_training_step(tiny, made_by)
    json.dump({"made_by": made_by, "layers": [2, 1, 2, 1], "widths": [8, 16, 24, 32], "embedding_dim": 24,
               "input": "x[n,c,h,w] = sin(0.37*(n+1) + 0.11*c + 0.013*h*(c+1) + 0.029*w), n in 0..2",
               "output": y.tolist()}, open(os.path.join(OUT, "tiny_iresnet_io.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
