//! Raft's safety properties, checked as the simulation runs: election safety, leader
//! completeness, state machine safety, and log matching over the replicas' in-memory logs;
//! and the promise of closed revisions: no committed write at or below a revision its
//! group closed earlier in its log.

use std::collections::BTreeMap;

use corekv::kv::LogEntry;
use corekv::multiraft::GroupId;
use corekv::raft::log::RaftLog;
use corekv::raft::{Entry, Index, NodeId, RaftNode, Term};

use crate::trace::hash_bytes;

/// A broken property: which check, and what exactly was seen.
#[derive(Clone, Debug)]
pub struct Violation {
    pub check: &'static str,
    pub message: String,
}

impl Violation {
    pub fn new(check: &'static str, message: String) -> Violation {
        Violation { check, message }
    }
}

/// The first entry any node applied at one index of one group.
#[derive(Clone, Copy, Debug)]
struct AppliedEntry {
    term: Term,
    payload_hash: u64,
    node: NodeId,
}

/// What the checks remember across the run.
#[derive(Debug, Default)]
pub struct Invariants {
    /// The leader of each (group, term) ever seen.
    leaders: BTreeMap<(GroupId, Term), NodeId>,
    /// Per group, the first entry applied at each index (by any node).
    applied: BTreeMap<GroupId, BTreeMap<Index, AppliedEntry>>,
    /// Entries applied by all nodes together (re-applications after restarts count).
    pub entries_applied: u64,
    /// Nodes seen becoming leader since the fault injector last looked (it may crash them).
    pub new_leaders: Vec<NodeId>,
    /// Per group, the current leader's (node, term, commit index) when last seen.
    leader_commits: BTreeMap<GroupId, (NodeId, Term, Index)>,
    /// Per group, the revisions of its committed entries seen so far, in log order.
    revisions: BTreeMap<GroupId, LogRevisions>,
}

/// What the closed-revision check knows of one group's log: the last index it looked at
/// and the highest revision promised closed or written at or below it.
#[derive(Clone, Copy, Debug, Default)]
struct LogRevisions {
    index: Index,
    /// The highest revision a Close entry promised or a write took, up to `index`.
    highest: u64,
    /// Where `highest` comes from, for the report.
    highest_at: Index,
    highest_is_close: bool,
}

/// What the state machine safety check remembers of an entry: a hash of its payload.
pub fn payload_hash(entry: &Entry) -> u64 {
    hash_bytes(&entry.data) ^ u64::from(entry.kind == corekv::raft::EntryKind::ConfChange)
}

impl Invariants {
    /// Looks at one replica: if it leads, checks election safety and, the first time it is
    /// seen leading this term, leader completeness. Returns true for a new leader.
    pub fn observe(
        &mut self,
        node: NodeId,
        group: GroupId,
        raft: &RaftNode,
    ) -> Result<bool, Violation> {
        if !raft.is_leader() {
            return Ok(false);
        }
        let term = raft.term();
        match self.leaders.get(&(group, term)) {
            Some(&leader) if leader == node => {
                self.leader_commit_rule(node, group, raft)?;
                Ok(false)
            }
            Some(&leader) => Err(Violation::new(
                "election safety",
                format!("group {group} has two leaders in term {term}: n{leader} and n{node}"),
            )),
            None => {
                self.leaders.insert((group, term), node);
                self.new_leaders.push(node);
                self.leader_commits
                    .insert(group, (node, term, raft.log().committed));
                self.leader_completeness(node, group, raft)?;
                Ok(true)
            }
        }
    }

    /// Raft's commit rule (section 5.4.2 of the paper): a leader advances its commit index
    /// by counting replicas only to an entry of its own term; older entries commit with it.
    fn leader_commit_rule(
        &mut self,
        node: NodeId,
        group: GroupId,
        raft: &RaftNode,
    ) -> Result<(), Violation> {
        let term = raft.term();
        let committed = raft.log().committed;
        let seen = self.leader_commits.insert(group, (node, term, committed));
        let Some((seen_node, seen_term, seen_committed)) = seen else {
            return Ok(());
        };
        if seen_node != node || seen_term != term || committed <= seen_committed {
            return Ok(());
        }
        let committed_term = raft.log().term(committed).unwrap_or(0);
        if committed_term != term {
            return Err(Violation::new(
                "leader commit rule",
                format!(
                    "n{node}, leader of group {group} in term {term}, advanced its commit index \
                     from {seen_committed} to {committed}, an entry of term {committed_term}: \
                     only entries of the leader's term commit by counting replicas"
                ),
            ));
        }
        Ok(())
    }

