//! One clock for every timestamp of a run: `CLOCK_MONOTONIC`, which the bench, the control plane,
//! the workers and the jobs all read on the same host. `std::time::Instant` uses it too but
//! cannot be compared across processes; the raw nanoseconds can.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is readable");
    u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec()).unwrap_or(0)
}

/// `later - earlier` in signed nanoseconds (negative when `later` came first).
pub fn between(earlier: u64, later: u64) -> i64 {
    later as i64 - earlier as i64
}
