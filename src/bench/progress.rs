//! Progress while a run goes: the run cut into intervals of [`PROGRESS_INTERVAL`] (each
//! with its throughput, p99 and errors, kept for the report and the plot), and the line
//! printed for each, rewritten in place on a terminal and one per interval in a log.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::latency::quantiles_of;
use super::recorder::{Recorder, Snapshot};
use super::report::{milliseconds, IntervalReport};

/// How often an interval closes and the progress line is printed.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Intervals kept for the report and the plot (a day of seconds); later ones are
/// printed but not kept.
pub const INTERVALS_MAX: usize = 24 * 60 * 60;
/// A run's last interval shorter than this fraction of an interval is dropped: its
/// rate would show and plot as noise.
const LAST_INTERVAL_FRACTION_MIN: f64 = 0.1;

/// The progress line of an interval, with the totals so far.
pub fn progress_line(interval: &IntervalReport, total_ops: u64, total_errors: u64) -> String {
    format!(
        "[{:>6.1} s] {:>9.0} ops/s  p99 {:>8} ms  errors {:>5}  total {} ops, {} errors",
        interval.end_seconds,
        interval.ops_per_second,
        milliseconds(interval.p99_us),
        interval.errors,
        total_ops,
        total_errors
    )
}

/// Where the progress line goes (stderr): rewritten in place on a terminal, a line per
/// interval otherwise (a log keeps them all), nothing when quiet.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    terminal: bool,
    label: String,
}

impl Progress {
    /// Lines start with `label` (the workload, or "fill").
    pub fn new(quiet: bool, label: &str) -> Progress {
        Progress {
            enabled: !quiet,
            terminal: std::io::stderr().is_terminal(),
            label: label.to_string(),
        }
    }

    fn show(&self, line: &str) {
        if !self.enabled {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(stderr, "\r{} {line}\x1b[K", self.label)
        } else {
            writeln!(stderr, "{} {line}", self.label)
        };
        let _ = stderr.flush();
    }

    /// Ends the line rewritten in place.
    pub fn finish(&self) {
        if self.enabled && self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// Cuts a run into intervals from a recorder's running totals.
#[derive(Debug)]
pub struct Intervals {
    measure_start: Instant,
    interval_start: Instant,
    previous: Snapshot,
    kept: Vec<IntervalReport>,
}

impl Intervals {
    /// Intervals from `measure_start`, when `recorder` starts counting.
    pub fn new(recorder: &Recorder, measure_start: Instant) -> Intervals {
        Intervals {
            measure_start,
            interval_start: measure_start,
            previous: recorder.snapshot(),
            kept: Vec::new(),
        }
    }

    /// When the current interval ends.
    pub fn next_end(&self) -> Instant {
        self.interval_start + PROGRESS_INTERVAL
    }

    /// Closes the current interval at `now` when it is due, or when `last` (the run is
    /// over), keeps it and prints its line to `progress`.
    pub fn tick(&mut self, recorder: &Recorder, now: Instant, last: bool, progress: &Progress) {
        if now < self.next_end() && !last {
            return;
        }
        let snapshot = recorder.snapshot();
        let seconds = now
            .saturating_duration_since(self.interval_start)
            .as_secs_f64();
        let ops = snapshot.ops() - self.previous.ops();
        let interval = IntervalReport {
            end_seconds: now
                .saturating_duration_since(self.measure_start)
                .as_secs_f64(),
            ops,
            ops_per_second: ops as f64 / seconds.max(1e-9),
            p99_us: quantiles_of(&snapshot.latencies_since(&self.previous), &[0.99])[0],
            errors: snapshot.error_count() - self.previous.error_count(),
        };
        let sliver = last && seconds < PROGRESS_INTERVAL.as_secs_f64() * LAST_INTERVAL_FRACTION_MIN;
        if !sliver {
            progress.show(&progress_line(
                &interval,
                snapshot.ops(),
                snapshot.error_count(),
            ));
            if self.kept.len() < INTERVALS_MAX {
                self.kept.push(interval);
            }
        }
        self.previous = snapshot;
        self.interval_start = now;
    }

    /// The intervals kept.
    pub fn into_reports(self) -> Vec<IntervalReport> {
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::recorder::Outcome;
    use crate::bench::workload::OpKind;

    // An interval closes only when due or at the end, counts what completed inside it,
    // and a last sliver is dropped.
    #[test]
    fn intervals_count_what_completed_in_them() {
        let recorder = Recorder::new();
        let start = Instant::now();
        let quiet = Progress::new(true, "test");
        let mut intervals = Intervals::new(&recorder, start);
        for _ in 0..10 {
            recorder.success(OpKind::Get, Duration::from_micros(50), Outcome::Ok);
        }
        intervals.tick(&recorder, start + PROGRESS_INTERVAL / 2, false, &quiet);
        intervals.tick(&recorder, start + PROGRESS_INTERVAL, false, &quiet);
        recorder.success(OpKind::Get, Duration::from_micros(50), Outcome::Ok);
        intervals.tick(
            &recorder,
            start + PROGRESS_INTERVAL + Duration::from_millis(1),
            true,
            &quiet,
        );
        let kept = intervals.into_reports();
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].ops, kept[0].errors), (10, 0));
        assert_eq!(kept[0].ops_per_second, 10.0);
    }
}
