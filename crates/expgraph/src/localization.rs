//! Few-shot part localization over a whole image set (spec §4.1), shared by `expgraph localize`
//! and the pipeline: which units vote in which views, fitting a part model on the annotated
//! images, and predicting on every image, both views tried where the cache has them.

use std::collections::{BTreeMap, HashMap};

use expgraph_cache::{DiskLayer, FeatureCache, LayerMaps, View};
use expgraph_geometry::PixelPoint;
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use expgraph_learn::{infer_views, ViewPolicy};
use expgraph_localize::{
    filter_argmaxes, FewShotAnnotations, ImageUnits, LocalizeError, LocalizeValidParams, PartModel, PartPredictions,
    Prediction, PredictionFile, PriorMean, UnitLayout,
};
use rayon::prelude::*;

use crate::pipeline::PipelineError;

/// The units that vote (graph nodes or raw filters) on a set of images: per image, the view
/// part templates are fitted on and the views a test image is tried in.
pub struct UnitSet {
    /// `graph` or `raw` (the prediction file's `method`).
    pub method: &'static str,
    /// The unit layers and the input frame.
    pub layout: UnitLayout,
    /// Per image: the activations templates are fitted on (graph: the view inference chose;
    /// raw filters: the original view).
    pub templates: Vec<ImageActivations>,
    /// Per image: the views to try at test time, in pixels (`[original]` or
    /// `[original, mirrored]`).
    pub views: Vec<Vec<ImageUnits>>,
    /// Where the units come from (recorded in the prediction file); set by the caller that
    /// knows the files, e.g. the activations' provenance.
    pub provenance: Option<expgraph_graph::Provenance>,
}

fn pixel_views(
    layout: &UnitLayout,
    original: &[&ImageActivations],
    mirrored: Option<&[&ImageActivations]>,
) -> Result<Vec<Vec<ImageUnits>>, LocalizeError> {
    (0..original.len())
        .map(|i| {
            std::iter::once(original[i])
                .chain(mirrored.map(|m| m[i]))
                .map(|a| ImageUnits::from_activations(layout, a))
                .collect()
        })
        .collect()
}

/// Inference of every cached image in each view: all as is, and all mirrored. Localization
/// tries both on a test image; the reference's stability protocol takes each node's better one.
#[derive(Debug, Clone)]
pub struct BothViews {
    /// Every image inferred as is.
    pub original: Vec<ImageActivations>,
    /// Every image inferred mirrored.
    pub mirrored: Vec<ImageActivations>,
}

impl BothViews {
    /// Infer every image of `cache` in both views (the cache must hold mirrored views).
    pub fn infer(graph: &ExplanatoryGraph, cache: &FeatureCache) -> Result<Self, PipelineError> {
        require_mirror(cache)?;
        Ok(Self {
            original: infer_views(graph, cache, None, ViewPolicy::Original)?,
            mirrored: infer_views(graph, cache, None, ViewPolicy::Mirrored)?,
        })
    }

    /// [`BothViews::infer`] when every graph layer of `cache` holds mirrored views, else `None`.
    pub fn infer_if_mirrored(graph: &ExplanatoryGraph, cache: &FeatureCache) -> Result<Option<Self>, PipelineError> {
        for layer in &graph.layers {
            if !cache.layer(&layer.info.name)?.has_flipped() {
                return Ok(None);
            }
        }
        Self::infer(graph, cache).map(Some)
    }
}

fn require_mirror(cache: &FeatureCache) -> Result<(), PipelineError> {
    if cache.manifest().views.contains(&View::Flipped) {
        Ok(())
    } else {
        Err(PipelineError::Input("both views: the feature cache has no mirrored view".into()))
    }
}

impl UnitSet {
    /// Graph nodes. `activations` (from inference) give the templates; with `both_views`, every
    /// image is also inferred as is and mirrored from that cache (matched by image id) and both
    /// are tried at test time, else only `activations` are.
    pub fn graph(
        graph: &ExplanatoryGraph,
        activations: Vec<ImageActivations>,
        both_views: Option<&FeatureCache>,
    ) -> Result<Self, PipelineError> {
        let views = both_views.map(|cache| BothViews::infer(graph, cache)).transpose()?;
        Self::graph_with_views(graph, activations, views.as_ref())
    }

