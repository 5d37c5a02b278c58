//! The HTML pages, rendered server-side with minijinja from small view models. Every link a
//! page holds is one of the routes of [`crate::server`], or, for the pages of a static export
//! ([`crate::export_site`]), a file of the export; a link to a page the export lacks is text.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Mutex;

use minijinja::{context, Environment};
use serde::Serialize;

use crate::{ExploreError, Explorer, Figure, Result};

/// Rows per page of a layer's node table.
pub const ROWS_PER_PAGE: usize = 100;
/// Children listed on a node page.
pub const CHILDREN_SHOWN: usize = 30;
/// Best images of a node with a patch (and a link) on its page.
pub const PATCHES_SHOWN: usize = 8;
/// Best images of a node with a heat map on its page.
pub const HEATMAPS_SHOWN: usize = 3;
/// Voting nodes per layer listed and drawn for one template on a part page.
pub const VOTERS_SHOWN: usize = 40;
/// Default number of nodes per layer drawn on an image page.
pub const IMAGE_NODES_DEFAULT: usize = 10;

/// A colour per layer (shallowest first), for circles and edges.
const LAYER_COLORS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

/// A URL built here from numbers and fixed text: safe to put in an attribute as it is (the
/// HTML auto-escaping would write every `/` as `&#x2f;`).
fn url(u: String) -> minijinja::Value {
    minijinja::Value::from_safe_string(u)
}

fn layer_color(layer: usize) -> &'static str {
    LAYER_COLORS[layer % LAYER_COLORS.len()]
}

/// Where the links of a page point.
enum Site {
    /// The server's routes.
    Live,
    /// The files of a static export: a page per node of `nodes` (`node-{l}-{n}.html`), the index
    /// (`index.html`) and the figures they show (`png/…`, collected in `figures` as pages are
    /// rendered).
    Static { nodes: HashSet<(usize, usize)>, figures: Mutex<BTreeSet<Figure>> },
}

/// The page templates, compiled once, and where their links point.
pub struct Pages {
    env: Environment<'static>,
    site: Site,
}

impl Pages {
    /// Loads the embedded templates.
    pub fn new() -> Result<Self> {
        let mut env = Environment::new();
        env.add_template("base.html", include_str!("../templates/base.html"))?;
        env.add_template("index.html", include_str!("../templates/index.html"))?;
        env.add_template("layer.html", include_str!("../templates/layer.html"))?;
        env.add_template("node.html", include_str!("../templates/node.html"))?;
        env.add_template("image.html", include_str!("../templates/image.html"))?;
        env.add_template("study.html", include_str!("../templates/study.html"))?;
        env.add_template("part.html", include_str!("../templates/part.html"))?;
        Ok(Pages { env, site: Site::Live })
    }

    /// The pages of a static export holding the pages of `nodes` (layer, node): links point to
    /// the export's files, and every figure a page shows is recorded ([`Pages::take_figures`]).
    pub fn for_export(nodes: impl IntoIterator<Item = (usize, usize)>) -> Result<Self> {
        let site = Site::Static { nodes: nodes.into_iter().collect(), figures: Mutex::new(BTreeSet::new()) };
        Ok(Pages { site, ..Pages::new()? })
    }

