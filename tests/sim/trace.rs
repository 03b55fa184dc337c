//! What happened in a run, as a bounded ring of compact events (formatted only when a run
//! fails) and a digest of every event, so two runs of one seed can be compared exactly.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};

use corekv::api::ErrorCode;
use corekv::multiraft::GroupId;
use corekv::raft::{Index, MessageKind, NodeId, Term};

/// Events kept for the failure report.
pub const TRACE_EVENTS_MAX: usize = 200;

/// Why a message never arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// The network's random loss.
    Loss,
    /// A partition cut the link at delivery time.
    Partition,
    /// The receiving node was down.
    Down,
}

/// The kinds of client operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Put,
    Get,
    Delete,
    Append,
    CompareAndSet,
    /// A put with an empty key: every node refuses it before proposing it.
    InvalidPut,
    /// A page of a scan across groups at one revision.
    Scan,
}

/// The gist of a reply to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    Ok,
    NotLeader {
        leader: NodeId,
    },
    /// Refused with this code.
    Refused(ErrorCode),
}

/// How a partition cuts the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionKind {
    /// Two sides that do not hear each other (a majority and a minority, or halves).
    Split,
    /// The leader of some group hears nobody and nobody hears it.
    LeaderIsolated,
    /// Some nodes do not hear one node, which still hears them.
    Asymmetric,
    /// Two sides cut from each other, and one node that hears and is heard by both.
    Bridge,
}

/// One thing that happened. Small and `Copy`, so recording costs a few nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        kind: MessageKind,
        term: Term,
        index: Index,
        commit: Index,
        entries: u32,
        reject: bool,
    },
    MessageLost {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        kind: MessageKind,
        reason: LossReason,
    },
    MessageDuplicated {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        kind: MessageKind,
    },
    BatchQueued {
        node: NodeId,
        shard: u32,
        records: u32,
        durable_at: u64,
    },
    BatchDurable {
        node: NodeId,
        shard: u32,
        records: u32,
    },
    /// A mesh channel was full: the message went back to its sender.
    MeshRefused {
        node: NodeId,
        from_shard: u32,
        to_shard: u32,
    },
    Crash {
        node: NodeId,
        batches_kept: u32,
        batches_lost: u32,
    },
    Restart {
        node: NodeId,
    },
    PartitionStart {
        kind: PartitionKind,
        /// Bit `from * 8 + to` (node indexes) is set when the link from `from` to `to` is
        /// cut.
        cut_links: u64,
        heal_at: u64,
    },
    PartitionHealed,
    TransferLeader {
        group: GroupId,
        from: NodeId,
        to: NodeId,
        accepted: bool,
    },
    BecameLeader {
        node: NodeId,
        group: GroupId,
        term: Term,
    },
    SnapshotInstalled {
        node: NodeId,
        group: GroupId,
        index: Index,
        term: Term,
    },
    Request {
        client: u64,
        operation: usize,
        attempt: u32,
        request: u64,
        node: NodeId,
        group: GroupId,
        kind: OpKind,
        /// The (session client id, seq) the request carries; (0, 0) for a read.
        session: u64,
        seq: u64,
    },
    RequestLost {
        request: u64,
        node: NodeId,
        reason: LossReason,
    },
    ReplyLost {
        request: u64,
        node: NodeId,
    },
    Reply {
        request: u64,
        node: NodeId,
        reply: ReplyKind,
    },
    Completed {
        client: u64,
        operation: usize,
    },
    Failed {
        client: u64,
        operation: usize,
    },
    GaveUp {
        client: u64,
        operation: usize,
    },
    Heal,
}

