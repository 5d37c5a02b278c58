//! The provenance chain checked before files of different runs are combined: a graph must fit
//! the features it runs on, activations must come from that graph and that cache (see
//! `expgraph_graph::Provenance`). Outputs written before provenance was recorded pass with a
//! warning.

use std::path::Path;

use expgraph_cache::FeatureCache;
use expgraph_graph::{graph_digest, FeatureOrigin, Provenance};

use crate::pipeline::PipelineError;

fn mismatch(message: String) -> PipelineError {
    PipelineError::Provenance(message)
}

fn unknown(dir: &Path) {
    tracing::warn!(dir = %dir.display(), "no provenance.json (written by an older version?): not checked");
}

/// Refuse running the graph in `graph_dir` on `cache` when the cache's features come from other
/// weights, preprocessing or normalization than the graph was learned on.
pub fn check_graph_fits_cache(graph_dir: &Path, cache: &FeatureCache) -> Result<(), PipelineError> {
    let Some(Provenance { features: Some(learned), .. }) = Provenance::load(graph_dir)? else {
        unknown(graph_dir);
        return Ok(());
    };
    let here = FeatureOrigin::of(cache);
    if learned != here {
        return Err(mismatch(format!(
            "graph {} was learned on other features than cache {} holds ({}); extract the cache with the \
             graph's weights, preprocessing and negatives",
            graph_dir.display(),
            cache.dir().display(),
            describe(&learned, &here)
        )));
    }
    Ok(())
}

/// Refuse activations in `acts_dir` that were not inferred with the graph in `graph_dir` or not
/// on `cache`.
pub fn check_activations(
    acts_dir: &Path,
    graph_dir: Option<&Path>,
    cache: Option<&FeatureCache>,
) -> Result<(), PipelineError> {
    let Some(acts) = Provenance::load(acts_dir)? else {
        unknown(acts_dir);
        return Ok(());
    };
    if let (Some(graph_dir), Some(recorded)) = (graph_dir, &acts.graph_digest) {
        let digest = graph_digest(graph_dir)?;
        if *recorded != digest {
            return Err(mismatch(format!(
                "activations {} were inferred with another graph than {} (graph digest {} vs {}); run \
                 `expgraph infer --graph {}` again",
                acts_dir.display(),
                graph_dir.display(),
                short(recorded),
                short(&digest),
                graph_dir.display()
            )));
        }
    }
    if let (Some(cache), Some(recorded)) = (cache, &acts.cache_key) {
        let key = &cache.manifest().key;
        if recorded != key {
            return Err(mismatch(format!(
                "activations {} were inferred on another feature cache than {} (cache key {} vs {})",
                acts_dir.display(),
                cache.dir().display(),
                short(recorded),
                short(key)
            )));
        }
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn describe(a: &FeatureOrigin, b: &FeatureOrigin) -> String {
    let mut parts = Vec::new();
    if a.backbone != b.backbone {
        parts.push(format!("backbone {} vs {}", a.backbone, b.backbone));
    }
    if a.weights_digest != b.weights_digest {
        parts.push(format!("weights {} vs {}", short(&a.weights_digest), short(&b.weights_digest)));
    }
    if a.preprocess != b.preprocess {
        parts.push(format!("preprocessing {} vs {}", a.preprocess, b.preprocess));
    }
    if a.norm_stats_digest != b.norm_stats_digest {
        parts.push(format!("normalization {} vs {}", short(&a.norm_stats_digest), short(&b.norm_stats_digest)));
    }
    parts.join(", ")
}
