//! Helpers of the fine-tuning tests: tiny random VGG-16 files and generated image sets.
#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};

use candle_core::Device;
use expgraph_backbone::Vgg16;
use expgraph_features::ObjectImage;
use rand::{Rng, SeedableRng};

/// A random VGG-16 (every width divided by `width_divisor`) saved under torchvision names.
pub fn write_vgg(path: &Path, width_divisor: usize, seed: u64) {
    let vgg = Vgg16::random(width_divisor, seed, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&vgg.named_weights().into_iter().collect(), path).unwrap();
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
