//! ILSVRC 2013 DET Animal-Part (spec §5): images and object boxes as laid out by the authors'
//! `detanimalpart` repository, part truth from `truth_part01.mat` (head) and `truth_part02.mat`
//! (frontal legs) of `interpretableCNN/code/data_input/data_input_DET-2015-subset-ILSVRC2013train/<synset>/`.
//!
//! Layout:
//! * `ROOT/<synset>_obj/img/data.mat`: struct array `samples`, field `obj.bndbox.{xmin,xmax,ymin,ymax}`;
//! * `ROOT/<synset>_obj/img/img/%05d.jpg`: the image of sample `i` (1-based);
//! * `truth_partNN.mat`: struct array `truth` aligned with `samples`, fields `obj` (`[]` when
//!   the part is not annotated; else `filename`, `folder`, `bndbox` as text), `pHW_center` and
//!   `pHW_scale` (2 × k, rows h and w, **in the 224 object frame**).

use std::path::{Path, PathBuf};

use crate::mat::{MatFile, Node};
use crate::model::{Dataset, ImageRecord, ObjectRecord, PartInstance, PartTruth};
use crate::DatasetError;

/// The 30 synsets of ILSVRC Animal-Part with their names (spec §5).
pub const ILSVRC_ANIMAL_SYNSETS: [(&str, &str); 30] = [
    ("n01443537", "goldfish"),
    ("n01503061", "bird"),
    ("n01639765", "frog"),
    ("n01662784", "turtle"),
    ("n01674464", "lizard"),
    ("n01882714", "koala"),
    ("n01982650", "lobster"),
    ("n02084071", "dog"),
    ("n02118333", "fox"),
    ("n02121808", "cat"),
    ("n02129165", "lion"),
    ("n02129604", "tiger"),
    ("n02131653", "bear"),
    ("n02324045", "rabbit"),
    ("n02342885", "hamster"),
    ("n02355227", "squirrel"),
    ("n02374451", "horse"),
    ("n02391049", "zebra"),
    ("n02395003", "swine"),
    ("n02398521", "hippopotamus"),
    ("n02402425", "cattle"),
    ("n02411705", "sheep"),
    ("n02419796", "antelope"),
    ("n02437136", "camel"),
    ("n02444819", "otter"),
    ("n02454379", "armadillo"),
    ("n02484322", "monkey"),
    ("n02503517", "elephant"),
    ("n02509815", "red panda"),
    ("n02510455", "giant panda"),
];

/// Part names of ILSVRC Animal-Part: `truth_part01` and `truth_part02`.
pub const ILSVRC_PART_NAMES: [&str; 2] = ["head", "frontal legs"];

/// Side of the object frame the ILSVRC truth is stored in.
const TRUTH_FRAME: f64 = 224.0;

/// One annotated object of a `truth_partNN.mat`.
#[derive(Debug, Clone, PartialEq)]
pub struct IlsvrcPartTruth {
    /// Original ILSVRC image name (without extension), e.g. `n01503061_100`.
    pub filename: String,
    /// Object box `[xmin, ymin, xmax, ymax]` the frame refers to.
    pub bbox: [f64; 4],
    /// Part centres `(h, w)` in the 224 object frame, one per instance.
    pub centres_hw: Vec<[f64; 2]>,
    /// Part box sizes `(h, w)` in the 224 object frame (empty when not stored).
    pub scales_hw: Vec<[f64; 2]>,
}

impl IlsvrcPartTruth {
    /// The instances in source-image coordinates (inverse of the frame mapping, spec §4.2).
    pub fn instances(&self) -> Vec<PartInstance> {
        let [x0, y0, x1, y1] = self.bbox;
        let (sx, sy) = ((x1 - x0) / TRUTH_FRAME, (y1 - y0) / TRUTH_FRAME);
        self.centres_hw
            .iter()
            .enumerate()
            .map(|(k, &[h, w])| {
                let (cx, cy) = (x0 + w * sx, y0 + h * sy);
                match self.scales_hw.get(k) {
                    Some(&[sh, sw]) => {
                        let (hw, hh) = (sw * sx / 2.0, sh * sy / 2.0);
                        PartInstance { centre: [cx, cy], bbox: Some([cx - hw, cy - hh, cx + hw, cy + hh]) }
                    }
                    None => PartInstance::point(cx, cy),
                }
            })
            .collect()
    }
}

/// The `bndbox` (`xmin`, `ymin`, `xmax`, `ymax`) of the object struct `obj` at `octx`.
fn read_bndbox(mat: &MatFile, obj: &Node, octx: &str) -> Result<[f64; 4], DatasetError> {
    let bb = mat.field(obj, 0, "bndbox", octx)?;
    let bctx = format!("{octx}.bndbox");
    let get = |name: &str| mat.field(&bb, 0, name, &bctx).and_then(|f| mat.scalar(&f, &format!("{bctx}.{name}")));
    let bbox = [get("xmin")?, get("ymin")?, get("xmax")?, get("ymax")?];
    if bbox[2] < bbox[0] || bbox[3] < bbox[1] {
        return Err(mat.err(&bctx, format!("inverted box {bbox:?}")));
    }
    Ok(bbox)
}

