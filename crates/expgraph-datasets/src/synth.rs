//! A deterministic synthetic part data set in CUB-200-2011's format: the project's embedded
//! default data (no download). Each image shows one cartoon bird built from simple anti-aliased
//! shapes, with CUB's 15 named parts at exact keypoints, a tight object box, random pose
//! (scale, rotation, mirror, position), colour jitter, optional occluders, over procedural
//! textures or random crops of photos.
//!
//! Parts are visually distinct so that CNN features can locate them: a yellow-orange beak, a
//! black eye in a white ring, a contrasting crown patch, a pale breast/belly, a wing with light
//! bars, a striped tail and thin dark legs.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tiny_skia::{FillRule, Paint, PathBuilder, Pixmap, PixmapPaint, Rect, Stroke, Transform};

use crate::cub::{write_cub, CUB_PARTS};
use crate::model::{Dataset, ImageRecord, ObjectRecord, PartInstance, PartTruth, Split};
use crate::text::write_atomic;
use crate::DatasetError;

/// Image encoding of the generated files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynthFormat {
    /// Lossless PNG (default).
    Png,
    /// JPEG with the given quality (1–100).
    Jpeg {
        /// Quality 1–100.
        quality: u8,
    },
}

/// Parameters of [`generate_synthetic_cub`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthParams {
    /// Number of images (one bird each).
    pub n_images: usize,
    /// Side of the square images, pixels (≥ 64).
    pub image_size: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// A folder of photos (e.g. the negatives) to crop backgrounds from; procedural textures if `None`.
    pub backgrounds: Option<PathBuf>,
    /// Output encoding.
    pub format: SynthFormat,
    /// Fraction of images in the test split.
    pub test_fraction: f64,
    /// Probability that an occluder is drawn over the bird.
    pub occlusion_prob: f64,
    /// Bird length (tail to beak tip) as a fraction of the image side, `(min, max)`.
    pub scale_range: (f64, f64),
    /// Largest rotation, degrees (either way).
    pub max_rotation_deg: f64,
}

impl Default for SynthParams {
    fn default() -> Self {
        Self {
            n_images: 200,
            image_size: 256,
            seed: 0,
            backgrounds: None,
            format: SynthFormat::Png,
            test_fraction: 0.5,
            occlusion_prob: 0.25,
            scale_range: (0.5, 0.85),
            max_rotation_deg: 20.0,
        }
    }
}

impl SynthParams {
    fn check(&self) -> Result<(), DatasetError> {
        let bad = |m: String| Err(DatasetError::Param(m));
        if self.n_images == 0 {
            return bad("n_images must be > 0".into());
        }
        if !(64..=4096).contains(&self.image_size) {
            return bad(format!("image_size {} must be in 64..=4096", self.image_size));
        }
        if !(0.0..=1.0).contains(&self.test_fraction) || !(0.0..=1.0).contains(&self.occlusion_prob) {
            return bad("test_fraction and occlusion_prob must be in [0, 1]".into());
        }
        let (lo, hi) = self.scale_range;
        if !(lo > 0.1 && lo <= hi && hi <= 1.2) {
            return bad(format!("scale_range {:?} must satisfy 0.1 < min ≤ max ≤ 1.2", self.scale_range));
        }
        if !(0.0..=90.0).contains(&self.max_rotation_deg) {
            return bad("max_rotation_deg must be in [0, 90]".into());
        }
        if let SynthFormat::Jpeg { quality } = self.format {
            if !(1..=100).contains(&quality) {
                return bad(format!("JPEG quality {quality} must be in 1..=100"));
            }
        }
        Ok(())
    }
}

/// What [`generate_synthetic_cub`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    /// The data set as written (image sizes filled in); reading the folder back with
    /// [`crate::read_cub`] gives the same objects.
    pub dataset: Dataset,
    /// Per part, the number of images where it is visible.
    pub visible_counts: Vec<usize>,
}

