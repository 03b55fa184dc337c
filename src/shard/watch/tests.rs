//! Unit tests of the watch registry over real stores: order, merge over groups and
//! shards, progress, filters, compaction, start from now, slow watchers and bounds.

use std::collections::BTreeMap;

use super::*;
use crate::api::WatchResponse;
use crate::kv::{Command, DeleteRequest, Op, PutRequest, Store};

/// Groups as a shard holds them: real stores, closed by hand.
#[derive(Default)]
struct Groups {
    stores: BTreeMap<GroupId, Store>,
    indexes: BTreeMap<GroupId, u64>,
}

impl Groups {
    fn with(groups: &[GroupId]) -> Groups {
        let mut this = Groups::default();
        for &group in groups {
            this.stores.insert(group, Store::default());
            this.indexes.insert(group, 0);
        }
        this
    }

    fn index(&mut self, group: GroupId) -> u64 {
        let index = self.indexes.get_mut(&group).unwrap();
        *index += 1;
        *index
    }

    fn put(&mut self, group: GroupId, key: &str, value: &str, revision: u64) {
        let index = self.index(group);
        let op = Op::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        });
        let command = Command {
            client_id: 0,
            seq: 0,
            op,
        };
        let store = self.stores.get_mut(&group).unwrap();
        store.apply(index, revision, &command).unwrap();
    }

    fn delete(&mut self, group: GroupId, key: &str, revision: u64) {
        let index = self.index(group);
        let op = Op::Delete(DeleteRequest {
            key: key.into(),
            ..DeleteRequest::default()
        });
        let command = Command {
            client_id: 0,
            seq: 0,
            op,
        };
        let store = self.stores.get_mut(&group).unwrap();
        store.apply(index, revision, &command).unwrap();
    }

    fn close(&mut self, group: GroupId, revision: u64) {
        let index = self.index(group);
        self.stores
            .get_mut(&group)
            .unwrap()
            .apply_close(index, revision);
    }

    fn compact(&mut self, group: GroupId, revision: u64) {
        let index = self.index(group);
        self.stores
            .get_mut(&group)
            .unwrap()
            .apply_compact(index, revision);
    }
}

impl ChangeSource for Groups {
    fn has_group(&self, group: GroupId) -> bool {
        self.stores.contains_key(&group)
    }

    fn closed_revision(&self, group: GroupId) -> u64 {
        self.stores[&group].closed_revision()
    }

    fn compact_revision(&self, group: GroupId) -> u64 {
        self.stores[&group].compact_revision()
    }

    fn changes(&self, group: GroupId, query: &ChangeQuery, to: u64) -> Result<Changes, KvError> {
        self.stores[&group].changes(&query.key, &query.range_end, query.from, to, 1 << 20)
    }
}

const KEY: WatchKey = WatchKey {
    connection: 1,
    watch_id: 7,
};

/// Every group on shard 0.
fn one_shard(_: GroupId) -> u32 {
    0
}

/// Even groups on shard 0, odd ones on shard 1.
fn two_shards(group: GroupId) -> u32 {
    (group % 2) as u32
}

fn create(
    watches: &mut Watches,
    create: WatchCreate,
    groups: &[GroupId],
    shard_of: &dyn Fn(GroupId) -> u32,
) -> Vec<WatchOutput> {
    let mut out = Vec::new();
    watches
        .create(KEY, create, groups, (0, shard_of), &mut out)
        .unwrap();
    out
}

fn run(watches: &mut Watches, groups: &Groups) -> Vec<WatchOutput> {
    let mut out = Vec::new();
    watches.run(groups, &mut out);
    out
}

fn responses(out: &[WatchOutput]) -> Vec<&WatchResponse> {
    out.iter()
        .filter_map(|output| match output {
            WatchOutput::Reply { response, .. } => Some(response),
            WatchOutput::Poll { .. } => None,
        })
        .collect()
}

/// (revision, key) of every event in `out`.
fn events(out: &[WatchOutput]) -> Vec<(u64, String)> {
    responses(out)
        .iter()
        .flat_map(|response| response.events.iter())
        .map(|event| {
            (
                event.revision(),
                String::from_utf8(event.kv.key.clone()).unwrap(),
            )
        })
        .collect()
}

fn from(start_revision: u64, watch: WatchCreate) -> WatchCreate {
    WatchCreate {
        start_revision,
        ..watch
    }
}

// A watch of one group sends each change as soon as it is applied, with the revision
// through which everything was sent.
#[test]
fn a_one_group_watch_sends_each_change_when_applied() {
    let mut groups = Groups::with(&[0]);
    let mut watches = Watches::default();
    let out = create(
        &mut watches,
        from(1, WatchCreate::key("a")),
        &[0],
        &one_shard,
    );
    assert!(responses(&out)[0].created);
    groups.put(0, "a", "1", 10);
    let out = run(&mut watches, &groups);
    assert_eq!(events(&out), vec![(10, "a".into())]);
    assert_eq!(responses(&out)[0].revision, 10);
    assert!(run(&mut watches, &groups).is_empty(), "sent once");
    groups.put(0, "b", "1", 11);
    groups.put(0, "a", "2", 12);
    let out = run(&mut watches, &groups);
    assert_eq!(events(&out), vec![(12, "a".into())]);
}

