//! Progress of a stage as steps done of a total, reported to a [`ProgressSink`] (the CLI draws it).

use expgraph_io::ProgressSink;

/// Counts the steps of one stage and reports each advance.
pub(crate) struct Counter<'a> {
    pub sink: &'a ProgressSink,
    pub stage: &'static str,
    pub done: u64,
    pub total: u64,
}

impl Counter<'_> {
    /// `steps` more are done.
    pub fn advance(&mut self, steps: u64) {
        self.done += steps;
        self.sink.report(self.stage, self.done, self.total);
    }
}
