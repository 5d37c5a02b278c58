//! Part models seen from the graph: a model fitted on the graph's nodes links every voting node
//! to its part page and back; a part page draws each template's voters on its annotated image;
//! a model of raw filters or a malformed file is refused, naming it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use expgraph_explore::client::{self, links, Reply};
use expgraph_explore::parts::PartVotes;
use expgraph_explore::{ExploreError, Explorer, ServeParams, Server};
use expgraph_graph::ExplanatoryGraph;
use expgraph_localize::{LocalizeParams, PartModel, Point, UnitLayout};
use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};

fn get(addr: SocketAddr, path: &str) -> Reply {
    client::get(addr, path).unwrap()
}

/// A "beak" model fitted on the graph's nodes in images 0 and 1 (both in the explorer) and
/// image 9 (not in it).
fn beak(graph: &ExplanatoryGraph) -> PartModel {
    let mut acts = synthetic_activations(graph, 10, 2);
    acts.swap(2, 9);
    let annotated: Vec<_> = acts[..3]
        .iter()
        .zip([(60.0, 80.0), (64.0, 90.0), (58.0, 70.0)])
        .map(|(a, (h, w))| (a.clone(), Point::new(h, w)))
        .collect();
    LocalizeParams::default().top_fraction(0.25).check().unwrap().fit(graph, &annotated).unwrap()
}

fn start(with_parts: bool) -> (Server, ExplanatoryGraph, PartModel) {
    let graph = synthetic_graph(4, 3, 1).unwrap();
    let model = beak(&graph);
    let acts = synthetic_activations(&graph, 6, 2);
    let mut ex = Explorer::new(graph.clone(), acts, Box::new(synthetic_crops(6, 224, 3)), vec![]).unwrap();
    if with_parts {
        let votes = PartVotes::new(&graph, BTreeMap::from([("beak".to_string(), model.clone())])).unwrap();
        ex = ex.with_part_votes(votes);
    }
    let params = ServeParams { addr: "127.0.0.1:0".parse().unwrap(), ..ServeParams::default() };
    (Server::start(ex, &params).unwrap(), graph, model)
}

#[test]
fn voting_nodes_and_their_part_link_each_other() {
    let (server, graph, model) = start(true);
    let addr = server.addr();
    assert_eq!(model.templates.len(), 3);
    let index = get(addr, "/").text();
    assert!(index.contains("Part localization") && index.contains("href=\"/part/0\""), "{index}");

    let page = get(addr, "/part/0");
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(html.contains("Part beak") && html.contains("img009"), "{html}");
    assert!(html.contains("not among the explorer's images"), "template 3's image is not drawn");
    // every voter of every template is linked (at most VOTERS_SHOWN per layer; here all)
    let mut want: Vec<String> = vec![];
    for t in &model.templates {
        for u in &t.units {
            want.push(format!("/node/{}/{}", u.layer, u.unit));
        }
    }
    let got: Vec<String> = links(&html).into_iter().filter(|l| l.starts_with("/node/")).collect();
    for w in &want {
        assert!(got.contains(w), "the part page does not link the voter {w}");
    }
    // drawn: a star per drawn template and a line per voter of the two templates in the explorer
    let drawn: usize = model.templates[..2].iter().map(|t| t.units.len()).sum();
    assert_eq!(html.matches("<line ").count(), drawn, "{html}");
    for l in links(&html) {
        assert_eq!(get(addr, &l).status, 200, "{l}");
    }

    // a voter's page lists its votes; a node that votes for nothing has no such section
    let u = model.templates[0].units[0];
    let node = get(addr, &format!("/node/{}/{}", u.layer, u.unit)).text();
    assert!(node.contains("Part localization") && node.contains("href=\"/part/0\""), "{node}");
    assert!(node.contains(&format!("({:+.0}, {:+.0})", u.delta[0], u.delta[1])), "δ missing: {node}");
    let voters: Vec<(u32, u32)> =
        model.templates.iter().flat_map(|t| t.units.iter().map(|u| (u.layer, u.unit))).collect();
    let quiet = (0..graph.layers[0].num_nodes() as u32).find(|&n| !voters.contains(&(0, n))).unwrap();
    assert!(!get(addr, &format!("/node/0/{quiet}")).text().contains("Part localization"));

    let missing = get(addr, "/part/1");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("beak"), "{}", missing.text());
    server.stop().unwrap();

    let (server, _, _) = start(false);
    let none = get(server.addr(), "/part/0");
    assert_eq!(none.status, 404);
    assert!(none.text().contains("--part-models"), "{}", none.text());
    server.stop().unwrap();
}

#[test]
fn a_model_of_raw_filters_or_a_bad_file_is_refused() {
    let graph = synthetic_graph(4, 3, 1).unwrap();
    let mut raw = beak(&graph);
    let infos: Vec<_> = graph.layers.iter().map(|l| l.info.clone()).collect();
    raw.layout = UnitLayout::for_filters(graph.input_size, &infos);
    for u in raw.templates.iter_mut().flat_map(|t| t.units.iter_mut()) {
        u.unit %= 4; // the synthetic graph's 4 filters
    }
    let err = PartVotes::new(&graph, BTreeMap::from([("beak".to_string(), raw)])).unwrap_err().to_string();
    assert!(err.contains("\"beak\"") && err.contains("raw filters"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("models.json");
    std::fs::write(&file, "{\"beak\": {\"params\": 3}}").unwrap();
    let err = PartVotes::read(&file, &graph).unwrap_err();
    assert!(matches!(err, ExploreError::Input(_)) && err.to_string().contains("models.json"), "{err}");
    let err = PartVotes::read(&dir.path().join("absent.json"), &graph).unwrap_err().to_string();
    assert!(err.contains("absent.json"), "{err}");
}
