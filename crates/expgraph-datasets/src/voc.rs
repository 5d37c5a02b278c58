//! Pascal-Part (VOC2010 + part boxes) as the paper uses it (spec §5): the authors' per-category
//! `truth_<cat>.mat` (from `explanatoryGraph/code/data_input/data_input_VOC/`), images in
//! `VOC2010/JPEGImages/`.
//!
//! Layout of `truth_<cat>.mat` (MATLAB v7.3): a struct array `truth` with fields
//! `obj` (`folder`, `filename`, `name`, `ID`, `classID`, `bndbox.{Wmin,Wmax,Hmin,Hmax}`) and
//! `partbox` (a struct array, one element per part, fields `Wmin/Wmax/Hmin/Hmax`, each `[]`
//! when the part is absent). Part 1 = head, 2 = neck, 3 = torso; further indices are not
//! documented and are named `part4`, `part5`, …

use std::path::{Path, PathBuf};

use crate::mat::MatFile;
use crate::model::{Dataset, ImageRecord, ObjectRecord, PartInstance, PartTruth};
use crate::DatasetError;

/// The six Pascal-Part animal categories of the paper.
pub const PASCAL_PART_CATEGORIES: [&str; 6] = ["bird", "cat", "cow", "dog", "horse", "sheep"];

/// Names of the first Pascal-Part part indices (spec §5).
pub const PASCAL_PART_NAMES: [&str; 3] = ["head", "neck", "torso"];

/// Options of [`read_pascal_part`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PascalPartOptions {
    /// Drop objects with `(Wmax − Wmin + 1)(Hmax − Hmin + 1)` below this (the paper: 2500).
    pub min_area: Option<f64>,
}

impl Default for PascalPartOptions {
    fn default() -> Self {
        Self { min_area: Some(2500.0) }
    }
}

