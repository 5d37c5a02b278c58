//! Screenshots of a report page in headless Chromium (used by `cargo xtask screenshot` and the
//! screenshot test). Spawns the browser with networking, GPU, sync and first-run features off and
//! a throw-away profile; nothing is fetched.

use crate::error::{ReportError, Result};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Browser and window settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenshotParams {
    /// Browser binary; `None` = [`find_browser`].
    pub browser: Option<PathBuf>,
    /// Window width, px.
    pub width: u32,
    /// Window height, px.
    pub height: u32,
    /// The browser is killed after this long.
    pub timeout: Duration,
}

impl Default for ScreenshotParams {
    fn default() -> Self {
        Self { browser: None, width: 1280, height: 2000, timeout: Duration::from_secs(90) }
    }
}

/// What a screenshot looked like.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenshotInfo {
    /// Width of the PNG.
    pub width: u32,
    /// Height of the PNG.
    pub height: u32,
    /// Variance of the pixel luminance (0 for a blank page).
    pub luminance_variance: f64,
}

/// The headless browser: `$EXPGRAPH_CHROMIUM`, else the first of `chromium`, `chromium-browser`,
/// `google-chrome` on `PATH`.
pub fn find_browser() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EXPGRAPH_CHROMIUM").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Variance of the luminance `(r + g + b) / 3` over all pixels.
pub fn luminance_variance(img: &RgbImage) -> f64 {
    let n = (img.width() as f64 * img.height() as f64).max(1.0);
    let lum = |p: &image::Rgb<u8>| p.0.iter().map(|&c| c as f64).sum::<f64>() / 3.0;
    let mean = img.pixels().map(lum).sum::<f64>() / n;
    img.pixels().map(|p| (lum(p) - mean).powi(2)).sum::<f64>() / n
}

fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

fn browser_err(detail: impl Into<String>) -> ReportError {
    ReportError::invalid("screenshot", detail)
}

/// Opens `page` (an HTML file) in headless Chromium and saves a PNG of the window at `out`
/// (atomically: the browser writes a temp file that is renamed).
pub fn screenshot(page: &Path, out: &Path, params: &ScreenshotParams) -> Result<ScreenshotInfo> {
    let browser = params
        .browser
        .clone()
        .or_else(find_browser)
        .ok_or_else(|| browser_err("no Chromium found (apt-get install chromium, or set EXPGRAPH_CHROMIUM)"))?;
    let page = page.canonicalize().map_err(|e| ReportError::io(page, e))?;
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| ReportError::io(&out_dir, e))?;
    let profile = tempfile::tempdir().map_err(|e| ReportError::io(std::env::temp_dir(), e))?;
    let staged = tempfile::Builder::new()
        .prefix(".screenshot-")
        .suffix(".png")
        .tempfile_in(&out_dir)
        .map_err(|e| ReportError::io(&out_dir, e))?
        .into_temp_path();
    let log_path = profile.path().join("browser.log");
    let log = std::fs::File::create(&log_path).map_err(|e| ReportError::io(&log_path, e))?;
    let mut child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", staged.display()))
        .arg(format!("--window-size={},{}", params.width, params.height))
        .arg(file_url(&page))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| ReportError::io(&browser, e))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| ReportError::io(&browser, e))? {
            Some(status) => break status,
            None if start.elapsed() > params.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(browser_err(format!("{} did not finish within {:?}", browser.display(), params.timeout)));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let shot = std::fs::read(&staged).unwrap_or_default();
    if !status.success() || shot.is_empty() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: String = log.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(browser_err(format!("{} failed ({status}), no screenshot; log tail:\n{tail}", browser.display())));
    }
    let img = image::load_from_memory(&shot)
        .map_err(|source| ReportError::Png { path: staged.to_path_buf(), source })?
        .to_rgb8();
    staged.persist(out).map_err(|e| ReportError::io(out, e.error))?;
    Ok(ScreenshotInfo { width: img.width(), height: img.height(), luminance_variance: luminance_variance(&img) })
}
