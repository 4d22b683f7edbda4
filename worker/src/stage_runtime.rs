//! Where job stages run: a runtime of their own, apart from the one that talks to the control
//! plane, on threads that yield the CPU to everything else.
//!
//! A stage may keep a core busy for seconds (a transformation, a PDF, a plug-in's CPU-bound
//! code). The cancel that should stop it arrives on the worker's stream and has to be read,
//! and the control plane and the other processes on the host need the CPU for a moment too.
//! Linux's scheduler (EEVDF) lets a busy thread run on until the next scheduler tick when the
//! thread that just woke up on its core is not yet *eligible* (it ran there a moment before),
//! and on a kernel without full preemption and a 4 ms tick that wait is added to every step of
//! the cancel path that lands on the busy core, while the other core may sit idle.
//!
//! So stage threads run in the `SCHED_IDLE` class by default ([`StagePriority::Idle`]): any
//! ordinary thread that wakes up on their core preempts them at once, and the kernel treats a
//! core that only runs them as free when it places a woken thread. Stages still have every
//! cycle nothing else wants; among themselves they share fairly. The price: on a host whose
//! cores are saturated by *other* ordinary work in the same cgroup, stages wait for it
//! (in a container or a systemd service the worker's cgroup keeps its share of the host
//! against other services; inside it only the worker's own light threads come first).
//! [`StagePriority::Normal`] keeps the ordinary class for such hosts, and asks for a long time
//! slice (`sched_setattr`, Linux 6.12 and later, no privilege needed), so that a woken thread
//! with the ordinary, shorter slice preempts a stage when it is eligible. Older kernels ignore
//! the slice; other systems do without both.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tracing::{debug, warn};

/// The time slice a stage thread asks for: long against the default (0.7–3 ms) so that every
/// ordinary thread that wakes up preempts it, short enough to stay well inside the kernel's
/// 100 ms limit.
const STAGE_SLICE: Duration = Duration::from_millis(20);

/// The scheduling class of stage threads (`presswork-worker --stage-priority`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StagePriority {
    /// `SCHED_IDLE`: every other thread on the host comes first (the default).
    #[default]
    Idle,
    /// The ordinary class, with a long time slice.
    Normal,
}

static PRIORITY: OnceLock<StagePriority> = OnceLock::new();
static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();

/// Sets the scheduling class of stage threads; call before the first stage runs. Returns false
/// (and changes nothing) when it was already set.
pub fn configure(priority: StagePriority) -> bool {
    PRIORITY.set(priority).is_ok()
}

/// The scheduling class stage threads get (the default until [`configure`] is called).
pub fn priority() -> StagePriority {
    PRIORITY.get().copied().unwrap_or_default()
}

/// The runtime to spawn job pipelines on: the stage runtime, or — if its threads could not be
/// started — the current one.
pub fn handle() -> Handle {
    let runtime = RUNTIME.get_or_init(|| {
        let priority = priority();
        Builder::new_multi_thread()
            .thread_name("presswork-stage")
            .enable_all()
            .on_thread_start(move || {
                if !schedule_stage_thread(priority, STAGE_SLICE) {
                    static TOLD: std::sync::Once = std::sync::Once::new();
                    TOLD.call_once(|| {
                        debug!(
                            ?priority,
                            "the kernel kept its own scheduling for stage threads (an older kernel, another OS, or a policy set from outside): cancels of CPU-bound stages may wait a few milliseconds longer"
                        )
                    });
                }
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

/// Puts the calling thread in the scheduling class of `priority`, and for the ordinary class
/// asks for a time slice of `slice` (see the module's documentation); true when the kernel
/// took the request (a kernel before 6.12 keeps its own slice: false for `Normal`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn schedule_stage_thread(priority: StagePriority, slice: Duration) -> bool {
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
    // An idle-class thread is preempted by any other at once: it needs no long slice.
    let (policy, runtime) = match priority {
        StagePriority::Idle => (libc::SCHED_IDLE as u32, 0),
        StagePriority::Normal => (
            libc::SCHED_OTHER as u32,
            u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        ),
    };
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
    attr.policy = policy;
    attr.runtime = runtime;
    // SAFETY: sets this thread's own attributes from a fully initialised sched_attr; the kernel
    // copies `size` bytes and checks every field. Lowering one's own class needs no privilege.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if set != 0 {
        return false;
    }
    // SAFETY: as above.
    let got = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    got == 0 && attr.policy == policy && (runtime == 0 || attr.runtime == runtime)
}

/// Scheduling classes and slices are Linux's; elsewhere stage threads keep the defaults.
#[cfg(not(target_os = "linux"))]
pub fn schedule_stage_thread(_priority: StagePriority, _slice: Duration) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernels before 6.12 keep their own slice; this host's kernel decides what to expect.
    fn kernel_has_slices() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        cfg!(target_os = "linux") && (major, minor) >= (6, 12)
    }

    /// A field of this thread's `/proc/thread-self/sched` (Linux), such as `policy` or
    /// `se.slice`.
    fn sched_field(name: &str) -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched
            .lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    /// Runs `schedule_stage_thread(priority)` on a thread of its own; what it returned, and
    /// that thread's policy and slice afterwards.
    fn scheduled(priority: StagePriority) -> (bool, Option<u64>, Option<u64>) {
        std::thread::spawn(move || {
            let took = schedule_stage_thread(priority, STAGE_SLICE);
            (took, sched_field("policy"), sched_field("se.slice"))
        })
        .join()
        .expect("thread")
    }

    #[test]
    fn a_stage_thread_gets_its_class_and_the_long_slice_on_linux() {
        let slice = STAGE_SLICE.as_nanos() as u64;
        let (took, policy, _) = scheduled(StagePriority::Idle);
        if cfg!(target_os = "linux") {
            assert!(took, "the kernel should take SCHED_IDLE");
            assert_eq!(policy, Some(libc::SCHED_IDLE as u64), "idle stage thread");
        }
        let (took, policy, got_slice) = scheduled(StagePriority::Normal);
        if cfg!(target_os = "linux") {
            assert_eq!(
                policy,
                Some(libc::SCHED_OTHER as u64),
                "normal stage thread"
            );
        }
        if kernel_has_slices() {
            assert!(took, "the kernel should take a 20 ms slice");
            assert_eq!(got_slice, Some(slice));
        }
    }

    #[tokio::test]
    async fn stages_run_on_the_stage_runtime_in_the_idle_class_by_default() {
        let (name, policy) = handle()
            .spawn(async {
                (
                    std::thread::current().name().map(str::to_owned),
                    sched_field("policy"),
                )
            })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("presswork-stage"));
        if cfg!(target_os = "linux") {
            assert_eq!(policy, Some(libc::SCHED_IDLE as u64));
        }
        // The runtime that talks to the control plane keeps the ordinary class and slice.
        assert_eq!(sched_field("policy").unwrap_or(0), libc::SCHED_OTHER as u64);
        assert_ne!(sched_field("se.slice"), Some(STAGE_SLICE.as_nanos() as u64));
    }
}
