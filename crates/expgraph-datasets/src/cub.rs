//! CUB-200-2011 (spec §5): reader and writer of its text format.
//!
//! `DIR` is the folder holding `images.txt`, `bounding_boxes.txt`, `parts/parts.txt`,
//! `parts/part_locs.txt`, and optionally `train_test_split.txt`, `classes.txt` and
//! `image_class_labels.txt`; images are under `DIR/images/`. One object per image; boxes are
//! `x y width height` and become `[x, y, x + width, y + height]` as in the reference's
//! `readAnnotation.m`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::model::{Dataset, ImageRecord, ObjectRecord, PartInstance, PartTruth, Split};
use crate::text::{write_atomic, TextFile};
use crate::DatasetError;

/// The 15 CUB part names, in `parts/parts.txt` order (ids 1–15).
pub const CUB_PARTS: [&str; 15] = [
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
];

/// CUB part ids (1-based) of the stability landmarks: back, forehead, tail (spec §4.3).
pub const CUB_STABILITY_LANDMARKS: [usize; 3] = [1, 6, 14];

/// Which objects the paper keeps from a data set, by 1-based index after the other filters.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// 1-based indices (MATLAB `validObj`).
    Indices(Vec<usize>),
    /// A `sampling.mat` file holding `validObj` (MATLAB v7.3; needs the `mat` feature).
    MatFile(PathBuf),
}

/// Options of [`read_cub`]; `Default` keeps everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CubOptions {
    /// Keep only images of this split.
    pub split: Option<Split>,
    /// Drop objects with `(w + 1)(h + 1)` below this many pixels (the paper: 2500).
    pub min_area: Option<f64>,
    /// Then keep only these objects (the paper's 2000-object subset).
    pub sampling: Option<Sampling>,
    /// Read each image's header for its size (needs the images).
    pub probe_image_sizes: bool,
}

impl CubOptions {
    /// The paper's protocol without the subset: test split, area ≥ 2500 (spec §5).
    pub fn paper() -> Self {
        Self { split: Some(Split::Test), min_area: Some(2500.0), sampling: None, probe_image_sizes: false }
    }

    /// The paper's protocol with the 2000 objects of `sampling.mat` (spec §5).
    pub fn paper_subset(sampling_mat: impl Into<PathBuf>) -> Self {
        Self { sampling: Some(Sampling::MatFile(sampling_mat.into())), ..Self::paper() }
    }
}

