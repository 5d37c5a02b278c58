//! Writes a demo report from a synthetic graph: `cargo run -p expgraph-report --features testing
//! --example demo_report -- OUT_DIR`.

use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};
use expgraph_report::{build_report, ImageSet, LocalizationCase, PartPoint, ReportInputs, ReportParams, VoteMap};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "target/demo-report".into());
    let graph = synthetic_graph(16, 4, 1)?;
    let train = synthetic_activations(&graph, 20, 2);
    let crops = synthetic_crops(20, 224, 3);
    let case = LocalizationCase {
        caption: "img000: head".into(),
        image: crops[0].clone(),
        predicted: vec![PartPoint { name: "head".into(), xy: [60.0, 70.0] }],
        truth: vec![PartPoint { name: "head".into(), xy: [72.0, 64.0] }],
        vote_map: Some(VoteMap {
            width: 14,
            height: 14,
            values: (0..196).map(|i| ((i % 14) * (i / 14)) as f32).collect(),
        }),
    };
    let inputs = ReportInputs {
        title: "Synthetic demo".into(),
        summary: vec![("learning time".into(), "0.0 s (synthetic)".into())],
        tables: vec![],
        graph: &graph,
        train: Some(ImageSet { activations: &train, crops: &crops }),
        test: None,
        part_distances: vec![("head".into(), 0.08), ("tail".into(), 0.14), ("wing".into(), 0.11)],
        localization: vec![case],
    };
    let written = build_report(&inputs, &ReportParams::default())?.write(std::path::Path::new(&out))?;
    println!("{}", written.index.display());
    Ok(())
}
