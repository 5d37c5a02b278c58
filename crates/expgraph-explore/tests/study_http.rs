//! The human study over HTTP: a rater is asked for an id, sees one item at a time (patches by an
//! opaque id), answers by a form POST, never sees an item twice; malformed or repeated
//! submissions are refused and leave the database as it was.

use std::net::SocketAddr;

use expgraph_explore::client::{get, post_form};
use expgraph_explore::study::{summary, ItemKind, Study, StudyLayer, StudyPlan};
use expgraph_explore::{Explorer, ServeParams, Server};
use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_filter_maxima, synthetic_graph};

fn start(dir: &std::path::Path) -> Server {
    let graph = synthetic_graph(4, 3, 1).unwrap();
    let acts = synthetic_activations(&graph, 6, 2);
    let raw = synthetic_filter_maxima(&graph, &acts);
    let layers: Vec<StudyLayer> = graph
        .layers
        .iter()
        .map(|l| StudyLayer { name: l.info.name.clone(), nodes: l.num_nodes(), filters: l.info.channels })
        .collect();
    let study =
        Study::open(&dir.join("study.sqlite"), "digest", &layers, &StudyPlan { per_layer: 2, seed: 1 }).unwrap();
    let crops = synthetic_crops(6, 224, 3);
    let explorer = Explorer::new(graph, acts, Box::new(crops), vec![])
        .unwrap()
        .with_raw_filters(&raw)
        .unwrap()
        .with_study(study)
        .unwrap();
    Server::start(explorer, &ServeParams { addr: "127.0.0.1:0".parse().unwrap(), ..ServeParams::default() }).unwrap()
}

/// The item id on a study page.
fn item_on(page: &str) -> Option<i64> {
    let key = "name=\"item\" value=\"";
    let at = page.find(key)? + key.len();
    page[at..].split('"').next()?.parse().ok()
}

fn rate(addr: SocketAddr, rater: &str, item: &str, answer: &str) -> u16 {
    post_form(addr, "/study/rate", &[("rater", rater), ("item", item), ("answer", answer)]).unwrap().status
}

#[test]
fn a_rater_rates_every_item_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.addr();
    let welcome = get(addr, "/study").unwrap();
    assert_eq!(welcome.status, 200);
    assert!(welcome.text().contains("name=\"rater\""));

    let mut seen = Vec::new();
    loop {
        let page = get(addr, "/study?rater=ann").unwrap();
        assert_eq!(page.status, 200, "{}", page.text());
        let text = page.text();
        let Some(item) = item_on(&text) else {
            assert!(text.contains("rated all 8 items"), "{text}");
            break;
        };
        assert!(!seen.contains(&item), "item {item} shown twice");
        assert!(!text.contains("node") && !text.contains("filter"), "blind: {text}");
        let png = get(addr, &format!("/png/study/{item}.png")).unwrap();
        assert_eq!((png.status, &png.body[1..4]), (200, &b"PNG"[..]));
        let answer = ["part", "mixed", "nothing"][seen.len() % 3];
        let reply =
            post_form(addr, "/study/rate", &[("rater", "ann"), ("item", &item.to_string()), ("answer", answer)])
                .unwrap();
        assert_eq!(reply.status, 303, "{}", reply.text());
        assert_eq!(reply.header("location").as_deref(), Some("/study?rater=ann"));
        seen.push(item);
    }
    assert_eq!(seen.len(), 8, "2 nodes and 2 filters in each of 2 layers");

    // Refused: a repeat, an unknown item, a bad answer, a bad rater id, a missing field.
    let first = seen[0].to_string();
    assert_eq!(rate(addr, "ann", &first, "part"), 400);
    assert_eq!(rate(addr, "ann", "999", "part"), 400);
    assert_eq!(rate(addr, "bob", &first, "maybe"), 400);
    assert_eq!(rate(addr, "b%20b", &first, "part"), 400);
    assert_eq!(rate(addr, "bob", "x", "part"), 400);
    assert_eq!(post_form(addr, "/study/rate", &[("rater", "bob"), ("item", &first)]).unwrap().status, 400);
    assert_eq!(get(addr, "/study?rater=%3Cscript%3E").unwrap().status, 400);
    server.stop().unwrap();

    let s = summary(&dir.path().join("study.sqlite")).unwrap();
    let all = |kind| s.rows.iter().find(|r| r.layer == "all" && r.kind == kind).unwrap().ratings;
    assert_eq!((all(ItemKind::Node), all(ItemKind::Filter)), (4, 4), "only ann's 8 answers were stored");
}

#[test]
fn no_study_no_study_pages() {
    let graph = synthetic_graph(4, 3, 1).unwrap();
    let acts = synthetic_activations(&graph, 3, 2);
    let explorer = Explorer::new(graph, acts, Box::new(synthetic_crops(3, 224, 3)), vec![]).unwrap();
    let server =
        Server::start(explorer, &ServeParams { addr: "127.0.0.1:0".parse().unwrap(), ..ServeParams::default() })
            .unwrap();
    let reply = get(server.addr(), "/study?rater=ann").unwrap();
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("--study"), "{}", reply.text());
    assert_eq!(rate(server.addr(), "ann", "1", "part"), 404);
}
