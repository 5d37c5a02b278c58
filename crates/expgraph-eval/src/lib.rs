//! expgraph-eval (work in progress).
