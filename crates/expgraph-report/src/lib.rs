//! expgraph-report (work in progress).
