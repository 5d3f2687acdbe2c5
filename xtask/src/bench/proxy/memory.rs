//! Resident memory of a process and the processes below it, read from /proc:
//! VmRSS (/proc/PID/status), the figure the goal is stated in, and PSS
//! (/proc/PID/smaps_rollup), which divides pages shared between processes
//! (nginx's master and workers share what the master set up before forking)
//! among them instead of counting them in each.

use anyhow::{Context as _, Result, bail};

use super::processes;

/// Memory of a process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Sum of VmRSS, KiB.
    pub rss_kib: u64,
    /// Sum of PSS, KiB.
    pub pss_kib: u64,
    /// How many processes were summed.
    pub processes: usize,
}

impl Memory {
    /// RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    /// PSS in MiB.
    pub fn pss_mib(&self) -> f64 {
        self.pss_kib as f64 / 1024.0
    }
}

/// Growth of RSS from `before` to `after` per connection, KiB (negative if
/// it shrank).
pub fn per_connection_kib(before: Memory, after: Memory, connections: u32) -> f64 {
    (after.rss_kib as f64 - before.rss_kib as f64) / f64::from(connections.max(1))
}

/// The memory of `pid` and every process below it.
pub fn of_tree(pid: u32) -> Result<Memory> {
    let pids: Vec<u32> = processes::tree(pid).into_iter().map(|(p, _)| p).collect();
    if pids.is_empty() {
        bail!("process {pid} is gone; cannot read its memory");
    }
    let mut parts = Vec::with_capacity(pids.len());
    for p in pids {
        let read = |file: &str| {
            let path = format!("/proc/{p}/{file}");
            std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))
        };
        let rss = kib_field(&read("status")?, "VmRSS:")
            .with_context(|| format!("/proc/{p}/status has no VmRSS"))?;
        let pss = kib_field(&read("smaps_rollup")?, "Pss:")
            .with_context(|| format!("/proc/{p}/smaps_rollup has no Pss"))?;
        parts.push((rss, pss));
    }
    Ok(sum(&parts))
}

/// Adds up (RSS, PSS) pairs of several processes.
fn sum(parts: &[(u64, u64)]) -> Memory {
    Memory {
        rss_kib: parts.iter().map(|(rss, _)| rss).sum(),
        pss_kib: parts.iter().map(|(_, pss)| pss).sum(),
        processes: parts.len(),
    }
}

/// The value of a `Key:   1234 kB` line, in KiB.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let mut words = line[key.len()..].split_whitespace();
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tbefund-proxy\nUmask:\t0077\nState:\tS (sleeping)\n\
                          VmPeak:\t 1234567 kB\nVmHWM:\t  130000 kB\nVmRSS:\t  123456 kB\n\
                          RssAnon:\t  100000 kB\nThreads:\t3\n";

    #[test]
    fn vm_rss_is_read_from_a_status_file_and_not_confused_with_vm_hwm() {
        assert_eq!(kib_field(STATUS, "VmRSS:"), Some(123_456));
        assert_eq!(kib_field(STATUS, "VmSwap:"), None);
    }

    #[test]
    fn pss_is_read_from_smaps_rollup_but_not_pss_anon() {
        let rollup = "55d0a0000000-7ffc00000000 ---p 00000000 00:00 0  [rollup]\n\
                      Rss:               12000 kB\nPss:                9000 kB\n\
                      Pss_Dirty:          8000 kB\nPss_Anon:           7000 kB\n";
        assert_eq!(kib_field(rollup, "Pss:"), Some(9000));
    }

    #[test]
    fn value_in_another_unit_is_not_taken_for_kib() {
        assert_eq!(kib_field("VmRSS:\t 12 MB\n", "VmRSS:"), None);
    }

    #[test]
    fn master_and_workers_are_summed() {
        let m = sum(&[(4000, 1500), (30_000, 28_000), (31_000, 29_000)]);
        assert_eq!(
            m,
            Memory {
                rss_kib: 65_000,
                pss_kib: 58_500,
                processes: 3
            }
        );
    }

    #[test]
    fn per_connection_growth_is_the_difference_over_the_connections() {
        let before = Memory {
            rss_kib: 10_240,
            ..Memory::default()
        };
        let after = Memory {
            rss_kib: 10_240 + 150_000,
            ..Memory::default()
        };
        assert_eq!(per_connection_kib(before, after, 10_000), 15.0);
        assert_eq!(per_connection_kib(after, before, 10_000), -15.0);
    }

    #[test]
    fn own_process_has_resident_memory() {
        let me = of_tree(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.pss_kib > 0, "{me:?}");
        assert!(me.processes >= 1);
    }
}
