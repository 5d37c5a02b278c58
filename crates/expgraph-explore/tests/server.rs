//! The explorer over HTTP against a real instance on a random local port: every link of every
//! page resolves, bad requests are refused with their reason, PNGs are PNGs, concurrent
//! requests agree, and the server will not listen on a non-local address unless told.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use expgraph_explore::client::{self, Reply};
use expgraph_explore::{check_address, ExploreError, Explorer, ServeParams, Server};
use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};

/// The links of a page to the server's routes.
fn links(html: &str) -> Vec<String> {
    client::links(html).into_iter().filter(|l| l.starts_with('/')).collect()
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    client::get(addr, path).unwrap()
}

fn explorer(images: usize, odd_id: bool) -> Explorer {
    let graph = synthetic_graph(4, 3, 1).unwrap();
    let mut acts = synthetic_activations(&graph, images, 2);
    if odd_id {
        acts[0].image_id = "<script>alert(1)</script>".into();
    }
    let crops = synthetic_crops(images, 224, 3);
    Explorer::new(graph, acts, Box::new(crops), vec![("graph".into(), "synthetic".into())]).unwrap()
}

fn start(ex: Explorer) -> Server {
    let params = ServeParams { addr: "127.0.0.1:0".parse().unwrap(), ..ServeParams::default() };
    Server::start(ex, &params).unwrap()
}

#[test]
fn every_link_from_the_index_resolves() {
    let server = start(explorer(6, false));
    let addr = server.addr();
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from(["/".to_string()]);
    let (mut pages, mut pngs) = (0, 0);
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let reply = get(addr, &path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let kind = reply.header("content-type").unwrap_or_default();
        if kind.starts_with("image/png") {
            assert_eq!(&reply.body[..8], b"\x89PNG\r\n\x1a\n", "{path}");
            pngs += 1;
        } else {
            assert!(kind.starts_with("text/html"), "{path}: {kind}");
            pages += 1;
            queue.extend(links(&reply.text()));
        }
        assert!(seen.len() < 2000, "the crawl does not end");
    }
    // index, 2 layers, 24 nodes, 6 images at least, and their figures
    assert!(pages >= 1 + 2 + 24 + 6, "{pages} pages");
    assert!(pngs >= 24 + 6, "{pngs} PNGs");
    server.stop().unwrap();
}

#[test]
fn pages_show_the_graph() {
    let ex = explorer(6, true);
    let graph = ex.graph().clone();
    let server = start(ex);
    let addr = server.addr();
    let index = get(addr, "/").text();
    assert!(index.contains("conv4_3") && index.contains("conv5_2") && index.contains("/layer/1"), "{index}");

    // A lower node lists its parents with their displacements; each parent lists it as a child.
    let (node, parent) = (5, graph.layers[0].parents[5][0].node as usize);
    let page = get(addr, "/node/0/5").text();
    assert!(page.contains(&format!("href=\"/node/1/{parent}\"")), "{page}");
    assert!(page.contains("learned displacement") && page.contains("/png/heat/0/5/"), "{page}");
    let parent_page = get(addr, &format!("/node/1/{parent}")).text();
    assert!(parent_page.contains(&format!("href=\"/node/0/{node}\"")), "{parent_page}");

    // The image page draws nodes and edges, and escapes what it shows.
    let image = get(addr, "/image/0?nodes=12").text();
    assert!(image.matches("<circle").count() == 24, "12 nodes in each of 2 layers");
    assert!(image.matches("<line").count() > 0, "edges between shown nodes");
    assert!(image.contains("&lt;script&gt;") && !image.contains("<script>alert"), "escaped id");

    // Sorting and filtering a layer.
    let by_sigma = get(addr, "/layer/0?sort=sigma&order=desc").text();
    let first = by_sigma.find("href=\"/node/0/").unwrap();
    let shown: usize = by_sigma[first + 14..].split('"').next().unwrap().parse().unwrap();
    let max = (0..12).max_by(|&a, &b| graph.layers[0].sigma[a].total_cmp(&graph.layers[0].sigma[b])).unwrap();
    assert_eq!(shown, max, "the largest σ comes first");
    let filtered = get(addr, "/layer/0?filter=2").text();
    assert!(filtered.contains("3 of 12 nodes"), "{filtered}");
    let find = get(addr, "/find?layer=1&node=7");
    assert!((300..400).contains(&find.status) && find.header("location").as_deref() == Some("/node/1/7"));
    server.stop().unwrap();
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let server = start(explorer(3, false));
    let addr = server.addr();
    for (path, status, says) in [
        ("/node/0/999", 404, "node 999"),
        ("/node/7/0", 404, "layer 7"),
        ("/node/x/0", 404, "layer \"x\""),
        ("/layer/0?sort=colour", 400, "sort"),
        ("/layer/0?page=99", 404, "page 99"),
        ("/layer/0?filter=abc", 400, "filter"),
        ("/layer/0?evil=1", 400, "evil"),
        ("/image/3", 404, "image 3"),
        ("/image/0?nodes=0", 400, "nodes"),
        ("/png/patches/0/1.png?count=0", 400, "count"),
        ("/png/patches/0/1.jpg", 404, "node"),
        ("/png/heat/0/1/99.png", 404, "image 99"),
        ("/find?node=1", 400, "layer is required"),
        ("/find?layer=0&node=12", 404, "node 12"),
        ("/nothing/here", 404, "no such page"),
    ] {
        let reply = get(addr, path);
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert!(reply.text().contains(says), "{path}: {}", reply.text());
    }
    server.stop().unwrap();
}