/// The bird species: names and base colours (body, wing, head, crown, breast).
const SPECIES: [(&str, [[u8; 3]; 5]); 4] = [
    ("001.Synthetic_Cardinal", [[178, 34, 40], [120, 20, 28], [190, 40, 45], [40, 20, 20], [230, 150, 140]]),
    ("002.Synthetic_Bluebird", [[50, 90, 190], [30, 50, 130], [60, 110, 210], [230, 230, 240], [235, 160, 90]]),
    ("003.Synthetic_Goldfinch", [[225, 200, 40], [40, 40, 40], [230, 210, 50], [20, 20, 20], [245, 235, 170]]),
    ("004.Synthetic_Sparrow", [[140, 105, 70], [95, 70, 45], [150, 120, 85], [170, 60, 40], [225, 215, 195]]),
];

/// Keypoints of the 15 CUB parts in the bird's local frame (facing +x, y down, body half-length 1).
/// `None` = the far-side twin, filled per pose.
fn local_keypoint(part: &str) -> [f64; 2] {
    match part {
        "back" => [-0.05, -0.5],
        "beak" => [1.42, -0.5],
        "belly" => [0.1, 0.38],
        "breast" => [0.62, 0.08],
        "crown" => [0.9, -0.76],
        "forehead" => [1.15, -0.66],
        "left eye" | "right eye" => [1.04, -0.55],
        "left leg" | "right leg" => [0.0, 0.88],
        "left wing" | "right wing" => [-0.22, -0.12],
        "nape" => [0.66, -0.72],
        "tail" => [-1.3, -0.12],
        "throat" => [1.02, -0.22],
        _ => [0.0, 0.0],
    }
}

/// Pose of one bird: local → image pixels (tiny-skia's continuous coordinates).
#[derive(Debug, Clone, Copy)]
struct Pose {
    scale: f64,
    angle: f64,
    mirror: bool,
    tx: f64,
    ty: f64,
}

impl Pose {
    fn map(&self, [x, y]: [f64; 2]) -> [f64; 2] {
        let m = if self.mirror { -1.0 } else { 1.0 };
        let (s, c) = self.angle.sin_cos();
        [self.tx + self.scale * (m * x * c - y * s), self.ty + self.scale * (m * x * s + y * c)]
    }

    fn transform(&self) -> Transform {
        let m = if self.mirror { -1.0 } else { 1.0 };
        let (s, c) = self.angle.sin_cos();
        let k = self.scale;
        Transform::from_row(
            (k * m * c) as f32,
            (k * m * s) as f32,
            (-k * s) as f32,
            (k * c) as f32,
            self.tx as f32,
            self.ty as f32,
        )
    }
}

fn jitter(rng: &mut ChaCha8Rng, c: [u8; 3], amount: i32) -> [u8; 3] {
    c.map(|v| (i32::from(v) + rng.random_range(-amount..=amount)).clamp(0, 255) as u8)
}

fn paint(c: [u8; 3]) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color_rgba8(c[0], c[1], c[2], 255);
    p.anti_alias = true;
    p
}

fn oval(cx: f32, cy: f32, rx: f32, ry: f32) -> Option<tiny_skia::Path> {
    PathBuilder::from_oval(Rect::from_xywh(cx - rx, cy - ry, 2.0 * rx, 2.0 * ry)?)
}

fn polygon(points: &[[f32; 2]]) -> Option<tiny_skia::Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(points[0][0], points[0][1]);
    for p in &points[1..] {
        pb.line_to(p[0], p[1]);
    }
    pb.close();
    pb.finish()
}

fn line(a: [f32; 2], b: [f32; 2]) -> Option<tiny_skia::Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(a[0], a[1]);
    pb.line_to(b[0], b[1]);
    pb.finish()
}

