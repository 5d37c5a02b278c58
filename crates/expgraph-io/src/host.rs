//! Figures of this process and machine, read from Linux's `/proc` (`None` elsewhere): memory,
//! and the CPU time a virtual machine's host took away (steal), which makes timings of the same
//! code vary from one minute to the next.

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

/// Clock ticks of all the machine's CPUs since boot: in all, and stolen (a virtual CPU wanted
/// to run while its host ran something else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    pub total: u64,
    pub steal: u64,
}

impl CpuTicks {
    /// The ticks now (`/proc/stat`).
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The share of the ticks since `earlier` that were stolen (`None` when no tick passed).
    pub fn steal_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|&t| t > 0)?;
        Some(self.steal.saturating_sub(earlier.steal) as f64 / total as f64)
    }

    /// The `cpu` line of `/proc/stat`: user, nice, system, idle, iowait, irq, softirq, steal
    /// (then guest times, which user already counts).
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|v| v.parse().ok()).collect::<Option<_>>()?;
        (ticks.len() == 8).then(|| CpuTicks { total: ticks.iter().sum(), steal: ticks[7] })
    }
}

#[cfg(test)]
mod tests {
    use super::CpuTicks;

    #[test]
    fn steal_is_the_eighth_field_of_the_cpu_line() {
        let before = CpuTicks::parse("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n").unwrap();
        assert_eq!(before, CpuTicks { total: 1000, steal: 35 });
        let after = CpuTicks { total: 1200, steal: 85 };
        assert_eq!(after.steal_since(&before), Some(0.25));
        assert_eq!(before.steal_since(&before), None);
        assert_eq!(CpuTicks::parse("cpu  1 2 3 4 5 6 7\n"), None, "no steal field");
        assert_eq!(CpuTicks::parse("cpu0 1 2 3 4 5 6 7 8\n"), None, "no total line");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_linux_proc() {
        let peak = super::peak_rss_bytes().unwrap();
        let total = super::total_memory_bytes().unwrap();
        assert!(peak > 0 && peak < total, "peak {peak}, total {total}");
        let ticks = CpuTicks::now().unwrap();
        assert!(ticks.total > 0 && ticks.steal <= ticks.total, "{ticks:?}");
    }
}