impl fmt::Display for Event {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::Deliver {
                from,
                to,
                group,
                kind,
                term,
                index,
                commit,
                entries,
                reject,
            } => write!(
                formatter,
                "n{from} -> n{to} g{group} {kind:?} term {term} index {index} commit {commit} \
                 entries {entries}{}",
                if reject { " REJECT" } else { "" }
            ),
            Event::MessageLost {
                from,
                to,
                group,
                kind,
                reason,
            } => write!(
                formatter,
                "n{from} -> n{to} g{group} {kind:?} lost ({reason:?})"
            ),
            Event::MessageDuplicated {
                from,
                to,
                group,
                kind,
            } => write!(formatter, "n{from} -> n{to} g{group} {kind:?} duplicated"),
            Event::BatchQueued {
                node,
                shard,
                records,
                durable_at,
            } => write!(
                formatter,
                "n{node}/s{shard} queues a WAL batch of {records} records, durable at step \
                 {durable_at}"
            ),
            Event::BatchDurable {
                node,
                shard,
                records,
            } => {
                write!(
                    formatter,
                    "n{node}/s{shard} batch durable ({records} records)"
                )
            }
            Event::MeshRefused {
                node,
                from_shard,
                to_shard,
            } => write!(
                formatter,
                "n{node}: mesh s{from_shard} -> s{to_shard} full, message refused"
            ),
            Event::Crash {
                node,
                batches_kept,
                batches_lost,
            } => write!(
                formatter,
                "CRASH n{node}: {batches_kept} pending batches survived, {batches_lost} lost"
            ),
            Event::Restart { node } => write!(formatter, "RESTART n{node}"),
            Event::PartitionStart {
                kind,
                cut_links,
                heal_at,
            } => {
                write!(formatter, "PARTITION {kind:?} until step {heal_at}, cut:")?;
                for bit in 0..64 {
                    if cut_links & (1 << bit) != 0 {
                        write!(formatter, " n{}->n{}", bit / 8 + 1, bit % 8 + 1)?;
                    }
                }
                Ok(())
            }
            Event::PartitionHealed => write!(formatter, "partition healed"),
            Event::TransferLeader {
                group,
                from,
                to,
                accepted,
            } => write!(
                formatter,
                "TRANSFER leadership of g{group} from n{from} to n{to}{}",
                if accepted { "" } else { " (refused)" }
            ),
            Event::BecameLeader { node, group, term } => {
                write!(formatter, "n{node} leads g{group} in term {term}")
            }
            Event::SnapshotInstalled {
                node,
                group,
                index,
                term,
            } => write!(
                formatter,
                "n{node} installs a snapshot of g{group} at index {index} term {term}"
            ),
            Event::Request {
                client,
                operation,
                attempt,
                request,
                node,
                group,
                kind,
                session,
                seq,
            } => write!(
                formatter,
                "client {client} op {operation} {kind:?} attempt {attempt} (request {request}) \
                 -> n{node} g{group} session {session} seq {seq}"
            ),
            Event::RequestLost {
                request,
                node,
                reason,
            } => write!(formatter, "request {request} to n{node} lost ({reason:?})"),
            Event::ReplyLost { request, node } => {
                write!(formatter, "reply to request {request} from n{node} lost")
            }
            Event::Reply {
                request,
                node,
                reply,
            } => write!(formatter, "request {request} <- n{node} {reply:?}"),
            Event::Completed { client, operation } => {
                write!(formatter, "client {client} op {operation} completed")
            }
            Event::Failed { client, operation } => {
                write!(
                    formatter,
                    "client {client} op {operation} failed (not applied)"
                )
            }
            Event::GaveUp { client, operation } => {
                write!(
                    formatter,
                    "client {client} op {operation} given up (outcome unknown)"
                )
            }
            Event::Heal => write!(formatter, "HEAL: all nodes up, no partition, no loss"),
        }
    }
}

/// FNV-1a, 64 bits: a hasher whose output depends only on the bytes fed to it, unlike the
/// standard library's randomly keyed one.
#[derive(Clone, Debug)]
pub struct StableHasher {
    state: u64,
}

impl Default for StableHasher {
    fn default() -> StableHasher {
        StableHasher {
            state: 0xCBF2_9CE4_8422_2325,
        }
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state ^= u64::from(byte);
            self.state = self.state.wrapping_mul(0x0100_0000_01B3);
        }
    }
}

/// The hash of a byte string (entry payloads), stable across runs and builds.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = StableHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

/// The last events of a run and a digest of all of them.
#[derive(Debug)]
pub struct Trace {
    recent: VecDeque<(u64, Event)>,
    digest: StableHasher,
    events: u64,
    /// Print every event as it happens (for replays).
    echo: bool,
}

impl Trace {
    pub fn new(echo: bool) -> Trace {
        Trace {
            recent: VecDeque::with_capacity(TRACE_EVENTS_MAX),
            digest: StableHasher::default(),
            events: 0,
            echo,
        }
    }

    pub fn record(&mut self, step: u64, event: Event) {
        step.hash(&mut self.digest);
        event.hash(&mut self.digest);
        self.events += 1;
        if self.echo {
            println!("step {step}: {event}");
        }
        if self.recent.len() == TRACE_EVENTS_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((step, event));
    }

    /// Folds something other than an event (a check result, a history) into the digest.
    pub fn digest_value<T: Hash>(&mut self, value: &T) {
        value.hash(&mut self.digest);
    }

    pub fn digest(&self) -> u64 {
        self.digest.finish()
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// The last events, one line each, oldest first.
    pub fn recent_lines(&self) -> Vec<String> {
        self.recent
            .iter()
            .map(|(step, event)| format!("step {step}: {event}"))
            .collect()
    }
}
