//! Stage 5: the HTML report of a run (galleries, heat maps, synthesis, localization, metrics).

use std::path::PathBuf;

use expgraph_cache::FeatureCache;
use expgraph_datasets::Dataset;
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use expgraph_report::{
    build_report, CropSource, ImageSet, LocalizationCase, MetricTable, PartPoint, Report, ReportInputs, ReportParams,
    VoteMap,
};

use super::evaluate::PartResult;
use super::{PipelineConfig, PipelineError};
use crate::crops::CacheCrops;
use crate::record::BenchRecord;

/// Objects drawn with their localization overlays.
const OVERLAYS: usize = super::evaluate::VOTE_MAPS;

/// The report folder of a run.
fn report_dir(config: &PipelineConfig) -> PathBuf {
    config.work_dir.join("report")
}

/// Refuses, before any work, a `work_dir/report` that the report may not replace: one that holds
/// files no report wrote, or an earlier report without a manifest or with changed files. The
/// pipeline never deletes such files; the error names the first one.
pub(super) fn check(config: &PipelineConfig) -> Result<(), PipelineError> {
    Report::check_output(&report_dir(config), false).map_err(refused)
}

fn refused(e: expgraph_report::ReportError) -> PipelineError {
    PipelineError::Input(format!(
        "{e}; the pipeline never deletes files that no report wrote: move them away or choose another output folder"
    ))
}

/// Write the report to `work_dir/report` and return its `index.html`.
pub(super) fn write(
    config: &PipelineConfig,
    dataset: &Dataset,
    cache: &FeatureCache,
    graph: &ExplanatoryGraph,
    activations: &[ImageActivations],
    parts: &[PartResult],
    record: &BenchRecord,
) -> Result<PathBuf, PipelineError> {
    let crops = CacheCrops::new(cache.manifest().images.clone(), cache.manifest().input_size);
    let set = ImageSet { activations, crops: &crops };
    let t = &record.timings_s;
    let summary = vec![
        ("data set".to_string(), format!("{} ({} objects)", record.dataset, dataset.objects.len())),
        ("weights".to_string(), config.weights.clone()),
        ("iterations per layer".to_string(), config.iterations.to_string()),
        ("seed".to_string(), config.seed.to_string()),
        (
            "timings".to_string(),
            format!(
                "extract {:.1} s, learn {:.1} s, localize {:.1} s, eval {:.1} s",
                t.extract, t.learn, t.localize, t.eval
            ),
        ),
        ("peak memory".to_string(), format!("{} MiB", record.peak_rss_mb)),
    ];
    let inputs = ReportInputs {
        title: format!("expgraph: {}", record.dataset),
        summary,
        tables: tables(record),
        graph,
        train: Some(set),
        test: None,
        part_distances: record
            .localization
            .methods
            .get("graph")
            .map(|m| m.per_part.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default(),
        localization: overlays(dataset, parts, &crops)?,
    };
    let report = build_report(&inputs, &ReportParams::default())?;
    let written = report.write(&report_dir(config)).map_err(|e| match &e {
        expgraph_report::ReportError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            refused(e)
        }
        _ => PipelineError::Report(e),
    })?;
    Ok(written.index)
}

/// Normalized distance per method and part, and location instability.
fn tables(record: &BenchRecord) -> Vec<MetricTable> {
    let parts = &record.localization.parts;
    let mut header = vec!["method".to_string(), "mean".to_string()];
    header.extend(parts.iter().cloned());
    let rows = record
        .localization
        .methods
        .iter()
        .map(|(name, m)| {
            let mut row = vec![name.clone(), format!("{:.4}", m.mean_normalized_distance)];
            row.extend(parts.iter().map(|p| m.per_part.get(p).map_or("–".into(), |v| format!("{v:.4}"))));
            row
        })
        .collect();
    let s = &record.stability;
    vec![
        MetricTable { title: "Normalized distance (lower is better)".into(), header, rows },
        MetricTable {
            title: "Location instability (lower is better)".into(),
            header: vec!["units".into(), "instability".into()],
            rows: vec![
                vec!["graph nodes".into(), format!("{:.4}", s.graph_nodes)],
                vec!["raw filters".into(), format!("{:.4}", s.raw_filters)],
            ],
        },
    ]
}

/// Predicted (graph) and true points of every part, and the graph's vote map of the first part,
/// on the first objects of the first part.
fn overlays(
    dataset: &Dataset,
    parts: &[PartResult],
    crops: &CacheCrops,
) -> Result<Vec<LocalizationCase>, PipelineError> {
    let Some(first) = parts.first() else { return Ok(Vec::new()) };
    let mut cases = Vec::new();
    for (k, &object) in first.objects.iter().enumerate().take(OVERLAYS) {
        let image =
            crops.crop(object).map_err(|source| expgraph_report::ReportError::Crop { index: object, source })?;
        let mut predicted = Vec::new();
        let mut truth = Vec::new();
        for p in parts {
            if let Some(j) = p.objects.iter().position(|&o| o == object) {
                let g = p.draws[0].predictions["graph"][j];
                predicted.push(PartPoint { name: p.name.clone(), xy: [g.x, g.y] });
                if let Some(t) = p.truth.get(j) {
                    truth.push(PartPoint { name: p.name.clone(), xy: [t.x, t.y] });
                }
            }
        }
        let vote_map =
            first.vote_maps.get(k).map(|m| VoteMap { width: m.size, height: m.size, values: m.values.clone() });
        let id = &dataset.objects[object].id;
        let caption = if first.draws[0].shots.contains(&object) {
            format!("{id} (annotated example of {}; vote map of {})", first.name, first.name)
        } else {
            format!("{id} (vote map of {})", first.name)
        };
        cases.push(LocalizationCase { caption, image, predicted, truth, vote_map });
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::super::{run, PipelineConfig, PipelineError};

    /// Issue 11 item 1: a user file in `out/report` stops the run before any work, and nothing
    /// of the folder is deleted.
    #[test]
    fn a_user_file_in_the_report_folder_stops_the_run_first() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report");
        std::fs::create_dir_all(report.join("sub")).unwrap();
        std::fs::write(report.join("index.html"), "x").unwrap();
        std::fs::write(report.join("notes.txt"), "keep").unwrap();
        let config = PipelineConfig {
            work_dir: dir.path().to_path_buf(),
            weights: "/no/such/weights.safetensors".into(),
            ..PipelineConfig::default()
        };
        let err = run(&config).unwrap_err();
        assert!(matches!(err, PipelineError::Input(_)), "refused before loading anything: {err}");
        let text = err.to_string();
        assert!(text.contains("`index.html`") && text.contains(&report.display().to_string()), "{text}");
        let mut left: Vec<String> = std::fs::read_dir(&report)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["index.html", "notes.txt", "sub"]);
        assert_eq!(std::fs::read_to_string(report.join("notes.txt")).unwrap(), "keep");
    }
}
