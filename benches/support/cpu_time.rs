//! This thread's CPU time, for benches on the shared build machine where wall time counts
//! other processes' turns too. A bench includes it with
//! `#[path = "support/cpu_time.rs"] mod cpu_time;`.

use std::time::{Duration, Instant};

/// Time this thread spent on a CPU (`/proc/thread-self/schedstat`, first field,
/// nanoseconds), falling back to wall time where the kernel does not keep that account.
pub fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| START.with(|start| start.elapsed()))
}

thread_local! {
    static START: Instant = Instant::now();
}
