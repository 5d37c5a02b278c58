//! The whole pipeline on one data set: extract (cached) → learn → infer → localize → evaluate →
//! report, with stage timings and a [`BenchRecord`](crate::record::BenchRecord).
//!
//! Every intermediate result is written to `work_dir` in its own stage format (feature cache,
//! graph, activations), so a run can be inspected or resumed stage by stage with the CLI.

mod data;
pub use data::{extraction_objects, negatives, synthetic_dataset, synthetic_negatives};
mod evaluate;
mod report;

use std::path::PathBuf;
use std::time::Instant;

use expgraph_cache::FeatureCache;
use expgraph_features::{
    check_image_files, load_backbone, load_or_compute_norm_stats, BatchSize, ExtractParams, NormStatsParams,
};
use expgraph_io::ProgressSink;
use expgraph_learn::LearnParams;
use serde::Serialize;

use crate::record::{peak_rss_mb, BenchRecord, Host, Timings};

/// Where the objects come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// The embedded default: a synthetic CUB-format part data set generated into the work folder.
    Synthetic {
        /// Number of images (one object each).
        images: usize,
        /// Generator seed.
        seed: u64,
    },
    /// CUB-200-2011 (the folder holding `images.txt`), test split, area ≥ 2500 (spec §5), then
    /// the objects of `sampling` when given (the paper's 2000: `sampling.mat`'s `validObj`).
    Cub {
        /// Data set folder.
        dir: PathBuf,
        /// The reference's `sampling.mat` (`validObj`: 1-based indices among the objects left
        /// after the split and area filters); `None` = the whole test split.
        sampling: Option<PathBuf>,
    },
    /// Pascal-Part: VOC2010 folder with `JPEGImages/` and the authors' `truth_<cat>.mat`.
    Pascal {
        /// Data set folder.
        dir: PathBuf,
        /// bird, cat, cow, dog, horse or sheep.
        category: String,
    },
    /// ILSVRC 2013 DET Animal-Part as laid out by the authors' `detanimalpart`.
    Ilsvrc {
        /// Data set folder.
        dir: PathBuf,
        /// Synset id, e.g. `n01503061`.
        synset: String,
    },
}

/// Which views graph localization tries on a test image (spec §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalizeViews {
    /// As is and mirrored, the better template score winning (the default; what the AOG does).
    #[default]
    Both,
    /// Only the view inference chose (tests the view choice).
    Chosen,
}

/// Settings of a pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineConfig {
    /// Name recorded in the JSON record.
    pub dataset_name: String,
    /// The objects.
    pub data: DataSource,
    /// Backbone weights: a `.safetensors` path or a Hugging Face repo id.
    pub weights: String,
    /// Backbone architecture: `auto` (from the weights' tensor names), `vgg16`, `resnet18` …
    /// `resnet152` (see [`expgraph_features::BACKBONE_CHOICES`]). It picks the layers too
    /// ([`expgraph_features::default_layers`], [`LearnParams::paper_preset`]).
    pub backbone: String,
    /// Preprocessing preset (`caffe`, `torchvision`); `None` = the weight source's default.
    pub preprocess: Option<String>,
    /// Folder of negatives for the normalization; `None` = generated synthetic scenes.
    pub negatives: Option<PathBuf>,
    /// Use at most this many negatives.
    pub negatives_limit: usize,
    /// Use at most this many objects (spread evenly over the data set).
    pub max_images: Option<usize>,
    /// Parts to localize; `None` = every part of the data set.
    pub parts: Option<Vec<String>>,
    /// Learning iterations per layer (paper: 20).
    pub iterations: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Annotated examples per part (paper: 3).
    pub shots: usize,
    /// Independent seeded draws of the annotated examples; the record gives the mean and spread.
    pub draws: usize,
    /// Working folder.
    pub work_dir: PathBuf,
    /// Write the HTML report.
    pub report: bool,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Arithmetic of the backbone: `f32` (default), or `f16` / `bf16` (GPU).
    pub precision: String,
    /// Objects per forward pass of the extraction (`auto`: from the device).
    pub extract_batch: BatchSize,
    /// Views graph localization tries on a test image.
    pub localize_views: LocalizeViews,
    /// Where progress goes (stages `negatives`, `extract`, `learn <layer>`).
    #[serde(skip)]
    pub progress: ProgressSink,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            dataset_name: "synthetic-cub".into(),
            data: DataSource::Synthetic { images: 300, seed: 0 },
            weights: String::new(),
            backbone: "auto".into(),
            preprocess: None,
            negatives: None,
            negatives_limit: 200,
            max_images: None,
            parts: None,
            iterations: 20,
            seed: 0,
            shots: 3,
            draws: 5,
            work_dir: PathBuf::from("expgraph-run"),
            report: true,
            device: "cpu".into(),
            precision: "f32".into(),
            extract_batch: BatchSize::Auto,
            localize_views: LocalizeViews::Both,
            progress: ProgressSink::none(),
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    /// The machine-readable record (its `git_rev` is left `unknown` for the caller to fill).
    pub record: BenchRecord,
    /// The report's `index.html`, when written.
    pub report_index: Option<PathBuf>,
}

