//! expgraph-datasets (work in progress).
