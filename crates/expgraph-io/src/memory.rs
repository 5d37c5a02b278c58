//! Memory figures of this process and machine, read from Linux's `/proc` (`None` elsewhere).

/// Peak resident memory of this process (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_kib("/proc/self/status", "VmHWM:").map(|k| k * 1024)
}

/// Physical memory of the machine (`MemTotal`), in bytes.
pub fn total_memory_bytes() -> Option<u64> {
    proc_kib("/proc/meminfo", "MemTotal:").map(|k| k * 1024)
}

/// The kibibyte value of the line starting with `key` in a `/proc` file.
fn proc_kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn reads_linux_proc() {
        let peak = super::peak_rss_bytes().unwrap();
        let total = super::total_memory_bytes().unwrap();
        assert!(peak > 0 && peak < total, "peak {peak}, total {total}");
    }
}