/// Errors of a pipeline run: the failing stage's own error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Bad settings or data.
    #[error("{0}")]
    Input(String),
    /// Files of different runs (see [`crate::provenance`]).
    #[error("{0}")]
    Provenance(String),
    /// Reading the data set.
    #[error(transparent)]
    Dataset(#[from] expgraph_datasets::DatasetError),
    /// Loading the backbone (boxed: the error is large).
    #[error(transparent)]
    Backbone(Box<expgraph_backbone::BackboneError>),
    /// Feature extraction.
    #[error(transparent)]
    Features(#[from] expgraph_features::FeaturesError),
    /// The feature cache.
    #[error(transparent)]
    Cache(#[from] expgraph_cache::CacheError),
    /// Learning or inference.
    #[error(transparent)]
    Learn(#[from] expgraph_learn::LearnError),
    /// Graph files.
    #[error(transparent)]
    Graph(#[from] expgraph_graph::GraphError),
    /// Localization.
    #[error(transparent)]
    Localize(#[from] expgraph_localize::LocalizeError),
    /// Metrics.
    #[error(transparent)]
    Eval(#[from] expgraph_eval::EvalError),
    /// The report.
    #[error(transparent)]
    Report(#[from] expgraph_report::ReportError),
}

impl From<expgraph_backbone::BackboneError> for PipelineError {
    fn from(e: expgraph_backbone::BackboneError) -> Self {
        Self::Backbone(Box::new(e))
    }
}

/// The VGG-16 layers of the paper (spec §1.2). The pipeline takes the layers of the backbone it
/// loads from [`expgraph_features::default_layers`] (these for `vgg16`).
pub const PAPER_LAYERS: [&str; 4] = ["conv4_2", "conv4_3", "conv5_2", "conv5_3"];

/// Run the whole pipeline.
pub fn run(config: &PipelineConfig) -> Result<PipelineOutcome, PipelineError> {
    if config.shots == 0 || config.iterations == 0 {
        return Err(PipelineError::Input("shots and iterations must be ≥ 1".into()));
    }
    if config.report {
        report::check(config)?; // refuse a report folder holding user files before any work
    }
    let mut timings = Timings::default();
    std::fs::create_dir_all(&config.work_dir)
        .map_err(|e| PipelineError::Input(format!("creating {}: {e}", config.work_dir.display())))?;

    // Stage 1: data and features.
    let clock = Instant::now();
    let dataset = data::load_dataset(config)?;
    tracing::info!(dataset = %dataset.name, objects = dataset.objects.len(), "data set ready");
    let negatives = data::negatives(config)?;
    let objects = data::extraction_objects(&dataset);
    // Fail before the expensive work on an unreadable image.
    check_image_files(objects.iter().map(|o| o.path.as_path()), "image")?;
    check_image_files(negatives.iter().map(|p| p.as_path()), "negative")?;
    let mut loaded = load_backbone(&config.weights, &config.backbone, config.preprocess.as_deref(), &config.device)?;
    let precision = expgraph_backbone::Precision::from_name(&config.precision)?;
    loaded.model.set_precision(precision)?;
    let (backbone, preprocess) = (loaded.model, loaded.preprocess);
    let layers: Vec<String> = loaded.architecture.default_layers();
    let stats_params = NormStatsParams {
        layers: layers.clone(),
        preprocess,
        input_size: 224,
        batch: 4,
        progress: config.progress.clone(),
    };
    let stats_path = config.work_dir.join("norm-stats.safetensors");
    let stats = load_or_compute_norm_stats(backbone.as_ref(), &stats_params, &negatives, &stats_path)?;
    let cache_dir = config.work_dir.join("cache");
    ExtractParams::new()
        .layers(layers)
        .preprocess(preprocess)
        .batch_size(config.extract_batch)
        .progress(config.progress.clone())
        .overwrite(true)
        .check(backbone.as_ref(), &stats)?
        .run(&objects, &cache_dir)?;
    drop(backbone);
    timings.extract = clock.elapsed().as_secs_f64();

    // Stage 2: learn the graph.
    let clock = Instant::now();
    let cache = FeatureCache::open(&cache_dir)?;
    let learn = LearnParams::paper_preset(cache.manifest()).iterations(config.iterations).seed(config.seed).check()?;
    // Only the graph is kept: the records are dropped here (peak memory).
    let expgraph_learn::LearnOutput { graph, .. } = learn.fit_with(&cache, None, &|p| {
        let steps = |layers: usize, iterations: usize| (layers * p.iterations + iterations) as u64;
        let stage = format!("learn {}", p.layer);
        config.progress.report(&stage, steps(p.layers_done, p.iteration), steps(p.num_layers, 0));
        if p.iteration == p.iterations {
            tracing::info!(layer = %p.layer, "layer learned");
        }
    })?;
    let graph_dir = config.work_dir.join("graph");
    graph.save(&graph_dir)?;
    expgraph_graph::Provenance::of_cache(&cache).save(&graph_dir)?;
    timings.learn = clock.elapsed().as_secs_f64();

    // Stage 3: inference and part localization.
    let clock = Instant::now();
    // Every image inferred in both views, once: localization tries both on a test image, the
    // reference's stability protocol takes each node's better one. The chosen views are the
    // activations (held once).
    let both_views = crate::localization::BothViews::infer_if_mirrored(&graph, &cache)?;
    let alone;
    let activations: &[expgraph_graph::ImageActivations] = match &both_views {
        Some(views) => &views.chosen,
        None => {
            alone = expgraph_learn::infer(&graph, &cache, None)?;
            &alone
        }
    };
    let acts_dir = config.work_dir.join("activations");
    expgraph_graph::save_activations(&acts_dir, &graph, activations)?;
    expgraph_graph::Provenance::of_cache(&cache)
        .with_graph(expgraph_graph::graph_digest(&graph_dir)?)
        .save(&acts_dir)?;
    let localized = evaluate::localize_parts(config, &dataset, &graph, &cache, activations, both_views.as_ref())?;
    timings.localize = clock.elapsed().as_secs_f64();

    // Stage 4: metrics.
    let clock = Instant::now();
    let localization = evaluate::score_localization(&dataset, &localized)?;
    let stability = evaluate::stability(&dataset, &graph, &cache, activations, both_views.as_ref(), Some(&stats))?;
    let views = evaluate::view_choice(&dataset, activations);
    timings.eval = clock.elapsed().as_secs_f64();

    let record = BenchRecord {
        dataset: config.dataset_name.clone(),
        git_rev: "unknown".into(),
        host: Host::detect(),
        config: serde_json::to_value(config).map_err(|e| PipelineError::Input(e.to_string()))?,
        images_learn: activations.len(),
        images_eval: localized.iter().map(|p| p.objects.len()).max().unwrap_or(0),
        timings_s: timings,
        peak_rss_mb: peak_rss_mb(),
        localization,
        stability,
        provenance: expgraph_graph::Provenance::of_cache(&cache).with_graph(expgraph_graph::graph_digest(&graph_dir)?),
        views: Some(views),
    };
    let report_index = if config.report {
        Some(report::write(config, &dataset, &cache, &graph, activations, &localized, &record)?)
    } else {
        None
    };
    Ok(PipelineOutcome { record, report_index })
}
