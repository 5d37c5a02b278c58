//! `cargo xtask screenshot`: open a report's `index.html` in headless Chromium and save a PNG
//! (the browser driver is `crate::chromium`).

use std::path::PathBuf;
use std::time::Duration;

use crate::chromium::{screenshot, ScreenshotParams};
use anyhow::{bail, Context, Result};

/// Arguments of `cargo xtask screenshot`.
#[derive(clap::Args, Debug)]
pub struct ScreenshotArgs {
    /// Report folder (holding index.html) or the HTML file itself.
    #[arg(long)]
    pub report: PathBuf,
    /// Where the PNG goes.
    #[arg(long, short, default_value = "target/report-screenshot.png")]
    pub out: PathBuf,
    /// Window width, px.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    /// Window height, px.
    #[arg(long, default_value_t = 2000)]
    pub height: u32,
    /// Browser binary (default: $EXPGRAPH_CHROMIUM, then chromium / chromium-browser on PATH).
    #[arg(long)]
    pub browser: Option<PathBuf>,
    /// Seconds before the browser is killed.
    #[arg(long, default_value_t = 90)]
    pub timeout_s: u64,
}

/// Run `cargo xtask screenshot`.
pub fn run(args: ScreenshotArgs) -> Result<()> {
    let page = if args.report.is_dir() { args.report.join("index.html") } else { args.report.clone() };
    if !page.is_file() {
        bail!("{} not found (run `expgraph report` first)", page.display());
    }
    let params = ScreenshotParams {
        browser: args.browser,
        width: args.width,
        height: args.height,
        timeout: Duration::from_secs(args.timeout_s),
    };
    let info = screenshot(&page, &args.out, &params).with_context(|| format!("screenshot of {}", page.display()))?;
    if info.luminance_variance < 1.0 {
        bail!("the screenshot {} is blank (luminance variance {:.3})", args.out.display(), info.luminance_variance);
    }
    println!(
        "{} ({}×{}, luminance variance {:.0})",
        args.out.display(),
        info.width,
        info.height,
        info.luminance_variance
    );
    Ok(())
}