/// Draw the bird in local coordinates with `t` onto `pm`.
fn draw_bird(pm: &mut Pixmap, t: Transform, colours: &[[u8; 3]; 5], rng: &mut ChaCha8Rng) {
    let [body, wing, head, crown, breast] = *colours;
    let fill = |pm: &mut Pixmap, path: Option<tiny_skia::Path>, c: [u8; 3]| {
        if let Some(p) = path {
            pm.fill_path(&p, &paint(c), FillRule::Winding, t, None);
        }
    };
    let stroke = |pm: &mut Pixmap, path: Option<tiny_skia::Path>, c: [u8; 3], w: f32| {
        if let Some(p) = path {
            let s = Stroke { width: w, line_cap: tiny_skia::LineCap::Round, ..Stroke::default() };
            pm.stroke_path(&p, &paint(c), &s, t, None);
        }
    };
    let dark = [35, 30, 28];
    // far leg, tail, near leg
    stroke(pm, line([0.05, 0.45], [0.0, 0.98]), dark, 0.06);
    stroke(pm, line([0.0, 0.98], [0.14, 1.0]), dark, 0.05);
    let tail = [[-0.82, -0.2], [-1.58, -0.46], [-1.66, 0.06], [-0.82, 0.14]];
    fill(pm, polygon(&tail), wing);
    let stripe = jitter(rng, [235, 235, 225], 10);
    stroke(pm, line([-1.25, -0.31], [-1.3, 0.09]), stripe, 0.05);
    stroke(pm, line([-1.48, -0.39], [-1.53, 0.07]), stripe, 0.05);
    fill(pm, oval(0.0, 0.0, 0.95, 0.55), body);
    fill(pm, oval(0.15, 0.28, 0.6, 0.26), breast.map(|v| v.saturating_add(15)));
    fill(pm, oval(0.62, 0.08, 0.3, 0.3), breast);
    // wing: a rotated ellipse with two light bars
    let wing_t = t.pre_concat(Transform::from_row(0.978, -0.208, 0.208, 0.978, -0.22, -0.12));
    if let Some(p) = oval(0.0, 0.0, 0.62, 0.27) {
        pm.fill_path(&p, &paint(wing), FillRule::Winding, wing_t, None);
    }
    for x in [-0.15f32, 0.15] {
        if let Some(p) = line([x, -0.2], [x - 0.08, 0.2]) {
            let s = Stroke { width: 0.05, ..Stroke::default() };
            pm.stroke_path(&p, &paint(stripe), &s, wing_t, None);
        }
    }
    stroke(pm, line([0.3, 0.45], [0.33, 0.98]), dark, 0.06);
    stroke(pm, line([0.33, 0.98], [0.47, 1.0]), dark, 0.05);
    // head, crown, beak, eye
    fill(pm, PathBuilder::from_circle(0.95, -0.5, 0.33), head);
    fill(pm, oval(0.9, -0.76, 0.2, 0.08), crown);
    fill(pm, polygon(&[[1.2, -0.59], [1.2, -0.41], [1.64, -0.5]]), jitter(rng, [240, 175, 30], 12));
    fill(pm, PathBuilder::from_circle(1.04, -0.55, 0.085), [245, 245, 245]);
    fill(pm, PathBuilder::from_circle(1.04, -0.55, 0.05), [10, 10, 10]);
}