    /// [`UnitSet::graph`] with both-view inference already done (`views`, see [`BothViews`]).
    pub fn graph_with_views(
        graph: &ExplanatoryGraph,
        activations: Vec<ImageActivations>,
        views: Option<&BothViews>,
    ) -> Result<Self, PipelineError> {
        let layout = UnitLayout::for_graph(graph);
        let views = match views {
            None => pixel_views(&layout, &activations.iter().collect::<Vec<_>>(), None)?,
            Some(BothViews { original, mirrored }) => {
                let by_id: HashMap<&str, usize> =
                    original.iter().enumerate().map(|(i, a)| (a.image_id.as_str(), i)).collect();
                let index = activations
                    .iter()
                    .map(|a| {
                        by_id.get(a.image_id.as_str()).copied().ok_or_else(|| {
                            PipelineError::Input(format!(
                                "image {} of the activations is not in the feature cache",
                                a.image_id
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                fn pick<'a>(all: &'a [ImageActivations], index: &[usize]) -> Vec<&'a ImageActivations> {
                    index.iter().map(|&i| &all[i]).collect()
                }
                pixel_views(&layout, &pick(original, &index), Some(&pick(mirrored, &index)))?
            }
        };
        Ok(Self { method: "graph", layout, templates: activations, views, provenance: None })
    }

    /// Raw filters: each filter's argmax cell in layers `layers` of the cache (all when empty);
    /// with `both_views`, test images are also tried mirrored.
    pub fn raw(cache: &FeatureCache, layers: &[String], both_views: bool) -> Result<Self, PipelineError> {
        let names: Vec<String> =
            if layers.is_empty() { cache.layers().iter().map(|l| l.name.clone()).collect() } else { layers.to_vec() };
        let maps: Vec<DiskLayer> = names.iter().map(|n| cache.layer(n)).collect::<Result<_, _>>()?;
        let refs: Vec<&dyn LayerMaps> = maps.iter().map(|m| m as &dyn LayerMaps).collect();
        let ids: Vec<String> = cache.images().iter().map(|i| i.id.clone()).collect();
        let infos: Vec<_> = maps.iter().map(|l| l.info().clone()).collect();
        let layout = UnitLayout::for_filters(cache.manifest().input_size, &infos);
        let original = filter_argmaxes(&refs, &ids, View::Original)?;
        let mirrored = if both_views {
            require_mirror(cache)?;
            Some(filter_argmaxes(&refs, &ids, View::Flipped)?)
        } else {
            None
        };
        let views = pixel_views(
            &layout,
            &original.iter().collect::<Vec<_>>(),
            mirrored.as_ref().map(|m| m.iter().collect::<Vec<_>>()).as_deref(),
        )?;
        Ok(Self {
            method: "raw",
            layout,
            templates: original,
            views,
            provenance: Some(expgraph_graph::Provenance::of_cache(cache)),
        })
    }

    /// Index of the image `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.templates.iter().position(|a| a.image_id == id)
    }

    /// Fit a part model on annotated images `(index, part point)`.
    pub fn fit(&self, params: &LocalizeValidParams, shots: &[(usize, PixelPoint)]) -> Result<PartModel, PipelineError> {
        let annotated: Vec<(&ImageActivations, PixelPoint)> =
            shots.iter().map(|&(i, p)| (&self.templates[i], p)).collect();
        Ok(params.fit_units(&self.layout, &annotated)?)
    }

    /// Predict the part on images `objects` (in parallel, returned in order: the same for any
    /// thread count); the first `vote_maps` keep their vote map. `tick` is called once per image.
    pub fn predict(
        &self,
        model: &PartModel,
        objects: &[usize],
        vote_maps: usize,
        tick: &(dyn Fn() + Sync),
    ) -> Result<Vec<Prediction>, PipelineError> {
        objects
            .par_iter()
            .enumerate()
            .map(|(k, &i)| {
                let p = model.predict_unit_views(&self.views[i], k < vote_maps)?;
                tick();
                Ok(p)
            })
            .collect()
    }
}

/// Fit one model per annotated part of `annotations` and predict it on every image of `units`.
/// `tick(part)` is called once per predicted image.
pub fn localize_annotated(
    units: &UnitSet,
    annotations: &FewShotAnnotations,
    params: &LocalizeValidParams,
    tick: &(dyn Fn(&str) + Sync),
) -> Result<(PredictionFile, BTreeMap<String, PartModel>), PipelineError> {
    let mut parts = BTreeMap::new();
    let mut models = BTreeMap::new();
    let all: Vec<usize> = (0..units.templates.len()).collect();
    for (part, examples) in &annotations.parts {
        let shots = examples
            .iter()
            .map(|e| {
                let i = units.index_of(&e.image_id).ok_or_else(|| {
                    PipelineError::Input(format!("part {part}: annotated image {} has no activations", e.image_id))
                })?;
                Ok((i, e.point))
            })
            .collect::<Result<Vec<_>, PipelineError>>()?;
        let context = |e: PipelineError| PipelineError::Input(format!("part {part}: {e}"));
        let model = units.fit(params, &shots).map_err(context)?;
        let predictions = units.predict(&model, &all, 0, &|| tick(part)).map_err(context)?;
        let fallbacks = predictions.iter().filter(|p| p.fallback).count();
        tracing::info!(part = %part, images = predictions.len(), fallbacks, "localized");
        let prior_mean = model.prior_mean()?.predict();
        parts.insert(part.clone(), PartPredictions { prior_mean, predictions });
        models.insert(part.clone(), model);
    }
    let file = PredictionFile {
        format_version: PredictionFile::FORMAT_VERSION,
        method: units.method.into(),
        input_size: units.layout.input_size,
        parts,
        provenance: units.provenance.clone(),
    };
    Ok((file, models))
}

/// The prior-mean baseline for every annotated part: the mean annotated point, no per-image
/// prediction.
pub fn prior_predictions(annotations: &FewShotAnnotations, input_size: usize) -> Result<PredictionFile, PipelineError> {
    let mut parts = BTreeMap::new();
    for (part, examples) in &annotations.parts {
        let points: Vec<PixelPoint> = examples.iter().map(|e| e.point).collect();
        let prior = PriorMean::fit(&points).map_err(|e| PipelineError::Input(format!("part {part}: {e}")))?;
        parts.insert(part.clone(), PartPredictions { prior_mean: prior.predict(), predictions: vec![] });
    }
    Ok(PredictionFile {
        format_version: PredictionFile::FORMAT_VERSION,
        method: "prior".into(),
        input_size,
        parts,
        provenance: None,
    })
}
