//! Normalization statistics, extraction, flips, resumption and bad inputs, on a fake backbone.

mod common;

use std::path::{Path, PathBuf};

use common::FakeBackbone;
use expgraph_backbone::Preprocess;
use expgraph_cache::{FeatureCache, LayerMaps, StorageDtype, View};
use expgraph_features::*;

const SIZE: usize = 16;

fn solid(dir: &Path, name: &str, w: u32, h: u32, rgb: [u8; 3]) -> PathBuf {
    let path = dir.join(name);
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(&path).unwrap();
    path
}

/// Left half `left`, right half `right`.
fn halves(dir: &Path, name: &str, w: u32, h: u32, left: [u8; 3], right: [u8; 3]) -> PathBuf {
    let path = dir.join(name);
    image::RgbImage::from_fn(w, h, |x, _| image::Rgb(if x < w / 2 { left } else { right })).save(&path).unwrap();
    path
}

fn stats_params() -> NormStatsParams {
    NormStatsParams {
        layers: vec!["p4".into(), "p8".into()],
        preprocess: Preprocess::Caffe,
        input_size: SIZE,
        batch: 2,
        progress: Default::default(),
    }
}

/// Negatives of solid colours: the std of every unit is the std of the pixel values.
fn negatives(dir: &Path) -> Vec<PathBuf> {
    vec![
        solid(dir, "n1.png", 20, 10, [10, 200, 0]),
        solid(dir, "n2.png", 7, 30, [50, 200, 100]),
        solid(dir, "n3.jpg", 16, 16, [90, 200, 200]),
    ]
}

#[test]
fn norm_stats_are_the_per_unit_sample_std() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeBackbone::new();
    let negs = negatives(dir.path());
    let stats = compute_norm_stats(&fake, &stats_params(), &negs).unwrap();
    let p8 = stats.layer("p8").unwrap();
    assert_eq!(p8.shape, [3, 2, 2]);
    // R over {10, 50, 90}: sample std 40 (the JPEG may shift values by a level or two)
    for (c, want, tol) in [(0, 40.0, 1.5), (1, 0.0, 1.0), (2, 100.0, 2.0)] {
        for u in 0..4 {
            let got = p8.std[c * 4 + u];
            assert!((got - want).abs() <= tol, "channel {c}: {got} vs {want}");
        }
    }
    assert!(compute_norm_stats(&fake, &stats_params(), &negs[..1]).unwrap_err().to_string().contains("at least 2"));

    // reuse: same inputs load the saved file, other inputs recompute
    let path = dir.path().join("stats.safetensors");
    let a = load_or_compute_norm_stats(&fake, &stats_params(), &negs, &path).unwrap();
    let b = load_or_compute_norm_stats(&fake, &stats_params(), &negs, &path).unwrap();
    assert_eq!(a, b);
    let c = load_or_compute_norm_stats(&fake, &stats_params(), &negs[..2], &path).unwrap();
    assert_eq!(c.meta().num_negatives, 2);
}

/// Stats with std exactly 1 everywhere (maps are then ReLU'd raw values).
fn unit_stats(fake: &FakeBackbone) -> NormStats {
    let meta = expected_meta(fake, &stats_params(), &[]).unwrap();
    let layers = vec![
        LayerStd { name: "p4".into(), shape: [3, 4, 4], std: vec![1.0; 48] },
        LayerStd { name: "p8".into(), shape: [3, 2, 2], std: vec![1.0; 12] },
    ];
    NormStats::new(meta, layers).unwrap()
}

fn params() -> ExtractParams {
    ExtractParams::new().layers(vec!["p4".into(), "p8".into()]).input_size(SIZE).batch(2).shard_size(2)
}