    /// The figures the pages rendered so far show (a static export's), emptied.
    pub fn take_figures(&self) -> Vec<Figure> {
        match &self.site {
            Site::Live => vec![],
            Site::Static { figures, .. } => {
                std::mem::take(&mut *figures.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
                    .into_iter()
                    .collect()
            }
        }
    }

    fn live(&self) -> bool {
        matches!(self.site, Site::Live)
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String> {
        let home = url(if self.live() { "/".into() } else { "index.html".into() });
        Ok(self.env.get_template(name)?.render(context! { home => home, live => self.live(), ..ctx })?)
    }

    /// The URL of a figure: its route, or its file in a static export (recorded).
    fn png(&self, figure: Figure) -> minijinja::Value {
        match &self.site {
            Site::Live => url(figure.route()),
            Site::Static { figures, .. } => {
                figures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(figure);
                url(format!("png/{}", figure.file_name()))
            }
        }
    }

    /// The URL of a node's page; none when a static export lacks it.
    fn node_url(&self, layer: usize, node: usize) -> Option<minijinja::Value> {
        match &self.site {
            Site::Live => Some(url(format!("/node/{layer}/{node}"))),
            Site::Static { nodes, .. } => nodes.contains(&(layer, node)).then(|| url(node_file(layer, node))),
        }
    }

    /// The URL of an image's page (live only: a static export has none).
    fn image_url(&self, image: usize) -> Option<minijinja::Value> {
        self.live().then(|| url(format!("/image/{image}")))
    }

    /// The URL of a part's page (live only).
    fn part_url(&self, part: usize) -> Option<minijinja::Value> {
        self.live().then(|| url(format!("/part/{part}")))
    }

    /// The URL of a layer's table, optionally of one filter (live only).
    fn layer_url(&self, layer: usize, filter: Option<usize>) -> Option<minijinja::Value> {
        self.live().then(|| {
            url(match filter {
                Some(f) => format!("/layer/{layer}?filter={f}"),
                None => format!("/layer/{layer}"),
            })
        })
    }

    /// Links to the nodes of `layer` a static export has pages for, best first (none live).
    fn exported(&self, ex: &Explorer, layer: usize) -> Vec<minijinja::Value> {
        match &self.site {
            Site::Live => vec![],
            Site::Static { nodes, .. } => ex
                .order(layer)
                .iter()
                .filter(|&&n| nodes.contains(&(layer, n)))
                .map(|&n| self.node_link(ex, layer, n))
                .collect(),
        }
    }

    /// A link to a node: URL (none when a static export lacks its page), label and thumbnail.
    fn node_link(&self, ex: &Explorer, layer: usize, node: usize) -> minijinja::Value {
        let gl = &ex.graph().layers[layer];
        context! {
            url => self.node_url(layer, node), layer => gl.info.name, node => node,
            filter => gl.filter_of(node), k => node % gl.nodes_per_filter.max(1),
            patch => self.png(Figure::Patches { layer, node, count: 1 }),
        }
    }

    /// `/`: the layers, where the graph came from, the best nodes of each layer.
    pub fn index(&self, ex: &Explorer) -> Result<String> {
        let g = ex.graph();
        let layers: Vec<_> = g
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let n = layer.num_nodes();
                let mean_sigma = (0..n).map(|i| layer.sigma_pixels(i)).sum::<f64>() / n.max(1) as f64;
                let parents = layer.parents.iter().map(Vec::len).sum::<usize>() as f64 / n.max(1) as f64;
                let best: Vec<_> = ex.order(l).iter().take(5).map(|&node| self.node_link(ex, l, node)).collect();
                context! {
                    index => l, name => layer.info.name, filters => n / layer.nodes_per_filter.max(1),
                    k => layer.nodes_per_filter, nodes => n, mean_sigma_px => format!("{mean_sigma:.1}"),
                    mean_parents => format!("{parents:.1}"), best => best, color => layer_color(l),
                    url => self.layer_url(l, None), exported => self.exported(ex, l),
                }
            })
            .collect();
        self.render(
            "index.html",
            context! {
                title => "Explanatory graph", backbone => g.backbone, input_size => g.input_size,
                nodes => g.num_nodes(), images => ex.activations().len(), layers => layers,
                browse => self.image_url(0),
                record => ex.record().iter().map(|(k, v)| context! { key => k, value => v }).collect::<Vec<_>>(),
                parts => ex.parts().map_or(vec![], |p| p.names().iter().enumerate()
                    .map(|(i, name)| context! { name => name, url => self.part_url(i),
                        templates => p.model(i).map_or(0, |m| m.templates.len()) })
                    .collect::<Vec<_>>()),
                origin => ex.origin().iter().map(|(k, v)| context! { key => k, value => v }).collect::<Vec<_>>(),
            },
        )
    }

