//! The HTTP server: axum routes over one shared [`Explorer`], pages and PNGs rendered on
//! blocking threads, bound to a local address unless told otherwise.
//!
//! | route | what |
//! | --- | --- |
//! | `/` | layers, origin, best nodes, a node finder |
//! | `/layer/{l}?sort=&order=&filter=&page=` | a layer's node table |
//! | `/node/{l}/{n}` | a node: patches, heat maps, parents with displacements, children |
//! | `/image/{i}?nodes=N` | an image's best nodes per layer and the edges between them |
//! | `/find?layer=&filter=&node=` | redirects to a node page or a filter's nodes |
//! | `/part/{p}` | a part model's templates: voting nodes drawn on each annotated image (with part models) |
//! | `/png/crop/{i}.png`, `/png/patches/{l}/{n}.png?count=K`, `/png/heat/{l}/{n}/{i}.png` | figures ([`Figure::route`]) |
//! | `/png/filter/{l}/{f}.png?count=K` | a raw filter's best patches (with the raw filters loaded) |
//! | `/study?rater=R`, `POST /study/rate` (`rater`, `item`, `answer`), `/png/study/{item}.png` | the human study (with `--study`) |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::images::{Figure, PngCache};
use crate::pages::{LayerQuery, Pages, IMAGE_NODES_DEFAULT};
use crate::{ExploreError, Explorer, Result};

/// Most nodes per layer an image page draws.
pub const MAX_IMAGE_NODES: usize = 200;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeParams {
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// Accept a non-loopback address (the explorer has no authentication).
    pub allow_remote: bool,
    /// PNGs kept in memory.
    pub png_cache: usize,
    /// Worker threads of the async runtime (drawing runs on its blocking pool).
    pub threads: usize,
}

impl Default for ServeParams {
    /// 127.0.0.1:8080, local only, 4096 cached PNGs, 2 worker threads.
    fn default() -> Self {
        ServeParams { addr: SocketAddr::from(([127, 0, 0, 1], 8080)), allow_remote: false, png_cache: 4096, threads: 2 }
    }
}

/// Refuses a non-loopback address unless `allow_remote`.
pub fn check_address(addr: &SocketAddr, allow_remote: bool) -> Result<()> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(ExploreError::NotLocal(addr.to_string()))
    }
}

struct AppState {
    explorer: Explorer,
    pages: Pages,
    pngs: PngCache,
}

type Shared = Arc<AppState>;

impl IntoResponse for ExploreError {
    fn into_response(self) -> Response {
        let status = match &self {
            ExploreError::NotFound(_) => StatusCode::NOT_FOUND,
            ExploreError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "request failed");
        }
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response()
    }
}

/// Runs `work` on the blocking pool (pages and PNGs are CPU work).
async fn blocking<T: Send + 'static>(
    state: Shared,
    work: impl FnOnce(&AppState) -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || work(&state))
        .await
        .map_err(|e| ExploreError::Input(format!("a request's worker failed: {e}")))?
}

/// The value of `key` in a query that may hold nothing else (another parameter is a 400).
fn only_param<'a>(q: &'a BTreeMap<String, String>, key: &str) -> Result<Option<&'a str>> {
    if let Some(other) = q.keys().find(|k| k.as_str() != key) {
        return Err(ExploreError::BadRequest(format!("unknown parameter {other:?}")));
    }
    Ok(q.get(key).map(String::as_str))
}

fn number(what: &str, text: &str) -> Result<usize> {
    text.parse().map_err(|_| ExploreError::NotFound(format!("{what} {text:?}")))
}

/// `N.png` → N.
fn png_number(what: &str, file: &str) -> Result<usize> {
    let stem = file.strip_suffix(".png").ok_or_else(|| ExploreError::NotFound(format!("{what} {file:?}")))?;
    number(what, stem)
}

fn png(bytes: Arc<Vec<u8>>) -> Response {
    ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "max-age=3600")], bytes.as_ref().clone())
        .into_response()
}

async fn index(State(s): State<Shared>) -> Result<Html<String>> {
    Ok(Html(blocking(s, |s| s.pages.index(&s.explorer)).await?))
}

