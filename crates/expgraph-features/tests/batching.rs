//! The cache does not depend on how extraction is batched or pipelined: random VGG-16 and
//! ResNet-18 backbones on the CPU, objects that span several shards, every combination of batch
//! size and pipelining gives byte-identical cache files.

use std::path::{Path, PathBuf};

use candle_core::Device;
use expgraph_backbone::{Backbone, Preprocess, ResNet, ResNetDepth, Vgg16};
use expgraph_features::*;

const SIZE: usize = 64;

/// `n` small images with texture (so every unit sees different values), as PNG.
fn images(dir: &Path, prefix: &str, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|k| {
            let path = dir.join(format!("{prefix}{k}.png"));
            let (w, h) = (40 + 7 * k as u32, 30 + 5 * k as u32);
            image::RgbImage::from_fn(w, h, |x, y| {
                let v = (x * 31 + y * 17 + k as u32 * 53) % 251;
                image::Rgb([v as u8, ((v * 7) % 256) as u8, ((x * y) % 256) as u8])
            })
            .save(&path)
            .unwrap();
            path
        })
        .collect()
}

/// Every file under a cache folder (path relative to it → bytes), sorted.
fn cache_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    files
}

fn check_batch_invariance(backbone: &dyn Backbone, layers: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let layers: Vec<String> = layers.iter().map(|s| s.to_string()).collect();
    let negatives = images(dir.path(), "neg", 3);
    let stats_params = NormStatsParams {
        layers: layers.clone(),
        preprocess: Preprocess::Torchvision,
        input_size: SIZE,
        batch: 2,
        progress: Default::default(),
    };
    let stats = compute_norm_stats(backbone, &stats_params, &negatives).unwrap();
    let objects: Vec<ObjectImage> = images(dir.path(), "obj", 7)
        .into_iter()
        .enumerate()
        .map(|(k, path)| ObjectImage {
            id: format!("obj{k}"),
            path,
            bbox: (k % 2 == 1).then_some([3.0, 2.0, 30.0, 25.0]),
        })
        .collect();
    let extract = |batch: BatchSize, pipelined: bool, name: &str| {
        let out = dir.path().join(name);
        let report = ExtractParams::new()
            .layers(layers.clone())
            .preprocess(Preprocess::Torchvision)
            .input_size(SIZE)
            .shard_size(3) // 7 objects: shards of 3, 3, 1; batches cross shard boundaries
            .batch_size(batch)
            .pipelined(pipelined)
            .check(backbone, &stats)
            .unwrap()
            .run(&objects, &out)
            .unwrap();
        assert_eq!(report.computed, 7);
        assert!(report.timing.wall_s > 0.0 && report.timing.forward_s > 0.0 && report.timing.decode_s > 0.0);
        (report, cache_files(&out))
    };
    let (reference_report, reference) = extract(BatchSize::Fixed(1), false, "serial-1");
    assert_eq!(reference_report.batch, 1);
    assert!(reference.iter().any(|(name, _)| name.ends_with(".safetensors")));
    for (batch, pipelined) in [
        (BatchSize::Fixed(1), true),
        (BatchSize::Fixed(2), true),
        (BatchSize::Fixed(3), false),
        (BatchSize::Fixed(5), true),
        (BatchSize::Fixed(16), true),
        (BatchSize::Auto, true),
    ] {
        let (report, files) = extract(batch, pipelined, &format!("b{batch}-{pipelined}"));
        let expected = match batch {
            BatchSize::Fixed(n) => n,
            BatchSize::Auto => BatchSize::CPU_DEFAULT,
        };
        assert_eq!(report.batch, expected);
        assert_eq!(report.key, reference_report.key);
        assert_eq!(files.len(), reference.len());
        for ((name, bytes), (ref_name, ref_bytes)) in files.iter().zip(&reference) {
            assert_eq!(name, ref_name);
            assert!(bytes == ref_bytes, "{name} differs with batch {batch}, pipelined {pipelined}");
        }
    }
}

