//! Progress of long work, reported by libraries and drawn by whoever runs them. Libraries never
//! draw: they call a [`ProgressSink`]; the CLI turns the reports into bars.

use std::fmt;
use std::sync::Arc;

/// How far a stage has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What is being done, e.g. `negatives`, `extract`, `learn conv5_3`.
    pub stage: String,
    /// Steps done.
    pub done: u64,
    /// Steps in all.
    pub total: u64,
}

type ProgressFn = dyn Fn(&Progress) + Send + Sync;

/// Where [`Progress`] goes; the default sink drops it.
#[derive(Clone, Default)]
pub struct ProgressSink(Option<Arc<ProgressFn>>);

impl ProgressSink {
    /// A sink calling `f` for every report.
    pub fn new(f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    /// A sink that drops every report.
    pub fn none() -> Self {
        Self(None)
    }

    /// Report `done` of `total` steps of `stage`.
    pub fn report(&self, stage: &str, done: u64, total: u64) {
        if let Some(f) = &self.0 {
            f(&Progress { stage: stage.to_string(), done, total });
        }
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "ProgressSink(..)" } else { "ProgressSink(none)" })
    }
}

/// Sinks carry no settings: any two are equal (so parameter structs can derive `PartialEq`).
impl PartialEq for ProgressSink {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn reports_reach_the_sink_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink = ProgressSink::new(move |p| s.lock().unwrap().push((p.stage.clone(), p.done, p.total)));
        sink.report("extract", 1, 4);
        sink.clone().report("extract", 4, 4);
        ProgressSink::none().report("dropped", 0, 1);
        assert_eq!(*seen.lock().unwrap(), [("extract".to_string(), 1, 4), ("extract".to_string(), 4, 4)]);
    }
}
