//! Garbage collection decisions: which segments no group needs any more, whose hard state
//! and compaction records should be written again so that an old segment can go, and which
//! groups hold old segments back and must snapshot. Pure; the writer carries them out.
//!
//! A group needs the segments holding its live entries (after its compaction point) and
//! the records of its current hard state and compaction point. Segments are deleted oldest
//! first, so a GroupRemoved record always outlives the records it cancels. Deletion waits
//! until every record submitted before the decision is durable: until then, the records a
//! newer one replaces are still the durable truth.

use std::collections::HashMap;

use super::group_log::GroupLog;

/// What to do after looking at every group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Groups pinning the oldest segment only through their hard state or compaction record;
    /// writing those records again releases it.
    pub relog: Vec<u64>,
    /// Every segment before this one is needed by no group.
    pub delete_before_segment: u64,
    /// Groups whose oldest live entry is at least `segments_pinned_max` segments old.
    pub snapshot: Vec<u64>,
}

/// Plans a collection. `segment_of` maps a batch sequence to its segment (batches not yet
/// written map to `write_segment`); `oldest_segment` is the oldest live segment.
pub fn plan(
    groups: &HashMap<u64, GroupLog>,
    segment_of: impl Fn(u64) -> u64,
    oldest_segment: u64,
    write_segment: u64,
    segments_pinned_max: u64,
) -> GcPlan {
    assert!(oldest_segment <= write_segment);
    let mut plan = GcPlan {
        delete_before_segment: write_segment,
        ..GcPlan::default()
    };
    for (&group_id, group) in groups {
        let entry_segment = group.oldest_entry_batch().map(&segment_of);
        let mut state_segment = group.oldest_state_batch().map(&segment_of);
        if let Some(segment) = state_segment {
            if segment == oldest_segment
                && segment < write_segment
                && entry_segment != Some(segment)
            {
                plan.relog.push(group_id);
                state_segment = Some(write_segment);
            }
        }
        for segment in [entry_segment, state_segment].into_iter().flatten() {
            plan.delete_before_segment = plan.delete_before_segment.min(segment);
        }
        if let Some(segment) = entry_segment {
            if write_segment - segment >= segments_pinned_max {
                plan.snapshot.push(group_id);
            }
        }
    }
    plan.relog.sort_unstable();
    plan.snapshot.sort_unstable();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{Entry, HardState, LogPosition};

    fn entries(first: u64, count: u64) -> Vec<Entry> {
        (first..first + count)
            .map(|index| Entry {
                index,
                term: 1,
                kind: 0,
                payload: vec![].into(),
            })
            .collect()
    }

    // With batch n in segment n: entries pin their segments, state-only pins are relogged,
    // and the laggard is named for a snapshot.
    #[test]
    fn pins_relogs_and_snapshot_requests() {
        let mut groups = HashMap::new();
        // Group 1: entries in segment 2 onward.
        let mut one = GroupLog::default();
        one.append(&entries(1, 5), 2, 0);
        one.set_hard_state(HardState::default(), 5);
        groups.insert(1, one);
        // Group 2: only a hard state in segment 1, the oldest.
        let mut two = GroupLog::default();
        two.set_hard_state(
            HardState {
                term: 1,
                vote: 0,
                commit: 0,
            },
            1,
        );
        groups.insert(2, two);
        // Group 3: compacted everything; its compaction record is in segment 4.
        let mut three = GroupLog::default();
        three.append(&entries(1, 3), 3, 0);
        three.compact(LogPosition { index: 3, term: 1 }, 4);
        groups.insert(3, three);

        let plan = plan(&groups, |batch| batch, 1, 6, 4);
        assert_eq!(plan.relog, vec![2]);
        assert_eq!(plan.delete_before_segment, 2);
        assert_eq!(plan.snapshot, vec![1]);
    }

    // With no group at all, everything before the write segment is garbage.
    #[test]
    fn no_groups_frees_everything_but_the_write_segment() {
        let plan = plan(&HashMap::new(), |batch| batch, 3, 7, 4);
        assert_eq!(
            plan,
            GcPlan {
                relog: vec![],
                delete_before_segment: 7,
                snapshot: vec![]
            }
        );
    }
}
