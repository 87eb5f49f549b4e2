#!/usr/bin/env python3
"""ONNX Runtime side of tools/bench_int8.sh: the same two models our `arcface quantize` measures,
quantised by ONNX Runtime's static int8 (QDQ, per-channel, the setup ../shared/peer-baselines.md
uses) on the same calibration faces, batch-1 latency (median of 20 after warm-up, 2 threads).

  r50: make_backbone_fixtures.py's IResNet-50 (torch.manual_seed(0) weights), BatchNorm statistics
       re-estimated on the calibration faces (a random-weight net otherwise blows up), written as
       a .pth for `arcface import` and exported to ONNX (opset 17).
  mbf: insightface's w600k_mbf.onnx (opset 11 -> 13, needed for per-channel QDQ).

Usage: python tools/bench_peers_int8.py FACES_DIR WORK_DIR CALIB_COUNT  -> prints one JSON object
"""
import glob
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,  # noqa: E402
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_peers_backbones import median_time  # noqa: E402
from make_backbone_fixtures import IResNet, IRESNET_LAYERS  # noqa: E402

torch.set_num_threads(2)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def load_faces(folder):
    import cv2
    paths = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))
    faces = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths]
    faces = [f for f in faces if f.shape == (112, 112, 3)]
    x = np.stack(faces).astype(np.float32).transpose(0, 3, 1, 2)
    return (x - 127.5) / 127.5


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class Reader(CalibrationDataReader):
    def __init__(self, name, xs):
        self.items = iter([{name: x[None]} for x in xs])

    def get_next(self):
        return next(self.items, None)


def median_ms(fn, runs=20, warmup=3):
    return 1e3 * median_time(fn, runs, warmup)


def cosines(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    c = (a * b).sum(1)
    return float(c.mean()), float(c.min())


def measure(tag, fp32, calib, check, work):
    pre = os.path.join(work, f"{tag}_pre.onnx")
    quant_pre_process(fp32, pre)
    name = session(fp32).get_inputs()[0].name
    out = {}
    for variant, act in [("u8s8", QuantType.QUInt8), ("s8s8", QuantType.QInt8)]:
        q = os.path.join(work, f"{tag}_int8_{variant}.onnx")
        quantize_static(pre, q, Reader(name, calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=act, weight_type=QuantType.QInt8)
        out[variant] = q
    f = session(fp32)
    ref = np.concatenate([f.run(None, {name: x[None]})[0] for x in check])
    res = {"fp32": {"bytes": os.path.getsize(fp32),
                    "batch1_ms": median_ms(lambda: f.run(None, {name: check[:1]}))}}
    for variant, path in out.items():
        s = session(path)
        got = np.concatenate([s.run(None, {name: x[None]})[0] for x in check])
        mean, low = cosines(ref, got)
        res[f"int8_{variant}"] = {"bytes": os.path.getsize(path),
                                  "batch1_ms": median_ms(lambda: s.run(None, {name: check[:1]})),
                                  "cosine_mean": mean, "cosine_min": low}
    return res


def main():
    faces_dir, work, n_calib = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(work, exist_ok=True)
    x = load_faces(faces_dir)
    calib, check = x[:n_calib], x[n_calib:]
    result = {"versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
                           "torch": torch.__version__}, "faces": {"calibration": len(calib), "check": len(check)}}
    # r50: seed-0 weights, BatchNorm statistics from the calibration faces (cumulative average).
    torch.manual_seed(0)
    r50 = IResNet(IRESNET_LAYERS["r50"])
    for m in r50.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    r50.train()
    with torch.no_grad():
        r50(torch.from_numpy(calib))
    r50.eval()
    torch.save(r50.state_dict(), os.path.join(work, "r50.pth"))
    r50_onnx = os.path.join(work, "r50.onnx")
    torch.onnx.export(r50, (torch.from_numpy(check[:1]),), r50_onnx, input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "N"}, "embedding": {0: "N"}},
                      opset_version=17, dynamo=False)
    result["r50"] = measure("r50", r50_onnx, calib, check, work)
    # mbf: insightface's file, batch made symbolic, opset 13 for per-channel QDQ.
    m = onnx.load(os.path.join(ROOT, "datasets/cache/models/w600k_mbf.onnx"))
    del m.graph.value_info[:]
    for v in list(m.graph.input) + list(m.graph.output):
        d = v.type.tensor_type.shape.dim
        if len(d):
            d[0].ClearField("dim_value")
            d[0].dim_param = "N"
    from onnx import version_converter
    m = version_converter.convert_version(m, 13)
    mbf_onnx = os.path.join(work, "mbf13.onnx")
    onnx.save(m, mbf_onnx)
    result["mbf"] = measure("mbf", mbf_onnx, calib, check, work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
