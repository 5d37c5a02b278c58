//! expgraph-learn (work in progress).
