#!/usr/bin/env python3
"""Kept for old recipes: `ort_bench.py --model resnet50` (the graph builders live there).

    python benches/onnxruntime/resnet50_ort.py WEIGHTS [--reference REF] [--threads N] [--runs K]

is `ort_bench.py --model resnet50 WEIGHTS …` (standalone timing, one JSON object). The side-by-side
comparison with our backbone is `cargo xtask bench-backbone --compare-onnxruntime`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ort_bench  # noqa: E402

if __name__ == "__main__":
    sys.argv[1:1] = ["--model", "resnet50"]
    ort_bench.main()
