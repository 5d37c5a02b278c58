//! expgraph-disentangle (work in progress).
