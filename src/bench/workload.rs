//! Workloads: which operation comes next and on which key, independent of the system
//! that serves it (the corekv requests are in `ops.rs`; the etcd load generator in
//! `tools/etcd-load/` plans its operations here too).
//!
//! | workload  | mix                                                        | keys          |
//! |-----------|------------------------------------------------------------|---------------|
//! | `put`     | puts                                                       | `--distribution` |
//! | `get`     | gets                                                       | `--distribution` |
//! | `mixed`   | gets with `--read-ratio`, puts otherwise                   | `--distribution` |
//! | `ycsb-a`  | 50% gets, 50% updates (puts of existing keys)              | zipfian       |
//! | `ycsb-b`  | 95% gets, 5% updates                                       | zipfian       |
//! | `ycsb-c`  | gets                                                       | zipfian       |
//! | `ycsb-d`  | 95% gets of recent inserts, 5% inserts of new keys         | latest        |
//! | `ycsb-e`  | 95% short scans, 5% inserts                                | zipfian start |
//! | `ycsb-f`  | 50% gets, 50% read-modify-writes (a get, then a cas txn)   | zipfian       |
//! | `append`  | appends (to keys of their own namespace)                   | `--distribution` |
//! | `txn`     | read-modify-writes                                         | `--distribution` |
//! | `scan`    | short scans                                                | `--distribution` |
//!
//! YCSB's workloads use zipfian keys unless `--distribution` says otherwise. Inserts name
//! keys past the filled ones (`--keys`), from one counter shared by every thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::keys::{Distribution, KeyChooser, RecentInserts, Rng, KEYS_MAX};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Put,
    Get,
    Mixed,
    YcsbA,
    YcsbB,
    YcsbC,
    YcsbD,
    YcsbE,
    YcsbF,
    Append,
    Txn,
    Scan,
}

/// One kind of operation, reported apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// A read of one key.
    Get,
    /// A write of an existing key (or, without a fill, of any key).
    Put,
    /// A write of a new key, past the filled ones.
    Insert,
    /// A read of a short range of keys.
    Scan,
    /// An append to a key.
    Append,
    /// A read, then a transaction that writes the key only if nobody wrote it since.
    ReadModifyWrite,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 6] = [
        OpKind::Get,
        OpKind::Put,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::Append,
        OpKind::ReadModifyWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::Append => "append",
            OpKind::ReadModifyWrite => "rmw",
        }
    }

    /// The position of this kind in [`OpKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_read(self) -> bool {
        matches!(self, OpKind::Get | OpKind::Scan)
    }
}

/// Parts per million: the mixes are fixed-point so that choosing costs one draw.
const MILLION: u64 = 1_000_000;

impl Workload {
    /// The name the command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::YcsbD => "ycsb-d",
            Workload::YcsbE => "ycsb-e",
            Workload::YcsbF => "ycsb-f",
            Workload::Append => "append",
            Workload::Txn => "txn",
            Workload::Scan => "scan",
        }
    }

    /// The mix: (kind, parts per million), summing to a million.
    pub fn mix(self, read_ratio: f64) -> Vec<(OpKind, u64)> {
        let reads = (read_ratio.clamp(0.0, 1.0) * MILLION as f64).round() as u64;
        let mix = match self {
            Workload::Put => vec![(OpKind::Put, MILLION)],
            Workload::Get | Workload::YcsbC => vec![(OpKind::Get, MILLION)],
            Workload::Mixed => vec![(OpKind::Get, reads), (OpKind::Put, MILLION - reads)],
            Workload::YcsbA => vec![(OpKind::Get, 500_000), (OpKind::Put, 500_000)],
            Workload::YcsbB => vec![(OpKind::Get, 950_000), (OpKind::Put, 50_000)],
            Workload::YcsbD => vec![(OpKind::Get, 950_000), (OpKind::Insert, 50_000)],
            Workload::YcsbE => vec![(OpKind::Scan, 950_000), (OpKind::Insert, 50_000)],
            Workload::YcsbF => vec![(OpKind::Get, 500_000), (OpKind::ReadModifyWrite, 500_000)],
            Workload::Append => vec![(OpKind::Append, MILLION)],
            Workload::Txn => vec![(OpKind::ReadModifyWrite, MILLION)],
            Workload::Scan => vec![(OpKind::Scan, MILLION)],
        };
        debug_assert_eq!(mix.iter().map(|(_, parts)| parts).sum::<u64>(), MILLION);
        mix
    }

    /// The distribution when the command line names none.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::YcsbA
            | Workload::YcsbB
            | Workload::YcsbC
            | Workload::YcsbD
            | Workload::YcsbE
            | Workload::YcsbF => Distribution::Zipfian,
            _ => Distribution::Uniform,
        }
    }

    /// True when the workload reads or updates keys that must exist: the keyspace is
    /// written once before the run (unless `--no-fill`).
    pub fn reads_existing_keys(self) -> bool {
        !matches!(self, Workload::Put | Workload::Append)
    }

    /// True for YCSB D: reads go to the keys this thread inserted last.
    fn reads_latest(self) -> bool {
        self == Workload::YcsbD
    }
}

