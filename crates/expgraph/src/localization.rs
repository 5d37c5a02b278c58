//! Few-shot part localization over a whole image set (spec §4.1), shared by `expgraph localize`
//! and the pipeline: which units vote in which views, fitting a part model on the annotated
//! images, and predicting on every image, both views tried where the cache has them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use expgraph_cache::{DiskLayer, FeatureCache, LayerMaps, View};
use expgraph_geometry::PixelPoint;
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use expgraph_learn::{infer, infer_in_views};
use expgraph_localize::{
    filter_argmaxes, FewShotAnnotations, ImageUnits, LocalizeError, LocalizeValidParams, PartModel, PartPredictions,
    Prediction, PredictionFile, PriorMean, UnitLayout,
};
use rayon::prelude::*;

use crate::pipeline::PipelineError;

/// The units that vote (graph nodes or raw filters) on a set of images: per image, the view
/// part templates are fitted on and the views a test image is tried in.
///
/// Activations are held once, as `f32` map positions (borrowed where the caller keeps them);
/// a test image's views are mapped to pixels ([`ImageUnits`]) when it is predicted, not stored
/// for every image (at 2,000 images × 61,440 graph nodes × 2 views that copy was 5.9 GB).
pub struct UnitSet<'a> {
    /// `graph` or `raw` (the prediction file's `method`).
    pub method: &'static str,
    /// The unit layers and the input frame.
    pub layout: UnitLayout,
    /// Per image: the activations templates are fitted on (graph: the view inference chose;
    /// raw filters: the original view).
    pub templates: Cow<'a, [ImageActivations]>,
    /// The views a test image is tried in.
    test_views: TestViews<'a>,
    /// Where the units come from (recorded in the prediction file); set by the caller that
    /// knows the files, e.g. the activations' provenance.
    pub provenance: Option<expgraph_graph::Provenance>,
}

/// Where the views a test image is tried in come from.
enum TestViews<'a> {
    /// Only the template's own view.
    Templates,
    /// The template (original view) and this mirrored view, in the templates' order.
    Mirrored(Vec<ImageActivations>),
    /// Both views inferred separately; template `i` is image `index[i]` there.
    Both { views: Cow<'a, BothViews>, index: Vec<usize> },
}

/// Append each image's layers of `more` (same image order) to `images`; the first call takes
/// `more` as it is (its image ids and view flags included).
fn append_layer(images: &mut Option<Vec<ImageActivations>>, more: Vec<ImageActivations>) {
    match images {
        None => *images = Some(more),
        Some(images) => {
            for (image, mut one) in images.iter_mut().zip(more) {
                image.layers.append(&mut one.layers);
            }
        }
    }
}

/// Inference of every cached image in both views: the view inference chose
/// ([`expgraph_learn::infer`]) and the other one ([`expgraph_learn::infer_in_views`]).
/// Localization tries both on a test image; the reference's stability protocol takes each
/// node's better one. Held as chosen + opposite (not as original + mirrored next to a third copy
/// for the chosen view): at 2,000 images × 61,440 nodes each copy is 1.5 GB.
#[derive(Debug, Clone)]
pub struct BothViews {
    /// Every image in the view inference chose (the activations `expgraph infer` writes).
    pub chosen: Vec<ImageActivations>,
    /// Every image in the other view.
    pub opposite: Vec<ImageActivations>,
}

impl BothViews {
    /// Infer every image of `cache` in both views (the cache must hold mirrored views).
    pub fn infer(graph: &ExplanatoryGraph, cache: &FeatureCache) -> Result<Self, PipelineError> {
        require_mirror(cache)?;
        let chosen = infer(graph, cache, None)?;
        let negated: Vec<bool> = chosen.iter().map(|a| !a.flipped).collect();
        let opposite = infer_in_views(graph, cache, &negated)?;
        Ok(Self { chosen, opposite })
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

    /// Image `i` as is.
    pub fn original(&self, i: usize) -> &ImageActivations {
        if self.chosen[i].flipped {
            &self.opposite[i]
        } else {
            &self.chosen[i]
        }
    }

    /// Image `i` mirrored.
    pub fn mirrored(&self, i: usize) -> &ImageActivations {
        if self.chosen[i].flipped {
            &self.chosen[i]
        } else {
            &self.opposite[i]
        }
    }
}

fn require_mirror(cache: &FeatureCache) -> Result<(), PipelineError> {
    if cache.manifest().views.contains(&View::Flipped) {
        Ok(())
    } else {
        Err(PipelineError::Input("both views: the feature cache has no mirrored view".into()))
    }
}

impl<'a> UnitSet<'a> {
    /// Graph nodes. `activations` (from inference) give the templates; with `both_views`, every
    /// image is also inferred as is and mirrored from that cache (matched by image id) and both
    /// are tried at test time, else only `activations` are.
    pub fn graph(
        graph: &ExplanatoryGraph,
        activations: Vec<ImageActivations>,
        both_views: Option<&FeatureCache>,
    ) -> Result<Self, PipelineError> {
        let views = both_views.map(|cache| BothViews::infer(graph, cache)).transpose()?;
        Self::graph_with_views(graph, Cow::Owned(activations), views.map(Cow::Owned))
    }

