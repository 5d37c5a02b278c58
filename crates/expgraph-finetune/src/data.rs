//! The training data: object crops (each with its mirror) against whole negative images, and a
//! seeded held-out split by object.

use std::path::{Path, PathBuf};

use expgraph_backbone::Preprocess;
use expgraph_features::{clip_box, crop_resize, load_rgb, mirror, FeaturesError, ObjectImage};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{FinetuneError, Result};

/// Fewest positives (objects) a training set may have: one to train on, one to hold out.
pub const MIN_POSITIVES: usize = 2;
/// Fewest negatives a training set may have: one to train on, one to hold out.
pub const MIN_NEGATIVES: usize = 2;

/// One network input: a resized object crop (or its mirror) or a resized negative image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The object's id, or the negative's file name; a mirrored view ends in `#mirror`.
    pub id: String,
    /// `true` for an object view, `false` for a negative.
    pub label: bool,
    /// Which object or negative the sample comes from (an object and its mirror share it).
    pub group: usize,
    /// `input_size × input_size × 3` RGB bytes.
    pub pixels: Vec<u8>,
}

/// Object crops and negatives, decoded and resized once.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    samples: Vec<Sample>,
    positives: usize,
    negatives: usize,
    input_size: usize,
    preprocess: Preprocess,
    digest: String,
}

/// Which samples train and which measure (indices into [`TrainingSet::samples`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training samples, in set order.
    pub train: Vec<usize>,
    /// Held-out samples, in set order.
    pub held_out: Vec<usize>,
}

fn image_error(e: FeaturesError, fallback: &Path) -> FinetuneError {
    match e {
        FeaturesError::Image { path, what } => FinetuneError::Image { path, what },
        other => FinetuneError::Image { path: fallback.to_path_buf(), what: other.to_string() },
    }
}

/// The `size × size` crop of `bbox` (the whole image when `None`) of the image at `path`.
fn crop(path: &Path, id: &str, bbox: Option<[f64; 4]>, size: usize) -> Result<Vec<u8>> {
    let image = load_rgb(path).map_err(|e| image_error(e, path))?;
    let whole = [0.0, 0.0, f64::from(image.width), f64::from(image.height)];
    let bbox = clip_box(id, bbox.unwrap_or(whole), image.width, image.height).map_err(|e| image_error(e, path))?;
    crop_resize(&image, bbox, size).map_err(|e| image_error(e, path))
}

impl TrainingSet {
    /// Decodes every positive (its object box cropped, or the whole image) and every negative
    /// (the whole image), resized to `input_size`; each positive also gives its mirror.
    /// Errors: fewer than [`MIN_POSITIVES`] positives or [`MIN_NEGATIVES`] negatives, an image
    /// that cannot be read or decoded, a box outside its image (the error names the file).
    pub fn load(
        positives: &[ObjectImage],
        negatives: &[PathBuf],
        input_size: usize,
        preprocess: Preprocess,
    ) -> Result<Self> {
        if positives.is_empty() {
            return Err(FinetuneError::Data("no positive images (object crops) given".into()));
        }
        if positives.len() < MIN_POSITIVES {
            return Err(FinetuneError::Data(format!(
                "{} positive image given; at least {MIN_POSITIVES} are needed (one to train on, one to hold out)",
                positives.len()
            )));
        }
        if negatives.is_empty() {
            return Err(FinetuneError::Data("no negative images given".into()));
        }
        if negatives.len() < MIN_NEGATIVES {
            return Err(FinetuneError::Data(format!(
                "too few negatives: {} given, at least {MIN_NEGATIVES} are needed (one to train on, one to hold out)",
                negatives.len()
            )));
        }
        if input_size == 0 {
            return Err(FinetuneError::Data("input size 0".into()));
        }
        let crops: Vec<Vec<u8>> =
            positives.par_iter().map(|o| crop(&o.path, &o.id, o.bbox, input_size)).collect::<Result<_>>()?;
        let negative_crops: Vec<Vec<u8>> =
            negatives.par_iter().map(|p| crop(p, &p.display().to_string(), None, input_size)).collect::<Result<_>>()?;
        let mut samples = Vec::with_capacity(2 * positives.len() + negatives.len());
        for (group, (object, pixels)) in positives.iter().zip(crops).enumerate() {
            let mirrored = mirror(&pixels, input_size);
            samples.push(Sample { id: object.id.clone(), label: true, group, pixels });
            samples.push(Sample { id: format!("{}#mirror", object.id), label: true, group, pixels: mirrored });
        }
        for (j, (path, pixels)) in negatives.iter().zip(negative_crops).enumerate() {
            let id = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            samples.push(Sample { id, label: false, group: positives.len() + j, pixels });
        }
        let digest = data_digest(positives, negatives, input_size, preprocess, &samples);
        tracing::info!(
            positives = positives.len(),
            negatives = negatives.len(),
            samples = samples.len(),
            input_size,
            "training images loaded"
        );
        Ok(TrainingSet {
            samples,
            positives: positives.len(),
            negatives: negatives.len(),
            input_size,
            preprocess,
            digest,
        })
    }

