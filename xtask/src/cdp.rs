//! A small Chrome DevTools Protocol client: headless Chromium with a debugging port, one page
//! driven over a WebSocket (tungstenite): navigate, evaluate, click with real mouse events, type,
//! take screenshots. It drives the explorer's browser test (test-only); nothing is fetched from
//! the network.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::chromium::{browser_command, find_browser, luminance_variance, ScreenshotInfo, ScreenshotParams};

/// A headless Chromium and the WebSocket of its page; the browser is killed on drop.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Events received while waiting for a reply, oldest first.
    events: Vec<Value>,
    timeout: Duration,
}

impl Browser {
    /// Starts the browser ([`find_browser`] unless `params.browser`) with a window of
    /// `params.width` × `params.height` and connects to its page.
    pub fn launch(params: &ScreenshotParams) -> Result<Browser> {
        let browser = params
            .browser
            .clone()
            .or_else(find_browser)
            .ok_or_else(|| anyhow!("no Chromium found (apt-get install chromium, or set EXPGRAPH_CHROMIUM)"))?;
        let profile = tempfile::tempdir().context("a browser profile folder")?;
        let mut child = browser_command(&browser, profile.path(), params)
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| browser.display().to_string())?;
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…" on stderr; the rest of
        // stderr is drained so the browser never blocks on it
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr of {}", browser.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(std::io::Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let killed = |mut child: Child, e: anyhow::Error| {
            let _ = child.kill();
            let _ = child.wait();
            e
        };
        let browser_url = match rx.recv_timeout(params.timeout) {
            Ok(url) => url,
            Err(_) => return Err(killed(child, anyhow!("{} printed no DevTools address", browser.display()))),
        };
        match connect_page(&browser_url, params.timeout) {
            Ok(ws) => Ok(Browser { child, _profile: profile, ws, next_id: 0, events: vec![], timeout: params.timeout }),
            Err(e) => Err(killed(child, e)),
        }
    }

    /// Sends `method` with `params` and returns its result; an error reply is an error.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(text)).with_context(|| format!("sending {method}"))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let msg = self.read(deadline).with_context(|| format!("waiting for the reply to {method}"))?;
            if msg.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = msg.get("error") {
                    bail!("{method}: {err}");
                }
                return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
            }
            if msg.get("method").is_some() {
                self.events.push(msg);
            }
        }
    }

    /// Waits for the event `method` (received after the last [`Browser::forget_events`]).
    pub fn wait_event(&mut self, method: &str) -> Result<Value> {
        if let Some(at) = self.events.iter().position(|e| e["method"] == method) {
            return Ok(self.events.remove(at));
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let msg = self.read(deadline).with_context(|| format!("waiting for {method}"))?;
            if msg["method"] == method {
                return Ok(msg);
            }
        }
    }

    /// Drops the events received so far.
    pub fn forget_events(&mut self) {
        self.events.clear();
    }

    fn read(&mut self, deadline: Instant) -> Result<Value> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no answer from the browser within {:?}", self.timeout);
            }
            self.ws.get_ref().set_read_timeout(Some(left.min(Duration::from_millis(500))))?;
            match self.ws.read() {
                Ok(Message::Text(text)) => return Ok(serde_json::from_str(text.as_str())?),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Opens `url` and waits until it has loaded.
    pub fn navigate(&mut self, url: &str) -> Result<()> {
        self.call("Page.enable", json!({}))?;
        self.forget_events();
        let reply = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(err) = reply.get("errorText") {
            bail!("opening {url}: {err}");
        }
        self.wait_event("Page.loadEventFired").map(drop)
    }

    /// The value of the JavaScript expression `expr` in the page.
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        let reply = self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true }))?;
        if let Some(ex) = reply.get("exceptionDetails") {
            bail!("{expr}: {ex}");
        }
        Ok(reply["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// The page's path and query.
    pub fn location(&mut self) -> Result<String> {
        let v = self.eval("location.pathname + location.search")?;
        v.as_str().map(str::to_string).ok_or_else(|| anyhow!("no location: {v}"))
    }

    /// Clicks the first element matching the CSS `selector` with the mouse (scrolled into view,
    /// pressed and released at its centre), then waits for the page it opens to load.
    pub fn click(&mut self, selector: &str) -> Result<()> {
        let sel = serde_json::to_string(selector)?;
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
        ))?;
        let (x, y) = match at.as_array().map(|a| (a[0].as_f64(), a[1].as_f64())) {
            Some((Some(x), Some(y))) => (x, y),
            _ => bail!("no element matches {selector}"),
        };
        self.forget_events();
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )?;
        }
        self.wait_event("Page.loadEventFired").map(drop)
    }

    /// Types `text` into the first element matching `selector`.
    pub fn type_into(&mut self, selector: &str, text: &str) -> Result<()> {
        let sel = serde_json::to_string(selector)?;
        if self
            .eval(&format!("(() => {{ const e = document.querySelector({sel}); if (e) e.focus(); return !!e; }})()"))?
            != json!(true)
        {
            bail!("no element matches {selector}");
        }
        self.call("Input.insertText", json!({ "text": text })).map(drop)
    }

    /// Saves a PNG of the whole page at `out` (atomically).
    pub fn screenshot(&mut self, out: &Path) -> Result<ScreenshotInfo> {
        let reply = self.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true }))?;
        let data = reply["data"].as_str().ok_or_else(|| anyhow!("no screenshot data"))?;
        let png = base64::engine::general_purpose::STANDARD.decode(data).context("decoding the screenshot")?;
        let img = image::load_from_memory(&png).context("the screenshot is no image")?.to_rgb8();
        expgraph::io::write_bytes(out, &png).with_context(|| out.display().to_string())?;
        Ok(ScreenshotInfo { width: img.width(), height: img.height(), luminance_variance: luminance_variance(&img) })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The WebSocket of the browser's page: its target id is asked for over the browser's own