#[test]
fn vgg16_cache_is_independent_of_batching() {
    let vgg = Vgg16::random(16, 3, &Device::Cpu).unwrap();
    check_batch_invariance(&vgg, &["conv3_3", "conv4_3"]);
}

#[test]
fn resnet_cache_is_independent_of_batching() {
    let resnet = ResNet::random(ResNetDepth::R18, 16, 3, &Device::Cpu).unwrap();
    check_batch_invariance(&resnet, &["layer2.pre_relu", "layer3"]);
}

#[test]
fn batch_sizes_parse_and_resolve() {
    assert_eq!("auto".parse::<BatchSize>(), Ok(BatchSize::Auto));
    assert_eq!(" 12 ".parse::<BatchSize>(), Ok(BatchSize::Fixed(12)));
    assert!("0".parse::<BatchSize>().unwrap_err().contains("at least 1"));
    assert!("many".parse::<BatchSize>().unwrap_err().contains("many"));
    assert_eq!(BatchSize::Auto.resolve(&Device::Cpu, 224, 2), BatchSize::CPU_DEFAULT);
    assert_eq!(BatchSize::Fixed(9).resolve(&Device::Cpu, 224, 2), 9);
    assert_eq!(serde_json::to_string(&[BatchSize::Auto, BatchSize::Fixed(3)]).unwrap(), r#"["auto",3]"#);
}

/// The device-side normalization (what a GPU extraction with f16 storage uses) gives the host's
/// normalization rounded to f16, value for value (run here on the CPU).
#[test]
fn device_normalization_equals_the_host_one_rounded_to_f16() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = Vgg16::random(16, 5, &Device::Cpu).unwrap();
    let taps = ["conv3_3", "conv4_3"];
    let crops: Vec<Vec<u8>> = images(dir.path(), "c", 3)
        .iter()
        .map(|p| crop_resize(&load_rgb(p).unwrap(), [0.0, 0.0, 30.0, 25.0], SIZE).unwrap())
        .collect();
    let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
    let raw = forward_crops(&vgg, Preprocess::Caffe, &refs, SIZE, &taps).unwrap();
    // Divisors around the maps' scale, some tiny (values hit NORMALIZED_MAX).
    let divisors: Vec<Vec<f32>> = raw
        .iter()
        .map(|o| {
            (0..o.shape[1] * o.shape[2] * o.shape[3])
                .map(|i| if i % 97 == 0 { 1e-6 } else { 0.5 + (i % 13) as f32 })
                .collect()
        })
        .collect();
    let on_device: Vec<candle_core::Tensor> = raw
        .iter()
        .zip(&divisors)
        .map(|(o, d)| candle_core::Tensor::from_slice(d, (o.shape[1], o.shape[2], o.shape[3]), &Device::Cpu).unwrap())
        .collect();
    let mut times = ForwardTimes::default();
    let normalized =
        forward_crops_normalized_f16(&vgg, Preprocess::Caffe, &refs, SIZE, &taps, &on_device, &mut times).unwrap();
    let mut capped = 0;
    for ((raw, normalized), divisors) in raw.iter().zip(&normalized).zip(&divisors) {
        assert_eq!(raw.shape, normalized.shape);
        for i in 0..raw.shape[0] {
            let mut host = raw.image(i).to_vec();
            normalize_in_place(&mut host, divisors);
            for (h, d) in host.iter().zip(normalized.image(i)) {
                assert_eq!(half::f16::from_f32(*h).to_f32(), *d);
                capped += usize::from(*h == NORMALIZED_MAX);
            }
        }
    }
    assert!(capped > 0, "no value reached the cap: the test would not see a wrong cap");
    assert!(times.download_s > 0.0);
    assert!(
        forward_crops_normalized_f16(&vgg, Preprocess::Caffe, &refs, SIZE, &taps, &on_device[..1], &mut times).is_err()
    );
}
