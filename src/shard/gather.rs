//! Requests split over several groups or shards, waiting for every part: a range or range
//! delete over the whole keyspace (one part per group, merged into one answer), and a
//! node status (one part per shard). Every table here has a named bound; a status gather
//! also has a deadline, because its parts travel over the mesh and one can be lost.

use std::collections::{BTreeMap, VecDeque};

use super::pending::Origin;
use crate::api::{ApiError, ErrorCode, GroupStatus};
use crate::kv::{self, Command, OpResponse, Response};

/// Requests split over groups waiting for their parts, per shard. Each part is bounded in
/// time on its own (a local part always gets its reply from the Raft layer, a forwarded
/// one has the forwarding deadline), so a scatter needs no deadline of its own.
pub const SCATTERS_MAX: usize = 4096;
/// Node statuses waiting for the other shards, per shard.
pub const STATUS_GATHERS_MAX: usize = 64;

/// How the parts of a scatter become one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    Range { limit: u64 },
    Delete,
}

/// A request split over several groups.
#[derive(Debug)]
struct Scatter {
    origin: Origin,
    merge: Merge,
    remaining: usize,
    parts: Vec<Result<Response, ApiError>>,
    /// For a snapshot read: the command, to read again at a later revision if a group
    /// says the snapshot's is behind its writes.
    retry: Option<Command>,
}

/// What became of a scatter once every part answered.
#[derive(Debug)]
pub enum ScatterEnd {
    /// The merged answer for `origin`.
    Answer(Origin, Result<Response, ApiError>),
    /// A snapshot read must be taken again at `revision` (the highest a group named).
    Retry {
        origin: Origin,
        merge: Merge,
        command: Command,
        revision: u64,
    },
}

/// The scatters of one shard.
#[derive(Debug, Default)]
pub struct Scatters {
    waiting: BTreeMap<u64, Scatter>,
}

impl Scatters {
    pub fn is_full(&self) -> bool {
        self.waiting.len() >= SCATTERS_MAX
    }

    /// Starts waiting for `parts` answers under `id`; `retry` is the command of a
    /// snapshot read (see [`ScatterEnd::Retry`]).
    pub fn start(
        &mut self,
        id: u64,
        origin: Origin,
        merge: Merge,
        parts: usize,
        retry: Option<Command>,
    ) {
        debug_assert!(!self.is_full());
        self.waiting.insert(
            id,
            Scatter {
                origin,
                merge,
                remaining: parts,
                parts: Vec::with_capacity(parts),
                retry,
            },
        );
    }

