#!/usr/bin/env python3
"""Runs an ONNX model on ONNX Runtime's CPU provider for the Rust export tests, and reports how
insightface's own loader would read it.

    python tools/ort_run.py MODEL.onnx INPUT.f32 N C H W OUTPUT.f32

INPUT.f32 holds N*C*H*W little-endian float32 values; the first output is written to OUTPUT.f32.
Prints one JSON object: the input and output names and shapes, onnx.checker's verdict, and the
input mean/std insightface 0.7.3's model_zoo/arcface_onnx.py (ArcFaceONNX.__init__) would pick,
by its own rule: graphs whose first 8 nodes include both a `Sub`/`_minus` and a `Mul`/`_mul` node
normalise inside (mean 0, std 1); all others get mean 127.5, std 127.5.

Runs in datasets/cache/venv (datasets/requirements.txt pins onnxruntime and onnx).
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime


def insightface_normalisation(model):
    find_sub = find_mul = False
    for node in model.graph.node[:8]:
        if node.name.startswith("Sub") or node.name.startswith("_minus"):
            find_sub = True
        if node.name.startswith("Mul") or node.name.startswith("_mul"):
            find_mul = True
    return (0.0, 1.0) if find_sub and find_mul else (127.5, 127.5)


def main():
    model_path, input_path, n, c, h, w, output_path = sys.argv[1:8]
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    x = np.fromfile(input_path, dtype="<f4").reshape(int(n), int(c), int(h), int(w))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    out = session.run(None, {inp.name: x})[0]
    out.astype("<f4").tofile(output_path)
    mean, std = insightface_normalisation(model)
    print(json.dumps({
        "input": inp.name, "input_shape": [str(d) for d in inp.shape],
        "output": session.get_outputs()[0].name, "output_shape": list(out.shape),
        "opset": model.opset_import[0].version, "checker": "ok",
        "insightface_mean": mean, "insightface_std": std,
        "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
    }))


if __name__ == "__main__":
    main()