// A watch over several groups sends nothing past the smallest closed revision, then
// every group's changes merged in revision order.
#[test]
fn a_multi_group_watch_merges_up_to_the_smallest_closed_revision() {
    let mut groups = Groups::with(&[0, 1]);
    groups.put(0, "a", "1", 10);
    groups.put(0, "c", "1", 30);
    groups.put(1, "b", "1", 20);
    let mut watches = Watches::default();
    create(
        &mut watches,
        from(1, WatchCreate::prefix("")),
        &[0, 1],
        &one_shard,
    );
    let out = run(&mut watches, &groups);
    // Group 1 is closed at 20 only: 30 may still be overtaken by a write of group 1.
    assert_eq!(events(&out), vec![(10, "a".into()), (20, "b".into())]);
    assert_eq!(responses(&out)[0].revision, 20);
    groups.close(1, 35);
    let out = run(&mut watches, &groups);
    assert_eq!(events(&out), vec![(30, "c".into())]);
    assert_eq!(responses(&out)[0].revision, 30);
}

// A progress notification asked for while events wait comes after them, with the
// revision through which they were sent.
#[test]
fn progress_never_overtakes_events() {
    let mut groups = Groups::with(&[0]);
    let mut watches = Watches::default();
    create(
        &mut watches,
        from(1, WatchCreate::key("a")),
        &[0],
        &one_shard,
    );
    run(&mut watches, &groups);
    groups.put(0, "a", "1", 10);
    groups.close(0, 15);
    assert!(watches.want_progress(KEY));
    let out = run(&mut watches, &groups);
    let responses = responses(&out);
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0].events.len(), 1);
    assert!(responses[1].is_progress());
    assert_eq!(responses[1].revision, 15);
    assert!(!watches.want_progress(WatchKey {
        connection: 1,
        watch_id: 8
    }));
}

// Filters drop puts or deletes, and previous pairs come only when asked for.
#[test]
fn filters_and_previous_pairs() {
    let mut groups = Groups::with(&[0]);
    groups.put(0, "a", "1", 10);
    groups.put(0, "a", "2", 20);
    groups.delete(0, "a", 30);
    let mut watches = Watches::default();
    let watch = WatchCreate {
        no_put: true,
        prev_kv: true,
        ..from(1, WatchCreate::key("a"))
    };
    create(&mut watches, watch, &[0], &one_shard);
    let out = run(&mut watches, &groups);
    let sent = &responses(&out)[0].events;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, EventKind::Delete);
    assert_eq!(sent[0].prev_kv.as_ref().unwrap().value, b"2");
    let mut watches = Watches::default();
    create(
        &mut watches,
        from(1, WatchCreate::key("a")),
        &[0],
        &one_shard,
    );
    let out = run(&mut watches, &groups);
    assert_eq!(events(&out).len(), 3);
    assert!(responses(&out)[0]
        .events
        .iter()
        .all(|e| e.prev_kv.is_none()));
}

// A start at or below the compaction revision ends the watch with it.
#[test]
fn a_compacted_start_is_cancelled_with_the_compaction_revision() {
    let mut groups = Groups::with(&[0]);
    groups.put(0, "a", "1", 10);
    groups.put(0, "a", "2", 20);
    groups.compact(0, 20);
    let mut watches = Watches::default();
    create(
        &mut watches,
        from(5, WatchCreate::key("a")),
        &[0],
        &one_shard,
    );
    let out = run(&mut watches, &groups);
    let ended = responses(&out)[0];
    assert!(ended.canceled);
    assert_eq!(ended.compact_revision, 20);
    assert!(matches!(out[0], WatchOutput::Reply { finished: true, .. }));
    assert!(watches.is_empty());
}

// A watch from now starts after the smallest closed revision of its groups, so a write
// committed later is never below its start, whatever the clocks.
#[test]
fn a_watch_from_now_starts_after_the_closed_revision() {
    let mut groups = Groups::with(&[0, 1]);
    groups.put(0, "a", "1", 50);
    groups.close(1, 40);
    let mut watches = Watches::default();
    let out = create(&mut watches, WatchCreate::prefix(""), &[0, 1], &one_shard);
    assert!(out.is_empty(), "created once the start is known");
    let out = run(&mut watches, &groups);
    assert!(responses(&out)[0].created);
    assert_eq!(responses(&out)[0].revision, 40);
    // Group 0's write at 50 is after the start: sent once group 1 closes past it.
    groups.put(1, "b", "1", 45);
    groups.close(1, 60);
    let out = run(&mut watches, &groups);
    assert_eq!(events(&out), vec![(45, "b".into()), (50, "a".into())]);
}

