//! The synthetic CUB-format generator: read-back exactness, determinism, visible parts.

use std::path::Path;

use expgraph_datasets::{generate_synthetic_cub, read_cub, CubOptions, DatasetError, SynthFormat, SynthParams};

fn small(seed: u64) -> SynthParams {
    SynthParams { n_images: 12, image_size: 128, seed, occlusion_prob: 0.3, ..SynthParams::default() }
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn reading_back_gives_exactly_the_generated_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("birds");
    let summary = generate_synthetic_cub(&dir, &small(7)).unwrap();
    let opts = CubOptions { probe_image_sizes: true, ..CubOptions::default() };
    let read = read_cub(&dir, &opts).unwrap();
    assert_eq!(read.objects, summary.dataset.objects);
    assert_eq!(read.images, summary.dataset.images);
    assert_eq!(read.part_names, summary.dataset.part_names);
    // every visible keypoint lies in the image and in (or next to) the object box
    for o in &read.objects {
        for p in o.parts.iter().filter(|p| p.visible) {
            let [x, y] = p.instances[0].centre;
            assert!(x >= 0.5 && y >= 0.5 && x <= 128.5 && y <= 128.5);
            assert!(x >= o.bbox[0] - 1.0 && x <= o.bbox[2] + 1.0 && y >= o.bbox[1] - 1.0 && y <= o.bbox[3] + 1.0);
        }
        assert!(o.bbox[0] >= 1.0 && o.bbox[2] <= 128.0 && o.width() > 10.0);
    }
    // the far-side eye and wing are never visible together with the near-side one
    let (le, re) = (read.part_index("left eye").unwrap(), read.part_index("right eye").unwrap());
    assert!(read.objects.iter().all(|o| !(o.parts[le].visible && o.parts[re].visible)));
    assert_eq!(summary.visible_counts.len(), 15);
    assert!(summary.visible_counts[1] >= 6, "beak visible in most images: {:?}", summary.visible_counts);
}

#[test]
fn parts_are_drawn_at_their_keypoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("birds");
    let params = SynthParams { n_images: 10, image_size: 192, seed: 3, occlusion_prob: 0.0, ..SynthParams::default() };
    let s = generate_synthetic_cub(&dir, &params).unwrap();
    let ds = &s.dataset;
    let (beak, eye) = (ds.part_index("beak").unwrap(), ds.part_index("right eye").unwrap());
    let left_eye = ds.part_index("left eye").unwrap();
    let mut checked = 0;
    for o in &ds.objects {
        let img = image::open(ds.image_path(o)).unwrap().to_rgb8();
        // CUB 1-based coordinate c → 0-based pixel floor(c − 0.5)
        let px = |c: [f64; 2]| *img.get_pixel((c[0] - 0.5).floor() as u32, (c[1] - 0.5).floor() as u32);
        if let Some(b) = o.parts[beak].instances.first() {
            let p = px(b.centre);
            assert!(p[0] > 180 && p[1] > 120 && p[2] < 90, "beak pixel {p:?}");
            checked += 1;
        }
        for e in [eye, left_eye] {
            if let Some(e) = o.parts[e].instances.first() {
                let p = px(e.centre);
                assert!(p[0] < 80 && p[1] < 80 && p[2] < 80, "eye pixel {p:?}");
            }
        }
    }
    assert!(checked >= 8);
}

#[test]
fn generation_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    generate_synthetic_cub(&a, &small(11)).unwrap();
    generate_synthetic_cub(&b, &small(11)).unwrap();
    generate_synthetic_cub(&c, &small(12)).unwrap();
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(fa.len(), 12 + 8); // images + 7 annotation files + synth_params.json
    assert_eq!(fa, fb);
    assert_ne!(fa, fc);
}

#[test]
fn photo_backgrounds_and_jpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (i, c) in [[200u8, 30, 30], [30, 200, 30]].iter().enumerate() {
        image::RgbImage::from_pixel(90, 70, image::Rgb(*c)).save(photos.join(format!("{i}.png"))).unwrap();
    }
    let params = SynthParams {
        n_images: 4,
        image_size: 96,
        backgrounds: Some(photos.clone()),
        format: SynthFormat::Jpeg { quality: 90 },
        ..SynthParams::default()
    };
    let s = generate_synthetic_cub(&tmp.path().join("out"), &params).unwrap();
    let first = &s.dataset.objects[0];
    assert!(s.dataset.image_path(first).extension().is_some_and(|e| e == "jpg"));
    let img = image::open(s.dataset.image_path(first)).unwrap().to_rgb8();
    let corner = img.get_pixel(0, 0);
    assert!(corner[2] < 90, "background comes from a photo: {corner:?}");
    // an empty background folder is an error, and nothing is left behind
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let params = SynthParams { backgrounds: Some(empty), ..params };
    assert!(generate_synthetic_cub(&tmp.path().join("out2"), &params).is_err());
    assert!(!tmp.path().join("out2").exists());
}

#[test]
fn refuses_bad_parameters_and_non_empty_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = SynthParams { n_images: 0, ..SynthParams::default() };
    assert!(matches!(generate_synthetic_cub(tmp.path(), &bad), Err(DatasetError::Param(_))));
    let bad = SynthParams { image_size: 10, ..SynthParams::default() };
    assert!(matches!(generate_synthetic_cub(tmp.path(), &bad), Err(DatasetError::Param(_))));
    std::fs::write(tmp.path().join("x"), "x").unwrap();
    let e = generate_synthetic_cub(tmp.path(), &small(1)).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
}
