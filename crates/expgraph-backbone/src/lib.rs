//! expgraph-backbone (work in progress).
