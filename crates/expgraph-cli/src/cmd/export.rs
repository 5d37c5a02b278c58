//! `expgraph export`: the graph as versioned JSON (all nodes and edges) and/or Graphviz DOT of its
//! best nodes (schema: crates/expgraph-report/README.md).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::summary::Summary;
use expgraph_graph::{load_activations, ExplanatoryGraph};
use expgraph_report::{write_dot, write_graph_json, DotParams};

/// Arguments of `expgraph export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Graph folder (`expgraph learn --out`).
    #[arg(long)]
    pub graph: PathBuf,
    /// Write the whole graph as JSON here (schema `expgraph.graph-export` v1).
    #[arg(long, short, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Write a DOT subgraph here (render with `dot -Tsvg`).
    #[arg(long)]
    pub dot: Option<PathBuf>,
    /// Nodes per layer in the DOT subgraph.
    #[arg(long, default_value_t = 12)]
    pub dot_nodes: usize,
    /// Activations of the training images: rank DOT nodes by their top-50 scores (default: by
    /// the weight of their edges).
    #[arg(long)]
    pub activations: Option<PathBuf>,
}

/// Run `expgraph export`.
pub fn run(args: Args) -> Result<Summary> {
    if args.out.is_none() && args.dot.is_none() {
        bail!("nothing to do: give --out FILE.json and/or --dot FILE.dot");
    }
    let graph =
        ExplanatoryGraph::load(&args.graph).with_context(|| format!("loading graph {}", args.graph.display()))?;
    if let Some(path) = &args.out {
        write_graph_json(&graph, path).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(nodes = graph.num_nodes(), "graph JSON written to {}", path.display());
    }
    if let Some(path) = &args.dot {
        let acts = match &args.activations {
            Some(dir) => {
                expgraph::provenance::check_activations(dir, Some(&args.graph), None)?;
                Some(load_activations(dir).with_context(|| format!("loading activations {}", dir.display()))?)
            }
            None => None,
        };
        let params = DotParams { nodes_per_layer: args.dot_nodes, ..DotParams::default() };
        write_dot(&graph, acts.as_deref(), &params, path).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!("DOT subgraph written to {}", path.display());
    }
    let written: Vec<&PathBuf> = args.out.iter().chain(&args.dot).collect();
    let human = written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n");
    Ok(Summary::new(human, serde_json::json!({"graph_json": args.out, "dot": args.dot, "nodes": graph.num_nodes()})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_report::{
        ExportEdge, ExportLayer, ExportNode, GraphExport, TapGeometry, GRAPH_EXPORT_SCHEMA, GRAPH_EXPORT_VERSION,
    };

    fn layer(index: usize, name: &str, side: usize, parents: usize) -> ExportLayer {
        let nodes = (0..6)
            .map(|n| ExportNode {
                index: n,
                filter: n / 3,
                k: n % 3,
                mu: [2.0 + n as f64, 3.0],
                mu_pixel: [0.0, 0.0],
                sigma: 1.5,
                mean_position: [2.0 + n as f64, 3.0],
                parents: (0..parents).map(|p| ExportEdge { node: ((n + p) % 6) as u32, weight: 0.5 }).collect(),
            })
            .collect();
        ExportLayer {
            index,
            name: name.into(),
            channels: 2,
            height: side,
            width: side,
            geometry: TapGeometry { stride: 224.0 / side as f64, first_centre: 4.5, receptive_field: 92.0 },
            nodes_per_filter: 3,
            score_norm: 1.0,
            nodes,
        }
    }

    #[test]
    fn export_writes_json_and_dot() {
        let graph = GraphExport {
            schema: GRAPH_EXPORT_SCHEMA.into(),
            schema_version: GRAPH_EXPORT_VERSION,
            backbone: "synthetic".into(),
            input_size: 224,
            params: serde_json::Value::Null,
            layers: vec![layer(0, "conv4_3", 28, 2), layer(1, "conv5_2", 14, 0)],
        }
        .to_graph()
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        graph.save(dir.path().join("graph")).unwrap();
        let (json, dot) = (dir.path().join("g.json"), dir.path().join("g.dot"));
        run(Args {
            graph: dir.path().join("graph"),
            out: Some(json.clone()),
            dot: Some(dot.clone()),
            dot_nodes: 4,
            activations: None,
        })
        .unwrap();
        let back = GraphExport::read(&json).unwrap().to_graph().unwrap();
        assert_eq!(back.layers[0].parents, graph.layers[0].parents);
        let text = std::fs::read_to_string(&dot).unwrap();
        assert!(text.starts_with("digraph") && text.contains("L1_"));
        assert!(run(Args { graph: dir.path().join("graph"), out: None, dot: None, dot_nodes: 4, activations: None })
            .is_err());
    }
}