    /// `/layer/{l}`: the node table of a layer, sortable, filterable by filter (channel), paged.
    pub fn layer(&self, ex: &Explorer, layer: usize, query: &LayerQuery) -> Result<String> {
        let g = ex.graph();
        let gl = g
            .layers
            .get(layer)
            .ok_or_else(|| ExploreError::NotFound(format!("layer {layer} (the graph has {})", g.layers.len())))?;
        let mut nodes: Vec<usize> = match query.filter {
            Some(f) => (0..gl.num_nodes()).filter(|&n| gl.filter_of(n) == f).collect(),
            None => (0..gl.num_nodes()).collect(),
        };
        let key = |n: usize| -> f64 {
            match query.sort {
                SortKey::Rank => ex.rank(layer, n).map_or(0, |r| r.rank) as f64,
                SortKey::Sigma => gl.sigma[n],
                SortKey::Node => n as f64,
                SortKey::Parents => gl.parents[n].len() as f64,
                SortKey::Children => ex.children(layer, n).len() as f64,
            }
        };
        nodes.sort_by(|&a, &b| {
            let o = key(a).total_cmp(&key(b)).then(a.cmp(&b));
            if query.descending {
                o.reverse()
            } else {
                o
            }
        });
        let pages = nodes.len().div_ceil(ROWS_PER_PAGE).max(1);
        if query.page == 0 || query.page > pages {
            return Err(ExploreError::NotFound(format!("page {} of {pages}", query.page)));
        }
        let rows: Vec<_> = nodes
            .iter()
            .skip((query.page - 1) * ROWS_PER_PAGE)
            .take(ROWS_PER_PAGE)
            .map(|&n| {
                let mu = gl.mu_pixels(n);
                let rank = ex.rank(layer, n);
                context! {
                    link => self.node_link(ex, layer, n), node => n, filter => gl.filter_of(n),
                    k => n % gl.nodes_per_filter.max(1), sigma_px => format!("{:.1}", gl.sigma_pixels(n)),
                    mu => format!("({:.0}, {:.0})", mu[0], mu[1]),
                    rank => rank.map_or(0, |r| r.rank + 1), total => format!("{:.2}", rank.map_or(0.0, |r| r.total)),
                    parents => gl.parents[n].len(), children => ex.children(layer, n).len(),
                }
            })
            .collect();
        let layer_url = |sort: SortKey, descending: bool, page: usize| {
            let mut u =
                format!("/layer/{layer}?sort={}&order={}", sort.name(), if descending { "desc" } else { "asc" });
            if let Some(f) = query.filter {
                u.push_str(&format!("&filter={f}"));
            }
            u.push_str(&format!("&page={page}"));
            // `&` escaped by hand: the value is marked safe
            url(u.replace('&', "&amp;"))
        };
        let columns: Vec<_> = SortKey::ALL
            .iter()
            .map(|&s| {
                let descending = if s == query.sort { !query.descending } else { s.default_descending() };
                context! { name => s.name(), url => layer_url(s, descending, 1), active => s == query.sort }
            })
            .collect();
        self.render(
            "layer.html",
            context! {
                title => format!("Layer {}", gl.info.name), layer => layer, name => gl.info.name,
                shown => nodes.len(), total => gl.num_nodes(), filters => gl.num_nodes() / gl.nodes_per_filter.max(1),
                filter => query.filter, rows => rows, columns => columns, page => query.page, pages => pages,
                prev => (query.page > 1).then(|| layer_url(query.sort, query.descending, query.page - 1)),
                next => (query.page < pages).then(|| layer_url(query.sort, query.descending, query.page + 1)),
            },
        )
    }

