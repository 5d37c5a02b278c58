//! The MATLAB readers on the authors' real annotation files in `shared/data/annotations`.
//! Skipped (with a message) when the shared folder is absent.
#![cfg(feature = "mat")]

use std::path::PathBuf;

use expgraph_datasets::{read_cub_sampling, read_ilsvrc_part_truth, read_pascal_part, DatasetError, PascalPartOptions};

fn annotations() -> Option<PathBuf> {
    let shared = std::env::var_os("EXPGRAPH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    let dir = shared.join("data").join("annotations");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: {} not found (set EXPGRAPH_SHARED)", dir.display());
        None
    }
}

#[test]
fn pascal_part_cow_matches_the_paper_counts() {
    let Some(dir) = annotations() else { return };
    let ds = read_pascal_part(
        &dir.join("voc-part-truth_cow.mat"),
        &PathBuf::from("VOC2010"),
        "cow",
        &PascalPartOptions::default(),
    )
    .unwrap();
    // spec §5: cow keeps 194 objects, 182 with a head box
    assert_eq!(ds.objects.len(), 194);
    assert_eq!(ds.objects_with_part(0), 182);
    assert_eq!(&ds.part_names[..3], ["head", "neck", "torso"]);
    let first = &ds.objects[0];
    assert_eq!(first.bbox, [219.0, 162.0, 292.0, 220.0]);
    assert_eq!(ds.images[first.image].path, PathBuf::from("JPEGImages/2008_000009.jpg"));
    assert_eq!(first.parts[0].instances[0].bbox, Some([219.0, 195.0, 236.0, 214.0]));
    let all = read_pascal_part(
        &dir.join("voc-part-truth_cow.mat"),
        &PathBuf::from("."),
        "cow",
        &PascalPartOptions { min_area: None },
    )
    .unwrap();
    assert_eq!(all.objects.len(), 216); // 217 in the file, one with a zero-width box
}

#[test]
fn ilsvrc_bird_truth() {
    let Some(dir) = annotations() else { return };
    let head = read_ilsvrc_part_truth(&dir.join("ilsvrc-animalpart-n01503061-truth_part01.mat")).unwrap();
    let legs = read_ilsvrc_part_truth(&dir.join("ilsvrc-animalpart-n01503061-truth_part02.mat")).unwrap();
    assert_eq!((head.len(), legs.len()), (1494, 1494));
    assert_eq!(head.iter().flatten().count(), 201);
    assert_eq!(legs.iter().flatten().count(), 162);
    let h0 = head[0].as_ref().unwrap();
    assert_eq!(h0.filename, "n01503061_100");
    assert_eq!(h0.bbox, [67.0, 124.0, 639.0, 764.0]);
    assert_eq!(h0.centres_hw, vec![[59.0, 189.0]]);
    assert_eq!(h0.scales_hw, vec![[116.0, 72.0]]);
    // back to source pixels: x = 67 + 189/224·572, y = 124 + 59/224·640
    let inst = h0.instances()[0];
    assert!((inst.centre[0] - (67.0 + 189.0 / 224.0 * 572.0)).abs() < 1e-9);
    assert!((inst.centre[1] - (124.0 + 59.0 / 224.0 * 640.0)).abs() < 1e-9);
}

#[test]
fn cub_sampling_has_the_2000_objects() {
    let Some(dir) = annotations() else { return };
    let idx = read_cub_sampling(&dir.join("cub-sampling.mat")).unwrap();
    assert_eq!(idx.len(), 2000);
    assert_eq!(idx[..3], [2, 6, 8]);
    assert_eq!(idx.iter().max(), Some(&5793));
    assert!(idx.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn truncated_files_and_wrong_variables_are_named_errors() {
    let Some(dir) = annotations() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("truth_cow.mat");
    let bytes = std::fs::read(dir.join("voc-part-truth_cow.mat")).unwrap();
    for len in [0, 600, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = read_pascal_part(&cut, &PathBuf::from("."), "cow", &PascalPartOptions::default()).unwrap_err();
        assert!(matches!(&e, DatasetError::Mat { path, .. } if path == &cut), "{len}: {e}");
    }
    // each reader on another kind of file: the missing variable or field is named
    let e = read_ilsvrc_part_truth(&dir.join("cub-sampling.mat")).unwrap_err().to_string();
    assert!(e.contains("cub-sampling.mat: truth: variable not found"), "{e}");
    let e = read_cub_sampling(&dir.join("voc-part-truth_cow.mat")).unwrap_err().to_string();
    assert!(e.contains("voc-part-truth_cow.mat: validObj: variable not found"), "{e}");
    let ilsvrc = dir.join("ilsvrc-animalpart-n01503061-truth_part01.mat");
    let e =
        read_pascal_part(&ilsvrc, &PathBuf::from("."), "bird", &PascalPartOptions::default()).unwrap_err().to_string();
    assert!(e.contains("truth_part01.mat: truth: no field `partbox`"), "{e}");
}
