//! Finding the images of a folder and reading the object-boxes file.
//!
//! Boxes file format (JSON): an object mapping an image file name (relative to the images
//! folder) to its object box `[x0, y0, x1, y1]` in source pixels, 0-based, `x1`/`y1`
//! exclusive (so the whole of a 640×480 image is `[0, 0, 640, 480]`):
//! ```json
//! { "0001.jpg": [12, 30, 200, 180], "0002.png": [0, 0, 640, 480] }
//! ```

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::{FeaturesError, ObjectImage};

/// Every `.jpg`/`.jpeg`/`.png` file (any case) directly in `dir`, sorted by file name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, FeaturesError> {
    let entries = std::fs::read_dir(dir).map_err(|e| FeaturesError::file(dir, e))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

/// Read a boxes file (see the module docs).
pub fn read_boxes(path: &Path) -> Result<BTreeMap<String, [f64; 4]>, FeaturesError> {
    let text = std::fs::read(path).map_err(|e| FeaturesError::file(path, e))?;
    let boxes: BTreeMap<String, [f64; 4]> = serde_json::from_slice(&text)
        .map_err(|e| FeaturesError::file(path, format!("expected {{\"file.jpg\": [x0, y0, x1, y1], ...}}: {e}")))?;
    // Names stay inside the images folder: no absolute path, no `..`.
    let leaves = |k: &String| !Path::new(k).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if let Some(k) = boxes.keys().find(|k| leaves(k)) {
        return Err(FeaturesError::file(path, format!("image name {k:?} leaves the images folder")));
    }
    Ok(boxes)
}

/// The objects of an images folder: every image in name order (whole image as the box), or,
/// with `boxes`, the images named there (sorted by name) with their boxes. A box naming a file
/// that is not in the folder is an error. `limit` keeps the first N.
pub fn objects_from_dir(
    dir: &Path,
    boxes: Option<&BTreeMap<String, [f64; 4]>>,
    limit: Option<usize>,
) -> Result<Vec<ObjectImage>, FeaturesError> {
    let files = list_images(dir)?;
    let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let mut objects: Vec<ObjectImage> = match boxes {
        None => files.iter().map(|p| ObjectImage { id: name_of(p), path: p.clone(), bbox: None }).collect(),
        Some(boxes) => {
            if let Some(missing) = boxes.keys().find(|k| !dir.join(k).is_file()) {
                return Err(FeaturesError::Image {
                    path: dir.join(missing),
                    what: "named in the boxes file but not found".into(),
                });
            }
            let skipped = files.iter().filter(|p| !boxes.contains_key(&name_of(p))).count();
            if skipped > 0 {
                tracing::warn!(skipped, "images without an entry in the boxes file are skipped");
            }
            boxes.iter().map(|(k, b)| ObjectImage { id: k.clone(), path: dir.join(k), bbox: Some(*b) }).collect()
        }
    };
    if let Some(n) = limit {
        objects.truncate(n);
    }
    if objects.is_empty() {
        return Err(FeaturesError::Input(format!("no JPEG/PNG images found in {}", dir.display())));
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_sorted_images_and_reads_boxes() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.PNG", "a.jpg", "c.txt", "d.jpeg"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let names: Vec<_> =
            list_images(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["a.jpg", "b.PNG", "d.jpeg"]);
        let objs = objects_from_dir(dir.path(), None, Some(2)).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1].id, "b.PNG");

        let boxes_path = dir.path().join("boxes.json");
        std::fs::write(&boxes_path, r#"{"d.jpeg": [1, 2, 30, 40]}"#).unwrap();
        let boxes = read_boxes(&boxes_path).unwrap();
        let objs = objects_from_dir(dir.path(), Some(&boxes), None).unwrap();
        assert_eq!(
            objs,
            vec![ObjectImage {
                id: "d.jpeg".into(),
                path: dir.path().join("d.jpeg"),
                bbox: Some([1.0, 2.0, 30.0, 40.0])
            }]
        );

        std::fs::write(&boxes_path, r#"{"zz.jpg": [1, 2, 30, 40]}"#).unwrap();
        let e = objects_from_dir(dir.path(), Some(&read_boxes(&boxes_path).unwrap()), None).unwrap_err();
        assert!(e.to_string().contains("zz.jpg"));
        std::fs::write(&boxes_path, r#"{"a.jpg": [1, 2]}"#).unwrap();
        assert!(read_boxes(&boxes_path).unwrap_err().to_string().contains("boxes.json"));
    }
}
