//! Progress bar of the learning stage (quiet when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One bar over all (layer, iteration) steps of a learn.
pub(super) struct LearnBar(ProgressBar);

impl LearnBar {
    pub(super) fn new(enabled: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if !enabled {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        if let Ok(style) = ProgressStyle::with_template("learn {msg} [{bar:30}] {pos}/{len} {elapsed}") {
            bar.set_style(style);
        }
        Self(bar)
    }

    pub(super) fn update(&self, p: &expgraph_learn::Progress) {
        self.0.set_length((p.num_layers * p.iterations) as u64);
        self.0.set_position((p.layers_done * p.iterations + p.iteration) as u64);
        self.0.set_message(format!("{} it {}/{}", p.layer, p.iteration, p.iterations));
        if p.iteration == p.iterations {
            tracing::info!(layer = %p.layer, "layer learned");
        }
    }

    pub(super) fn finish(self) {
        self.0.finish_and_clear();
    }
}
