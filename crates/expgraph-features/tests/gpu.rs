//! Extraction on a GPU equals extraction on the CPU within the f16 storage error: the same
//! random full-width VGG-16 and ResNet-50, the same objects and statistics, one cache from each
//! device. Skips with a printed reason without a GPU (see `gpu.rs` for `EXPGRAPH_TEST_GPU` and
//! `EXPGRAPH_REQUIRE_GPU`).

#[path = "../../expgraph-backbone/tests/common/gpu.rs"]
mod gpu;

use std::path::{Path, PathBuf};

use candle_core::Device;
use expgraph_backbone::{Backbone, Preprocess, ResNet, ResNetDepth, Vgg16};
use expgraph_cache::{FeatureCache, LayerMaps, View};
use expgraph_features::*;

const SIZE: usize = 224;

/// `n` textured images, as PNG.
fn images(dir: &Path, prefix: &str, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|k| {
            let path = dir.join(format!("{prefix}{k}.png"));
            image::RgbImage::from_fn(160 + 9 * k as u32, 120 + 5 * k as u32, |x, y| {
                let v = (x * 31 + y * 17 + k as u32 * 53) % 251;
                image::Rgb([v as u8, ((x + 2 * y) % 256) as u8, ((x * y) % 256) as u8])
            })
            .save(&path)
            .unwrap();
            path
        })
        .collect()
}

/// Extracts the same objects with `cpu` and `gpu` (same weights) and checks every stored value:
/// |gpu − cpu| ≤ 2e-3 · max|cpu| of the layer (f16 storage rounds to 4.9e-4 of a value; the GPU
/// sums in another order). Prints the largest difference per layer.
fn check_gpu_equals_cpu(cpu: &dyn Backbone, gpu: &dyn Backbone, layers: &[&str], preprocess: Preprocess) {
    let dir = tempfile::tempdir().unwrap();
    let layers: Vec<String> = layers.iter().map(|s| s.to_string()).collect();
    let stats_params = NormStatsParams {
        layers: layers.clone(),
        preprocess,
        input_size: SIZE,
        batch: 2,
        progress: Default::default(),
    };
    let stats = compute_norm_stats(cpu, &stats_params, &images(dir.path(), "neg", 3)).unwrap();
    let objects: Vec<ObjectImage> = images(dir.path(), "obj", 5)
        .into_iter()
        .enumerate()
        .map(|(k, path)| ObjectImage { id: format!("obj{k}"), path, bbox: Some([4.0, 3.0, 150.0, 110.0]) })
        .collect();
    let extract = |backbone: &dyn Backbone, name: &str| {
        let out = dir.path().join(name);
        let report = ExtractParams::new()
            .layers(layers.clone())
            .preprocess(preprocess)
            .shard_size(2)
            .check(backbone, &stats)
            .unwrap()
            .run(&objects, &out)
            .unwrap();
        eprintln!("{name}: batch {}, {:.1} ms/object, {:?}", report.batch, report.ms_per_image, report.timing);
        FeatureCache::open(&out).unwrap()
    };
    let (on_cpu, on_gpu) = (extract(cpu, "cpu"), extract(gpu, "gpu"));
    for name in &layers {
        let (a, b) = (on_cpu.layer(name).unwrap(), on_gpu.layer(name).unwrap());
        let len = a.info().image_len();
        let (mut x, mut y) = (vec![0f32; len], vec![0f32; len]);
        let (mut scale, mut worst) = (0f32, 0f32);
        for image in 0..a.num_images() {
            for view in [View::Original, View::Flipped] {
                a.read_image(image, view, &mut x);
                b.read_image(image, view, &mut y);
                scale = x.iter().fold(scale, |m, v| m.max(v.abs()));
                worst = x.iter().zip(&y).fold(worst, |m, (p, q)| m.max((p - q).abs()));
            }
        }
        eprintln!("{name}: max |gpu − cpu| = {worst:.3e} of max {scale:.3}");
        assert!(scale > 0.0, "{name}: all maps are zero");
        assert!(worst <= 2e-3 * scale, "{name}: max |gpu − cpu| = {worst} > 2e-3 × {scale}");
    }
}

#[test]
fn vgg16_extraction_on_gpu_matches_cpu() {
    let Some(device) = gpu::gpu_device() else {
        return;
    };
    let cpu = Vgg16::random(1, 11, &Device::Cpu).unwrap();
    let gpu = Vgg16::random(1, 11, &device).unwrap();
    check_gpu_equals_cpu(&cpu, &gpu, &["conv4_2", "conv4_3", "conv5_2", "conv5_3"], Preprocess::Caffe);
}

#[test]
fn resnet50_extraction_on_gpu_matches_cpu() {
    let Some(device) = gpu::gpu_device() else {
        return;
    };
    let cpu = ResNet::random(ResNetDepth::R50, 1, 12, &Device::Cpu).unwrap();
    let gpu = ResNet::random(ResNetDepth::R50, 1, 12, &device).unwrap();
    check_gpu_equals_cpu(
        &cpu,
        &gpu,
        &["layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"],
        Preprocess::Torchvision,
    );
}
