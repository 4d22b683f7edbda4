//! What the operating system says about processes, read from `/proc`: the live members of a
//! process group, a process's children and open file descriptors. Independent of the code
//! under test, so a test can check that a job left nothing behind.

use std::time::Duration;

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: i32,
    pub command: String,
    pub state: char,
    pub parent: i32,
    pub group: i32,
}

/// Every process `/proc` lists now.
pub fn processes() -> Vec<ProcessInfo> {
    std::fs::read_dir("/proc")
        .expect("read /proc (these tests need Linux)")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let mut rest = stat[close + 1..].split_whitespace();
            Some(ProcessInfo {
                pid,
                command: stat[open + 1..close].to_owned(),
                state: rest.next()?.chars().next()?,
                parent: rest.next()?.parse().ok()?,
                group: rest.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Processes of process group `group` that are alive (not zombies).
pub fn live_group_members(group: i32) -> Vec<ProcessInfo> {
    processes()
        .into_iter()
        .filter(|p| p.group == group && !matches!(p.state, 'Z' | 'X'))
        .collect()
}

/// The children of `parent`, zombies included (a zombie child is one its parent never reaped).
pub fn children_of(parent: i32) -> Vec<ProcessInfo> {
    processes()
        .into_iter()
        .filter(|p| p.parent == parent)
        .collect()
}

/// How many file descriptors process `pid` has open.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
        .count()
}

/// The file descriptors of `pid`, with what each points to, for a failure message.
pub fn describe_fds(pid: i32) -> String {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let target =
                std::fs::read_link(e.path()).map_or("?".to_owned(), |t| t.display().to_string());
            format!("{} -> {target}", e.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds.join("\n    ")
}

/// Checks `condition` every 20 ms until it holds; after `timeout` panics with `what` and the
/// last `describe()`. For state the system settles by itself (a killed process disappearing),
/// where there is no event to wait on.
pub async fn wait_until<F, D>(what: &str, timeout: Duration, condition: F, describe: D)
where
    F: Fn() -> bool,
    D: Fn() -> String,
{
    let settled = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(timeout, settled).await.is_err() {
        panic!("{what} did not happen within {timeout:?}: {}", describe());
    }
}
