//! The CUB reader on the `datasets/fixtures/cub-tiny` fixture and on broken copies of it.

use std::path::{Path, PathBuf};

use expgraph_datasets::{read_cub, CubOptions, DatasetError, Sampling, Split, CUB_PARTS};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/cub-tiny")
}

/// A writable copy of the fixture with `file` replaced by `content`.
fn broken(file: &str, content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for rel in [
        "images.txt",
        "bounding_boxes.txt",
        "train_test_split.txt",
        "classes.txt",
        "image_class_labels.txt",
        "parts/parts.txt",
        "parts/part_locs.txt",
    ] {
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture().join(rel), &to).unwrap();
    }
    std::fs::write(dir.path().join(file), content).unwrap();
    dir
}

#[test]
fn reads_everything() {
    let ds = read_cub(&fixture(), &CubOptions::default()).unwrap();
    assert_eq!(ds.part_names, CUB_PARTS.map(String::from).to_vec());
    assert_eq!(ds.objects.len(), 4);
    let o = &ds.objects[0];
    assert_eq!(o.bbox, [60.0, 27.0, 385.0, 331.0]); // x, y, x + w, y + h
    assert_eq!(o.parts[0].instances[0].centre, [181.0, 330.0]);
    assert!(!o.parts[2].visible); // (1 + 3) % 4 == 0
    assert_eq!(ds.images[0].class.as_deref(), Some("001.Black_footed_Albatross"));
    assert_eq!(ds.images[1].split, Some(Split::Train));
    assert_eq!(ds.images[2].path, PathBuf::from("images/002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg"));
    // every part is visible iff (image + part) % 4 != 0
    for (i, o) in ds.objects.iter().enumerate() {
        for (p, t) in o.parts.iter().enumerate() {
            assert_eq!(t.visible, (i + 1 + p + 1) % 4 != 0, "image {} part {}", i + 1, p + 1);
        }
    }
}

#[test]
fn paper_filters_and_sampling() {
    let ds = read_cub(&fixture(), &CubOptions::paper()).unwrap();
    // image 2 is training, image 4 is too small
    assert_eq!(ds.objects.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), vec!["1", "3"]);
    assert_eq!(ds.objects[1].image, 1);
    let opts = CubOptions { sampling: Some(Sampling::Indices(vec![2])), ..CubOptions::paper() };
    let ds = read_cub(&fixture(), &opts).unwrap();
    assert_eq!(ds.objects.len(), 1);
    assert_eq!(ds.objects[0].id, "3");
    let opts = CubOptions { sampling: Some(Sampling::Indices(vec![3])), ..CubOptions::paper() };
    let e = read_cub(&fixture(), &opts).unwrap_err().to_string();
    assert!(e.contains("outside 1..=2"), "{e}");
}

fn err_of(file: &str, content: &str) -> String {
    let dir = broken(file, content);
    match read_cub(dir.path(), &CubOptions::default()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{file}: broken content was accepted"),
    }
}

#[test]
fn malformed_files_name_file_and_line() {
    let e = err_of("bounding_boxes.txt", "1 60.0 27.0 325.0 304.0\n2 139.0 30.0 153.0\n");
    assert!(e.contains("bounding_boxes.txt:2") && e.contains("expected 5 fields"), "{e}");
    let e = err_of("bounding_boxes.txt", "1 60.0 27.0 325.0 304.0\n2 1 1 1 1\n3 1 1 0 5\n4 1 1 1 1\n");
    assert!(e.contains("bounding_boxes.txt:3") && e.contains("empty box"), "{e}");
    let e = err_of("bounding_boxes.txt", "1 60.0 27.0 325.0 304.0\n2 1 1 1 1\n3 1 1 5 5\n");
    assert!(e.contains("no box for image 4"), "{e}");
    let e = err_of("parts/part_locs.txt", "1 1 10.0 abc 1\n");
    assert!(e.contains("part_locs.txt:1") && e.contains("`y`"), "{e}");
    let e = err_of("parts/part_locs.txt", "1 16 10.0 10.0 1\n");
    assert!(e.contains("part id 16"), "{e}");
    let e = err_of("parts/part_locs.txt", "9 1 10.0 10.0 1\n");
    assert!(e.contains("image id 9"), "{e}");
    let e = err_of("parts/part_locs.txt", "1 1 10.0 10.0 2\n");
    assert!(e.contains("expected 0 or 1"), "{e}");
    let e = err_of("parts/part_locs.txt", "1 1 10.0 10.0 1\n1 1 11.0 10.0 1\n");
    assert!(e.contains("part_locs.txt:2") && e.contains("second location"), "{e}");
    let e = err_of("images.txt", "1 a.jpg\n1 b.jpg\n");
    assert!(e.contains("images.txt:2") && e.contains("duplicate id 1"), "{e}");
    let e = err_of("image_class_labels.txt", "1 1\n2 1\n3 7\n4 2\n");
    assert!(e.contains("class id 7"), "{e}");
    let e = err_of("train_test_split.txt", "1 0\n2 1\n3 0\n");
    assert!(e.contains("no entry for image 4"), "{e}");
}

#[test]
fn missing_files_are_io_errors_with_the_path() {
    let dir = broken("images.txt", "1 a.jpg\n2 b.jpg\n3 c.jpg\n4 d.jpg\n");
    std::fs::remove_file(dir.path().join("parts/part_locs.txt")).unwrap();
    match read_cub(dir.path(), &CubOptions::default()) {
        Err(DatasetError::Io { path, .. }) => assert!(path.ends_with("parts/part_locs.txt")),
        other => panic!("unexpected {other:?}"),
    }
    let dir = broken("images.txt", "1 a.jpg\n2 b.jpg\n3 c.jpg\n4 d.jpg\n");
    std::fs::remove_file(dir.path().join("train_test_split.txt")).unwrap();
    assert!(read_cub(dir.path(), &CubOptions::default()).is_ok(), "the split file is optional without a split filter");
    assert!(read_cub(dir.path(), &CubOptions::paper()).is_err());
}
