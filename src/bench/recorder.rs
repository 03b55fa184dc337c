//! The measurements of a run, shared by every load thread: per operation kind an atomic
//! latency histogram (threads record without a lock, and the progress reporter reads
//! the running totals every second and takes differences), the exact maximum, counts of
//! conflicts, misses and errors, and the errors by kind with a few sample messages.
//!
//! A failed operation is never throughput: it is counted under its kind of error and
//! its latency is not recorded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use histogram::{AtomicHistogram, Histogram};

use super::latency::{self, HISTOGRAM_GROUPING_POWER, HISTOGRAM_MAX_VALUE_POWER};
use super::workload::OpKind;

/// Kinds of error told apart; any further kind is counted as [`ERROR_KIND_OTHER`]. The
/// kinds come from fixed sets (the SDK's error variants, the server's codes, the
/// checks), so the bound is never reached in practice; it keeps the table bounded.
pub const ERROR_KINDS_MAX: usize = 64;
/// The kind under which errors past [`ERROR_KINDS_MAX`] kinds are counted.
pub const ERROR_KIND_OTHER: &str = "other";
/// Sample messages kept per kind of error.
pub const ERROR_SAMPLES_PER_KIND_MAX: usize = 3;

/// How a successful operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A read-modify-write whose compare failed: another writer changed the key between
    /// its read and its transaction. A correct answer, so it counts as throughput, and it
    /// is reported apart.
    Conflict,
    /// A read that found no key where none need be: a key nobody wrote (`--no-fill`),
    /// or a serializable read from a replica that has not seen the write yet. Reported
    /// apart.
    NotFound,
}

#[derive(Debug)]
struct KindStats {
    latency_us: AtomicHistogram,
    max_us: AtomicU64,
    conflicts: AtomicU64,
    not_found: AtomicU64,
    errors: AtomicU64,
}

/// One kind of error: how many, and the first few messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorTally {
    pub count: u64,
    pub samples: Vec<String>,
}

/// The shared measurements.
#[derive(Debug)]
pub struct Recorder {
    /// False during a warm-up: what completes then is not counted.
    recording: AtomicBool,
    kinds: Vec<KindStats>,
    errors: Mutex<BTreeMap<String, ErrorTally>>,
    /// Open loop: operations that started more than [`LATE_START`] after their
    /// scheduled time, because every in-flight slot was busy.
    late_starts: AtomicU64,
}

/// How late past its scheduled time an open-loop start counts as late.
pub const LATE_START: Duration = Duration::from_millis(1);

/// One kind's totals at a moment.
#[derive(Clone, Debug)]
pub struct KindSnapshot {
    pub kind: OpKind,
    pub latency_us: Histogram,
    pub max_us: u64,
    pub conflicts: u64,
    pub not_found: u64,
    pub errors: u64,
}

impl KindSnapshot {
    /// Successful operations.
    pub fn ops(&self) -> u64 {
        latency::count(&self.latency_us)
    }
}

/// Every total at a moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub kinds: Vec<KindSnapshot>,
    pub errors: BTreeMap<String, ErrorTally>,
    pub late_starts: u64,
}

impl Snapshot {
    pub fn ops(&self) -> u64 {
        self.kinds.iter().map(KindSnapshot::ops).sum()
    }

    pub fn error_count(&self) -> u64 {
        self.kinds.iter().map(|kind| kind.errors).sum()
    }

    /// The latencies of every kind together.
    pub fn all_latencies(&self) -> Histogram {
        let mut all = latency::new_histogram();
        for kind in &self.kinds {
            all.checked_add_assign(&kind.latency_us)
                .expect("histograms of one layout add up");
        }
        all
    }