    /// Adds one part's answer; once every part answered, what to do.
    pub fn part(&mut self, id: u64, reply: Result<Response, ApiError>) -> Option<ScatterEnd> {
        let scatter = self.waiting.get_mut(&id)?;
        scatter.parts.push(reply);
        scatter.remaining -= 1;
        if scatter.remaining > 0 {
            return None;
        }
        let mut scatter = self.waiting.remove(&id).expect("present");
        // A part that failed otherwise (its read index timed out, its group has no
        // leader) never confirmed what its group had committed when the read began, so
        // a retry at the others' revision could miss a write completed before the read:
        // the read fails as that part did, and the client retries it whole.
        let failed = scatter
            .parts
            .iter()
            .position(|part| matches!(part, Err(error) if error.code != ErrorCode::StaleRevision));
        if let Some(failed) = failed {
            let error = scatter.parts.swap_remove(failed);
            return Some(ScatterEnd::Answer(scatter.origin, error));
        }
        let behind = scatter
            .parts
            .iter()
            .filter_map(|part| match part {
                Err(error) if error.code == ErrorCode::StaleRevision => Some(error.revision),
                _ => None,
            })
            .max();
        if let (Some(revision), Some(command)) = (behind, scatter.retry) {
            return Some(ScatterEnd::Retry {
                origin: scatter.origin,
                merge: scatter.merge,
                command,
                revision,
            });
        }
        Some(ScatterEnd::Answer(
            scatter.origin,
            merge(scatter.merge, scatter.parts),
        ))
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// A node status waiting for the other shards' groups.
#[derive(Debug)]
struct StatusGather {
    origin: Origin,
    remaining: usize,
    groups: Vec<GroupStatus>,
}

/// The status gathers of one shard, with their deadlines.
#[derive(Debug, Default)]
pub struct StatusGathers {
    waiting: BTreeMap<u64, StatusGather>,
    /// (deadline tick, token) in the order they were started: deadlines only grow.
    deadlines: VecDeque<(u64, u64)>,
}

/// What became of a status gather.
#[derive(Debug)]
pub enum GatherEnd {
    /// Every shard reported: the groups, sorted.
    Complete(Origin, Vec<GroupStatus>),
    /// It cannot complete (a part could not be sent, or the deadline passed).
    Failed(Origin, ApiError),
}

impl StatusGathers {
    pub fn is_full(&self) -> bool {
        self.waiting.len() >= STATUS_GATHERS_MAX
    }

    /// Starts a gather with this shard's own groups, waiting for `remaining` more shards
    /// until `deadline`.
    pub fn start(
        &mut self,
        token: u64,
        origin: Origin,
        own: Vec<GroupStatus>,
        remaining: usize,
        deadline: u64,
    ) -> Option<GatherEnd> {
        debug_assert!(!self.is_full());
        self.waiting.insert(
            token,
            StatusGather {
                origin,
                remaining,
                groups: own,
            },
        );
        self.deadlines.push_back((deadline, token));
        self.finish_if_complete(token)
    }

    /// One shard's groups for gather `token`.
    pub fn part(&mut self, token: u64, groups: Vec<GroupStatus>) -> Option<GatherEnd> {
        let gather = self.waiting.get_mut(&token)?;
        gather.groups.extend(groups);
        gather.remaining = gather.remaining.saturating_sub(1);
        self.finish_if_complete(token)
    }

    /// A part of gather `token` cannot arrive.
    pub fn fail(&mut self, token: u64, error: ApiError) -> Option<GatherEnd> {
        let gather = self.waiting.remove(&token)?;
        Some(GatherEnd::Failed(gather.origin, error))
    }

    fn finish_if_complete(&mut self, token: u64) -> Option<GatherEnd> {
        if self.waiting.get(&token)?.remaining > 0 {
            return None;
        }
        let mut gather = self.waiting.remove(&token).expect("present");
        gather.groups.sort_by_key(|group| group.group_id);
        Some(GatherEnd::Complete(gather.origin, gather.groups))
    }

    /// The gathers whose deadline is at or before `tick`.
    pub fn expire(&mut self, tick: u64) -> Vec<GatherEnd> {
        let mut ended = Vec::new();
        while let Some(&(deadline, token)) = self.deadlines.front() {
            if deadline > tick {
                break;
            }
            self.deadlines.pop_front();
            let error = ApiError::new(
                ErrorCode::Timeout,
                "a shard of this node did not report its groups in time",
            );
            ended.extend(self.fail(token, error));
        }
        ended
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Ends every gather (the shard stops).
    pub fn drain(&mut self) -> Vec<Origin> {
        self.deadlines.clear();
        std::mem::take(&mut self.waiting)
            .into_values()
            .map(|gather| gather.origin)
            .collect()
    }
}

/// One answer from the answers of every group.
fn merge(merge: Merge, parts: Vec<Result<Response, ApiError>>) -> Result<Response, ApiError> {
    let mut revision = 0;
    let mut ranges = Vec::new();
    let mut deletes = Vec::new();
    for part in parts {
        let response = part?;
        revision = revision.max(response.revision);
        match response.op {
            OpResponse::Range(range) => ranges.push(range),
            OpResponse::Delete(delete) => deletes.push(delete),
            _ => return Err(ApiError::new(ErrorCode::Internal, "unexpected part answer")),
        }
    }
    let op = match merge {
        Merge::Range { limit } => OpResponse::Range(merge_ranges(
            ranges,
            limit,
            kv::Limits::default().response_bytes_max,
        )),
        Merge::Delete => {
            let mut out = kv::DeleteResponse::default();
            for delete in deletes {
                out.deleted += delete.deleted;
                out.prev_kvs.extend(delete.prev_kvs);
            }
            out.prev_kvs.sort_by(|a, b| a.key.cmp(&b.key));
            OpResponse::Delete(out)
        }
    };
    Ok(Response { revision, op })
}

/// One range answer from the answers of every group, each a prefix of its group's
/// matching keys. The merged `kvs` are a prefix of all matching keys too, so a client can
/// page on from the last one: nothing past the smallest last key of a group that stopped
/// early (its next keys are unknown here), at most `limit` pairs (0: no limit), and at most
/// `response_bytes_max` bytes as the store counts them (so that eight groups' full
/// answers cannot add up to more than a frame holds).
fn merge_ranges(
    ranges: Vec<kv::RangeResponse>,
    limit: u64,
    response_bytes_max: u64,
) -> kv::RangeResponse {
    let mut out = kv::RangeResponse::default();
    let mut cut: Option<Vec<u8>> = None;
    for range in ranges {
        out.count += range.count;
        if range.more {
            out.more = true;
            // A group that stopped before its first key (it cannot, while every key-value
            // fits the budget) would allow no key at all: the empty key sorts first.
            let last = range.kvs.last().map_or(&[][..], |pair| pair.key.as_slice());
            if cut.as_ref().is_none_or(|cut| last < cut.as_slice()) {
                cut = Some(last.to_vec());
            }
        }
        out.kvs.extend(range.kvs);
    }
    out.kvs.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some(cut) = cut {
        let kept = out.kvs.partition_point(|pair| pair.key <= cut);
        out.kvs.truncate(kept);
    }
    if limit > 0 && out.kvs.len() as u64 > limit {
        out.kvs.truncate(limit as usize);
        out.more = true;
    }
    let mut bytes = 0u64;
    let within = out
        .kvs
        .iter()
        .take_while(|pair| {
            bytes += pair.encoded_bytes() as u64;
            bytes <= response_bytes_max
        })
        .count();
    if within < out.kvs.len() {
        out.kvs.truncate(within);
        out.more = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, value_bytes: usize) -> kv::KeyValue {
        kv::KeyValue {
            key: key.as_bytes().to_vec(),
            value: vec![b'v'; value_bytes],
            ..kv::KeyValue::default()
        }
    }

    fn range(keys: &[&str], count: u64, more: bool) -> kv::RangeResponse {
        kv::RangeResponse {
            kvs: keys.iter().map(|key| pair(key, 0)).collect(),
            count,
            more,
        }
    }

    fn keys(range: &kv::RangeResponse) -> Vec<String> {
        range
            .kvs
            .iter()
            .map(|pair| String::from_utf8(pair.key.clone()).unwrap())
            .collect()
    }

    fn origin() -> Origin {
        Origin::Client {
            connection: 1,
            request_id: 7,
        }
    }

    // Complete answers merge into key order; the limit keeps the first keys.
    #[test]
    fn merged_ranges_are_ordered_and_limited() {
        let parts = vec![
            range(&["b", "d"], 2, false),
            range(&["a", "c", "e"], 3, false),
        ];
        let merged = merge_ranges(parts.clone(), 0, u64::MAX);
        assert_eq!(keys(&merged), ["a", "b", "c", "d", "e"]);
        assert_eq!((merged.count, merged.more), (5, false));
        let limited = merge_ranges(parts, 3, u64::MAX);
        assert_eq!(keys(&limited), ["a", "b", "c"]);
        assert_eq!((limited.count, limited.more), (5, true));
    }

    // A group that stopped early hides its later keys: nothing past its last key is
    // returned, so the answer has no hole a client paging on would skip.
    #[test]
    fn merged_ranges_stop_at_a_group_that_stopped_early() {
        let parts = vec![
            range(&["a", "c"], 4, true),
            range(&["b", "d", "f"], 3, false),
        ];
        let merged = merge_ranges(parts, 0, u64::MAX);
        assert_eq!(keys(&merged), ["a", "b", "c"]);
        assert_eq!((merged.count, merged.more), (7, true));
    }

    // The merged answer stays within the byte budget however many groups filled theirs.
    #[test]
    fn merged_ranges_respect_the_byte_budget() {
        let big = 1000;
        let parts: Vec<kv::RangeResponse> = (0..8)
            .map(|group| kv::RangeResponse {
                kvs: (0..4)
                    .map(|index| pair(&format!("k{index}{group}"), big))
                    .collect(),
                count: 4,
                more: false,
            })
            .collect();
        let one = pair("k00", big).encoded_bytes() as u64;
        let merged = merge_ranges(parts, 0, 10 * one);
        assert_eq!(merged.kvs.len(), 10);
        assert_eq!((merged.count, merged.more), (32, true));
        assert_eq!(keys(&merged)[..3], ["k00", "k01", "k02"]);
    }

    // A scatter answers once, after its last part; one failed part fails the whole.
    #[test]
    fn a_scatter_answers_after_its_last_part() {
        let mut scatters = Scatters::default();
        scatters.start(1, origin(), Merge::Delete, 2, None);
        let part = Response {
            revision: 3,
            op: OpResponse::Delete(kv::DeleteResponse::default()),
        };
        assert!(scatters.part(1, Ok(part.clone())).is_none());
        let Some(ScatterEnd::Answer(_, merged)) = scatters.part(1, Ok(part.clone())) else {
            panic!("complete");
        };
        assert_eq!(merged.unwrap().revision, 3);
        assert!(scatters.is_empty());
        scatters.start(2, origin(), Merge::Delete, 2, None);
        scatters.part(2, Err(ApiError::new(ErrorCode::NoLeader, "none")));
        let Some(ScatterEnd::Answer(_, merged)) = scatters.part(2, Ok(part)) else {
            panic!("complete");
        };
        assert_eq!(merged.unwrap_err().code, ErrorCode::NoLeader);
    }

    // A snapshot read some group says is behind is taken again at the highest revision
    // the groups named; without a command to retry, the refusal is the answer.
    #[test]
    fn a_snapshot_behind_a_group_is_read_again() {
        let mut scatters = Scatters::default();
        let command = Command {
            client_id: 0,
            seq: 0,
            op: kv::Op::Range(kv::RangeRequest::default()),
        };
        let behind = |revision| {
            let mut error = ApiError::new(ErrorCode::StaleRevision, "behind");
            error.revision = revision;
            Err(error)
        };
        let merge = Merge::Range { limit: 0 };
        scatters.start(1, origin(), merge, 3, Some(command));
        assert!(scatters.part(1, behind(50)).is_none());
        assert!(scatters.part(1, behind(70)).is_none());
        let ok = Ok(Response {
            revision: 40,
            op: OpResponse::Range(kv::RangeResponse::default()),
        });
        assert!(matches!(
            scatters.part(1, ok),
            Some(ScatterEnd::Retry { revision: 70, .. })
        ));
        scatters.start(2, origin(), merge, 1, None);
        assert!(matches!(
            scatters.part(2, behind(50)),
            Some(ScatterEnd::Answer(_, Err(_)))
        ));
    }

    // A snapshot read one group says is behind while another group's part failed is not
    // taken again: the failed group never confirmed what it had committed when the read
    // began, so the others' revision could be below a write it completed before then.
    #[test]
    fn a_snapshot_with_a_failed_part_is_not_read_again() {
        let mut scatters = Scatters::default();
        let command = Command {
            client_id: 0,
            seq: 0,
            op: kv::Op::Range(kv::RangeRequest::default()),
        };
        let mut behind = ApiError::new(ErrorCode::StaleRevision, "behind");
        behind.revision = 70;
        scatters.start(1, origin(), Merge::Range { limit: 0 }, 2, Some(command));
        assert!(scatters.part(1, Err(behind)).is_none());
        let timed_out = Err(ApiError::new(ErrorCode::NotLeader, "no read index in time"));
        let Some(ScatterEnd::Answer(_, Err(error))) = scatters.part(1, timed_out) else {
            panic!("the failed part's error is the answer");
        };
        assert_eq!(error.code, ErrorCode::NotLeader);
    }

    // A status gather that lost a part ends at its deadline with an error instead of
    // waiting forever; a complete one ends at once.
    #[test]
    fn status_gathers_end_by_their_deadline() {
        let mut gathers = StatusGathers::default();
        assert!(gathers.start(1, origin(), Vec::new(), 1, 10).is_none());
        assert!(matches!(
            gathers.start(2, origin(), Vec::new(), 0, 11),
            Some(GatherEnd::Complete(..))
        ));
        assert!(gathers.expire(9).is_empty());
        let ended = gathers.expire(10);
        assert!(matches!(
            ended.as_slice(),
            [GatherEnd::Failed(_, error)] if error.code == ErrorCode::Timeout
        ));
        assert_eq!(gathers.len(), 0);
        // A part that arrives after the deadline finds nothing to add to.
        assert!(gathers.part(1, Vec::new()).is_none());
    }
}
