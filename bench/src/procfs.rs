//! What the kernel says about a process: CPU time and resident memory, from `/proc`.

/// utime + stime + cutime + cstime of a `/proc/<pid>/stat` line (fields 14–17), in clock
/// ticks: every thread of the process, and its children once reaped.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(") ")?;
    Some(
        after_comm
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|t| t.parse::<u64>().ok())
            .sum(),
    )
}

/// CPU time of process `pid` so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time of the PostgreSQL server's processes so far (and, through the postmaster's
/// children times, of its backends that ended), in clock ticks.
pub fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| {
            std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|dir| stat_ticks(&std::fs::read_to_string(dir.join("stat")).ok()?))
        .sum()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Resident memory of process `pid` now (`VmRSS`) and at its peak (`VmHWM`), in bytes.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_a_command_with_spaces() {
        let stat = "42 (tokio worker) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0";
        assert_eq!(stat_ticks(stat), Some(13));
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        let (rss, peak) = memory(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(ticks_per_second() > 0);
    }
}
