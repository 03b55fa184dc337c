//! When a load thread starts its next operation: in a closed loop, as soon as one of its
//! in-flight slots is free; in an open loop (`--rate`), at fixed scheduled times, whether
//! or not the earlier operations have answered.
//!
//! An open-loop operation's latency counts from its scheduled time, not from the moment
//! a slot let it start: a stalled server then shows up as the latency every operation
//! scheduled during the stall really saw, instead of as fewer, fast operations
//! (coordinated omission).

use std::time::{Duration, Instant};

/// When the thread stops starting operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// After this many operations.
    Count(u64),
    /// At this moment (open loop: no operation is scheduled at or after it).
    Until(Instant),
}

/// What the thread should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Start an operation now; its latency counts from `latency_from`. `late` says that an
    /// open-loop operation starts past its time (by more than `late_after`).
    Now { latency_from: Instant, late: bool },
    /// Nothing before this moment.
    NotBefore(Instant),
    /// No more operations.
    Done,
}

/// One thread's schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    start: Instant,
    /// Operations per second of this thread, in an open loop.
    rate_per_second: Option<f64>,
    limit: Limit,
    late_after: Duration,
    /// Operations handed out so far.
    issued: u64,
}

impl Schedule {
    /// A closed loop: every free slot starts an operation at once.
    pub fn closed(start: Instant, limit: Limit) -> Schedule {
        Schedule {
            start,
            rate_per_second: None,
            limit,
            late_after: Duration::ZERO,
            issued: 0,
        }
    }

    /// An open loop of `rate_per_second` operations a second from `start`; a start more
    /// than `late_after` past its time is reported late.
    pub fn open(
        start: Instant,
        rate_per_second: f64,
        limit: Limit,
        late_after: Duration,
    ) -> Schedule {
        assert!(rate_per_second > 0.0 && rate_per_second.is_finite());
        Schedule {
            start,
            rate_per_second: Some(rate_per_second),
            limit,
            late_after,
            issued: 0,
        }
    }

    /// The next operation's moment, given that `now` a slot is free.
    pub fn next(&mut self, now: Instant) -> Due {
        if let Limit::Count(count) = self.limit {
            if self.issued >= count {
                return Due::Done;
            }
        }
        let due = match self.rate_per_second {
            None => {
                if matches!(self.limit, Limit::Until(end) if now >= end) {
                    return Due::Done;
                }
                Due::Now {
                    latency_from: now,
                    late: false,
                }
            }
            Some(rate) => {
                // From the start each time rather than adding intervals: no drift.
                let scheduled = self.start + Duration::from_secs_f64(self.issued as f64 / rate);
                if matches!(self.limit, Limit::Until(end) if scheduled >= end) {
                    return Due::Done;
                }
                if scheduled > now {
                    return Due::NotBefore(scheduled);
                }
                Due::Now {
                    latency_from: scheduled,
                    late: now.duration_since(scheduled) > self.late_after,
                }
            }
        };
        self.issued += 1;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A closed loop starts at once until its count; latency counts from the start.
    #[test]
    fn closed_loop_runs_to_its_count() {
        let start = Instant::now();
        let mut schedule = Schedule::closed(start, Limit::Count(2));
        let now = start + Duration::from_millis(3);
        for _ in 0..2 {
            assert_eq!(
                schedule.next(now),
                Due::Now {
                    latency_from: now,
                    late: false
                }
            );
        }
        assert_eq!(schedule.next(now), Due::Done);
        let mut timed = Schedule::closed(start, Limit::Until(now));
        assert_eq!(timed.next(now), Due::Done);
    }

    // An open loop hands out operations at their times, counts latency from the
    // scheduled time even when started late, and schedules nothing at or past its end.
    #[test]
    fn open_loop_keeps_its_times() {
        let start = Instant::now();
        let end = start + Duration::from_secs(1);
        let late_after = Duration::from_millis(1);
        let mut schedule = Schedule::open(start, 8.0, Limit::Until(end), late_after);
        assert_eq!(
            schedule.next(start),
            Due::Now {
                latency_from: start,
                late: false
            }
        );
        // 8 a second: every 125 ms, a time f64 holds exactly.
        let second = start + Duration::from_millis(125);
        assert_eq!(schedule.next(start), Due::NotBefore(second));
        // A stall: at 400 ms the operations due at 125, 250 and 375 ms start, late, each
        // with its own scheduled time.
        let stalled = start + Duration::from_millis(400);
        for due_ms in [125, 250, 375] {
            assert_eq!(
                schedule.next(stalled),
                Due::Now {
                    latency_from: start + Duration::from_millis(due_ms),
                    late: true
                }
            );
        }
        let mut handed = 4;
        while let Due::Now { .. } = schedule.next(end) {
            handed += 1;
        }
        assert_eq!(handed, 8);
        assert_eq!(schedule.next(end), Due::Done);
    }
}