fn pairs(mat: &MatFile, v: Vec<f64>, ctx: &str) -> Result<Vec<[f64; 2]>, DatasetError> {
    if !v.len().is_multiple_of(2) {
        return Err(mat.err(ctx, format!("expected a 2 × k array, found {} numbers", v.len())));
    }
    Ok(v.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
}

/// Read a `truth_partNN.mat`: one entry per sample, `None` where the part is not annotated.
pub fn read_ilsvrc_part_truth(path: &Path) -> Result<Vec<Option<IlsvrcPartTruth>>, DatasetError> {
    let mat = MatFile::open(path)?;
    let truth = mat.var("truth")?;
    let objs = mat.column(&truth, "obj", "truth")?;
    let centres = mat.column(&truth, "pHW_center", "truth")?;
    let scales = mat.column(&truth, "pHW_scale", "truth").ok();
    let n = objs.len();
    if centres.len() != n || scales.as_ref().is_some_and(|s| s.len() != n) {
        return Err(mat.err("truth", "fields obj, pHW_center and pHW_scale have different lengths"));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ctx = format!("truth({})", i + 1);
        let obj = &mat.at(&objs, i)?;
        if mat.is_empty(obj) {
            out.push(None);
            continue;
        }
        let centre = &mat.at(&centres, i)?;
        if mat.is_empty(centre) {
            out.push(None);
            continue;
        }
        let octx = format!("{ctx}.obj");
        let filename = mat.string(&mat.field(obj, 0, "filename", &octx)?, &format!("{octx}.filename"))?;
        if !crate::text::stays_inside(&filename) {
            return Err(mat.err(&octx, format!("image {filename:?} leaves the data set folder")));
        }
        let bbox = read_bndbox(&mat, obj, &octx)?;
        let cctx = format!("{ctx}.pHW_center");
        let centres_hw = pairs(&mat, mat.numbers(centre, &cctx)?, &cctx)?;
        let sctx = format!("{ctx}.pHW_scale");
        let scales_hw = match &scales {
            Some(s) => pairs(&mat, mat.numbers(&mat.at(s, i)?, &sctx)?, &sctx)?,
            None => Vec::new(),
        };
        if !scales_hw.is_empty() && scales_hw.len() != centres_hw.len() {
            return Err(mat.err(&sctx, "pHW_scale and pHW_center have different numbers of columns"));
        }
        out.push(Some(IlsvrcPartTruth { filename, bbox, centres_hw, scales_hw }));
    }
    Ok(out)
}

/// Options of [`read_ilsvrc_animal_part`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IlsvrcOptions {
    /// Drop objects with `(xmax − xmin + 1)(ymax − ymin + 1)` below this (the paper: 2500).
    pub min_area: Option<f64>,
}

impl Default for IlsvrcOptions {
    fn default() -> Self {
        Self { min_area: Some(2500.0) }
    }
}

