//! [`expgraph_alloc::keep_freed_memory`] keeps freed memory in the process: memory freed and
//! allocated again later does not page-fault in again. Checked against mimalloc purging at once,
//! which does, so the test also proves the option it sets is the purge delay.

#[global_allocator]
static GLOBAL: expgraph_alloc::MiMalloc = expgraph_alloc::MiMalloc;

/// The process's minor page faults so far (Linux), from `/proc/self/stat`.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (in brackets): state is the 3rd field, minflt the 10th.
    stat.rsplit(')').next()?.split_whitespace().nth(7)?.parse().ok()
}

/// Minor faults while 64 MiB are allocated and written after the same amount was freed 300 ms
/// earlier (longer than mimalloc's default delays, 10 ms and 100 ms in its arenas).
fn faults_on_reuse() -> Option<u64> {
    const LEN: usize = 64 << 20;
    let touch = |v: &mut Vec<u8>| {
        for i in (0..LEN).step_by(4096) {
            v[i] = 1;
        }
    };
    let mut v = vec![0u8; LEN];
    touch(&mut v);
    drop(v);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = minor_faults()?;
    let mut v = vec![0u8; LEN];
    touch(&mut v);
    let faults = minor_faults()? - before;
    std::hint::black_box(&v);
    Some(faults)
}

#[test]
fn freed_memory_is_reused_without_faulting_it_in_again() {
    let Some(purged) = ({
        expgraph_alloc::set_purge_delay_ms(0);
        faults_on_reuse()
    }) else {
        eprintln!("skipped: no /proc/self/stat to count page faults on this system");
        return;
    };
    expgraph_alloc::keep_freed_memory();
    assert_eq!(expgraph_alloc::purge_delay_ms().to_string(), expgraph_alloc::KEEP_FREED.as_millis().to_string());
    let kept = faults_on_reuse().expect("/proc/self/stat was readable a moment ago");
    eprintln!("faults on reuse: {purged} purged at once, {kept} kept");
    // Purged at once, 64 MiB fault in again: 16,384 faults of 4 KiB pages, or 32 of 2 MiB
    // huge pages. Kept, next to none.
    assert!(purged >= 32, "purging at once should fault the memory in again: {purged} faults");
    assert!(kept < 8, "kept memory faulted in again: {kept} faults (purged: {purged})");
}