    /// Every sample: per object its crop then its mirror, objects in the given order, then the
    /// negatives in the given order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Number of objects (each gives two samples).
    pub fn positives(&self) -> usize {
        self.positives
    }

    /// Number of negatives.
    pub fn negatives(&self) -> usize {
        self.negatives
    }

    /// Side of every sample.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// The pixel normalization of the samples.
    pub fn preprocess(&self) -> Preprocess {
        self.preprocess
    }

    /// blake3 (hex) over the sorted object ids, paths and boxes, the sorted negative paths, the
    /// input size, the preprocessing and every sample's pixels: a checkpoint of other data is
    /// refused.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// A seeded held-out split by object: `round(fraction · n)` objects (at least 1, at most
    /// n − 1) with both their views, and likewise of the negatives. Same seed, same split.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<Split> {
        if !(fraction.is_finite() && fraction > 0.0 && fraction < 1.0) {
            return Err(FinetuneError::Data(format!("held-out fraction {fraction} is not in (0, 1)")));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(SPLIT_STREAM);
        let pick = |n: usize, offset: usize, rng: &mut ChaCha8Rng| -> Vec<usize> {
            let k = ((fraction * n as f64).round() as usize).clamp(1, n - 1);
            let mut groups: Vec<usize> = (offset..offset + n).collect();
            groups.shuffle(rng);
            groups.truncate(k);
            groups
        };
        let mut held = pick(self.positives, 0, &mut rng);
        held.extend(pick(self.negatives, self.positives, &mut rng));
        let (held_out, train): (Vec<usize>, Vec<usize>) =
            (0..self.samples.len()).partition(|&i| held.contains(&self.samples[i].group));
        Ok(Split { train, held_out })
    }
}

/// The ChaCha8 stream of the held-out split (the head's initialisation and each epoch's order
/// use others).
pub(crate) const SPLIT_STREAM: u64 = 0;

fn data_digest(
    positives: &[ObjectImage],
    negatives: &[PathBuf],
    input_size: usize,
    preprocess: Preprocess,
    samples: &[Sample],
) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(
        format!("expgraph-finetune data v1\ninput {input_size}\npreprocess {}\n", preprocess.name()).as_bytes(),
    );
    let mut objects: Vec<String> = positives
        .iter()
        .map(|o| format!("P\t{}\t{}\t{:?}\n", o.id, o.path.display(), o.bbox.map(|b| b.map(f64::to_bits))))
        .collect();
    objects.sort();
    let mut negs: Vec<String> = negatives.iter().map(|p| format!("N\t{}\n", p.display())).collect();
    negs.sort();
    for line in objects.iter().chain(&negs) {
        hasher.update(line.as_bytes());
    }
    for s in samples {
        hasher.update(&s.pixels);
    }
    hasher.finalize().to_hex().to_string()
}
