//! A process and the processes below it (nginx's workers are its master's
//! children), read from /proc: what the CPU and memory figures sum over.

use std::collections::HashMap;

use anyhow::{Context as _, Result};

/// What /proc/PID/stat says about one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id.
    pub ppid: u32,
    /// User plus system time, in clock ticks.
    pub cpu_ticks: u64,
}

/// `pid` and every process below it, each with its [`Stat`]; `pid` first.
/// Empty if `pid` does not exist.
pub fn tree(pid: u32) -> Vec<(u32, Stat)> {
    let mut stats = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(stat) = parse_stat(&stat) {
            stats.insert(id, stat);
        }
    }
    below(pid, &stats)
}

/// `pid` and its descendants among `stats`, `pid` first.
fn below(pid: u32, stats: &HashMap<u32, Stat>) -> Vec<(u32, Stat)> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (id, stat) in stats {
        children.entry(stat.ppid).or_default().push(*id);
    }
    let mut found = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        let Some(stat) = stats.get(&p) else {
            continue;
        };
        found.push((p, *stat));
        stack.extend(children.get(&p).into_iter().flatten().copied());
    }
    found
}

/// Parent id and utime + stime from a /proc/PID/stat line. The command name
/// (field 2) is in parentheses and may contain spaces, so fields are counted
/// from the last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        ppid,
        cpu_ticks: utime + stime,
    })
}

/// The soft and hard limit on open files of `pid`, from /proc/PID/limits.
pub fn open_file_limit(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/limits");
    let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    parse_open_file_limit(&text).with_context(|| format!("{path} has no \"Max open files\" line"))
}

fn parse_open_file_limit(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..].split_whitespace();
    let soft = values.next()?.parse().ok()?;
    let hard = values.next()?.parse().ok()?;
    Some((soft, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_the_name_yields_parent_and_cpu_ticks() {
        let line = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 900 0 0 0 \
                    1500 320 0 0 20 0 1 0 12345 1000000 500 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 4241,
                cpu_ticks: 1820
            })
        );
    }

    #[test]
    fn own_process_has_a_parent_and_is_counted() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let stat = parse_stat(&stat).unwrap();
        assert_eq!(stat.ppid, std::os::unix::process::parent_id());
        let me = std::process::id();
        assert_eq!(tree(me).first().map(|(pid, _)| *pid), Some(me));
    }

    #[test]
    fn open_file_limits_are_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            1024                 131072               files     \n\
                      Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_open_file_limit(limits), Some((1024, 131_072)));
        let own = open_file_limit(std::process::id()).unwrap();
        assert!(own.0 <= own.1);
    }

    #[test]
    fn tree_holds_the_process_and_its_descendants_only() {
        let stat = |ppid| Stat { ppid, cpu_ticks: 1 };
        // 10 is a master with workers 11 and 12; 12 has a helper 13; 20 is
        // a sibling of 10 and must not be counted.
        let stats = HashMap::from([
            (1, stat(0)),
            (10, stat(1)),
            (11, stat(10)),
            (12, stat(10)),
            (13, stat(12)),
            (20, stat(1)),
        ]);
        let mut pids: Vec<u32> = below(10, &stats).into_iter().map(|(p, _)| p).collect();
        assert_eq!(pids[0], 10);
        pids.sort_unstable();
        assert_eq!(pids, [10, 11, 12, 13]);
        assert!(below(99, &stats).is_empty());
    }
}
