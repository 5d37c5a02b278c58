#!/usr/bin/env python3
"""ResNet-50 trunk (conv1 … layer4) in ONNX Runtime, on a torchvision-named safetensors file.

The counterpart of the criterion bench `benches/benches/resnet50_forward.rs`: it builds the same
network (torchvision v1.5 bottlenecks, BatchNorm folded into the convolutions in float64 as
expgraph does, ReLU, 3×3/2 max-pool, residual Add; output = layer4 after its ReLU) with
`onnx.helper`, checks ORT's output against our reference output when given, and times inference.

Reproduce (from the repository root):

    python3 -m venv /tmp/ort-venv && /tmp/ort-venv/bin/pip install onnxruntime onnx numpy safetensors
    cargo run --release -p expgraph-benches --example resnet50_weights -- /tmp/r50
    /tmp/ort-venv/bin/python benches/onnxruntime/resnet50_ort.py /tmp/r50/resnet50-random.safetensors \
        --reference /tmp/r50/resnet50-reference.safetensors --threads 2
    RAYON_NUM_THREADS=2 cargo bench -p expgraph-benches --bench resnet50_forward

Prints one JSON object: ORT version, threads, the check result, and per batch the median and
minimum milliseconds per batch and per image over the timed runs.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

BN_EPS = 1e-5
BLOCKS = [3, 4, 6, 3]


class Graph:
    def __init__(self, weights):
        self.w = weights
        self.nodes = []
        self.inits = []
        self.n = 0

    def fresh(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def conv_bn(self, x, conv, bn, stride, pad):
        """Conv with the BatchNorm `bn` folded in (f64 arithmetic, f32 result)."""
        w = self.w[f"{conv}.weight"].astype(np.float64)
        g, b = self.w[f"{bn}.weight"].astype(np.float64), self.w[f"{bn}.bias"].astype(np.float64)
        m, v = self.w[f"{bn}.running_mean"].astype(np.float64), self.w[f"{bn}.running_var"].astype(np.float64)
        scale = g / np.sqrt(v + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (b - m * scale).astype(np.float32)
        wn, bn_ = f"{conv}.w", f"{conv}.b"
        self.inits += [numpy_helper.from_array(wf, wn), numpy_helper.from_array(bf, bn_)]
        k = wf.shape[2]
        y = self.fresh(conv)
        self.nodes.append(
            helper.make_node("Conv", [x, wn, bn_], [y], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        )
        return y

    def op(self, kind, inputs, **attrs):
        y = self.fresh(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [y], **attrs))
        return y


def build_model(weights):
    g = Graph(weights)
    x = g.conv_bn("input", "conv1", "bn1", 2, 3)
    x = g.op("Relu", [x])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for s, blocks in enumerate(BLOCKS):
        for b in range(blocks):
            p = f"layer{s + 1}.{b}"
            stride = 2 if s > 0 and b == 0 else 1
            y = g.op("Relu", [g.conv_bn(x, f"{p}.conv1", f"{p}.bn1", 1, 0)])
            y = g.op("Relu", [g.conv_bn(y, f"{p}.conv2", f"{p}.bn2", stride, 1)])
            y = g.conv_bn(y, f"{p}.conv3", f"{p}.bn3", 1, 0)
            short = x
            if f"{p}.downsample.0.weight" in weights:
                short = g.conv_bn(x, f"{p}.downsample.0", f"{p}.downsample.1", stride, 0)
            x = g.op("Relu", [g.op("Add", [y, short])])
    g.nodes.append(helper.make_node("Identity", [x], ["layer4"]))
    graph = helper.make_graph(
        g.nodes,
        "resnet50_trunk",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("layer4", TensorProto.FLOAT, ["N", 2048, 7, 7])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def session(model, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="torchvision-named ResNet-50 safetensors file (f32)")
    ap.add_argument("--reference", help="safetensors with `input` and our `layer4` output to check against")
    ap.add_argument("--threads", type=int, default=2, help="intra_op_num_threads (default 2)")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per batch size (default 20)")
    ap.add_argument("--seconds", type=float, default=0.0, help="keep timing at least this long per batch")
    args = ap.parse_args()

    model = build_model(load_file(args.weights))
    sess = session(model, args.threads)
    out = {"onnxruntime": ort.__version__, "threads": args.threads, "batches": {}}

    if args.reference:
        ref = load_file(args.reference)
        (got,) = sess.run(None, {"input": ref["input"]})
        want = ref["layer4"]
        max_diff = float(np.abs(got - want).max())
        scale = float(np.abs(want).max())
        rel_l2 = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        ok = max_diff <= 1e-3 * scale
        out["check"] = {"max_abs_diff": max_diff, "max_abs_ours": scale, "relative_l2": rel_l2, "ok": ok}
        if not ok:
            print(json.dumps(out, indent=2))
            sys.exit(f"ORT disagrees with the reference: max|Δ| {max_diff} > 1e-3 × {scale}")

    rng = np.random.default_rng(0)
    for batch in [int(b) for b in args.batches.split(",")]:
        x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
        for _ in range(3):  # warm-up
            sess.run(None, {"input": x})
        times = []
        start = time.perf_counter()
        while len(times) < args.runs or time.perf_counter() - start < args.seconds:
            t = time.perf_counter()
            sess.run(None, {"input": x})
            times.append((time.perf_counter() - t) * 1e3)
        med = statistics.median(times)
        out["batches"][str(batch)] = {
            "runs": len(times),
            "median_ms": round(med, 2),
            "min_ms": round(min(times), 2),
            "median_ms_per_image": round(med / batch, 2),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