    /// The latencies of every kind recorded after `earlier` (a snapshot of the same
    /// recorder).
    pub fn latencies_since(&self, earlier: &Snapshot) -> Histogram {
        self.all_latencies()
            .checked_sub(&earlier.all_latencies())
            .expect("counts only grow")
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder that records from the start.
    pub fn new() -> Recorder {
        let kinds = OpKind::ALL
            .iter()
            .map(|_| KindStats {
                latency_us: AtomicHistogram::new(
                    HISTOGRAM_GROUPING_POWER,
                    HISTOGRAM_MAX_VALUE_POWER,
                )
                .expect("valid histogram"),
                max_us: AtomicU64::new(0),
                conflicts: AtomicU64::new(0),
                not_found: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            })
            .collect();
        Recorder {
            recording: AtomicBool::new(true),
            kinds,
            errors: Mutex::new(BTreeMap::new()),
            late_starts: AtomicU64::new(0),
        }
    }

    /// Starts or stops counting (a warm-up does not count).
    pub fn set_recording(&self, recording: bool) {
        self.recording.store(recording, Ordering::Release);
    }

    fn recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// A successful operation that took `latency`.
    pub fn success(&self, kind: OpKind, latency: Duration, outcome: Outcome) {
        if !self.recording() {
            return;
        }
        let stats = &self.kinds[kind.index()];
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        stats
            .latency_us
            .increment(micros)
            .expect("the layout holds every u64");
        stats.max_us.fetch_max(micros, Ordering::Relaxed);
        match outcome {
            Outcome::Ok => {}
            Outcome::Conflict => {
                stats.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::NotFound => {
                stats.not_found.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A failed operation: counted under `error_kind`, its message kept among the first
    /// few of that kind (`message` is only called for those).
    pub fn error(&self, kind: OpKind, error_kind: &str, message: impl FnOnce() -> String) {
        if !self.recording() {
            return;
        }
        self.kinds[kind.index()]
            .errors
            .fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        let name = if errors.contains_key(error_kind) || errors.len() < ERROR_KINDS_MAX - 1 {
            error_kind
        } else {
            ERROR_KIND_OTHER
        };
        let tally = errors.entry(name.to_string()).or_default();
        tally.count += 1;
        if tally.samples.len() < ERROR_SAMPLES_PER_KIND_MAX {
            tally
                .samples
                .push(format!("{}: {}", kind.name(), message()));
        }
    }

    /// An open-loop operation started late (see [`LATE_START`]).
    pub fn late_start(&self) {
        if self.recording() {
            self.late_starts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The totals so far.
    pub fn snapshot(&self) -> Snapshot {
        let kinds = OpKind::ALL
            .iter()
            .zip(&self.kinds)
            .map(|(&kind, stats)| KindSnapshot {
                kind,
                latency_us: stats.latency_us.load(),
                max_us: stats.max_us.load(Ordering::Relaxed),
                conflicts: stats.conflicts.load(Ordering::Relaxed),
                not_found: stats.not_found.load(Ordering::Relaxed),
                errors: stats.errors.load(Ordering::Relaxed),
            })
            .collect();
        Snapshot {
            kinds,
            errors: self
                .errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            late_starts: self.late_starts.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Successes count per kind with their latency and outcome; errors count per kind of
    // error with bounded samples; nothing counts while recording is off.
    #[test]
    fn records_successes_and_errors_apart() {
        let recorder = Recorder::new();
        recorder.set_recording(false);
        recorder.success(OpKind::Get, Duration::from_micros(5), Outcome::Ok);
        recorder.error(OpKind::Get, "timeout", || "ignored".to_string());
        recorder.set_recording(true);
        recorder.success(OpKind::Get, Duration::from_micros(100), Outcome::Ok);
        recorder.success(
            OpKind::ReadModifyWrite,
            Duration::from_micros(300),
            Outcome::Conflict,
        );
        for attempt in 0..5 {
            recorder.error(OpKind::Put, "unavailable", || format!("attempt {attempt}"));
        }
        let snapshot = recorder.snapshot();
        assert_eq!(snapshot.ops(), 2);
        assert_eq!(snapshot.error_count(), 5);
        let get = &snapshot.kinds[OpKind::Get.index()];
        assert_eq!((get.ops(), get.max_us, get.errors), (1, 100, 0));
        assert_eq!(snapshot.kinds[OpKind::ReadModifyWrite.index()].conflicts, 1);
        let unavailable = &snapshot.errors["unavailable"];
        assert_eq!(unavailable.count, 5);
        assert_eq!(unavailable.samples.len(), ERROR_SAMPLES_PER_KIND_MAX);
        assert_eq!(unavailable.samples[0], "put: attempt 0");
    }

    // Past the bound on kinds, new kinds are counted as "other".
    #[test]
    fn error_kinds_are_bounded() {
        let recorder = Recorder::new();
        for kind in 0..ERROR_KINDS_MAX * 2 {
            recorder.error(OpKind::Put, &format!("kind {kind}"), String::new);
        }
        let snapshot = recorder.snapshot();
        assert_eq!(snapshot.errors.len(), ERROR_KINDS_MAX);
        assert_eq!(
            snapshot.errors[ERROR_KIND_OTHER].count,
            (ERROR_KINDS_MAX + 1) as u64
        );
    }
}
