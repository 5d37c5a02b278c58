//! expgraph-features (work in progress).