    /// `/node/{l}/{n}`: a node's patches, heat maps, parents (with their learned displacements
    /// drawn on its best image) and children.
    pub fn node(&self, ex: &Explorer, layer: usize, node: usize) -> Result<String> {
        ex.check_node(layer, node)?;
        let g = ex.graph();
        let gl = &g.layers[layer];
        let side = g.input_size as u32;
        let rank = ex.rank(layer, node);
        let top: Vec<(usize, f32)> = rank.map_or(vec![], |r| r.top_images.clone());
        let patches: Vec<_> = top
            .iter()
            .take(PATCHES_SHOWN)
            .map(|&(image, score)| context! { image => image, score => format!("{score:.3}"), url => self.image_url(image) })
            .collect();
        let heatmaps: Vec<_> = top
            .iter()
            .take(HEATMAPS_SHOWN)
            .map(|&(image, _)| {
                context! { image => image, link => self.image_url(image), url => self.png(Figure::Heat { layer, node, image }) }
            })
            .collect();
        let mu = gl.mu_pixels(node);
        let best = top.first().map(|&(i, _)| i);
        let here = best.map(|i| ex.node_xy(layer, node, i, side));
        let parents: Vec<_> = gl.parents[node]
            .iter()
            .map(|p| {
                let pn = p.node as usize;
                let pl = &g.layers[layer + 1];
                let pmu = pl.mu_pixels(pn);
                // the learned displacement, parent prior − node prior, as (x, y) pixels
                let (dx, dy) = (pmu[1] - mu[1], pmu[0] - mu[0]);
                let at = best.map(|i| ex.node_xy(layer + 1, pn, i, side));
                context! {
                    link => self.node_link(ex, layer + 1, pn), similarity => format!("{:.2e}", p.similarity),
                    displacement => format!("({dx:+.0}, {dy:+.0})"),
                    expected => here.map(|h| [h[0] + dx, h[1] + dy]), at => at,
                    patches => self.png(Figure::Patches { layer: layer + 1, node: pn, count: 3 }),
                }
            })
            .collect();
        let children = ex.children(layer, node);
        let shown_children: Vec<_> = children
            .iter()
            .take(CHILDREN_SHOWN)
            .map(
                |c| context! { link => self.node_link(ex, layer - 1, c.node), similarity => format!("{:.2e}", c.similarity) },
            )
            .collect();
        let votes: Vec<_> = ex.parts().map_or(vec![], |parts| {
            parts
                .votes(layer, node)
                .iter()
                .map(|v| {
                    let template = parts.model(v.part).map(|m| &m.templates[v.template]);
                    context! {
                        part => parts.names()[v.part], url => self.part_url(v.part), template => v.template + 1,
                        image_id => template.map(|t| t.image_id.clone()),
                        delta => format!("({:+.0}, {:+.0})", v.delta[0], v.delta[1]),
                    }
                })
                .collect()
        });
        self.render(
            "node.html",
            context! {
                title => format!("{} node {node}", gl.info.name), me => self.node_link(ex, layer, node),
                layer_url => self.layer_url(layer, None), filter_url => self.layer_url(layer, Some(gl.filter_of(node))),
                crop => best.map(|image| self.png(Figure::Crop { image })),
                layer => layer, layer_name => gl.info.name, node => node, filter => gl.filter_of(node),
                k => node % gl.nodes_per_filter.max(1), sigma_px => format!("{:.1}", gl.sigma_pixels(node)),
                mu => format!("(x {:.0}, y {:.0})", mu[1], mu[0]),
                rank => rank.map_or(0, |r| r.rank + 1), layer_nodes => gl.num_nodes(),
                total => format!("{:.3}", rank.map_or(0.0, |r| r.total)),
                patches => patches, patch_strip => self.png(Figure::Patches { layer, node, count: PATCHES_SHOWN }),
                heatmaps => heatmaps, parents => parents, children => shown_children, children_total => children.len(),
                best => best, here => here, side => side, color => layer_color(layer),
                parent_color => layer_color(layer + 1), votes => votes,
            },
        )
    }

