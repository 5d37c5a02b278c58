//! Property tests of the boxes-file reader on mutated inputs (issue 11): `read_boxes` on a valid
//! boxes JSON with values of the wrong type, huge numbers, removed entries, flipped bits and cut
//! text, then `objects_from_dir` on what it returned.
//!
//! Every read must end in an error naming the file or in exactly the boxes the text holds: never
//! a panic, never a hang (each read runs on its own thread under a time limit), never an
//! allocation sized by a number in the file (a global allocator refuses any single request
//! above [`MAX_ALLOC`]). 64 cases unless `PROPTEST_CASES` is set; fixed seed unless
//! `PROPTEST_RNG_SEED` is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use expgraph_features::{objects_from_dir, read_boxes};

// The harness (bounded runs, capped allocations, byte mutations, JSON edits): expgraph-testkit.
use expgraph_testkit::*;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

// ---- boxes JSON ----

const BOXES: &str =
    r#"{ "0001.jpg": [12, 30, 200, 180], "0002.png": [0, 0, 640, 480], "0003.jpeg": [1.5, 2.25, 3.5, 4] }"#;

/// A folder with three (fake) images and `boxes.json`.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["0001.jpg", "0002.png", "0003.jpeg"] {
        std::fs::write(dir.path().join(f), b"not decoded here").unwrap();
    }
    std::fs::write(dir.path().join("boxes.json"), BOXES).unwrap();
    dir
}

/// The boxes a JSON text holds, read without `read_boxes`: `None` when it is not an object of
/// `[x0, y0, x1, y1]` number arrays.
fn oracle(bytes: &[u8]) -> Option<BTreeMap<String, [f64; 4]>> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.as_object()?
        .iter()
        .map(|(k, b)| {
            let b = b.as_array().filter(|b| b.len() == 4)?;
            let n: Vec<f64> = b.iter().map(Value::as_f64).collect::<Option<_>>()?;
            Some((k.clone(), [n[0], n[1], n[2], n[3]]))
        })
        .collect()
}

/// Whether a boxes-file key names a file inside the images folder (no absolute path, no `..`).
fn inside(key: &str) -> bool {
    Path::new(key).components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}

/// Read `bytes` as the boxes file of `dir`; check the result against [`oracle`].
fn read_mutated(dir: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = dir.join("boxes.json");
    std::fs::write(&path, bytes).unwrap();
    let p = path.clone();
    match bounded("read_boxes", move || read_boxes(&p)) {
        Ok(boxes) => {
            let expected = oracle(bytes);
            prop_assert_eq!(Some(&boxes), expected.as_ref(), "read_boxes accepted a text the oracle reads otherwise");
            prop_assert!(boxes.keys().all(|k| inside(k)), "a key leaves the images folder: {:?}", boxes.keys());
            let (d, b) = (dir.to_path_buf(), boxes.clone());
            match bounded("objects_from_dir", move || objects_from_dir(&d, Some(&b), None)) {
                Ok(objects) => {
                    prop_assert_eq!(objects.len(), boxes.len());
                    for o in &objects {
                        prop_assert_eq!(Some(boxes[&o.id]), o.bbox);
                        prop_assert!(o.path.starts_with(dir), "{} is outside the folder", o.path.display());
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains(&dir.display().to_string()), "{e}"),
            }
        }
        Err(e) => prop_assert!(e.to_string().contains("boxes.json"), "error does not name the file: {e}"),
    }
    Ok(())
}

#[test]
fn boxes_json_survives_mutation() {
    let dir = folder();
    check(64, json_edit(), |edit| read_mutated(dir.path(), &edit_json(BOXES.as_bytes(), &edit)));
}

/// Hand-written cases: huge and out-of-range numbers, deep nesting, wrong types, a huge key.
#[test]
fn odd_boxes_files() {
    let dir = folder();
    let deep = "[".repeat(1 << 20);
    let long_key = format!("{{\"{}\": [0, 0, 1, 1]}}", "a".repeat(1 << 20));
    for text in [
        r#"{"0001.jpg": [1e400, 0, 1, 1]}"#,
        r#"{"0001.jpg": [1e300, -1e300, 18446744073709551615, 1e-320]}"#,
        r#"{"0001.jpg": [0, 0, 1, 1, 1]}"#,
        r#"{"0001.jpg": {"x0": 0}}"#,
        r#"{"0001.jpg": null}"#,
        r#"[[0, 0, 1, 1]]"#,
        r#"{"0001.jpg": [0, 0, 1, 1], "0001.jpg": [2, 2, 3, 3]}"#,
        r#"{"0001.jpg": ["0", 0, 1, 1]}"#,
        "",
        "\u{feff}{}",
        &deep,
        &long_key,
    ] {
        read_mutated(dir.path(), text.as_bytes()).unwrap_or_else(|e| panic!("{:.80}: {e}", text));
    }
}

/// Regression: a key with an absolute path or `..` made `objects_from_dir` take a file from
/// outside the images folder (`dir.join("/etc/x.jpg")` is `/etc/x.jpg`); `read_boxes` now
/// refuses such keys, naming the file and the key.
#[test]
fn keys_leaving_the_images_folder_are_errors() {
    let dir = folder();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(images.join("a.jpg"), b"x").unwrap();
    let outside: PathBuf = dir.path().join("0001.jpg");
    for key in ["../0001.jpg".to_string(), outside.display().to_string(), "sub/../../0001.jpg".to_string()] {
        let path = images.join("boxes.json");
        std::fs::write(&path, serde_json::json!({ key.clone(): [0, 0, 1, 1] }).to_string()).unwrap();
        let e = read_boxes(&path).expect_err(&key).to_string();
        assert!(e.contains("boxes.json") && e.contains(&key), "{key}: {e}");
    }
}