/// WebSocket `ws://HOST:PORT/devtools/browser/…`.
fn connect_page(browser_url: &str, timeout: Duration) -> Result<WebSocket<TcpStream>> {
    let host = browser_url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow!("unexpected DevTools address {browser_url}"))?;
    let connect = |url: &str| -> Result<WebSocket<TcpStream>> {
        let stream = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
        stream.set_read_timeout(Some(timeout))?;
        let (ws, _) = tungstenite::client(url, stream).map_err(|e| anyhow!("{url}: {e}"))?;
        Ok(ws)
    };
    let mut browser = connect(browser_url)?;
    browser.send(Message::text(json!({ "id": 1, "method": "Target.getTargets" }).to_string()))?;
    let targets = loop {
        let Message::Text(text) = browser.read().context("the browser's targets")? else { continue };
        let msg: Value = serde_json::from_str(text.as_str())?;
        if msg["id"] == 1 {
            break msg;
        }
    };
    let _ = browser.close(None);
    let page = targets["result"]["targetInfos"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["targetId"].as_str())
        .ok_or_else(|| anyhow!("the browser has no page: {targets}"))?;
    connect(&format!("ws://{host}/devtools/page/{page}"))
}

#[cfg(test)]
mod tests {
    //! The explorer in headless Chromium, clicked through like a user: index → node → parent →
    //! image, then the study: a rater id typed in, an answer clicked, the row stored. Skipped
    //! when no Chromium is installed (CI installs Debian's `chromium`). With
    //! `EXPGRAPH_SCREENSHOTS=DIR` each page's screenshot is kept in DIR.
    use super::*;
    use expgraph_explore::study::{summary, Study, StudyLayer, StudyPlan};
    use expgraph_explore::{Explorer, ServeParams, Server};
    use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_filter_maxima, synthetic_graph};

    fn layers(graph: &expgraph::graph::ExplanatoryGraph) -> Vec<StudyLayer> {
        graph
            .layers
            .iter()
            .map(|l| StudyLayer { name: l.info.name.clone(), nodes: l.num_nodes(), filters: l.info.channels })
            .collect()
    }

    #[test]
    fn a_user_clicks_through_the_explorer_and_rates_an_item() {
        if find_browser().is_none() {
            eprintln!("skipping: no Chromium on PATH (apt-get install chromium)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shots = std::env::var_os("EXPGRAPH_SCREENSHOTS").map_or(dir.path().to_path_buf(), Into::into);
        let graph = synthetic_graph(4, 3, 1).unwrap();
        let acts = synthetic_activations(&graph, 6, 2);
        let raw = synthetic_filter_maxima(&graph, &acts);
        let plan = StudyPlan { per_layer: 2, seed: 1 };
        let file = dir.path().join("study.sqlite");
        let study = Study::open(&file, "digest", &layers(&graph), &plan).unwrap();
        let explorer = Explorer::new(graph.clone(), acts, Box::new(synthetic_crops(6, 224, 3)), vec![])
            .unwrap()
            .with_raw_filters(&raw)
            .unwrap()
            .with_study(study)
            .unwrap();
        let server =
            Server::start(explorer, &ServeParams { addr: "127.0.0.1:0".parse().unwrap(), ..ServeParams::default() })
                .unwrap();
        let base = format!("http://{}", server.addr());
        let mut b = Browser::launch(&ScreenshotParams { width: 1100, height: 900, ..Default::default() }).unwrap();
        let shot = |b: &mut Browser, name: &str| {
            let info = b.screenshot(&shots.join(format!("explorer-{name}.png"))).unwrap();
            assert!(info.luminance_variance > 100.0, "{name}: blank page");
        };

        b.navigate(&format!("{base}/")).unwrap();
        assert_eq!(b.eval("document.title").unwrap(), json!("Explanatory graph · expgraph explorer"));
        shot(&mut b, "index");
        // the index's best node of the first layer → its page
        b.click("td a[href^='/node/0/']").unwrap();
        let node = b.location().unwrap();
        assert!(node.starts_with("/node/0/"), "{node}");
        let h1 = b.eval("document.querySelector('h1').textContent").unwrap();
        assert_eq!(h1, json!(format!("{} node {}", graph.layers[0].info.name, &node["/node/0/".len()..])));
        // the images loaded are PNGs the browser could decode (lazy ones below the fold may wait)
        let broken = b.eval("[...document.images].filter(i => i.complete && i.naturalWidth === 0).length").unwrap();
        assert_eq!(broken, json!(0), "broken images on {node}");
        let shown = b.eval("[...document.images].filter(i => i.naturalWidth > 0).length").unwrap();
        assert!(shown.as_u64().unwrap() >= 3, "{shown} images shown on {node}");
        shot(&mut b, "node");
        // a parent in the parents table → the parent's page, one layer up
        b.click("table a[href^='/node/1/']").unwrap();
        let parent = b.location().unwrap();
        assert!(parent.starts_with("/node/1/"), "{parent}");
        // one of its best images → the image page with the graph drawn over it
        b.click(".patches a[href^='/image/']").unwrap();
        let image = b.location().unwrap();
        assert!(image.starts_with("/image/"), "{image}");
        let circles = b.eval("document.querySelectorAll('svg circle').length").unwrap().as_u64().unwrap();
        assert!(circles >= 2, "{circles} nodes drawn on {image}");
        shot(&mut b, "image");

        // the study: a rater id typed into the form, then an answer clicked
        b.navigate(&format!("{base}/study")).unwrap();
        b.type_into("input[name=rater]", "chromium-1").unwrap();
        b.click("button[type=submit]").unwrap();
        assert_eq!(b.location().unwrap(), "/study?rater=chromium-1");
        let item: i64 =
            b.eval("document.querySelector('input[name=item]').value").unwrap().as_str().unwrap().parse().unwrap();
        shot(&mut b, "study");
        b.click("#answer-part").unwrap();
        assert_eq!(b.location().unwrap(), "/study?rater=chromium-1");
        let next = b.eval("document.querySelector('input[name=item]')?.value ?? null").unwrap();
        assert_ne!(next, json!(item.to_string()), "the rated item is shown again");
        drop(b);
        server.stop().unwrap();

        // the stored row: one answer, "part", by this rater
        let study = Study::open(&file, "digest", &layers(&graph), &plan).unwrap();
        assert_eq!(study.progress("chromium-1").unwrap().0, 1);
        let s = summary(&file).unwrap();
        let json = serde_json::to_value(&s).unwrap().to_string();
        assert!(json.contains("\"part\":1") || json.contains("\"part\": 1"), "{json}");
    }
}
