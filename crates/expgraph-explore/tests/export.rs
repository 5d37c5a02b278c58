//! The static export (`expgraph report --nodes`): every link of every exported page resolves to
//! a file of the export (none to a server route), a node without a page is text, and every
//! figure is the one the live server draws, byte for byte.

use std::collections::{BTreeMap, BTreeSet};

use expgraph_explore::client::{self, links};
use expgraph_explore::{export_site, Explorer, Figure, ServeParams, Server};
use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};

fn explorer() -> Explorer {
    let graph = synthetic_graph(4, 3, 1).unwrap();
    let acts = synthetic_activations(&graph, 5, 2);
    let crops = synthetic_crops(5, 224, 3);
    Explorer::new(graph, acts, Box::new(crops), vec![("graph".into(), "synthetic".into())]).unwrap()
}

#[test]
fn exported_pages_link_only_to_exported_files() {
    let ex = explorer();
    let site = export_site(&ex, 3).unwrap();
    let files: BTreeMap<&str, &[u8]> = site.files.iter().map(|f| (f.path.as_str(), f.bytes.as_slice())).collect();
    assert_eq!(files.len(), site.files.len(), "a path is written twice");

    // 3 nodes of each of the 2 layers, best first, as ranked by the explorer
    assert_eq!(site.nodes.len(), 6);
    for layer in 0..2 {
        let got: Vec<usize> = site.nodes.iter().filter(|n| n.layer == layer).map(|n| n.node).collect();
        assert_eq!(got, ex.order(layer)[..3], "layer {layer}");
    }
    let pages: Vec<&str> = files.keys().copied().filter(|p| p.ends_with(".html")).collect();
    assert_eq!(pages.len(), 1 + 6, "{pages:?}");
    let mut linked = BTreeSet::new();
    for page in &pages {
        let html = std::str::from_utf8(files[page]).unwrap();
        for link in links(html) {
            assert!(!link.starts_with('/') && !link.contains("://"), "{page} links to {link}");
            assert!(files.contains_key(link.as_str()), "{page} links to {link}, which the export lacks");
            linked.insert(link);
        }
        assert!(!html.contains("<form"), "{page} has a form, which needs a server");
    }
    // every file is reachable from a page, the index from every node page
    for path in files.keys().filter(|p| **p != "index.html") {
        assert!(linked.contains(*path), "{path} is written but no page links it");
    }
    let index = std::str::from_utf8(files["index.html"]).unwrap();
    for n in &site.nodes {
        assert!(index.contains(&format!("href=\"{}\"", n.path)), "the index does not link {}", n.path);
    }

    // a parent or child without an exported page is named, not linked
    let g = ex.graph();
    let exported: BTreeSet<(usize, usize)> = site.nodes.iter().map(|n| (n.layer, n.node)).collect();
    let (child, parent) = site
        .nodes
        .iter()
        .filter(|n| n.layer == 0)
        .find_map(|n| {
            g.layers[0].parents[n.node]
                .iter()
                .map(|p| p.node as usize)
                .find(|&p| !exported.contains(&(1, p)))
                .map(|p| (n, p))
        })
        .expect("an exported node with a parent that is not exported");
    let html = std::str::from_utf8(files[child.path.as_str()]).unwrap();
    let name = format!("{} node {parent}", g.layers[1].info.name);
    assert!(html.contains(&name), "{name} missing from {}", child.path);
    assert!(!html.contains(&format!("node-1-{parent}.html")), "{}", child.path);
}

#[test]
fn exported_figures_equal_the_servers() {
    let site = export_site(&explorer(), 2).unwrap();
    let params = ServeParams { addr: "127.0.0.1:0".parse().unwrap(), ..ServeParams::default() };
    let server = Server::start(explorer(), &params).unwrap();
    let (mut crops, mut strips, mut heats) = (0, 0, 0);
    for f in &site.files {
        let Some(name) = f.path.strip_prefix("png/") else { continue };
        let figure = parse_figure(name);
        assert_eq!(figure.file_name(), name);
        match figure {
            Figure::Crop { .. } => crops += 1,
            Figure::Patches { .. } => strips += 1,
            Figure::Heat { .. } => heats += 1,
            Figure::FilterPatches { .. } => panic!("a node page shows no raw filter"),
        }
        let reply = client::get(server.addr(), &figure.route()).unwrap();
        assert_eq!(reply.status, 200, "{}", figure.route());
        assert!(reply.body == f.bytes, "{name} differs from {}", figure.route());
    }
    assert!(crops > 0 && strips > 0 && heats > 0, "{crops} crops, {strips} strips, {heats} heat maps");
    // without raw filters, a filter's strip is a 404 that says why
    let reply = client::get(server.addr(), "/png/filter/0/1.png?count=3").unwrap();
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("raw filter"), "{}", reply.text());
    server.stop().unwrap();
}

/// `crop-I.png`, `patches-L-N-C.png`, `heat-L-N-I.png` → the figure.
fn parse_figure(name: &str) -> Figure {
    let stem = name.strip_suffix(".png").unwrap();
    let (kind, rest) = stem.split_once('-').unwrap();
    let n: Vec<usize> = rest.split('-').map(|x| x.parse().unwrap()).collect();
    match (kind, n.as_slice()) {
        ("crop", [image]) => Figure::Crop { image: *image },
        ("patches", [layer, node, count]) => Figure::Patches { layer: *layer, node: *node, count: *count },
        ("heat", [layer, node, image]) => Figure::Heat { layer: *layer, node: *node, image: *image },
        _ => panic!("unexpected figure file {name}"),
    }
}
