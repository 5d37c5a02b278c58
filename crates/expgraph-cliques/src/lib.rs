//! expgraph-cliques (work in progress).
