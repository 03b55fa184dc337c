//! What one run reports: its settings, its counts, the checker's verdict, and the failed
//! check with the trace that led to it.

use crate::faults::{Broken, FaultMix};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    /// Steps of the main phase (clients and faults); healing and the final checks follow.
    pub steps: u64,
    pub broken: Broken,
    /// Print every event as it happens.
    pub echo_trace: bool,
}

/// Counts of what a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    pub steps: u64,
    pub events: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
    pub partitions: u64,
    pub transfers: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub batches_lost: u64,
    pub snapshots_installed: u64,
    pub compactions: u64,
    /// Messages between the shards of one node, and those refused by a full channel.
    pub mesh_messages: u64,
    pub mesh_refused: u64,
    pub leaders_elected: u64,
    pub entries_applied: u64,
    pub operations: u64,
    pub operations_completed: u64,
    pub operations_failed: u64,
    pub operations_pending: u64,
    /// Scans across groups checked as snapshots, and those left unchecked (no replica of
    /// some group held the revision when the scan finished).
    pub snapshot_reads_checked: u64,
    pub snapshot_reads_unchecked: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.steps += other.steps;
        self.events += other.events;
        self.messages_delivered += other.messages_delivered;
        self.messages_dropped += other.messages_dropped;
        self.messages_duplicated += other.messages_duplicated;
        self.partitions += other.partitions;
        self.transfers += other.transfers;
        self.crashes += other.crashes;
        self.restarts += other.restarts;
        self.batches_lost += other.batches_lost;
        self.snapshots_installed += other.snapshots_installed;
        self.compactions += other.compactions;
        self.mesh_messages += other.mesh_messages;
        self.mesh_refused += other.mesh_refused;
        self.leaders_elected += other.leaders_elected;
        self.snapshot_reads_checked += other.snapshot_reads_checked;
        self.snapshot_reads_unchecked += other.snapshot_reads_unchecked;
        self.entries_applied += other.entries_applied;
        self.operations += other.operations;
        self.operations_completed += other.operations_completed;
        self.operations_failed += other.operations_failed;
        self.operations_pending += other.operations_pending;
    }
}

/// The checker's verdict on a run's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Linearizable,
    /// The checker ran out of search steps on some key.
    Unknown,
    /// The run stopped at a failed check before the history was checked.
    NotChecked,
}

/// A failed check, with what is needed to understand and replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub check: &'static str,
    pub message: String,
    pub step: u64,
    pub trace: Vec<String>,
}

/// The checks about progress rather than safety: a healed cluster must serve again and
/// converge, and messages must not multiply without end.
pub const LIVENESS_CHECKS: [&str; 2] = ["liveness after healing", "message storm"];

impl Failure {
    /// Did a safety property break (as opposed to progress stopping)?
    pub fn is_safety(&self) -> bool {
        !LIVENESS_CHECKS.contains(&self.check)
    }
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    pub mix: FaultMix,
    pub nodes: usize,
    pub shards: u32,
    pub groups: usize,
    pub broken: Broken,
    pub stats: Stats,
    pub verdict: Verdict,
    pub failure: Option<Failure>,
    /// A digest of every event and the history: equal for two runs of one seed.
    pub digest: u64,
}