// Another shard's groups are polled; their changes wait in the buffer until the local
// groups close as far, and go out merged.
#[test]
fn remote_groups_are_polled_and_merged() {
    let mut here = Groups::with(&[0]);
    let mut there = Groups::with(&[1]);
    let mut watches = Watches::default();
    create(
        &mut watches,
        from(1, WatchCreate::prefix("")),
        &[0, 1],
        &two_shards,
    );
    here.put(0, "a", "1", 10);
    there.put(1, "b", "1", 20);
    there.put(1, "d", "1", 40);
    let out = run(&mut watches, &here);
    let (token, poll) = match &out[..] {
        [WatchOutput::Poll {
            shard: 1,
            token,
            poll,
        }] => (*token, poll.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(poll.query.from, 1);
    let mut out = Vec::new();
    watches.on_poll_reply(token, serve_poll(&there, &poll), &mut out);
    here.close(0, 30);
    let out = run(&mut watches, &here);
    // The remote's 40 stays buffered: group 0 is closed at 30 only.
    assert_eq!(events(&out), vec![(10, "a".into()), (20, "b".into())]);
    here.close(0, 45);
    let out = run(&mut watches, &here);
    assert_eq!(events(&out), vec![(40, "d".into())]);
    // A poll whose watcher is gone is dropped.
    watches.on_connection_closed(KEY.connection);
    assert!(watches.is_empty());
    let mut out = Vec::new();
    watches.on_poll_reply(token + 100, WatchPollReply::Unavailable, &mut out);
    assert!(out.is_empty());
}

// A watcher whose connection stays past its backlog bound with changes to send is
// cancelled after the bound on ticks, with the revision it got everything through.
#[test]
fn a_held_watcher_is_cancelled_with_its_resume_revision() {
    let mut groups = Groups::with(&[0]);
    let mut watches = Watches::default();
    create(
        &mut watches,
        from(1, WatchCreate::key("a")),
        &[0],
        &one_shard,
    );
    groups.put(0, "a", "1", 10);
    assert_eq!(events(&run(&mut watches, &groups)).len(), 1);
    watches.set_backlog(KEY.connection, WATCH_CONNECTION_BACKLOG_BYTES_MAX + 1, 0);
    groups.put(0, "a", "2", 20);
    for _ in 0..WATCH_HELD_TICKS_MAX {
        watches.on_tick();
        assert!(run(&mut watches, &groups).is_empty(), "held: nothing sent");
    }
    watches.on_tick();
    watches.on_tick();
    let out = run(&mut watches, &groups);
    let ended = responses(&out)[0];
    assert!(ended.canceled);
    assert_eq!(ended.cancel_reason, CANCEL_SLOW);
    assert_eq!(ended.revision, 10);
}

// A backlog that drains in time lets the watcher go on where it was.
#[test]
fn a_drained_backlog_resumes_the_watcher() {
    let mut groups = Groups::with(&[0]);
    let mut watches = Watches::default();
    create(
        &mut watches,
        from(1, WatchCreate::key("a")),
        &[0],
        &one_shard,
    );
    watches.set_backlog(KEY.connection, 0, WATCH_CONNECTION_BACKLOG_FRAMES_MAX + 1);
    groups.put(0, "a", "1", 10);
    assert!(run(&mut watches, &groups).is_empty());
    watches.set_backlog(KEY.connection, 0, 0);
    assert_eq!(events(&run(&mut watches, &groups)), vec![(10, "a".into())]);
}

// The bounds on watches per connection and duplicate ids are enforced.
#[test]
fn watches_per_connection_are_bounded() {
    let mut watches = Watches::default();
    let mut out = Vec::new();
    for watch_id in 0..WATCHES_PER_CONNECTION_MAX as u64 {
        let key = WatchKey {
            connection: 3,
            watch_id,
        };
        watches
            .create(key, WatchCreate::key("a"), &[0], (0, &one_shard), &mut out)
            .unwrap();
    }
    let key = WatchKey {
        connection: 3,
        watch_id: 9999,
    };
    assert_eq!(
        watches.create(key, WatchCreate::key("a"), &[0], (0, &one_shard), &mut out),
        Err(WatchRefusal::ConnectionFull)
    );
    let key = WatchKey {
        connection: 3,
        watch_id: 0,
    };
    assert_eq!(
        watches.create(key, WatchCreate::key("a"), &[0], (0, &one_shard), &mut out),
        Err(WatchRefusal::Duplicate(0))
    );
    assert!(watches.cancel(key, &mut out));
    assert!(!watches.cancel(key, &mut out));
}
