//! CPU time used by a process and its descendants (nginx's workers are the
//! master's children), read from /proc. On a machine shared with other work,
//! CPU time per request compares the proxies' efficiency more steadily than
//! requests per second, which also depend on how much CPU the others left.

use std::{collections::HashMap, process::Command};

use anyhow::{Context as _, Result};

use crate::command::output;

/// Clock ticks per second, the unit of /proc/PID/stat's times.
pub fn ticks_per_second() -> Result<u64> {
    output(Command::new("getconf").arg("CLK_TCK"))?
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

/// User plus system time, in clock ticks, of `pid` and every process below it.
pub fn tree_ticks(pid: u32) -> u64 {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((ppid, used)) = parse_stat(&stat) {
            children.entry(ppid).or_default().push(id);
            ticks.insert(id, used);
        }
    }

    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        total += ticks.get(&p).copied().unwrap_or(0);
        stack.extend(children.get(&p).into_iter().flatten().copied());
    }
    total
}

/// Parent id and utime + stime from a /proc/PID/stat line. The command name
/// (field 2) is in parentheses and may contain spaces, so fields are counted
/// from the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_the_name_yields_parent_and_cpu_ticks() {
        let line = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 900 0 0 0 \
                    1500 320 0 0 20 0 1 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(line), Some((4241, 1820)));
    }

    #[test]
    fn own_process_has_a_parent_and_is_counted() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (ppid, _) = parse_stat(&stat).unwrap();
        assert_eq!(ppid, std::os::unix::process::parent_id());
    }
}
