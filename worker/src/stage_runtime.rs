//! Where job stages run: a runtime of their own, apart from the one that talks to the control
//! plane.
//!
//! A stage may keep a core busy for seconds (a transformation, a PDF, a plug-in's CPU-bound
//! code). The cancel that should stop it arrives on the worker's stream and has to be read,
//! and the control plane and the other processes on the host need the CPU for a moment too.
//! Linux's scheduler (EEVDF) lets a busy thread finish its time slice before a thread that
//! just woke up may run, and on a kernel without full preemption and a 4 ms tick that wait
//! can be several milliseconds a wake-up — added to every step of the cancel path that lands on
//! the busy core. Stage threads therefore ask for a long slice (`sched_setattr`,
//! Linux 6.12 and later, no privilege needed): throughput work keeps its share of the CPU (its
//! weight does not change, unlike `nice`), but a thread with the ordinary, shorter slice that
//! wakes up runs at once. Older kernels ignore the request; other systems do without it.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tracing::warn;

/// The time slice a stage thread asks for: long against the default (0.7–3 ms) so that every
/// ordinary thread that wakes up preempts it, short enough to stay well inside the kernel's
/// 100 ms limit.
const STAGE_SLICE: Duration = Duration::from_millis(20);

static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();

/// The runtime to spawn job pipelines on: the stage runtime, or — if its threads could not be
/// started — the current one.
pub fn handle() -> Handle {
    let runtime = RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .thread_name("presswork-stage")
            .enable_all()
            .on_thread_start(|| {
                prefer_woken_threads(STAGE_SLICE);
            })
            .build()
            .map_err(|e| {
                warn!(
                    error = %e,
                    "could not start the stage runtime's threads; running stages beside the control-plane stream, so a CPU-bound stage may delay cancels by a few milliseconds"
                )
            })
            .ok()
    });
    match runtime {
        Some(runtime) => runtime.handle().clone(),
        None => Handle::current(),
    }
}

/// Asks the kernel for a time slice of `slice` for the calling thread (see the module's
/// documentation); true when the kernel took it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn prefer_woken_threads(slice: Duration) -> bool {
    /// `struct sched_attr` of `sched_setattr(2)`, version 1 (56 bytes).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }
    // SAFETY: reads this thread's own scheduling attributes into a buffer of the size given.
    let mut attr: SchedAttr = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<SchedAttr>() as u32;
    let got = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    if got != 0 || attr.policy != libc::SCHED_OTHER as u32 {
        // Only a thread of the ordinary policy is changed: keep any policy an operator chose.
        return false;
    }
    attr.size = size;
    attr.flags = 0;
    attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: sets this thread's own attributes from a fully initialised sched_attr; the kernel
    // copies `size` bytes and checks every field.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if set != 0 {
        return false;
    }
    // SAFETY: as above.
    let got = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    got == 0 && attr.runtime == u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX)
}

/// Asks the kernel for a time slice of `slice`; not available on this system.
#[cfg(not(target_os = "linux"))]
pub fn prefer_woken_threads(_slice: Duration) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_thread_gets_the_long_slice_on_linux() {
        let took = std::thread::spawn(|| prefer_woken_threads(STAGE_SLICE))
            .join()
            .expect("thread");
        // Kernels before 6.12 keep their own slice; this host's kernel decides what to expect.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if cfg!(target_os = "linux") && (major, minor) >= (6, 12) {
            assert!(took, "kernel {release} should accept a 20 ms slice");
        }
    }

    /// This thread's time slice in nanoseconds, as the kernel shows it (Linux 6.6 and later).
    fn slice_of_this_thread() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[tokio::test]
    async fn stages_run_on_the_stage_runtime_with_the_long_slice() {
        let (name, slice) = handle()
            .spawn(async {
                (
                    std::thread::current().name().map(str::to_owned),
                    slice_of_this_thread(),
                )
            })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("presswork-stage"));
        let kernel_takes_it = std::thread::spawn(|| prefer_woken_threads(STAGE_SLICE))
            .join()
            .expect("thread");
        if kernel_takes_it {
            // The kernel takes the request here, so the stage threads must have made it too.
            assert_eq!(slice, Some(STAGE_SLICE.as_nanos() as u64));
        }
        // The runtime that talks to the control plane keeps the ordinary slice.
        assert_ne!(slice_of_this_thread(), Some(STAGE_SLICE.as_nanos() as u64));
    }
}
