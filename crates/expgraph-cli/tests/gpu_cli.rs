//! `expgraph extract` on a GPU against the CPU (`cargo xtask test-gpu`). Without a build with
//! `--features cuda`, or without a usable GPU, the tests skip with the reason printed; with
//! `EXPGRAPH_REQUIRE_GPU=1` they fail instead.

use std::path::Path;

use expgraph_backbone::ResNetDepth;
use expgraph_cache::{FeatureCache, LayerMaps, View};

mod common;
use common::{expgraph, stderr, write_images, write_resnet_weights};

#[path = "../../expgraph-backbone/tests/common/gpu.rs"]
mod gpu;

/// The largest |a − b| over every layer, view and image of two caches of the same inputs,
/// divided by the largest |a|.
fn relative_max_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (FeatureCache::open(a).unwrap(), FeatureCache::open(b).unwrap());
    assert_eq!(a.images(), b.images(), "the same objects");
    let (mut diff, mut scale) = (0.0f32, 0.0f32);
    for info in a.layers() {
        let (la, lb) = (a.layer(&info.name).unwrap(), b.layer(&info.name).unwrap());
        let mut x = vec![0.0; info.channels * info.map_len()];
        let mut y = x.clone();
        for image in 0..la.num_images() {
            for view in [View::Original, View::Flipped] {
                la.read_image(image, view, &mut x);
                lb.read_image(image, view, &mut y);
                for (p, q) in x.iter().zip(&y) {
                    diff = diff.max((p - q).abs());
                    scale = scale.max(p.abs());
                }
            }
        }
    }
    assert!(scale > 0.0, "all-zero maps compare nothing");
    diff / scale
}

#[test]
fn extract_gpu_matches_the_cpu_in_f32_and_half_precision() {
    if gpu::gpu_device().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weights = d.join("resnet18-formula.safetensors");
    write_resnet_weights(&weights, ResNetDepth::R18);
    write_images(&d.join("images"), 5, 1);
    write_images(&d.join("negatives"), 3, 2);
    let extract = |name: &str, device: &str, precision: &str, batch: &str| {
        let mut cmd = expgraph();
        cmd.args(["extract", "--json", "--weights"])
            .arg(&weights)
            .args(["--device", device, "--precision", precision, "--batch", batch, "--images"])
            .arg(d.join("images"))
            .arg("--negatives")
            .arg(d.join("negatives"))
            .arg("-o")
            .arg(d.join(name));
        if name != "cpu" {
            // A copy of the CPU's statistics (a copy: a file that does not fit is replaced), so
            // the caches differ only by the forward pass.
            let stats = d.join(format!("{name}-stats.safetensors"));
            std::fs::copy(d.join("cpu/norm-stats.safetensors"), &stats).unwrap();
            cmd.arg("--stats").arg(stats);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["computed"], 5, "{name}: {summary}");
        assert!(summary["batch"].as_u64().is_some_and(|b| b >= 1), "{name}: {summary}");
        summary
    };
    let cpu = extract("cpu", "cpu", "f32", "2");
    let gpu = extract("gpu-f32", "cuda:0", "f32", "auto");
    assert_eq!(gpu["norm_stats_digest"], cpu["norm_stats_digest"], "the CPU's statistics were reused");
    assert!(gpu["timing"]["peak_device_bytes"].as_u64().is_some_and(|b| b > 0), "{gpu}");
    assert!(gpu["timing"]["forward_s"].as_f64().is_some_and(|s| s > 0.0), "{gpu}");
    let f32_diff = relative_max_diff(&d.join("cpu"), &d.join("gpu-f32"));
    assert!(f32_diff < 2e-3, "f32 on the GPU differs from the CPU by {f32_diff} of the largest value");
    for (precision, tolerance) in [("f16", 3e-2), ("bf16", 8e-2)] {
        extract(&format!("gpu-{precision}"), "cuda:0", precision, "3");
        let diff = relative_max_diff(&d.join("cpu"), &d.join(format!("gpu-{precision}")));
        assert!(diff < tolerance, "{precision} differs from the CPU's f32 by {diff} of the largest value");
    }
}