    /// A new leader's log holds every entry any node has applied in its group.
    fn leader_completeness(
        &self,
        node: NodeId,
        group: GroupId,
        raft: &RaftNode,
    ) -> Result<(), Violation> {
        let Some(applied) = self.applied.get(&group) else {
            return Ok(());
        };
        let log = raft.log();
        let term = raft.term();
        if let Some((&index, _)) = applied.last_key_value() {
            if index > log.last_index() {
                return Err(Violation::new(
                    "leader completeness",
                    format!(
                        "n{node} leads group {group} in term {term} with a log ending at {} \
                         but index {index} was applied already",
                        log.last_index()
                    ),
                ));
            }
        }
        let first = log.first_index();
        let entries = log
            .slice(first, log.last_index() + 1, usize::MAX)
            .unwrap_or_default();
        for (&index, seen) in applied.range(log.snapshot_index()..) {
            let held_term = log.term(index).unwrap_or(0);
            let same_payload = index < first
                || entries
                    .get((index - first) as usize)
                    .is_some_and(|entry| payload_hash(entry) == seen.payload_hash);
            if held_term != seen.term || !same_payload {
                return Err(Violation::new(
                    "leader completeness",
                    format!(
                        "n{node} leads group {group} in term {term}, but its entry at index \
                         {index} (term {held_term}) is not the entry n{} applied there (term {})",
                        seen.node, seen.term
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A node applied the entry at `index` (of `term`, whose payload hashes to `hash`, see
    /// [`payload_hash`]) in `group`: it must be the entry every other node applied there.
    pub fn applied(
        &mut self,
        node: NodeId,
        group: GroupId,
        (index, term, hash): (Index, Term, u64),
    ) -> Result<(), Violation> {
        self.entries_applied += 1;
        let applied = self.applied.entry(group).or_default();
        match applied.get(&index) {
            None => {
                applied.insert(
                    index,
                    AppliedEntry {
                        term,
                        payload_hash: hash,
                        node,
                    },
                );
                Ok(())
            }
            Some(seen) if seen.term == term && seen.payload_hash == hash => Ok(()),
            Some(seen) => {
                Err(Violation::new(
                    "state machine safety",
                    format!(
                    "group {group} index {}: n{node} applied an entry of term {} but n{} applied \
                     one of term {} (payloads {})",
                    index,
                    term,
                    seen.node,
                    seen.term,
                    if seen.payload_hash == hash { "equal" } else { "differ" }
                ),
                ))
            }
        }
    }

    /// A committed entry of `group` about to be applied: a write must take a revision
    /// above every revision closed or written before it in the log (`kv::store` on closed
    /// revisions). Entries arrive in log order per node; one already looked at (another
    /// replica applying it) is skipped, and a gap (a replica ahead by a snapshot) keeps
    /// what was known, which only weakens the check.
    pub fn committed_entry(&mut self, group: GroupId, entry: &Entry) -> Result<(), Violation> {
        let seen = self.revisions.entry(group).or_default();
        if entry.index <= seen.index {
            return Ok(());
        }
        seen.index = entry.index;
        if entry.kind != corekv::raft::EntryKind::Normal || entry.data.is_empty() {
            return Ok(());
        }
        let (revision, is_close) = match LogEntry::decode(&entry.data) {
            Ok(LogEntry::Write { revision, .. } | LogEntry::Lease { revision, .. }) => {
                (revision, false)
            }
            Ok(LogEntry::Close { revision }) => (revision, true),
            Ok(LogEntry::Compact { .. }) => return Ok(()),
            Err(error) => {
                return Err(Violation::new(
                    "closed revisions",
                    format!(
                        "group {group} index {}: a committed entry does not decode: {error}",
                        entry.index
                    ),
                ))
            }
        };
        if !is_close && revision <= seen.highest {
            return Err(Violation::new(
                "closed revisions",
                format!(
                    "group {group} index {}: a write at revision {revision}, but index {} {} \
                     revision {} before it",
                    entry.index,
                    seen.highest_at,
                    if seen.highest_is_close {
                        "closed"
                    } else {
                        "wrote at"
                    },
                    seen.highest
                ),
            ));
        }
        if revision > seen.highest {
            seen.highest = revision;
            seen.highest_at = entry.index;
            seen.highest_is_close = is_close;
        }
        Ok(())
    }

    /// A node installed a snapshot covering the log up to (`index`, `term`): if any node
    /// applied an entry at `index`, it must have the same term.
    pub fn snapshot_installed(
        &self,
        node: NodeId,
        group: GroupId,
        index: Index,
        term: Term,
    ) -> Result<(), Violation> {
        let seen = self
            .applied
            .get(&group)
            .and_then(|applied| applied.get(&index));
        match seen {
            Some(seen) if seen.term != term => Err(Violation::new(
                "state machine safety",
                format!(
                    "n{node} installed a snapshot of group {group} at index {index} term {term}, \
                     but n{} applied an entry of term {} there",
                    seen.node, seen.term
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Raft's log matching over the in-memory logs of one group's live replicas: if two
    /// logs hold an entry with the same index and term, they are identical up to it.
    pub fn log_matching(group: GroupId, logs: &[(NodeId, &RaftLog)]) -> Result<(), Violation> {
        for (position, &(left_node, left)) in logs.iter().enumerate() {
            for &(right_node, right) in &logs[position + 1..] {
                let low = left.snapshot_index().max(right.snapshot_index());
                let high = left.last_index().min(right.last_index());
                if low > high {
                    continue;
                }
                let Some(top) = (low..=high)
                    .rev()
                    .find(|&index| left.term(index) == right.term(index))
                else {
                    continue;
                };
                let mismatch = |index: Index, what: &str| {
                    Violation::new(
                        "log matching",
                        format!(
                            "group {group}: n{left_node} and n{right_node} agree on the entry at \
                             index {top} (term {}) but differ at index {index} ({what}: \
                             n{left_node} has term {:?}, n{right_node} has term {:?})",
                            left.term(top).unwrap_or(0),
                            left.term(index),
                            right.term(index)
                        ),
                    )
                };
                for index in low..=top {
                    if left.term(index) != right.term(index) {
                        return Err(mismatch(index, "terms"));
                    }
                }
                for index in low + 1..=top {
                    if let (Some(a), Some(b)) = (left.entry_at(index), right.entry_at(index)) {
                        if a != b {
                            return Err(mismatch(index, "payloads"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn leaders_elected(&self) -> usize {
        self.leaders.len()
    }
}
