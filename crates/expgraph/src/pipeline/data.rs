//! Stage 0: the data set (generated, or read from a benchmark folder) and the negatives.

use std::path::{Path, PathBuf};

use expgraph_datasets::{
    generate_synthetic_cub, read_cub, read_ilsvrc_animal_part, read_pascal_part, CubOptions, Dataset, IlsvrcOptions,
    PascalPartOptions, SynthParams,
};

use expgraph_features::ObjectImage;

use super::{DataSource, PipelineConfig, PipelineError};

/// Load (or generate) the data set of `config`, limited to `config.max_images` objects spread
/// evenly over the set (deterministic).
pub(super) fn load_dataset(config: &PipelineConfig) -> Result<Dataset, PipelineError> {
    let full = match &config.data {
        DataSource::Synthetic { images, seed } => synthetic_dataset(&config.work_dir, *images, *seed)?,
        DataSource::Cub { dir, sampling } => {
            let options = sampling.as_ref().map_or_else(CubOptions::paper, CubOptions::paper_subset);
            read_cub(dir, &options)?
        }
        DataSource::Pascal { dir, category } => {
            let truth = dir.join(format!("truth_{category}.mat"));
            read_pascal_part(&truth, dir, category, &PascalPartOptions::default())?
        }
        DataSource::Ilsvrc { dir, synset } => {
            read_ilsvrc_animal_part(dir, synset, &dir.join(synset), &IlsvrcOptions::default())?
        }
    };
    if full.objects.is_empty() {
        return Err(PipelineError::Input(format!("data set {} has no objects", full.name)));
    }
    let n = config.max_images.map_or(full.objects.len(), |m| m.min(full.objects.len()));
    let picks: Vec<usize> = (0..n).map(|i| i * full.objects.len() / n).collect();
    full.select_objects(&picks)
        .ok_or_else(|| PipelineError::Input(format!("cannot select {n} objects of {}", full.name)))
}

/// The objects of `dataset` as the extractor takes them: each object's image and crop box.
pub fn extraction_objects(dataset: &Dataset) -> Vec<ObjectImage> {
    dataset
        .objects
        .iter()
        .map(|o| ObjectImage {
            id: o.id.clone(),
            path: dataset.image_path(o),
            bbox: Some(o.crop_box(dataset.images[o.image].size)),
        })
        .collect()
}

/// A synthetic CUB-format set of `images` objects in `work/data/synthetic-n{images}-s{seed}`:
/// generated once, read back afterwards (the embedded default data set).
pub fn synthetic_dataset(work: &Path, images: usize, seed: u64) -> Result<Dataset, PipelineError> {
    synthetic(&work.join(format!("data/synthetic-n{images}-s{seed}")), images, seed)
}

/// `n` generated negatives (whole synthetic images of a seed derived from `seed`, generic
/// scenes), in `work/data/negatives-n{n}-s{seed'}`: the embedded default negatives.
pub fn synthetic_negatives(work: &Path, n: usize, seed: u64) -> Result<Vec<PathBuf>, PipelineError> {
    let seed = seed ^ 0x6e65_6761_7469_7665; // "negative"
    let dir = work.join(format!("data/negatives-n{n}-s{seed}"));
    let set = synthetic(&dir, n, seed)?;
    Ok(set.images.iter().map(|i| set.root.join(&i.path)).collect())
}

/// A synthetic CUB-format set in `dir`: generated once, read back afterwards.
fn synthetic(dir: &Path, images: usize, seed: u64) -> Result<Dataset, PipelineError> {
    if dir.join("images.txt").is_file() {
        return Ok(read_cub(dir, &CubOptions::default())?);
    }
    let params = SynthParams { n_images: images, seed, ..SynthParams::default() };
    Ok(generate_synthetic_cub(dir, &params)?.dataset)
}

/// The negative images of the per-unit normalization (spec §3): the first `limit` images of
/// `config.negatives`, or — the embedded default — whole synthetic images of another seed
/// (generic scenes; the paper's negatives are generic photos too).
pub fn negatives(config: &PipelineConfig) -> Result<Vec<PathBuf>, PipelineError> {
    let mut paths = match &config.negatives {
        Some(dir) => expgraph_features::list_images(dir)?,
        None => synthetic_negatives(&config.work_dir, config.negatives_limit.max(2), config.seed)?,
    };
    paths.truncate(config.negatives_limit);
    if paths.len() < 2 {
        return Err(PipelineError::Input(format!(
            "need at least 2 negative images for the normalization, found {}",
            paths.len()
        )));
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cub_tiny(sampling: Option<PathBuf>) -> PipelineConfig {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/cub-tiny");
        PipelineConfig { data: DataSource::Cub { dir, sampling }, ..PipelineConfig::default() }
    }

    #[test]
    fn cub_reads_the_test_split_or_the_sampling_subset() {
        // cub-tiny: images 1, 3, 4 are in the test split; 4's box is under 2500 px.
        let all = load_dataset(&cub_tiny(None)).unwrap();
        assert_eq!(all.objects.len(), 2);
        let missing = PathBuf::from("/nonexistent/sampling.mat");
        let e = load_dataset(&cub_tiny(Some(missing))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/sampling.mat"), "{e}");
        // The authors' sampling.mat is read: its 2000 indices do not fit cub-tiny's 2 objects.
        let shared = std::env::var_os("EXPGRAPH_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
        let mat = shared.join("data/annotations/cub-sampling.mat");
        if mat.is_file() {
            let e = load_dataset(&cub_tiny(Some(mat))).unwrap_err();
            assert!(e.to_string().contains("outside 1..=2"), "{e}");
        } else {
            eprintln!("skipping the sampling.mat part: {} not found (set EXPGRAPH_SHARED)", mat.display());
        }
        // The record's config says which subset ran.
        let json = serde_json::to_value(&cub_tiny(Some("s.mat".into())).data).unwrap();
        assert_eq!((json["kind"].as_str(), json["sampling"].as_str()), (Some("cub"), Some("s.mat")));
    }
}
