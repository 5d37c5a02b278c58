//! `MIMALLOC_PURGE_DELAY` in the environment stands over [`expgraph_alloc::keep_freed_memory`]
//! (its own process: the variable is set before mimalloc starts, by running this test binary
//! again as a child).

use std::process::Command;

#[global_allocator]
static GLOBAL: expgraph_alloc::MiMalloc = expgraph_alloc::MiMalloc;

#[test]
fn the_environment_sets_the_delay_when_it_names_one() {
    if let Ok(expected) = std::env::var("EXPGRAPH_ALLOC_CHILD") {
        expgraph_alloc::keep_freed_memory();
        assert_eq!(expgraph_alloc::purge_delay_ms().to_string(), expected);
        return;
    }
    for (env, expected) in [(Some("250"), 250), (None, expgraph_alloc::KEEP_FREED.as_millis())] {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child.args(["--exact", "the_environment_sets_the_delay_when_it_names_one", "--nocapture"]);
        child.env("EXPGRAPH_ALLOC_CHILD", expected.to_string()).env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(ms) = env {
            child.env("MIMALLOC_PURGE_DELAY", ms);
        }
        let out = child.output().unwrap();
        assert!(out.status.success(), "MIMALLOC_PURGE_DELAY={env:?}: {}", String::from_utf8_lossy(&out.stdout));
    }
}