#[test]
fn extraction_crops_flips_normalizes_and_writes_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    // bright left / dark right; R of the bright part = 223.68 above the Caffe mean
    halves(&imgs, "a.png", 32, 16, [255, 255, 255], [0, 0, 0]);
    // gray image: decoded to 3 equal channels
    image::GrayImage::from_pixel(20, 20, image::Luma([200])).save(imgs.join("b.png")).unwrap();
    // box partly outside: clipped to the right (dark) half of a halves image
    halves(&imgs, "c.png", 32, 16, [255, 255, 255], [0, 0, 0]);
    let boxes = std::collections::BTreeMap::from([
        ("a.png".to_string(), [0.0, 0.0, 32.0, 16.0]),
        ("b.png".to_string(), [2.0, 2.0, 18.0, 18.0]),
        ("c.png".to_string(), [16.0, -10.0, 99.0, 16.0]),
    ]);
    let objects = objects_from_dir(&imgs, Some(&boxes), None).unwrap();
    let fake = FakeBackbone::new();
    let stats = unit_stats(&fake);
    let out = dir.path().join("cache");
    let report = params().check(&fake, &stats).unwrap().run(&objects, &out).unwrap();
    assert_eq!((report.images, report.computed), (3, 3));

    let cache = FeatureCache::open(&out).unwrap();
    assert_eq!(cache.images()[2].bbox, [16.0, 0.0, 32.0, 16.0], "box clipped");
    assert_eq!(cache.storage().dtype, StorageDtype::F16);
    let p8 = cache.layer("p8").unwrap();
    assert_eq!((p8.info().height, p8.info().width, p8.info().geometry.stride), (2, 2, 8.0));
    let mut m = vec![0.0; 4];
    // a: original left column bright (255 − 123.68 = 131.32), right column dark (ReLU → 0)
    p8.read_channel(0, View::Original, 0, &mut m);
    // (the antialiased resize blurs the one-pixel boundary a little)
    let bright = 255.0 - 123.68;
    assert!((m[0] - bright).abs() < 6.0 && (m[2] - bright).abs() < 6.0, "{m:?}");
    assert_eq!((m[1], m[3]), (0.0, 0.0));
    // real flip: mirrored columns
    p8.read_channel(0, View::Flipped, 0, &mut m);
    assert!((m[1] - bright).abs() < 6.0 && (m[3] - bright).abs() < 6.0, "{m:?}");
    assert_eq!((m[0], m[2]), (0.0, 0.0));
    // b: gray 200 → every channel 200 − mean
    let mut img = vec![0.0; 12];
    p8.read_image(1, View::Original, &mut img);
    for (c, mean) in [123.68f32, 116.779, 103.939].iter().enumerate() {
        assert!(img[c * 4..c * 4 + 4].iter().all(|v| (v - (200.0 - mean)).abs() < 0.1), "{img:?}");
    }
    // c: the crop is the dark half only → all zero after ReLU
    p8.read_image(2, View::Original, &mut img);
    assert!(img.iter().all(|v| *v == 0.0));

    // rerun: nothing to compute; the reference no-op flip is a different cache
    let again = params().check(&fake, &stats).unwrap().run(&objects, &out).unwrap();
    assert_eq!(again.computed, 0);
    let noop = params().flip(FlipMode::ReferenceNoop).check(&fake, &stats).unwrap().run(&objects, &out);
    assert!(noop.unwrap_err().to_string().contains("another key"));
    let out2 = dir.path().join("noop");
    params().flip(FlipMode::ReferenceNoop).check(&fake, &stats).unwrap().run(&objects, &out2).unwrap();
    let p8n = FeatureCache::open(&out2).unwrap().layer("p8").unwrap();
    let (mut o, mut f) = (vec![0.0; 12], vec![0.0; 12]);
    p8n.read_image(0, View::Original, &mut o);
    p8n.read_image(0, View::Flipped, &mut f);
    assert_eq!(o, f);
}

