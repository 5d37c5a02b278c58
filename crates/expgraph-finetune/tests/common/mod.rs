//! Helpers of the fine-tuning tests: tiny random VGG-16 and ResNet files and generated image sets.
#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use expgraph_backbone::{ResNet, ResNetDepth, Vgg16};
use expgraph_features::ObjectImage;
use expgraph_finetune::{bce_with_logits, TrainableNet};
use rand::{Rng, SeedableRng};

/// A random VGG-16 (every width divided by `width_divisor`) saved under torchvision names.
pub fn write_vgg(path: &Path, width_divisor: usize, seed: u64) {
    let vgg = Vgg16::random(width_divisor, seed, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&vgg.named_weights().into_iter().collect(), path).unwrap();
}

/// The state dict of [`ResNet::random`]`(depth, width_divisor, seed)` (BatchNorm unfolded) saved
/// under torchvision names.
pub fn write_resnet(path: &Path, depth: ResNetDepth, width_divisor: usize, seed: u64) {
    let tensors = ResNet::random_state_dict(depth, width_divisor, seed).unwrap();
    candle_core::safetensors::save(&tensors.into_iter().collect(), path).unwrap();
}

/// `n` object images (a bright disc on dark noise) in `dir/pos` and `n` negatives (dark noise
/// with stripes) in `dir/neg`; returns (objects, negative paths).
pub fn write_set(dir: &Path, n: usize, seed: u64) -> (Vec<ObjectImage>, Vec<PathBuf>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (pos, neg) = (dir.join("pos"), dir.join("neg"));
    std::fs::create_dir_all(&pos).unwrap();
    std::fs::create_dir_all(&neg).unwrap();
    let mut objects = Vec::new();
    let mut negatives = Vec::new();
    for i in 0..n {
        let (cx, cy, r) =
            (rng.random_range(18.0..30.0f32), rng.random_range(18.0..30.0f32), rng.random_range(8.0..14.0));
        let noise: Vec<u8> = (0..48 * 48).map(|_| rng.random_range(0..60u8)).collect();
        let img = image::RgbImage::from_fn(48, 48, |x, y| {
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
            if d < r {
                image::Rgb([250, 240, 200])
            } else {
                let v = noise[(y * 48 + x) as usize];
                image::Rgb([v, v / 2, v])
            }
        });
        let path = pos.join(format!("obj{i:02}.png"));
        img.save(&path).unwrap();
        objects.push(ObjectImage { id: format!("obj{i:02}.png"), path, bbox: Some([2.0, 2.0, 46.0, 46.0]) });
        let period = rng.random_range(3..9u32);
        let noise: Vec<u8> = (0..40 * 56).map(|_| rng.random_range(0..80u8)).collect();
        let img = image::RgbImage::from_fn(56, 40, |x, y| {
            let v = noise[(y * 56 + x) as usize] / 2 + if (x / period) % 2 == 0 { 40 } else { 0 };
            image::Rgb([v, v, v / 2])
        });
        let path = neg.join(format!("neg{i:02}.png"));
        img.save(&path).unwrap();
        negatives.push(path);
    }
    (objects, negatives)
}

/// Checks the autograd gradient of the loss `bce_with_logits(net(x), y)` (f64) against central
/// finite differences at the entries `entries(name, len)` of each variable; returns how many were
/// checked. Panics naming the first entry that differs.
pub fn check_gradients(
    net: &TrainableNet,
    x: &Tensor,
    y: &Tensor,
    entries: impl Fn(&str, usize) -> Vec<usize>,
) -> usize {
    let loss = |net: &TrainableNet| bce_with_logits(&net.forward(x).unwrap(), y).unwrap().to_scalar::<f64>().unwrap();
    let grads = bce_with_logits(&net.forward(x).unwrap(), y).unwrap().backward().unwrap();
    let mut checked = 0;
    for (name, var) in net.vars() {
        let analytic: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let original = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let shape = var.as_tensor().shape().clone();
        for i in entries(name, original.len()) {
            let eps = 1e-6;
            let at = |delta: f64| {
                let mut v = original.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, &shape, &Device::Cpu).unwrap()).unwrap();
                loss(net)
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(original.clone(), &shape, &Device::Cpu).unwrap()).unwrap();
            let tol = 1e-6 + 1e-4 * analytic[i].abs();
            assert!((numeric - analytic[i]).abs() < tol, "{name}[{i}]: analytic {} vs numeric {numeric}", analytic[i]);
            checked += 1;
        }
    }
    checked
}