/// Read a CUB-format data set from `dir` (strict: unknown ids, duplicates, malformed lines and
/// empty boxes are errors naming the file and line).
pub fn read_cub(dir: &Path, options: &CubOptions) -> Result<Dataset, DatasetError> {
    let images = read_id_map(&dir.join("images.txt"), "path")?;
    // Image paths stay inside `DIR/images/`: no absolute path, no `..`.
    if let Some((_, (n, rel))) = images.iter().find(|(_, (_, rel))| !crate::text::stays_inside(rel)) {
        let path = dir.join("images.txt");
        return Err(DatasetError::Parse { path, line: *n, message: format!("image path {rel:?} leaves images/") });
    }
    let boxes = read_boxes(&dir.join("bounding_boxes.txt"), &images)?;
    let parts = read_id_map(&dir.join("parts").join("parts.txt"), "part name")?;
    let part_index: HashMap<u32, usize> = parts.keys().enumerate().map(|(i, &id)| (id, i)).collect();
    let locs = read_part_locs(&dir.join("parts").join("part_locs.txt"), &images, &part_index)?;
    let split_path = dir.join("train_test_split.txt");
    let splits = if split_path.exists() {
        Some(read_flags(&split_path, &images)?)
    } else if options.split.is_some() {
        return Err(DatasetError::io(&split_path, std::io::Error::from(std::io::ErrorKind::NotFound)));
    } else {
        None
    };
    let classes = read_classes(dir, &images)?;

    let mut kept_images = Vec::new();
    let mut objects = Vec::new();
    for (&id, (_, rel)) in &images {
        let split = splits.as_ref().map(|s| if s[&id] { Split::Train } else { Split::Test });
        if options.split.is_some() && split != options.split {
            continue;
        }
        let [x, y, w, h] = boxes[&id];
        let parts: Vec<PartTruth> = (0..parts.len())
            .map(|p| match locs.get(&(id, p)) {
                Some(&(px, py, true)) => PartTruth::present(vec![PartInstance::point(px, py)]),
                _ => PartTruth::absent(),
            })
            .collect();
        let object = ObjectRecord { id: id.to_string(), image: kept_images.len(), bbox: [x, y, x + w, y + h], parts };
        if options.min_area.is_some_and(|a| object.pixel_area() < a) {
            continue;
        }
        let path = PathBuf::from("images").join(rel);
        let size = if options.probe_image_sizes {
            let full = dir.join(&path);
            Some(
                image::image_dimensions(&full)
                    .map_err(|e| DatasetError::Image { path: full, message: e.to_string() })?,
            )
        } else {
            None
        };
        kept_images.push(ImageRecord {
            id: id.to_string(),
            path,
            size,
            class: classes.as_ref().map(|c| c[&id].clone()),
            split,
        });
        objects.push(object);
    }
    let mut dataset = Dataset {
        name: "cub-200-2011".into(),
        root: dir.to_path_buf(),
        part_names: parts.into_values().map(|(_, name)| name).collect(),
        images: kept_images,
        objects,
    };
    if let Some(sampling) = &options.sampling {
        let (indices, source) = match sampling {
            Sampling::Indices(v) => (v.clone(), PathBuf::from("<sampling indices>")),
            Sampling::MatFile(p) => (crate::read_cub_sampling(p)?, p.clone()),
        };
        let n = dataset.objects.len();
        let zero_based: Vec<usize> = indices
            .iter()
            .map(|&i| {
                i.checked_sub(1).filter(|&z| z < n).ok_or_else(|| {
                    DatasetError::invalid(
                        &source,
                        format!("object index {i} is outside 1..={n} (objects left after the filters)"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        dataset = dataset
            .select_objects(&zero_based)
            .ok_or_else(|| DatasetError::invalid(&source, "object index out of range"))?;
    }
    Ok(dataset)
}

/// `<id> <rest of line>` files (images.txt, parts.txt, classes.txt): unique ids, in id order.
/// The value keeps the 1-based line number.
fn read_id_map(path: &Path, what: &str) -> Result<BTreeMap<u32, (usize, String)>, DatasetError> {
    let file = TextFile::read(path)?;
    let mut map = BTreeMap::new();
    for (n, line) in file.lines() {
        let (id, rest) = file.id_and_rest(n, line, what)?;
        if map.insert(id, (n, rest.to_string())).is_some() {
            return Err(file.parse_error(n, format!("duplicate id {id}")));
        }
    }
    if map.is_empty() {
        return Err(DatasetError::invalid(path, "no entries"));
    }
    Ok(map)
}

type IdMap = BTreeMap<u32, (usize, String)>;

/// `(image id, part index)` → `(x, y, visible)`.
type PartLocs = HashMap<(u32, usize), (f64, f64, bool)>;

fn check_known(file: &TextFile, n: usize, id: u32, images: &IdMap) -> Result<(), DatasetError> {
    if !images.contains_key(&id) {
        return Err(file.parse_error(n, format!("image id {id} is not in images.txt")));
    }
    Ok(())
}

fn read_boxes(path: &Path, images: &IdMap) -> Result<HashMap<u32, [f64; 4]>, DatasetError> {
    let file = TextFile::read(path)?;
    let mut boxes = HashMap::new();
    for (n, line) in file.lines() {
        let f = file.fields(n, line, &["image_id", "x", "y", "width", "height"])?;
        let id: u32 = file.num(n, "image_id", f[0])?;
        check_known(&file, n, id, images)?;
        let b = [
            file.float(n, "x", f[1])?,
            file.float(n, "y", f[2])?,
            file.float(n, "width", f[3])?,
            file.float(n, "height", f[4])?,
        ];
        if b[2] <= 0.0 || b[3] <= 0.0 {
            return Err(file.parse_error(n, format!("empty box: width {} height {}", b[2], b[3])));
        }
        // The corners `x + width`, `y + height` must be finite and past `x`, `y` (huge values
        // overflow to infinity or round back to `x`).
        let (x1, y1) = (b[0] + b[2], b[1] + b[3]);
        if !(x1.is_finite() && y1.is_finite() && x1 > b[0] && y1 > b[1]) {
            return Err(file.parse_error(n, format!("box {b:?} overflows or is empty once added up")));
        }
        if boxes.insert(id, b).is_some() {
            return Err(file.parse_error(n, format!("second box for image {id}")));
        }
    }
    if let Some((id, (n, _))) = images.iter().find(|(id, _)| !boxes.contains_key(id)) {
        return Err(DatasetError::invalid(path, format!("no box for image {id} (images.txt line {n})")));
    }
    Ok(boxes)
}

fn read_part_locs(path: &Path, images: &IdMap, parts: &HashMap<u32, usize>) -> Result<PartLocs, DatasetError> {
    let file = TextFile::read(path)?;
    let mut locs = HashMap::new();
    for (n, line) in file.lines() {
        let f = file.fields(n, line, &["image_id", "part_id", "x", "y", "visible"])?;
        let id: u32 = file.num(n, "image_id", f[0])?;
        check_known(&file, n, id, images)?;
        let part_id: u32 = file.num(n, "part_id", f[1])?;
        let &part = parts
            .get(&part_id)
            .ok_or_else(|| file.parse_error(n, format!("part id {part_id} is not in parts/parts.txt")))?;
        let (x, y) = (file.float(n, "x", f[2])?, file.float(n, "y", f[3])?);
        let visible = match f[4] {
            "0" => false,
            "1" => true,
            other => return Err(file.parse_error(n, format!("field `visible`: expected 0 or 1, found {other:?}"))),
        };
        if locs.insert((id, part), (x, y, visible)).is_some() {
            return Err(file.parse_error(n, format!("second location of part {part_id} in image {id}")));
        }
    }
    Ok(locs)
}

/// `<id> <0|1>` files with one line per image.
fn read_flags(path: &Path, images: &IdMap) -> Result<HashMap<u32, bool>, DatasetError> {
    let file = TextFile::read(path)?;
    let mut flags = HashMap::new();
    for (n, line) in file.lines() {
        let f = file.fields(n, line, &["image_id", "is_training_image"])?;
        let id: u32 = file.num(n, "image_id", f[0])?;
        check_known(&file, n, id, images)?;
        let flag = match f[1] {
            "0" => false,
            "1" => true,
            other => return Err(file.parse_error(n, format!("expected 0 or 1, found {other:?}"))),
        };
        if flags.insert(id, flag).is_some() {
            return Err(file.parse_error(n, format!("second entry for image {id}")));
        }
    }
    if let Some((id, _)) = images.iter().find(|(id, _)| !flags.contains_key(id)) {
        return Err(DatasetError::invalid(path, format!("no entry for image {id}")));
    }
    Ok(flags)
}

/// Class name per image from `classes.txt` + `image_class_labels.txt`, when both exist.
fn read_classes(dir: &Path, images: &IdMap) -> Result<Option<HashMap<u32, String>>, DatasetError> {
    let (classes_path, labels_path) = (dir.join("classes.txt"), dir.join("image_class_labels.txt"));
    if !classes_path.exists() || !labels_path.exists() {
        return Ok(None);
    }
    let classes = read_id_map(&classes_path, "class name")?;
    let file = TextFile::read(&labels_path)?;
    let mut labels = HashMap::new();
    for (n, line) in file.lines() {
        let f = file.fields(n, line, &["image_id", "class_id"])?;
        let id: u32 = file.num(n, "image_id", f[0])?;
        check_known(&file, n, id, images)?;
        let class: u32 = file.num(n, "class_id", f[1])?;
        let name = classes
            .get(&class)
            .ok_or_else(|| file.parse_error(n, format!("class id {class} is not in classes.txt")))?;
        if labels.insert(id, name.1.clone()).is_some() {
            return Err(file.parse_error(n, format!("second label for image {id}")));
        }
    }
    if let Some((id, _)) = images.iter().find(|(id, _)| !labels.contains_key(id)) {
        return Err(DatasetError::invalid(&labels_path, format!("no class for image {id}")));
    }
    Ok(Some(labels))
}

/// Write `dataset` in CUB's format into `dir` (one object per image; image ids become 1..N in
/// object order; classes are numbered in order of first appearance). Every file is written
/// atomically. Coordinates are written so that [`read_cub`] reads back the same `f64` values.
pub fn write_cub(dir: &Path, dataset: &Dataset) -> Result<(), DatasetError> {
    dataset.validate().map_err(|m| DatasetError::invalid(dir, m))?;
    if dataset.objects.len() != dataset.images.len() || dataset.objects.iter().enumerate().any(|(i, o)| o.image != i) {
        return Err(DatasetError::invalid(dir, "CUB needs exactly one object per image, in image order"));
    }
    let (mut images, mut boxes, mut locs, mut split, mut labels) =
        (String::new(), String::new(), String::new(), String::new(), String::new());
    let mut class_ids: Vec<String> = Vec::new();
    for (i, (img, obj)) in dataset.images.iter().zip(&dataset.objects).enumerate() {
        let id = i + 1;
        let rel = img.path.strip_prefix("images").unwrap_or(&img.path);
        let rel = rel.to_str().filter(|r| !r.contains(char::is_whitespace)).ok_or_else(|| {
            DatasetError::invalid(dir, format!("image path {:?} must be UTF-8 without spaces", img.path))
        })?;
        let _ = writeln!(images, "{id} {rel}");
        let [x0, y0, x1, y1] = obj.bbox;
        let _ = writeln!(boxes, "{id} {:?} {:?} {:?} {:?}", x0, y0, x1 - x0, y1 - y0);
        for (p, truth) in obj.parts.iter().enumerate() {
            match (truth.visible, truth.instances.as_slice()) {
                (true, [one]) => {
                    let _ = writeln!(locs, "{id} {} {:?} {:?} 1", p + 1, one.centre[0], one.centre[1]);
                }
                (false, _) => {
                    let _ = writeln!(locs, "{id} {} 0.0 0.0 0", p + 1);
                }
                _ => {
                    return Err(DatasetError::invalid(
                        dir,
                        format!("object {}: CUB holds one keypoint per part", obj.id),
                    ))
                }
            }
        }
        if let Some(s) = img.split {
            let _ = writeln!(split, "{id} {}", u8::from(s == Split::Train));
        }
        if let Some(c) = &img.class {
            let cid = match class_ids.iter().position(|k| k == c) {
                Some(k) => k + 1,
                None => {
                    class_ids.push(c.clone());
                    class_ids.len()
                }
            };
            let _ = writeln!(labels, "{id} {cid}");
        }
    }
    let mut parts = String::new();
    for (p, name) in dataset.part_names.iter().enumerate() {
        let _ = writeln!(parts, "{} {name}", p + 1);
    }
    write_atomic(&dir.join("images.txt"), images.as_bytes())?;
    write_atomic(&dir.join("bounding_boxes.txt"), boxes.as_bytes())?;
    write_atomic(&dir.join("parts").join("parts.txt"), parts.as_bytes())?;
    write_atomic(&dir.join("parts").join("part_locs.txt"), locs.as_bytes())?;
    if dataset.images.iter().all(|i| i.split.is_some()) {
        write_atomic(&dir.join("train_test_split.txt"), split.as_bytes())?;
    }
    if dataset.images.iter().all(|i| i.class.is_some()) {
        let mut classes = String::new();
        for (k, c) in class_ids.iter().enumerate() {
            let _ = writeln!(classes, "{} {c}", k + 1);
        }
        write_atomic(&dir.join("classes.txt"), classes.as_bytes())?;
        write_atomic(&dir.join("image_class_labels.txt"), labels.as_bytes())?;
    }
    Ok(())
}