    /// [`UnitSet::graph`] with both-view inference already done (`views`, see [`BothViews`]).
    pub fn graph_with_views(
        graph: &ExplanatoryGraph,
        activations: Cow<'a, [ImageActivations]>,
        views: Option<Cow<'a, BothViews>>,
    ) -> Result<Self, PipelineError> {
        let layout = UnitLayout::for_graph(graph);
        let test_views = match views {
            None => TestViews::Templates,
            Some(views) => {
                let by_id: HashMap<&str, usize> =
                    views.chosen.iter().enumerate().map(|(i, a)| (a.image_id.as_str(), i)).collect();
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
                TestViews::Both { views, index }
            }
        };
        let units = Self { method: "graph", layout, templates: activations, test_views, provenance: None };
        units.check_views()?;
        Ok(units)
    }

    /// Raw filters: each filter's argmax cell in layers `layers` of the cache (all when empty);
    /// with `both_views`, test images are also tried mirrored. The cache is read one layer at a
    /// time (one layer's maps are mapped into memory at once).
    pub fn raw(cache: &FeatureCache, layers: &[String], both_views: bool) -> Result<Self, PipelineError> {
        let names: Vec<String> =
            if layers.is_empty() { cache.layers().iter().map(|l| l.name.clone()).collect() } else { layers.to_vec() };
        if both_views {
            require_mirror(cache)?;
        }
        let ids: Vec<String> = cache.images().iter().map(|i| i.id.clone()).collect();
        let (mut original, mut mirrored) = (None, None);
        let mut infos = Vec::new();
        for name in &names {
            let maps: DiskLayer = cache.layer(name)?;
            infos.push(maps.info().clone());
            let refs: [&dyn LayerMaps; 1] = [&maps];
            append_layer(&mut original, filter_argmaxes(&refs, &ids, View::Original)?);
            if both_views {
                append_layer(&mut mirrored, filter_argmaxes(&refs, &ids, View::Flipped)?);
            }
        }
        let original = original.ok_or_else(|| PipelineError::Input("raw filters: no layer to read".into()))?;
        let layout = UnitLayout::for_filters(cache.manifest().input_size, &infos);
        let units = Self {
            method: "raw",
            layout,
            templates: Cow::Owned(original),
            test_views: mirrored.map_or(TestViews::Templates, TestViews::Mirrored),
            provenance: Some(expgraph_graph::Provenance::of_cache(cache)),
        };
        units.check_views()?;
        Ok(units)
    }

    /// The views image `i` is tried in at test time, in pixels (`[original]` or
    /// `[original, mirrored]`).
    pub fn test_views(&self, i: usize) -> Result<Vec<ImageUnits>, LocalizeError> {
        let template = &self.templates[i];
        match &self.test_views {
            TestViews::Templates => Ok(vec![ImageUnits::from_activations(&self.layout, template)?]),
            TestViews::Mirrored(m) => Ok(vec![
                ImageUnits::from_activations(&self.layout, template)?,
                ImageUnits::from_activations(&self.layout, &m[i])?,
            ]),
            TestViews::Both { views, index } => Ok(vec![
                ImageUnits::from_activations(&self.layout, views.original(index[i]))?,
                ImageUnits::from_activations(&self.layout, views.mirrored(index[i]))?,
            ]),
        }
    }

    /// Every image's test views are checked against the layout once, up front (shape and
    /// finite values, [`ImageUnits::check`]), without converting them.
    fn check_views(&self) -> Result<(), PipelineError> {
        let check = |a: &ImageActivations| ImageUnits::check(&self.layout, a);
        (0..self.templates.len()).into_par_iter().try_for_each(|i| match &self.test_views {
            TestViews::Templates => check(&self.templates[i]),
            TestViews::Mirrored(m) => check(&self.templates[i]).and_then(|()| check(&m[i])),
            TestViews::Both { views, index } => {
                check(&views.chosen[index[i]]).and_then(|()| check(&views.opposite[index[i]]))
            }
        })?;
        Ok(())
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
                let p = model.predict_unit_views(&self.test_views(i)?, k < vote_maps)?;
                tick();
                Ok(p)
            })
            .collect()
    }
}

/// Fit one model per annotated part of `annotations` and predict it on every image of `units`.
/// `tick(part)` is called once per predicted image.
pub fn localize_annotated(
    units: &UnitSet<'_>,
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