/// Background pixels (`size × size` RGB): a random crop of a photo, or a procedural texture.
fn background(rng: &mut ChaCha8Rng, size: u32, photos: &[PathBuf]) -> Result<Vec<u8>, DatasetError> {
    if !photos.is_empty() {
        let path = &photos[rng.random_range(0..photos.len())];
        let img = image::open(path).map_err(|e| DatasetError::Image { path: path.clone(), message: e.to_string() })?;
        let img = img.to_rgb8();
        let (w, h) = img.dimensions();
        let side_max = w.min(h);
        let side = ((f64::from(side_max) * rng.random_range(0.5..=1.0)) as u32).max(1);
        let x = rng.random_range(0..=w - side);
        let y = rng.random_range(0..=h - side);
        let crop = image::imageops::crop_imm(&img, x, y, side, side).to_image();
        let resized = image::imageops::resize(&crop, size, size, image::imageops::FilterType::Triangle);
        return Ok(resized.into_raw());
    }
    let c0: [f64; 3] = std::array::from_fn(|_| rng.random_range(40.0..220.0));
    let c1: [f64; 3] = std::array::from_fn(|_| rng.random_range(40.0..220.0));
    let waves: Vec<[f64; 5]> = (0..4)
        .map(|_| {
            let f = rng.random_range(0.01..0.08);
            let a = rng.random_range(0.0..std::f64::consts::TAU);
            [
                f * a.cos(),
                f * a.sin(),
                rng.random_range(0.0..6.3),
                rng.random_range(8.0..28.0),
                rng.random_range(0.0..3.0),
            ]
        })
        .collect();
    let n = size as usize;
    let mut px = vec![0u8; n * n * 3];
    for y in 0..n {
        let tv = y as f64 / n as f64;
        for x in 0..n {
            let mut v = [0.0; 3];
            for (k, vk) in v.iter_mut().enumerate() {
                *vk = c0[k] * (1.0 - tv) + c1[k] * tv;
            }
            for w in &waves {
                let s = (w[0] * x as f64 + w[1] * y as f64 + w[2]).sin() * w[3];
                let ch = w[4] as usize;
                for (k, vk) in v.iter_mut().enumerate() {
                    *vk += if k == ch { s } else { 0.4 * s };
                }
            }
            let i = (y * n + x) * 3;
            for k in 0..3 {
                px[i + k] = (v[k] + rng.random_range(-6.0..6.0)).clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(px)
}

/// Photos (`.jpg`, `.jpeg`, `.png`) of a folder, sorted by name.
fn list_photos(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DatasetError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(DatasetError::invalid(dir, "no .jpg/.jpeg/.png files to take backgrounds from"));
    }
    Ok(out)
}

/// A random occluder over the bird: a rotated bar ("branch") or a disc ("leaf").
enum Occluder {
    Bar { centre: [f64; 2], half: [f64; 2], angle: f64 },
    Disc { centre: [f64; 2], radius: f64 },
}

impl Occluder {
    fn contains(&self, [x, y]: [f64; 2]) -> bool {
        match *self {
            Occluder::Bar { centre, half, angle } => {
                let (s, c) = angle.sin_cos();
                let (dx, dy) = (x - centre[0], y - centre[1]);
                let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
                u.abs() <= half[0] && v.abs() <= half[1]
            }
            Occluder::Disc { centre, radius } => (x - centre[0]).hypot(y - centre[1]) <= radius,
        }
    }

    fn draw(&self, pm: &mut Pixmap, colour: [u8; 3]) {
        let (path, t) = match *self {
            Occluder::Bar { centre, half, angle } => (
                Rect::from_xywh(-half[0] as f32, -half[1] as f32, 2.0 * half[0] as f32, 2.0 * half[1] as f32)
                    .map(PathBuilder::from_rect),
                Transform::from_rotate(angle.to_degrees() as f32).post_translate(centre[0] as f32, centre[1] as f32),
            ),
            Occluder::Disc { centre, radius } => {
                (PathBuilder::from_circle(centre[0] as f32, centre[1] as f32, radius as f32), Transform::identity())
            }
        };
        if let Some(p) = path {
            pm.fill_path(&p, &paint(colour), FillRule::Winding, t, None);
        }
    }
}

/// One rendered image: RGB pixels, object box (1-based, CUB convention) and part truth.
struct Rendered {
    rgb: Vec<u8>,
    bbox: [f64; 4],
    parts: Vec<PartTruth>,
}

fn render_one(
    params: &SynthParams,
    rng: &mut ChaCha8Rng,
    species: usize,
    photos: &[PathBuf],
) -> Result<Rendered, DatasetError> {
    let size = params.image_size;
    let side = f64::from(size);
    let bg = background(rng, size, photos)?;
    let mut scene = Pixmap::new(size, size).ok_or_else(|| DatasetError::Param("cannot allocate image".into()))?;
    for (px, rgb) in scene.data_mut().chunks_exact_mut(4).zip(bg.chunks_exact(3)) {
        px.copy_from_slice(&[rgb[0], rgb[1], rgb[2], 255]);
    }
    // pose: the bird spans local x in [-1.66, 1.64] (3.3 units) and y in [-0.9, 1.0]
    let length = rng.random_range(params.scale_range.0..=params.scale_range.1) * side;
    let scale = length / 3.3;
    let angle = rng.random_range(-params.max_rotation_deg..=params.max_rotation_deg).to_radians();
    let mirror = rng.random_bool(0.5);
    let margin = 0.42 * length;
    let (lo, hi) = (margin.min(side / 2.0), (side - margin).max(side / 2.0));
    let pose = Pose { scale, angle, mirror, tx: rng.random_range(lo..=hi), ty: rng.random_range(lo..=hi) };
    let colours = SPECIES[species].1.map(|c| jitter(rng, c, 18));
    let mut bird = Pixmap::new(size, size).ok_or_else(|| DatasetError::Param("cannot allocate image".into()))?;
    draw_bird(&mut bird, pose.transform(), &colours, rng);

    // tight box from the rendered coverage (alpha ≥ 64), in CUB's 1-based pixel convention
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0u32, 0u32);
    for (i, px) in bird.data().chunks_exact(4).enumerate() {
        if px[3] >= 64 {
            let (x, y) = (i as u32 % size, i as u32 / size);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 || y0 > y1 {
        return Err(DatasetError::Param("the bird fell outside the image (scale_range too large?)".into()));
    }
    scene.draw_pixmap(0, 0, bird.as_ref(), &PixmapPaint::default(), Transform::identity(), None);

    let occluder = if rng.random_bool(params.occlusion_prob) {
        let c = [
            f64::from(x0 + x1) / 2.0 + rng.random_range(-0.3..0.3) * f64::from(x1 - x0),
            f64::from(y0 + y1) / 2.0 + rng.random_range(-0.3..0.3) * f64::from(y1 - y0),
        ];
        let o = if rng.random_bool(0.5) {
            Occluder::Bar {
                centre: c,
                half: [0.6 * side, rng.random_range(0.03..0.07) * side],
                angle: rng.random_range(0.0..std::f64::consts::PI),
            }
        } else {
            Occluder::Disc { centre: c, radius: rng.random_range(0.06..0.12) * side }
        };
        o.draw(&mut scene, jitter(rng, [70, 90, 50], 30));
        Some(o)
    } else {
        None
    };

    // near side: facing +x (not mirrored) shows the bird's right side
    let near = if mirror { "left" } else { "right" };
    let parts = CUB_PARTS
        .iter()
        .map(|&name| {
            let far_twin = ["eye", "wing"].iter().any(|p| name.ends_with(p)) && !name.starts_with(near);
            let local = match name {
                "left leg" | "right leg" if name.starts_with(near) => [0.33, 0.88],
                _ => local_keypoint(name),
            };
            let p = pose.map(local);
            let inside = p[0] >= 0.0 && p[1] >= 0.0 && p[0] < side && p[1] < side;
            let hidden = occluder.as_ref().is_some_and(|o| o.contains(p));
            if far_twin || !inside || hidden {
                PartTruth::absent()
            } else {
                // tiny-skia's pixel i spans [i, i+1); CUB's 1-based pixel i is centred at i
                PartTruth::present(vec![PartInstance::point(p[0] + 0.5, p[1] + 0.5)])
            }
        })
        .collect();
    let rgb = scene.data().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    let bbox = [f64::from(x0) + 1.0, f64::from(y0) + 1.0, f64::from(x1) + 1.0, f64::from(y1) + 1.0];
    Ok(Rendered { rgb, bbox, parts })
}

fn encode(rgb: Vec<u8>, size: u32, format: SynthFormat, path: &Path) -> Result<Vec<u8>, DatasetError> {
    let img = image::RgbImage::from_raw(size, size, rgb).ok_or_else(|| DatasetError::Image {
        path: path.to_path_buf(),
        message: "pixel buffer has the wrong size".into(),
    })?;
    let mut out = Vec::new();
    let res = match format {
        SynthFormat::Png => img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png),
        SynthFormat::Jpeg { quality } => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(&img)
        }
    };
    res.map_err(|e| DatasetError::Image { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(out)
}

/// Generate `params.n_images` images and their CUB annotations into `out_dir` (created; must
/// not exist or be empty). Everything is written into a temporary sibling folder that is
/// renamed at the end, so no partial data set is left behind. Deterministic in `params`.
pub fn generate_synthetic_cub(out_dir: &Path, params: &SynthParams) -> Result<SynthSummary, DatasetError> {
    params.check()?;
    if out_dir.exists() {
        let mut entries = std::fs::read_dir(out_dir).map_err(|e| DatasetError::io(out_dir, e))?;
        if entries.next().is_some() {
            return Err(DatasetError::invalid(out_dir, "output folder exists and is not empty"));
        }
    }
    let photos = match &params.backgrounds {
        Some(dir) => list_photos(dir)?,
        None => Vec::new(),
    };
    let parent = out_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| DatasetError::io(parent, e))?;
    let name = out_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "synthetic".into());
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| DatasetError::io(&tmp, e))?;
    }
    let result = generate_into(&tmp, out_dir, params, &photos);
    match result {
        Ok(summary) => {
            if out_dir.exists() {
                std::fs::remove_dir(out_dir).map_err(|e| DatasetError::io(out_dir, e))?;
            }
            std::fs::rename(&tmp, out_dir).map_err(|e| DatasetError::io(out_dir, e))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn generate_into(
    tmp: &Path,
    out_dir: &Path,
    params: &SynthParams,
    photos: &[PathBuf],
) -> Result<SynthSummary, DatasetError> {
    let ext = match params.format {
        SynthFormat::Png => "png",
        SynthFormat::Jpeg { .. } => "jpg",
    };
    let mut images = Vec::with_capacity(params.n_images);
    let mut objects = Vec::with_capacity(params.n_images);
    let mut visible_counts = vec![0usize; CUB_PARTS.len()];
    for i in 0..params.n_images {
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        rng.set_stream(i as u64 + 1);
        let species = rng.random_range(0..SPECIES.len());
        let split = if rng.random_bool(params.test_fraction) { Split::Test } else { Split::Train };
        let r = render_one(params, &mut rng, species, photos)?;
        let class = SPECIES[species].0;
        let rel = PathBuf::from("images").join(class).join(format!("synth_{:05}.{ext}", i + 1));
        let full = tmp.join(&rel);
        let bytes = encode(r.rgb, params.image_size, params.format, &full)?;
        write_atomic(&full, &bytes)?;
        for (count, part) in visible_counts.iter_mut().zip(&r.parts) {
            *count += usize::from(part.visible);
        }
        images.push(ImageRecord {
            id: (i + 1).to_string(),
            path: rel,
            size: Some((params.image_size, params.image_size)),
            class: Some(class.to_string()),
            split: Some(split),
        });
        objects.push(ObjectRecord { id: (i + 1).to_string(), image: i, bbox: r.bbox, parts: r.parts });
        if (i + 1) % 100 == 0 || i + 1 == params.n_images {
            tracing::info!(done = i + 1, total = params.n_images, "synthetic images");
        }
    }
    let dataset = Dataset {
        name: "synthetic-cub".into(),
        root: out_dir.to_path_buf(),
        part_names: CUB_PARTS.iter().map(|s| s.to_string()).collect(),
        images,
        objects,
    };
    write_cub(tmp, &dataset)?;
    let json = serde_json::to_vec_pretty(params).map_err(|e| DatasetError::invalid(tmp, e.to_string()))?;
    write_atomic(&tmp.join("synth_params.json"), &json)?;
    Ok(SynthSummary { dataset, visible_counts })
}