/// Read one synset: objects from `root/<synset>_obj/img/data.mat`, parts from
/// `truth_dir/truth_part01.mat` and `truth_part02.mat` (a missing part file, e.g. goldfish's
/// frontal legs, leaves that part absent everywhere).
pub fn read_ilsvrc_animal_part(
    root: &Path,
    synset: &str,
    truth_dir: &Path,
    options: &IlsvrcOptions,
) -> Result<Dataset, DatasetError> {
    let data_path = root.join(format!("{synset}_obj")).join("img").join("data.mat");
    let mat = MatFile::open(&data_path)?;
    let samples = mat.var("samples")?;
    let sample_objs = mat.field_all(&samples, "obj", "samples")?;
    let n = sample_objs.len();
    let mut truths: Vec<Vec<Option<IlsvrcPartTruth>>> = Vec::new();
    for p in 1..=ILSVRC_PART_NAMES.len() {
        let path = truth_dir.join(format!("truth_part{p:02}.mat"));
        if !path.exists() {
            truths.push(vec![None; n]);
            continue;
        }
        let t = read_ilsvrc_part_truth(&path)?;
        if t.len() != n {
            return Err(DatasetError::invalid(
                &path,
                format!("{} entries, but {} has {n} samples", t.len(), data_path.display()),
            ));
        }
        truths.push(t);
    }
    let (mut images, mut objects) = (Vec::new(), Vec::new());
    for (i, obj) in sample_objs.iter().enumerate() {
        let octx = format!("samples({}).obj", i + 1);
        let bbox = read_bndbox(&mat, obj, &octx)?;
        let parts = truths
            .iter()
            .map(|t| t[i].as_ref().map_or_else(PartTruth::absent, |t| PartTruth::present(t.instances())))
            .collect();
        let name = format!("{:05}.jpg", i + 1);
        let object = ObjectRecord { id: format!("{synset}/{name}"), image: images.len(), bbox, parts };
        if options.min_area.is_some_and(|a| object.pixel_area() < a) {
            continue;
        }
        if object.width() <= 0.0 || object.height() <= 0.0 {
            tracing::warn!(file = %data_path.display(), object = %object.id, "degenerate object box {bbox:?} skipped");
            continue;
        }
        let path = PathBuf::from(format!("{synset}_obj")).join("img").join("img").join(&name);
        images.push(ImageRecord {
            id: object.id.clone(),
            path,
            size: None,
            class: Some(synset.to_string()),
            split: None,
        });
        objects.push(object);
    }
    Ok(Dataset {
        name: format!("ilsvrc-animal-part/{synset}"),
        root: root.to_path_buf(),
        part_names: ILSVRC_PART_NAMES.iter().map(|s| s.to_string()).collect(),
        images,
        objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mat::write::{MatWriter, Val};

    fn bbox_text(b: [f64; 4]) -> Val {
        Val::Struct(vec![
            ("xmin".into(), Val::Text(b[0].to_string())),
            ("ymin".into(), Val::Text(b[1].to_string())),
            ("xmax".into(), Val::Text(b[2].to_string())),
            ("ymax".into(), Val::Text(b[3].to_string())),
        ])
    }

    #[test]
    fn reads_a_generated_synset() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("n01503061_obj").join("img");
        std::fs::create_dir_all(&img).unwrap();
        let boxes = [[1.0, 1.0, 225.0, 113.0], [10.0, 10.0, 20.0, 20.0], [5.0, 5.0, 100.0, 100.0]];
        let mut w = MatWriter::create(&img.join("data.mat"));
        let samples = boxes
            .iter()
            .map(|b| {
                vec![Val::Struct(vec![(
                    "bndbox".into(),
                    Val::Struct(vec![
                        ("xmin".into(), Val::Num(vec![b[0]])),
                        ("ymin".into(), Val::Num(vec![b[1]])),
                        ("xmax".into(), Val::Num(vec![b[2]])),
                        ("ymax".into(), Val::Num(vec![b[3]])),
                    ]),
                )])]
            })
            .collect();
        w.put_root("samples", &Val::StructArray(vec!["obj".into()], samples));
        w.finish();
        let truth_dir = dir.path().join("truth");
        std::fs::create_dir_all(&truth_dir).unwrap();
        let mut w = MatWriter::create(&truth_dir.join("truth_part01.mat"));
        let annotated = vec![
            Val::Struct(vec![
                ("filename".into(), Val::Text("n01503061_100".into())),
                ("bndbox".into(), bbox_text(boxes[0])),
            ]),
            // head at (h, w) = (56, 112) of the frame, size (h, w) = (22.4, 44.8)
            Val::Num(vec![56.0, 112.0]),
            Val::Num(vec![22.4, 44.8]),
        ];
        w.put_root(
            "truth",
            &Val::StructArray(
                vec!["obj".into(), "pHW_center".into(), "pHW_scale".into()],
                vec![annotated, vec![Val::Empty, Val::Empty, Val::Empty], vec![Val::Empty, Val::Empty, Val::Empty]],
            ),
        );
        w.finish();
        let truth = read_ilsvrc_part_truth(&truth_dir.join("truth_part01.mat")).unwrap();
        assert_eq!(truth.len(), 3);
        assert!(truth[1].is_none());
        let t0 = truth[0].as_ref().unwrap();
        assert_eq!(t0.bbox, boxes[0]);
        assert_eq!(t0.centres_hw, vec![[56.0, 112.0]]);

        let ds = read_ilsvrc_animal_part(dir.path(), "n01503061", &truth_dir, &IlsvrcOptions::default()).unwrap();
        assert_eq!(ds.objects.len(), 2); // the 11x11 box is dropped
        assert_eq!(ds.images[1].path, PathBuf::from("n01503061_obj/img/img/00003.jpg"));
        let head = &ds.objects[0].parts[0];
        // frame (h=56, w=112) in a 224 x 112 box starting at (1, 1): x = 1 + 112, y = 1 + 28
        assert_eq!(head.instances[0].centre, [113.0, 29.0]);
        let back = ds.objects[0].truth_in_frame(0, 224.0);
        assert!((back[0].centre.x - 112.0).abs() < 1e-9 && (back[0].centre.y - 56.0).abs() < 1e-9);
        let size = back[0].size.unwrap();
        assert!((size.width - 44.8).abs() < 1e-9 && (size.height - 22.4).abs() < 1e-9);
        assert!(!ds.objects[0].parts[1].visible); // no truth_part02.mat
    }

    #[test]
    fn missing_data_mat_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_ilsvrc_animal_part(dir.path(), "n01503061", dir.path(), &IlsvrcOptions::default()).unwrap_err();
        assert!(e.to_string().contains("data.mat"), "{e}");
    }
}
