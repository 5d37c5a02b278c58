//! expgraph-localize (work in progress).