#[test]
fn concurrent_requests_get_the_same_answers() {
    let server = start(explorer(6, false));
    let addr = server.addr();
    let paths: Vec<String> = (0..12)
        .flat_map(|n| [format!("/node/0/{n}"), format!("/png/patches/0/{n}.png?count=4"), format!("/node/1/{n}")])
        .collect();
    let expected: Vec<Vec<u8>> = paths.iter().map(|p| get(addr, p).body).collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (paths, expected) = (&paths, &expected);
            s.spawn(move || {
                for k in 0..paths.len() {
                    let i = (k * 7 + t) % paths.len();
                    let reply = get(addr, &paths[i]);
                    assert_eq!(reply.status, 200);
                    assert_eq!(reply.body, expected[i], "{}", paths[i]);
                }
            });
        }
    });
    server.stop().unwrap();
}

#[test]
fn only_local_addresses_unless_told() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    assert!(matches!(check_address(&any, false), Err(ExploreError::NotLocal(_))));
    assert!(check_address(&any, true).is_ok());
    assert!(check_address(&"127.0.0.1:8080".parse().unwrap(), false).is_ok());
    assert!(check_address(&"[::1]:8080".parse().unwrap(), false).is_ok());
    let params = ServeParams { addr: any, ..ServeParams::default() };
    let e = Server::start(explorer(2, false), &params).err().unwrap();
    assert!(e.to_string().contains("--allow-remote"), "{e}");
}

#[test]
fn a_record_is_shown_on_the_index() {
    let record = serde_json::json!({
        "localization": {"methods": {"graph": {"mean_normalized_distance": 0.0265, "draws": [0.0289, 0.0247]}}},
        "history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}],
        "dataset": "<b>cub</b>",
    });
    let server = start(explorer(3, false).with_record(&record));
    let index = get(server.addr(), "/").text();
    for row in [
        "<th>localization.methods.graph.mean_normalized_distance</th><td>0.0265</td>",
        "<th>localization.methods.graph.draws</th><td>[0.0289, 0.0247]</td>",
        "<th>history[1].loss</th><td>0.25</td>",
        "<th>history[0].epoch</th><td>1</td>",
        "<th>dataset</th><td>&lt;b&gt;cub&lt;&#x2f;b&gt;</td>",
    ] {
        assert!(index.contains(row), "{row} missing: {index}");
    }
    assert!(index.contains("record (7 values)"), "{index}");
    server.stop().unwrap();
}