    /// `/image/{i}`: the image's best-scoring nodes of every layer at their inferred positions,
    /// with the graph's edges between the nodes shown (the paper's signature figure).
    pub fn image(&self, ex: &Explorer, image: usize, per_layer: usize) -> Result<String> {
        ex.check_image(image)?;
        let g = ex.graph();
        let act = &ex.activations()[image];
        let side = g.input_size as u32;
        let mut shown: Vec<HashSet<usize>> = Vec::with_capacity(g.layers.len());
        let mut layers = Vec::new();
        let mut circles = Vec::new();
        for (l, gl) in g.layers.iter().enumerate() {
            let nodes = expgraph_report::top_nodes(&act.layers[l].scores, 1.0);
            let nodes: Vec<usize> = nodes.into_iter().take(per_layer).collect();
            let rows: Vec<_> = nodes
                .iter()
                .map(|&n| {
                    let xy = ex.node_xy(l, n, image, side);
                    circles
                        .push(context! { x => xy[0], y => xy[1], color => layer_color(l), url => self.node_url(l, n),
                        r => 2.0 + l as f64, label => format!("{} node {n}", gl.info.name) });
                    context! { link => self.node_link(ex, l, n), score => format!("{:.3}", act.layers[l].scores[n]) }
                })
                .collect();
            layers.push(context! { name => gl.info.name, color => layer_color(l), rows => rows });
            shown.push(nodes.into_iter().collect());
        }
        let most = g.layers.iter().map(|l| l.num_nodes()).max().unwrap_or(0);
        let mut edges = Vec::new();
        for (l, gl) in g.layers.iter().enumerate().take(g.layers.len().saturating_sub(1)) {
            let mut children: Vec<usize> = shown[l].iter().copied().collect();
            children.sort_unstable();
            for n in children {
                for p in &gl.parents[n] {
                    if shown[l + 1].contains(&(p.node as usize)) {
                        let a = ex.node_xy(l, n, image, side);
                        let b = ex.node_xy(l + 1, p.node as usize, image, side);
                        edges.push(
                            context! { x1 => a[0], y1 => a[1], x2 => b[0], y2 => b[1], color => layer_color(l + 1) },
                        );
                    }
                }
            }
        }
        self.render(
            "image.html",
            context! {
                title => format!("Image {image}"), image => image, id => act.image_id, flipped => act.flipped,
                crop => self.png(Figure::Crop { image }),
                side => side, layers => layers, circles => circles, edges => edges, edge_count => edges.len(),
                per_layer => per_layer, prev => image.checked_sub(1),
                more => (per_layer < crate::server::MAX_IMAGE_NODES && per_layer < most)
                    .then(|| (per_layer * 2).min(crate::server::MAX_IMAGE_NODES)),
                next => (image + 1 < ex.activations().len()).then_some(image + 1),
            },
        )
    }
}

impl Pages {
    /// `/part/{p}`: a part model's templates, each drawn on its annotated image (the part point
    /// and the voting nodes at their inferred positions, a line from each to the part), with the
    /// voting nodes linked.
    pub fn part(&self, ex: &Explorer, part: usize) -> Result<String> {
        let parts = ex.parts().ok_or_else(|| {
            ExploreError::NotFound("this explorer shows no part models (start it with --part-models FILE)".into())
        })?;
        let model = parts.model(part).ok_or_else(|| {
            ExploreError::NotFound(format!(
                "part {part} (there are {}: {})",
                parts.names().len(),
                parts.names().join(", ")
            ))
        })?;
        let g = ex.graph();
        let side = g.input_size as u32;
        let templates: Vec<_> = model
            .templates
            .iter()
            .enumerate()
            .map(|(t, tpl)| {
                let image = ex.image_by_id(&tpl.image_id);
                let point = tpl.point.to_frame().to_image_xy(g.input_size as f64, side as f64);
                let mut per_layer: BTreeMap<usize, usize> = BTreeMap::new();
                let voters: Vec<_> = tpl
                    .units
                    .iter()
                    .filter(|u| {
                        let shown = per_layer.entry(parts.graph_layer(part, u.layer)).or_default();
                        *shown += 1;
                        *shown <= VOTERS_SHOWN
                    })
                    .map(|u| {
                        let (l, n) = (parts.graph_layer(part, u.layer), u.unit as usize);
                        context! {
                            link => self.node_link(ex, l, n), color => layer_color(l),
                            delta => format!("({:+.0}, {:+.0})", u.delta[0], u.delta[1]),
                            at => image.map(|i| ex.node_xy(l, n, i, side)),
                            score => image.map(|i| format!("{:.3}", ex.activations()[i].layers[l].scores[n])),
                        }
                    })
                    .collect();
                context! {
                    index => t + 1, image_id => tpl.image_id, image => image, flipped => tpl.flipped,
                    image_url => image.and_then(|i| self.image_url(i)), crop => image.map(|i| self.png(Figure::Crop { image: i })),
                    point => point, score => format!("{:.3}", tpl.score), units => tpl.units.len(), voters => voters,
                }
            })
            .collect();
        let p = &model.params;
        self.render(
            "part.html",
            context! {
                title => format!("Part {}", parts.names()[part]), side => side, templates => templates,
                top_fraction => p.top_fraction(), max_displacement => p.max_displacement(), shown => VOTERS_SHOWN,
            },
        )
    }