/// Read the objects of one category from `truth_file`; image paths are `JPEGImages/<file>`
/// relative to `voc_root` (the `VOC2010` folder).
pub fn read_pascal_part(
    truth_file: &Path,
    voc_root: &Path,
    category: &str,
    options: &PascalPartOptions,
) -> Result<Dataset, DatasetError> {
    let mat = MatFile::open(truth_file)?;
    let truth = mat.var("truth")?;
    let objs = mat.field_all(&truth, "obj", "truth")?;
    let partboxes = mat.field_all(&truth, "partbox", "truth")?;
    if objs.len() != partboxes.len() {
        return Err(mat.err("truth", "fields obj and partbox have different lengths"));
    }
    let mut raw = Vec::with_capacity(objs.len());
    let mut num_parts = 0;
    for (i, (obj, pb)) in objs.iter().zip(&partboxes).enumerate() {
        let ctx = format!("truth({})", i + 1);
        let octx = format!("{ctx}.obj");
        let filename = mat.string(&mat.field(obj, 0, "filename", &octx)?, &format!("{octx}.filename"))?;
        let folder = mat
            .field(obj, 0, "folder", &octx)
            .and_then(|f| mat.string(&f, &format!("{octx}.folder")))
            .unwrap_or_default();
        if !crate::text::stays_inside(&filename) || !crate::text::stays_inside(&folder) {
            return Err(mat.err(&octx, format!("image {folder:?}/{filename:?} leaves the data set folder")));
        }
        let bb = mat.field(obj, 0, "bndbox", &octx)?;
        let bctx = format!("{octx}.bndbox");
        let get = |name: &str| mat.field(&bb, 0, name, &bctx).and_then(|f| mat.scalar(&f, &format!("{bctx}.{name}")));
        let bbox = [get("Wmin")?, get("Hmin")?, get("Wmax")?, get("Hmax")?];
        if bbox[2] < bbox[0] || bbox[3] < bbox[1] {
            return Err(mat.err(&bctx, format!("inverted box {bbox:?}")));
        }
        let pctx = format!("{ctx}.partbox");
        let columns = ["Wmin", "Wmax", "Hmin", "Hmax"].map(|name| mat.field_all(pb, name, &pctx));
        let [c_w0, c_w1, c_h0, c_h1] = columns;
        let (c_w0, c_w1, c_h0, c_h1) = (c_w0?, c_w1?, c_h0?, c_h1?);
        let p_count = c_w0.len();
        if [c_w1.len(), c_h0.len(), c_h1.len()].iter().any(|&l| l != p_count) {
            return Err(mat.err(&pctx, "fields Wmin/Wmax/Hmin/Hmax have different lengths"));
        }
        num_parts = num_parts.max(p_count);
        let mut parts = Vec::with_capacity(p_count);
        for p in 0..p_count {
            let read = |name: &str| {
                let column = match name {
                    "Wmin" => &c_w0,
                    "Wmax" => &c_w1,
                    "Hmin" => &c_h0,
                    _ => &c_h1,
                };
                mat.numbers(&column[p], &format!("{pctx}({}).{name}", p + 1))
            };
            let (w0, w1, h0, h1) = (read("Wmin")?, read("Wmax")?, read("Hmin")?, read("Hmax")?);
            if w0.len() != w1.len() || w0.len() != h0.len() || w0.len() != h1.len() {
                return Err(mat.err(&format!("{pctx}({})", p + 1), "Wmin/Wmax/Hmin/Hmax have different lengths"));
            }
            let instances = (0..w0.len()).map(|k| PartInstance::boxed([w0[k], h0[k], w1[k], h1[k]])).collect();
            parts.push(PartTruth::present(instances));
        }
        raw.push((filename, folder, bbox, parts));
    }
    let part_names: Vec<String> = (0..num_parts)
        .map(|p| PASCAL_PART_NAMES.get(p).map_or_else(|| format!("part{}", p + 1), |s| s.to_string()))
        .collect();
    let mut images: Vec<ImageRecord> = Vec::new();
    let mut objects = Vec::new();
    for (i, (filename, folder, bbox, mut parts)) in raw.into_iter().enumerate() {
        parts.resize(num_parts, PartTruth::absent());
        let object = ObjectRecord { id: format!("{filename}#{}", i + 1), image: 0, bbox, parts };
        if options.min_area.is_some_and(|a| object.pixel_area() < a) {
            continue;
        }
        if object.width() <= 0.0 || object.height() <= 0.0 {
            tracing::warn!(file = %truth_file.display(), object = %object.id, "degenerate object box {bbox:?} skipped");
            continue;
        }
        let folder = folder.trim_start_matches("./").trim_matches('/');
        let path = if folder.is_empty() || folder == "." {
            PathBuf::from("JPEGImages").join(&filename)
        } else {
            PathBuf::from("JPEGImages").join(folder).join(&filename)
        };
        let image = match images.iter().position(|im| im.path == path) {
            Some(k) => k,
            None => {
                images.push(ImageRecord {
                    id: filename.clone(),
                    path,
                    size: None,
                    class: Some(category.to_string()),
                    split: None,
                });
                images.len() - 1
            }
        };
        objects.push(ObjectRecord { image, ..object });
    }
    Ok(Dataset { name: format!("pascal-part/{category}"), root: voc_root.to_path_buf(), part_names, images, objects })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mat::write::{MatWriter, Val};

    fn obj(file: &str, b: [f64; 4]) -> Val {
        Val::Struct(vec![
            ("filename".into(), Val::Text(file.into())),
            ("folder".into(), Val::Text("./".into())),
            ("name".into(), Val::Text("cow".into())),
            (
                "bndbox".into(),
                Val::Struct(vec![
                    ("Wmin".into(), Val::Num(vec![b[0]])),
                    ("Hmin".into(), Val::Num(vec![b[1]])),
                    ("Wmax".into(), Val::Num(vec![b[2]])),
                    ("Hmax".into(), Val::Num(vec![b[3]])),
                ]),
            ),
        ])
    }

    fn partbox(parts: &[Option<[f64; 4]>]) -> Val {
        let names = ["Wmin", "Wmax", "Hmin", "Hmax"].map(String::from).to_vec();
        let els = parts
            .iter()
            .map(|p| match p {
                Some(b) => vec![Val::Num(vec![b[0]]), Val::Num(vec![b[2]]), Val::Num(vec![b[1]]), Val::Num(vec![b[3]])],
                None => vec![Val::Empty, Val::Empty, Val::Empty, Val::Empty],
            })
            .collect();
        Val::StructArray(names, els)
    }

    #[test]
    fn reads_a_generated_truth_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth_cow.mat");
        let mut w = MatWriter::create(&path);
        let truth = Val::StructArray(
            vec!["obj".into(), "partbox".into()],
            vec![
                vec![
                    obj("a.jpg", [11.0, 21.0, 110.0, 120.0]),
                    partbox(&[Some([20.0, 30.0, 40.0, 50.0]), None, Some([11.0, 60.0, 110.0, 120.0])]),
                ],
                vec![obj("a.jpg", [1.0, 1.0, 30.0, 30.0]), partbox(&[None, None, None])], // 900 px: dropped
                vec![obj("b.jpg", [1.0, 1.0, 100.0, 60.0]), partbox(&[None, Some([5.0, 5.0, 15.0, 25.0]), None])],
            ],
        );
        w.put_root("truth", &truth);
        w.finish();
        let ds = read_pascal_part(&path, Path::new("/voc"), "cow", &PascalPartOptions::default()).unwrap();
        assert_eq!(ds.part_names, vec!["head", "neck", "torso"]);
        assert_eq!(ds.objects.len(), 2);
        assert_eq!(ds.images.len(), 2);
        assert_eq!(ds.images[0].path, PathBuf::from("JPEGImages/a.jpg"));
        let o = &ds.objects[0];
        assert_eq!(o.bbox, [11.0, 21.0, 110.0, 120.0]);
        assert_eq!(o.parts[0].instances[0].centre, [30.0, 40.0]);
        assert!(!o.parts[1].visible);
        // head centre (30, 40) in the 224 frame: ((30 − 11)/99·224, (40 − 21)/99·224)
        let t = o.truth_in_frame(0, 224.0);
        assert!((t[0].centre.x - 19.0 / 99.0 * 224.0).abs() < 1e-12);
        assert!((t[0].centre.y - 19.0 / 99.0 * 224.0).abs() < 1e-12);
        assert_eq!(ds.objects[1].id, "b.jpg#3");
        assert!(ds.objects[1].parts[1].visible);
        let all = read_pascal_part(&path, Path::new("/voc"), "cow", &PascalPartOptions { min_area: None }).unwrap();
        assert_eq!(all.objects.len(), 3);
        assert_eq!(all.objects[1].image, 0); // same image as the first object
    }

    #[test]
    fn missing_fields_and_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.mat");
        let mut w = MatWriter::create(&path);
        w.put_root("truth", &Val::StructArray(vec!["obj".into()], vec![vec![obj("a.jpg", [1.0, 1.0, 90.0, 90.0])]]));
        w.finish();
        let e = read_pascal_part(&path, Path::new("."), "cow", &PascalPartOptions::default()).unwrap_err().to_string();
        assert!(e.contains("bad.mat") && e.contains("partbox"), "{e}");
        let e = read_pascal_part(&dir.path().join("none.mat"), Path::new("."), "cow", &PascalPartOptions::default())
            .unwrap_err();
        assert!(matches!(e, DatasetError::Io { .. }));
        std::fs::write(dir.path().join("text.mat"), "not hdf5").unwrap();
        let e = read_pascal_part(&dir.path().join("text.mat"), Path::new("."), "cow", &PascalPartOptions::default())
            .unwrap_err();
        assert!(e.to_string().contains("not a MATLAB v7.3"), "{e}");
    }

    #[test]
    fn an_image_name_that_leaves_the_data_set_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../../etc/passwd", "/etc/passwd"] {
            let path = dir.path().join("escape.mat");
            let mut w = MatWriter::create(&path);
            let truth = Val::StructArray(
                vec!["obj".into(), "partbox".into()],
                vec![vec![obj(name, [1.0, 1.0, 90.0, 90.0]), partbox(&[None])]],
            );
            w.put_root("truth", &truth);
            w.finish();
            let e = read_pascal_part(&path, Path::new("/voc"), "cow", &PascalPartOptions::default()).unwrap_err();
            assert!(
                e.to_string().contains("leaves the data set folder") && e.to_string().contains("escape.mat"),
                "{e}"
            );
        }
    }
}
