//! What the benchmark reads from Linux's /proc: a process and its descendants, their CPU
//! time, a process's resident memory, the machine's CPU counters (for the share the
//! hypervisor stole), and a directory's size on disk.

use std::path::Path;

use super::lines::{Pids, ROLES};

/// `root` and every process descending from it (PostgreSQL's backends and helpers).
pub(super) fn process_tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                    let ppid = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

/// CPU time (user + system, all threads) of each role's processes, in seconds.
pub(super) fn cpu_seconds(pids: &Pids) -> [f64; ROLES.len()] {
    // /proc reports utime and stime in USER_HZ ticks, which Linux fixes at 100 per second.
    const TICKS_PER_SECOND: f64 = 100.0;
    let one = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the parenthesised command name; utime and stime are the 14th
                // and 15th fields of the whole line.
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                let ticks =
                    fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
                Some(ticks as f64 / TICKS_PER_SECOND)
            })
            .unwrap_or(0.0)
    };
    std::array::from_fn(|i| pids[i].iter().map(|&pid| one(pid)).sum())
}

pub(super) fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_size(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// The machine's CPU time counters (the `cpu` line of /proc/stat).
pub(super) fn machine_cpu_times() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.strip_prefix("cpu ")?.to_owned();
            Some(
                line.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// The share of the machine's CPU time the hypervisor gave to other guests between two
/// readings (the 8th counter, `steal`): on a shared VM the figures are only comparable within
/// one run, and this says how disturbed that run was.
pub(super) fn stolen_share(before: &[u64], after: &[u64]) -> Option<f64> {
    let delta: Vec<u64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = delta.iter().take(8).sum();
    let steal = *delta.get(7)?;
    (total > 0).then(|| steal as f64 / total as f64)
}

/// The resident memory of process `pid`, in KiB (0 when it cannot be read).
pub(super) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}