    /// `/study[?rater=R]`: without a rater a form asking for one; with one the rater's next
    /// item (its patches, by an opaque item id: nodes and filters look alike) and the three
    /// answers, or a thank-you once every item is rated.
    pub fn study(&self, ex: &Explorer, rater: Option<&str>) -> Result<String> {
        let study = ex
            .study()
            .ok_or_else(|| ExploreError::NotFound("this explorer runs no study (start it with --study FILE)".into()))?;
        let Some(rater) = rater else {
            return self.render("study.html", context! { title => "Rate the patterns", rater => None::<String> });
        };
        let next = study.next_for(rater)?;
        let (done, total) = study.progress(rater)?;
        self.render(
            "study.html",
            context! {
                title => "Rate the patterns", rater => rater, item => next.map(|i| i.id),
                done => done, total => total,
            },
        )
    }
}

/// The file of a node's page in a static export.
pub(crate) fn node_file(layer: usize, node: usize) -> String {
    format!("node-{layer}-{node}.html")
}

/// How a layer's node table is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SortKey {
    /// By the node's rank (sum of its best scores), best first.
    Rank,
    /// By σ.
    Sigma,
    /// By node index (filter, then k).
    Node,
    /// By number of parents.
    Parents,
    /// By number of children.
    Children,
}

impl SortKey {
    /// Every key, in column order.
    pub const ALL: [SortKey; 5] = [SortKey::Rank, SortKey::Node, SortKey::Sigma, SortKey::Parents, SortKey::Children];

    /// The name in URLs.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Rank => "rank",
            SortKey::Sigma => "sigma",
            SortKey::Node => "node",
            SortKey::Parents => "parents",
            SortKey::Children => "children",
        }
    }

    fn default_descending(self) -> bool {
        matches!(self, SortKey::Parents | SortKey::Children)
    }
}

/// The query of a layer page: `sort`, `order` (`asc`/`desc`), `filter` (a channel), `page`
/// (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerQuery {
    /// Sort key.
    pub sort: SortKey,
    /// Descending order.
    pub descending: bool,
    /// Only this filter's nodes.
    pub filter: Option<usize>,
    /// 1-based page.
    pub page: usize,
}

impl Default for LayerQuery {
    fn default() -> Self {
        LayerQuery { sort: SortKey::Rank, descending: false, filter: None, page: 1 }
    }
}

impl LayerQuery {
    /// Parses the query parameters; an unknown parameter or value is a [`ExploreError::BadRequest`]
    /// naming it.
    pub fn parse(params: &BTreeMap<String, String>) -> Result<Self> {
        let bad = |what: String| ExploreError::BadRequest(what);
        let mut q = LayerQuery::default();
        for (key, value) in params {
            match key.as_str() {
                "sort" => {
                    q.sort = *SortKey::ALL.iter().find(|s| s.name() == value).ok_or_else(|| {
                        bad(format!("sort={value:?}: expected one of rank, node, sigma, parents, children"))
                    })?
                }
                "order" => {
                    q.descending = match value.as_str() {
                        "asc" => false,
                        "desc" => true,
                        _ => return Err(bad(format!("order={value:?}: expected asc or desc"))),
                    }
                }
                "filter" if value.is_empty() => {}
                "filter" => {
                    q.filter = Some(value.parse().map_err(|_| bad(format!("filter={value:?}: not a filter number")))?)
                }
                "page" => q.page = value.parse().map_err(|_| bad(format!("page={value:?}: not a page number")))?,
                other => return Err(bad(format!("unknown parameter {other:?}"))),
            }
        }
        Ok(q)
    }
}