async fn layer(
    State(s): State<Shared>,
    Path(l): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Html<String>> {
    let l = number("layer", &l)?;
    let query = LayerQuery::parse(&q)?;
    Ok(Html(blocking(s, move |s| s.pages.layer(&s.explorer, l, &query)).await?))
}

async fn node(State(s): State<Shared>, Path((l, n)): Path<(String, String)>) -> Result<Html<String>> {
    let (l, n) = (number("layer", &l)?, number("node", &n)?);
    Ok(Html(blocking(s, move |s| s.pages.node(&s.explorer, l, n)).await?))
}

async fn part(State(s): State<Shared>, Path(p): Path<String>) -> Result<Html<String>> {
    let p = number("part", &p)?;
    Ok(Html(blocking(s, move |s| s.pages.part(&s.explorer, p)).await?))
}

async fn image(
    State(s): State<Shared>,
    Path(i): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Html<String>> {
    let i = number("image", &i)?;
    let per_layer = match only_param(&q, "nodes")? {
        None => IMAGE_NODES_DEFAULT,
        Some(value) => value
            .parse()
            .ok()
            .filter(|n| (1..=MAX_IMAGE_NODES).contains(n))
            .ok_or_else(|| ExploreError::BadRequest(format!("nodes={value:?}: expected 1 … {MAX_IMAGE_NODES}")))?,
    };
    Ok(Html(blocking(s, move |s| s.pages.image(&s.explorer, i, per_layer)).await?))
}

/// `/find?layer=L&filter=F` → the layer's table of filter F; `&node=N` → node N's page.
async fn find(State(s): State<Shared>, Query(q): Query<BTreeMap<String, String>>) -> Result<Redirect> {
    let get = |key: &str| q.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    let parse = |key: &str, v: &str| {
        v.parse::<usize>().map_err(|_| ExploreError::BadRequest(format!("{key}={v:?}: not a number")))
    };
    if let Some(other) = q.keys().find(|k| !["layer", "filter", "node"].contains(&k.as_str())) {
        return Err(ExploreError::BadRequest(format!("unknown parameter {other:?}")));
    }
    let layer = parse("layer", get("layer").ok_or_else(|| ExploreError::BadRequest("layer is required".into()))?)?;
    match (get("node"), get("filter")) {
        (Some(n), _) => {
            let n = parse("node", n)?;
            s.explorer.check_node(layer, n)?;
            Ok(Redirect::to(&format!("/node/{layer}/{n}")))
        }
        (None, Some(f)) => Ok(Redirect::to(&format!("/layer/{layer}?filter={}", parse("filter", f)?))),
        (None, None) => Ok(Redirect::to(&format!("/layer/{layer}"))),
    }
}

async fn figure(s: Shared, figure: Figure) -> Result<Response> {
    Ok(png(blocking(s, move |s| s.pngs.get(&s.explorer, figure)).await?))
}

async fn crop_png(State(s): State<Shared>, Path(file): Path<String>) -> Result<Response> {
    let image = png_number("image", &file)?;
    figure(s, Figure::Crop { image }).await
}

async fn patches_png(
    State(s): State<Shared>,
    Path((l, file)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response> {
    let (layer, node) = (number("layer", &l)?, png_number("node", &file)?);
    figure(s, Figure::Patches { layer, node, count: patch_count(&q)? }).await
}

/// `count` of a patch strip (default 5).
fn patch_count(q: &BTreeMap<String, String>) -> Result<usize> {
    match only_param(q, "count")? {
        None => Ok(5),
        Some(value) => value.parse().map_err(|_| ExploreError::BadRequest(format!("count={value:?}: not a number"))),
    }
}

/// `/png/filter/{l}/{f}.png?count=K`: a raw filter's best patches (with the raw filters loaded).
async fn filter_png(
    State(s): State<Shared>,
    Path((l, file)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response> {
    let (layer, filter) = (number("layer", &l)?, png_number("filter", &file)?);
    figure(s, Figure::FilterPatches { layer, filter, count: patch_count(&q)? }).await
}

async fn heat_png(State(s): State<Shared>, Path((l, n, file)): Path<(String, String, String)>) -> Result<Response> {
    let (layer, node, image) = (number("layer", &l)?, number("node", &n)?, png_number("image", &file)?);
    figure(s, Figure::Heat { layer, node, image }).await
}

async fn study_page(State(s): State<Shared>, Query(q): Query<BTreeMap<String, String>>) -> Result<Html<String>> {
    let rater = only_param(&q, "rater")?.map(str::to_string);
    Ok(Html(blocking(s, move |s| s.pages.study(&s.explorer, rater.as_deref())).await?))
}

/// `POST /study/rate`: records the answer, then sends the rater to the next item.
async fn study_rate(State(s): State<Shared>, Form(form): Form<BTreeMap<String, String>>) -> Result<Redirect> {
    let field = |k: &str| form.get(k).ok_or_else(|| ExploreError::BadRequest(format!("{k} is required")));
    if let Some(other) = form.keys().find(|k| !["rater", "item", "answer"].contains(&k.as_str())) {
        return Err(ExploreError::BadRequest(format!("unknown field {other:?}")));
    }
    let rater = field("rater")?.clone();
    let item_text = field("item")?;
    let item: i64 =
        item_text.parse().map_err(|_| ExploreError::BadRequest(format!("item={item_text:?}: not a number")))?;
    let answer = crate::study::Answer::parse(field("answer")?)?;
    let next = format!("/study?rater={rater}");
    blocking(s, move |s| running_study(&s.explorer)?.submit(&rater, item, answer)).await?;
    Ok(Redirect::to(&next))
}

async fn study_png(State(s): State<Shared>, Path(file): Path<String>) -> Result<Response> {
    let id = png_number("study item", &file)?;
    let fig = {
        let item = running_study(&s.explorer)?.item(id as i64)?;
        match item.kind {
            crate::study::ItemKind::Node => {
                Figure::Patches { layer: item.layer_index, node: item.unit, count: STUDY_PATCHES }
            }
            crate::study::ItemKind::Filter => {
                Figure::FilterPatches { layer: item.layer_index, filter: item.unit, count: STUDY_PATCHES }
            }
        }
    };
    figure(s, fig).await
}

/// The explorer's study; a 404 when it runs none.
fn running_study(ex: &Explorer) -> Result<&crate::study::Study> {
    ex.study().ok_or_else(|| ExploreError::NotFound("this explorer runs no study".into()))
}

/// Patches a rater sees per study item.
pub const STUDY_PATCHES: usize = 10;

async fn not_found() -> ExploreError {
    ExploreError::NotFound("no such page".into())
}

/// The routes over `explorer` (see the module docs), PNGs cached up to `png_cache`.
pub fn router(explorer: Explorer, png_cache: usize) -> Result<Router> {
    let state = Arc::new(AppState { explorer, pages: Pages::new()?, pngs: PngCache::new(png_cache) });
    Ok(Router::new()
        .route("/", get(index))
        .route("/layer/{l}", get(layer))
        .route("/node/{l}/{n}", get(node))
        .route("/image/{i}", get(image))
        .route("/find", get(find))
        .route("/part/{p}", get(part))
        .route("/png/crop/{file}", get(crop_png))
        .route("/png/patches/{l}/{file}", get(patches_png))
        .route("/png/heat/{l}/{n}/{file}", get(heat_png))
        .route("/png/filter/{l}/{file}", get(filter_png))
        .route("/study", get(study_page))
        .route("/study/rate", axum::routing::post(study_rate))
        .route("/png/study/{file}", get(study_png))
        .fallback(not_found)
        .with_state(state))
}

/// A running server: its address, and how to stop it.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    /// Binds `params.addr` (checked by [`check_address`]) and serves `explorer` on a
    /// background thread until [`stop`](Self::stop) or the process ends.
    pub fn start(explorer: Explorer, params: &ServeParams) -> Result<Server> {
        check_address(&params.addr, params.allow_remote)?;
        let io = |source: std::io::Error| ExploreError::Server { addr: params.addr.to_string(), source };
        let listener = std::net::TcpListener::bind(params.addr).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let app = router(explorer, params.png_cache)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(params.threads.max(1))
            .enable_io()
            .enable_time()
            .build()
            .map_err(io)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("expgraph-explore".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|source| ExploreError::Server { addr: addr.to_string(), source })?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = rx.await;
                        })
                        .await
                        .map_err(|source| ExploreError::Server { addr: addr.to_string(), source })
                })
            })
            .map_err(io)?;
        tracing::info!(%addr, "explorer listening");
        Ok(Server { addr, shutdown: Some(tx), thread: Some(thread) })
    }

    /// The bound address (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks until the server ends (it runs until the process is stopped).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    /// Stops accepting, finishes the requests in flight, and returns.
    pub fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| ExploreError::Input("the server thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.join();
    }
}
