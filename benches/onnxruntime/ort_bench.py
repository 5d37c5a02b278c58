#!/usr/bin/env python3
"""VGG-16 (conv1_1 … conv5_3) or the ResNet-50 trunk (conv1 … layer4) in ONNX Runtime, on a torchvision-named safetensors file.

The ONNX side of `cargo xtask bench-backbone --compare-onnxruntime` (the one home of the ONNX
graph builders of our backbones). Builds, with `onnx.helper`, the network expgraph-backbone runs:

* vgg16: 13 conv3×3 (pad 1) + bias, a ReLU after each but the last, 2×2 max-pools before
  conv2_1, conv3_1, conv4_1 and conv5_1; output `conv5_3` before its ReLU (expgraph's VGG-16 taps
  are pre-ReLU). Tensors `features.N.weight|bias`.
* resnet50: torchvision v1.5 bottlenecks, BatchNorm folded into the convolutions in float64 as
  expgraph does, ReLU, 3×3/2 max-pool, residual Add; output `layer4` after its ReLU.

Input `input` NCHW [N, 3, H, W] f32 (N, H, W symbolic). With `--reference FILE` (safetensors with
`input` and our `output` on it; `conv5_3` or `layer4` are read in place of `output`) it checks ORT's output first and exits with status 1 when the
relative L2 error exceeds `--max-rel-l2` (1e-4).

Two modes:

* `--serve` (what xtask uses): prints one JSON line {"onnxruntime", "threads", "model",
  "agreement"} and then answers timing requests on stdin, one JSON line each:
  {"batch": B, "runs": K, "warmup": W} → {"ms": [K wall-clock milliseconds per batch run]}, on the
  first B images of the reference input (so both engines time the same input). EOF ends it.
* otherwise: times `--batches` (random input) for `--runs` runs each and prints one JSON object.
* `--profile-layers`: ORT's profiler over `--runs` runs of the first of `--batches`; prints a
  Markdown table of the convolutions' times per image (each node's median over the runs, summed
  by layer shape), the table `conv_speed -- N resnet-layers` prints for ours (expgraph-backbone's
  examples).

Standalone (from the repository root):

    cargo run --release -p expgraph-benches --example resnet50_weights -- /tmp/r50
    python benches/onnxruntime/ort_bench.py --model resnet50 /tmp/r50/resnet50-random.safetensors \
        --reference /tmp/r50/resnet50-reference.safetensors --threads 2
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
RESNET50_BLOCKS = [3, 4, 6, 3]
# (torchvision features index, max-pool before it)
VGG16_CONVS = [(0, False), (2, False), (5, True), (7, False), (10, True), (12, False), (14, False),
               (17, True), (19, False), (21, False), (24, True), (26, False), (28, False)]


class Graph:
    def __init__(self, weights):
        self.w = weights
        self.nodes = []
        self.inits = []
        self.n = 0

    def fresh(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def conv(self, x, name, wf, bf, stride, pad):
        wn, bn_ = f"{name}.w", f"{name}.b"
        self.inits += [numpy_helper.from_array(wf, wn), numpy_helper.from_array(bf, bn_)]
        k = wf.shape[2]
        y = self.fresh(name)
        self.nodes.append(
            helper.make_node("Conv", [x, wn, bn_], [y], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        )
        return y

    def conv_bn(self, x, conv, bn, stride, pad):
        """Conv with the BatchNorm `bn` folded in (f64 arithmetic, f32 result)."""
        w = self.w[f"{conv}.weight"].astype(np.float64)
        g, b = self.w[f"{bn}.weight"].astype(np.float64), self.w[f"{bn}.bias"].astype(np.float64)
        m, v = self.w[f"{bn}.running_mean"].astype(np.float64), self.w[f"{bn}.running_var"].astype(np.float64)
        scale = g / np.sqrt(v + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (b - m * scale).astype(np.float32)
        return self.conv(x, conv, wf, bf, stride, pad)

    def op(self, kind, inputs, **attrs):
        y = self.fresh(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [y], **attrs))
        return y

    def model(self, name, x, output, channels):
        self.nodes.append(helper.make_node("Identity", [x], [output]))
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", channels, "h", "w"])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def build_vgg16(weights):
    g = Graph(weights)
    x = "input"
    for i, (index, pool_before) in enumerate(VGG16_CONVS):
        if i > 0:
            x = g.op("Relu", [x])
        if pool_before:
            x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        p = f"features.{index}"
        x = g.conv(x, p, weights[f"{p}.weight"].astype(np.float32), weights[f"{p}.bias"].astype(np.float32), 1, 1)
    return g.model("vgg16_conv5_3", x, "conv5_3", 512)


def build_resnet50(weights):
    g = Graph(weights)
    x = g.conv_bn("input", "conv1", "bn1", 2, 3)
    x = g.op("Relu", [x])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for s, blocks in enumerate(RESNET50_BLOCKS):
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
    return g.model("resnet50_layer4", x, "layer4", 2048)


BUILDERS = {"vgg16": build_vgg16, "resnet50": build_resnet50}
# The output's name in each graph (also accepted in place of `output` in a reference file).
OUTPUTS = {"vgg16": "conv5_3", "resnet50": "layer4"}


def session(model, threads, profile_prefix=None):
    """The timed session; with `profile_prefix`, ORT's profiler writes there."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def agreement(got, want):
    """max|Δ| / max|want| and ‖Δ‖₂ / ‖want‖₂ (float64)."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    max_abs_diff = float(np.abs(got - want).max())
    max_abs_ref = float(np.abs(want).max())
    norm = float(np.linalg.norm(want))
    return {
        "max_abs_diff": max_abs_diff,
        "max_abs_ref": max_abs_ref,
        "max_abs_rel": max_abs_diff / max_abs_ref if max_abs_ref > 0 else max_abs_diff,
        "rel_l2": float(np.linalg.norm(got - want)) / norm if norm > 0 else float(np.linalg.norm(got - want)),
    }


def profile_layers(model, threads, batch, size, runs):
    """Per-layer table of the convolutions from ORT's profiler (ms per image, node medians)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        sess = session(model, threads, os.path.join(scratch, "ort_profile"))
        x = np.random.default_rng(0).uniform(-2, 2, (batch, 3, size, size)).astype(np.float32)
        for _ in range(3):
            sess.run(None, {"input": x})
        start = time.perf_counter()
        for _ in range(runs):
            sess.run(None, {"input": x})
        forward = (time.perf_counter() - start) * 1e3 / (runs * batch)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    # Each node's kernel times; the warm-up runs are the first three of each.
    per_node = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["args"].get("op_name") == "Conv":
            per_node.setdefault(e["name"], []).append((e["dur"] / 1e3, e["args"]))
    shapes = {}
    for times in per_node.values():
        args = times[0][1]
        ins, out = args["input_type_shape"], args["output_type_shape"][0]["float"]
        x_shape, w_shape = ins[0]["float"], ins[1]["float"]
        key = (-x_shape[2], w_shape[2], x_shape[2] // out[2], x_shape[1], w_shape[0], len(ins) > 3)
        ms = statistics.median(t for t, _ in times[3:] or times) / batch
        total, count = shapes.get(key, (0.0, 0))
        shapes[key] = (total + ms, count + 1)
    print(f"ONNX Runtime {ort.__version__}, batch {batch}, {threads} threads, {runs} runs; ms per image")
    print("| kernel/stride | channels | side | per forward | ms | ms each |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    total_ms = 0.0
    for (side, k, stride, c_in, c_out, residual), (ms, count) in sorted(shapes.items()):
        total_ms += ms
        note = " (+ residual)" if residual else ""
        print(f"| {k}×{k}/{stride} | {c_in}→{c_out}{note} | {-side} | {count} | {ms:.3f} | {ms / count:.3f} |")
    print(f"convolutions {total_ms:.2f} ms of the forward's {forward:.2f} ms per image")


def time_runs(sess, x, runs, warmup):
    for _ in range(warmup):
        sess.run(None, {"input": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        times.append((time.perf_counter() - t) * 1e3)
    return times


def serve(sess, x_all):
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        batch = int(req["batch"])
        if not 1 <= batch <= x_all.shape[0]:
            raise SystemExit(f"ort_bench: batch {batch} outside 1..{x_all.shape[0]} (the reference input)")
        x = np.ascontiguousarray(x_all[:batch])
        ms = time_runs(sess, x, int(req["runs"]), int(req.get("warmup", 0)))
        print(json.dumps({"ms": ms}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="torchvision-named safetensors file (f32)")
    ap.add_argument("--model", choices=sorted(BUILDERS), required=True)
    ap.add_argument("--reference", help="safetensors with `input` and our `output` on it, to check against")
    ap.add_argument("--max-rel-l2", type=float, default=1e-4, help="largest relative L2 error accepted (1e-4)")
    ap.add_argument("--threads", type=int, default=2, help="intra_op_num_threads (default 2)")
    ap.add_argument("--serve", action="store_true", help="answer timing requests on stdin (needs --reference)")
    ap.add_argument("--batches", default="1,8", help="standalone: comma-separated batch sizes (default 1,8)")
    ap.add_argument("--runs", type=int, default=20, help="standalone: timed runs per batch size (default 20)")
    ap.add_argument("--size", type=int, default=224, help="standalone: input side (default 224)")
    ap.add_argument("--profile-layers", action="store_true", help="print ORT's per-layer profile (Markdown)")
    args = ap.parse_args()
    if args.serve and not args.reference:
        ap.error("--serve needs --reference (its input is what gets timed)")

    model = BUILDERS[args.model](load_file(args.weights))
    if args.profile_layers:
        batch = int(args.batches.split(",")[0])
        profile_layers(model, args.threads, batch, args.size, args.runs)
        return
    sess = session(model, args.threads)
    out = {"onnxruntime": ort.__version__, "threads": args.threads, "model": args.model}

    ref = None
    if args.reference:
        ref = load_file(args.reference)
        (got,) = sess.run(None, {"input": ref["input"]})
        want = ref["output"] if "output" in ref else ref[OUTPUTS[args.model]]
        if got.shape != want.shape:
            out["error"] = f"ORT's output has shape {list(got.shape)}, ours {list(want.shape)}"
            print(json.dumps(out), flush=True)
            sys.exit(f"ort_bench: {out['error']}")
        out["agreement"] = agreement(got, want)
        out["ok"] = out["agreement"]["rel_l2"] <= args.max_rel_l2
        if not out["ok"]:
            print(json.dumps(out), flush=True)
            sys.exit(
                f"ort_bench: ORT disagrees with our {args.model} output: relative L2 "
                f"{out['agreement']['rel_l2']:.3g} > {args.max_rel_l2:g}"
            )

    if args.serve:
        print(json.dumps(out), flush=True)
        serve(sess, ref["input"])
        return

    rng = np.random.default_rng(0)
    out["batches"] = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        x = rng.uniform(-2, 2, (batch, 3, args.size, args.size)).astype(np.float32)
        times = time_runs(sess, x, args.runs, 3)
        med = statistics.median(times)
        out["batches"][str(batch)] = {
            "runs": len(times),
            "median_ms": round(med, 2),
            "min_ms": round(min(times), 2),
            "median_ms_per_image": round(med / batch, 2),
            "min_ms_per_image": round(min(times) / batch, 2),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
