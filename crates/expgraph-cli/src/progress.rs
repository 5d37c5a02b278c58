//! Progress bars, drawn only here (libraries report through [`ProgressSink`]), and log lines that
//! do not break them: `tracing` writes through [`LogWriter`], which hides the bars for the line.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

use expgraph_io::ProgressSink;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// All bars of the process; hidden when stderr is not a terminal.
fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        MultiProgress::with_draw_target(target)
    })
}

/// A bar of `len` steps labelled `message`.
pub fn bar(len: u64, message: &str) -> ProgressBar {
    let bar = multi().add(ProgressBar::new(len).with_message(message.to_string()));
    if let Ok(style) = ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} {per_sec} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A sink that draws one bar per stage: a new stage name replaces the bar.
pub fn sink() -> ProgressSink {
    let current: Mutex<Option<(String, ProgressBar)>> = Mutex::new(None);
    ProgressSink::new(move |p| {
        let Ok(mut current) = current.lock() else { return };
        if current.as_ref().is_none_or(|(stage, _)| *stage != p.stage) {
            if let Some((_, old)) = current.take() {
                old.finish_and_clear();
            }
            *current = Some((p.stage.clone(), bar(p.total, &p.stage)));
        }
        if let Some((_, b)) = current.as_ref() {
            b.set_length(p.total);
            b.set_position(p.done);
            if p.done >= p.total {
                b.finish_and_clear();
            }
        }
    })
}

/// stderr for `tracing`, with the bars hidden while a line is written.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        multi().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
