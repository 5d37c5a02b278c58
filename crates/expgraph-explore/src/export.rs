//! A static export of the explorer: the node pages of the best nodes of every layer, an index,
//! and every figure they show, as files to put in a folder (`expgraph report --nodes` puts
//! them in the report's `nodes/`). No server is needed to read them. A link to a node whose
//! page was not exported, to a layer table or to an image page (live only) is plain text.

use rayon::prelude::*;

use crate::images::{draw, encode};
use crate::pages::node_file;
use crate::{Explorer, Pages, Result};

/// One file of a static export.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteFile {
    /// Path relative to the export's folder, `/`-separated.
    pub path: String,
    /// Content.
    pub bytes: Vec<u8>,
}

/// A node whose page a static export holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedNode {
    /// Layer index.
    pub layer: usize,
    /// Layer name.
    pub layer_name: String,
    /// Node index in the layer.
    pub node: usize,
    /// Its rank in the layer (0 = best).
    pub rank: usize,
    /// Its page, relative to the export's folder.
    pub path: String,
}

/// A static export: its files and the nodes it has pages for (best first per layer).
#[derive(Debug, Clone, PartialEq)]
pub struct StaticSite {
    /// `index.html`, `node-{l}-{n}.html` per node, `png/…` per figure.
    pub files: Vec<SiteFile>,
    /// The exported nodes, layer by layer, best first.
    pub nodes: Vec<ExportedNode>,
}

/// Exports the pages of the `per_layer` best nodes of every layer (the explorer's rank: the
/// spec's top-50 score), the index, and the figures they show, drawn in parallel.
pub fn export_site(ex: &Explorer, per_layer: usize) -> Result<StaticSite> {
    let g = ex.graph();
    let nodes: Vec<ExportedNode> = (0..g.layers.len())
        .flat_map(|layer| {
            ex.order(layer).iter().take(per_layer).enumerate().map(move |(rank, &node)| ExportedNode {
                layer,
                layer_name: g.layers[layer].info.name.clone(),
                node,
                rank,
                path: node_file(layer, node),
            })
        })
        .collect();
    let pages = Pages::for_export(nodes.iter().map(|n| (n.layer, n.node)))?;
    let mut files = vec![SiteFile { path: "index.html".into(), bytes: pages.index(ex)?.into_bytes() }];
    for n in &nodes {
        files.push(SiteFile { path: n.path.clone(), bytes: pages.node(ex, n.layer, n.node)?.into_bytes() });
    }
    let figures = pages.take_figures();
    tracing::info!(pages = files.len(), figures = figures.len(), "drawing the exported pages' figures");
    let pngs = figures
        .par_iter()
        .map(|f| Ok(SiteFile { path: format!("png/{}", f.file_name()), bytes: encode(&draw(ex, *f)?)? }))
        .collect::<Result<Vec<_>>>()?;
    files.extend(pngs);
    Ok(StaticSite { files, nodes })
}