/// The next operation of a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub kind: OpKind,
    /// The key's index (the first key's, for a scan).
    pub index: u64,
    /// Keys a scan covers, from `index` on; 1 otherwise.
    pub length: u64,
}

/// Where new keys come from: one counter for every thread, past the filled keys.
#[derive(Debug)]
pub struct InsertCounter {
    next: AtomicU64,
}

impl InsertCounter {
    /// Inserts start at `first` (the filled key count).
    pub fn new(first: u64) -> Arc<InsertCounter> {
        Arc::new(InsertCounter {
            next: AtomicU64::new(first),
        })
    }

    /// The next new key's index; `None` once the 12-digit index space is used up.
    fn take(&self) -> Option<u64> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        (index < KEYS_MAX).then_some(index)
    }
}

/// What a [`Planner`] is asked to plan.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    pub workload: Workload,
    pub keys: u64,
    pub distribution: Distribution,
    pub read_ratio: f64,
    /// The longest scan; each scan's length is uniform in `1..=scan_length_max`.
    pub scan_length_max: u64,
}

/// One thread's choice of operations: a seeded generator over the workload's mix.
#[derive(Debug)]
pub struct Planner {
    mix: Vec<(OpKind, u64)>,
    chooser: KeyChooser,
    rng: Rng,
    latest: Option<RecentInserts>,
    inserts: Arc<InsertCounter>,
    scan_length_max: u64,
}

impl Planner {
    pub fn new(options: &PlanOptions, seed: u64, inserts: Arc<InsertCounter>) -> Planner {
        assert!(options.scan_length_max > 0);
        Planner {
            mix: options.workload.mix(options.read_ratio),
            chooser: KeyChooser::new(options.keys, options.distribution),
            rng: Rng::new(seed),
            latest: options.workload.reads_latest().then(RecentInserts::default),
            inserts,
            scan_length_max: options.scan_length_max,
        }
    }

    /// The next operation.
    pub fn plan(&mut self) -> Planned {
        let draw = self.rng.below(MILLION);
        let mut below = 0;
        let kind = self
            .mix
            .iter()
            .find(|&&(_, parts)| {
                below += parts;
                draw < below
            })
            .map_or(self.mix[0].0, |&(kind, _)| kind);
        let mut index = self.chooser.next(&mut self.rng);
        let mut length = 1;
        match kind {
            OpKind::Insert => match self.inserts.take() {
                Some(new) => index = new,
                // No index left for new keys: update an existing one instead.
                None => {
                    return Planned {
                        kind: OpKind::Put,
                        index,
                        length,
                    }
                }
            },
            OpKind::Get => {
                if let Some(latest) = &self.latest {
                    index = latest.pick(&mut self.rng).unwrap_or(index);
                }
            }
            OpKind::Scan => length = 1 + self.rng.below(self.scan_length_max),
            _ => {}
        }
        Planned {
            kind,
            index,
            length,
        }
    }

    /// Tells the planner that an insert succeeded: YCSB D reads it from now on.
    pub fn inserted(&mut self, index: u64) {
        if let Some(latest) = &mut self.latest {
            latest.push(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planner_for(workload: Workload) -> Planner {
        let options = PlanOptions {
            workload,
            keys: 100,
            distribution: workload.default_distribution(),
            read_ratio: 0.7,
            scan_length_max: 10,
        };
        Planner::new(&options, 1, InsertCounter::new(100))
    }

    // Each mix draws its kinds in about the stated shares.
    #[test]
    fn mixes_come_out_in_their_shares() {
        for (workload, kind, share) in [
            (Workload::Mixed, OpKind::Get, 0.7),
            (Workload::YcsbA, OpKind::Put, 0.5),
            (Workload::YcsbB, OpKind::Get, 0.95),
            (Workload::YcsbE, OpKind::Scan, 0.95),
            (Workload::YcsbF, OpKind::ReadModifyWrite, 0.5),
            (Workload::Txn, OpKind::ReadModifyWrite, 1.0),
        ] {
            let mut planner = planner_for(workload);
            let draws = 20_000;
            let hits = (0..draws).filter(|_| planner.plan().kind == kind).count();
            let measured = hits as f64 / draws as f64;
            assert!((measured - share).abs() < 0.02, "{workload:?}: {measured}");
        }
    }

    // Inserts take new indexes past the keyspace; YCSB D then reads what was inserted;
    // scans stay within their length bound.
    #[test]
    fn inserts_scans_and_latest_reads() {
        let mut planner = planner_for(Workload::YcsbD);
        let mut inserted = Vec::new();
        for _ in 0..2000 {
            let planned = planner.plan();
            if planned.kind == OpKind::Insert {
                assert!(planned.index >= 100);
                assert!(!inserted.contains(&planned.index));
                inserted.push(planned.index);
                planner.inserted(planned.index);
            } else if !inserted.is_empty() {
                assert!(inserted.contains(&planned.index), "{planned:?}");
            }
        }
        assert!(!inserted.is_empty());
        let mut planner = planner_for(Workload::Scan);
        for _ in 0..1000 {
            let planned = planner.plan();
            assert!((1..=10).contains(&planned.length) && planned.index < 100);
        }
    }
}