#[test]
fn extraction_resumes_after_an_interruption() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for i in 0..5u8 {
        solid(&imgs, &format!("{i}.png"), 16, 16, [i * 40, 10, 250]);
    }
    let objects = objects_from_dir(&imgs, None, None).unwrap();
    let fake = FakeBackbone::new();
    let stats = unit_stats(&fake);
    let out = dir.path().join("cache");
    params().check(&fake, &stats).unwrap().run(&objects, &out).unwrap();
    let mut before = vec![0.0; 48];
    FeatureCache::open(&out).unwrap().layer("p4").unwrap().read_image(4, View::Flipped, &mut before);
    // simulate a crash during shard 1 (images 2, 3): one of its files and the manifest are gone
    std::fs::remove_file(out.join("manifest.json")).unwrap();
    std::fs::remove_file(out.join("p8/flipped-00001.safetensors")).unwrap();
    let report = params().check(&fake, &stats).unwrap().run(&objects, &out).unwrap();
    assert_eq!(report.computed, 2);
    let mut after = vec![0.0; 48];
    FeatureCache::open(&out).unwrap().layer("p4").unwrap().read_image(4, View::Flipped, &mut after);
    assert_eq!(before, after);
}

#[test]
fn corrupt_and_missing_images_are_named_and_leave_no_cache() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    solid(&imgs, "a.png", 16, 16, [1, 2, 3]);
    // a JPEG whose header is fine but whose data is truncated
    let good = solid(&imgs, "b.jpg", 64, 64, [9, 9, 9]);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&good, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(imgs.join("c.jpg"), b"not a jpeg at all").unwrap();
    let fake = FakeBackbone::new();
    let stats = unit_stats(&fake);
    let out = dir.path().join("cache");
    let extractor = params().shard_size(1).check(&fake, &stats).unwrap();

    let objects = objects_from_dir(&imgs, None, None).unwrap();
    let e = extractor.run(&[objects[0].clone(), objects[2].clone()], &out).unwrap_err().to_string();
    assert!(e.contains("c.jpg"), "not-a-JPEG error names the file: {e}");

    let e = extractor.run(&objects[..2], &out).unwrap_err().to_string();
    assert!(e.contains("b.jpg"), "truncated-JPEG error names the file: {e}");
    assert!(!out.join("manifest.json").exists(), "no manifest for a failed run");
    let stray: Vec<_> = walk(&out).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(stray.is_empty(), "{stray:?}");

    let missing = vec![ObjectImage { id: "x".into(), path: imgs.join("nope.png"), bbox: None }];
    let e = extractor.run(&missing, &out).unwrap_err().to_string();
    assert!(e.contains("nope.png") && e.contains("not found"), "{e}");

    let degenerate =
        vec![ObjectImage { id: "a.png".into(), path: imgs.join("a.png"), bbox: Some([5.0, 5.0, 5.0, 9.0]) }];
    let e = extractor.run(&degenerate, &out).unwrap_err().to_string();
    assert!(e.contains("a.png") && e.contains("box"), "{e}");
}

#[test]
fn params_are_checked_against_backbone_and_stats() {
    let fake = FakeBackbone::new();
    let stats = unit_stats(&fake);
    assert!(params().layers(vec!["conv9".into()]).check(&fake, &stats).is_err());
    assert!(params().layers(vec!["p4".into(), "p4".into()]).check(&fake, &stats).is_err());
    assert!(params().batch(0).check(&fake, &stats).is_err());
    assert!(params().input_size(32).check(&fake, &stats).is_err(), "stats for another input size");
    assert!(params().preprocess(Preprocess::Torchvision).check(&fake, &stats).is_err());
}

#[test]
fn dump_writes_raw_pre_relu_maps() {
    let dir = tempfile::tempdir().unwrap();
    let a = solid(dir.path(), "a.png", 16, 16, [0, 0, 0]);
    let b = solid(dir.path(), "b.png", 40, 10, [255, 255, 255]);
    let fake = FakeBackbone::new();
    let layers = vec!["p8".to_string()];
    assert!(
        dump_raw_maps(&fake, Preprocess::Caffe, &layers, std::slice::from_ref(&b), SIZE, true, 1).is_err(),
        "--no-crop size"
    );
    let maps = dump_raw_maps(&fake, Preprocess::Caffe, &layers, &[a, b], SIZE, false, 1).unwrap();
    assert_eq!(maps[0].shape, [2, 3, 2, 2]);
    assert!((maps[0].values[0] + 123.68).abs() < 1e-4, "pre-ReLU negative kept");
    let out = dir.path().join("raw.safetensors");
    write_raw_maps(&out, &maps).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("p8").unwrap().shape(), &[2, 3, 2, 2]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
