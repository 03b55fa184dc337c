//! The watches of one shard's client connections: which groups each watches, how far each
//! has been sent, and the merge of their groups' changes in revision order. Pure: the
//! shard core hands in the groups' state ([`ChangeSource`]), ticks, connection backlogs
//! and other shards' answers, and gets back replies for connections and polls for other
//! shards.
//!
//! # What a watcher sends
//!
//! A watcher's position `next` says every change of its keys below `next` has been sent.
//! Its groups' changes are final up to their closed revisions (a close promise, or a
//! write applied: no later write of the group gets a revision at or below it), so a turn
//! sends every change from `next` through the smallest closed revision of the watched
//! groups, merged by revision, in one response (all changes of one revision always go
//! together), and moves `next` past it. A watch of one group therefore sends each change
//! as soon as it is applied; a watch of several waits for all of them to close. Changes
//! are read from the groups' history ([`crate::kv::changes`]), so a watch may start at any
//! revision after the compaction revision, and a watcher holds no copy of what it has
//! not sent yet: a slow watcher costs no memory, only history, and is cancelled with
//! the revision to resume from once it has been held back too long.
//!
//! A progress notification (a response without events, its revision `next - 1`) is sent
//! after everything before it, so it never overtakes an event.
//!
//! # Groups of other shards
//!
//! A watcher's groups owned by other shards of the node are read by polls over the mesh:
//! the owning shard answers from its groups' state (it keeps nothing per watch), with
//! their changes from the asked revision through their smallest closed revision, and
//! the watcher buffers them until its other groups have closed as far. At most one poll
//! per owning shard is out per watcher, and none while its answer is still buffered, so
//! the buffer holds at most one answer ([`WATCH_RESPONSE_BYTES_MAX`] plus one revision).
//! A watcher polls at most once per tick per shard unless the last answer was cut short.
//!
//! # Bounds
//!
//! | bound                                  | what it limits                              |
//! |----------------------------------------|---------------------------------------------|
//! | [`WATCHES_PER_CONNECTION_MAX`]         | watches one connection holds                |
//! | [`WATCHES_PER_SHARD_MAX`]              | watches one shard holds (times shards: a node) |
//! | [`WATCH_RESPONSE_BYTES_MAX`]           | event bytes per response and per poll answer |
//! | [`WATCH_CONNECTION_BACKLOG_BYTES_MAX`] | a connection's unsent reply bytes past which its watchers wait |
//! | [`WATCH_CONNECTION_BACKLOG_FRAMES_MAX`] | the same in frames                          |
//! | [`WATCH_HELD_TICKS_MAX`]               | ticks a watcher may wait so before it is cancelled |
//! | [`WATCH_POLL_TIMEOUT_TICKS`]           | ticks a poll of another shard may take      |

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::api::{EventKind, WatchCreate, WatchEvent, WatchResponse};
use crate::kv::changes::{Change, ChangeKind, Changes};
use crate::kv::KvError;
use crate::multiraft::{GroupId, MultiRaft};

use super::pending::ConnectionId;

/// Watches one connection may hold; below the connection's requests in flight
/// (`server::connections::CONNECTION_REQUESTS_IN_FLIGHT_MAX`, 1024), since each holds one.
pub const WATCHES_PER_CONNECTION_MAX: usize = 256;
/// Watches one shard holds; a node holds this many per shard.
pub const WATCHES_PER_SHARD_MAX: usize = 200_000;
/// Bytes of events one response (and one poll answer) carries, about; a revision whose
/// events are larger goes whole in one response all the same.
pub const WATCH_RESPONSE_BYTES_MAX: usize = 256 << 10;
/// Unsent reply bytes of a connection past which its watchers send nothing more.
pub const WATCH_CONNECTION_BACKLOG_BYTES_MAX: usize = 8 << 20;
/// Unsent reply frames of a connection past which its watchers send nothing more. A run
/// sends at most two frames per watcher, so a connection's frames stay below
/// this plus twice [`WATCHES_PER_CONNECTION_MAX`], half of what the driver queues per
/// connection (`server::connections::CONNECTION_FRAMES_QUEUED_MAX`, 2048) before it drops
/// the connection; the other half is its other requests' answers.
pub const WATCH_CONNECTION_BACKLOG_FRAMES_MAX: usize = 512;
/// Ticks a watcher with changes to send may be held back by its connection's backlog
/// before it is cancelled with the revision to resume from.
pub const WATCH_HELD_TICKS_MAX: u64 = 100;
/// Ticks between progress notifications of a watch that asked for them, while idle.
pub const WATCH_PROGRESS_INTERVAL_TICKS: u64 = 20;
/// Ticks a poll of another shard may take before it is sent again.
pub const WATCH_POLL_TIMEOUT_TICKS: u64 = 20;

/// The reason a watcher that could not keep up is cancelled with.
pub const CANCEL_SLOW: &str = "the watcher fell behind its buffer";
/// The reason a watcher whose next changes were compacted away is cancelled with.
pub const CANCEL_COMPACTED: &str = "the watch's next revision has been compacted";

/// The state of a shard's groups that watches read.
pub trait ChangeSource {
    fn has_group(&self, group: GroupId) -> bool;
    /// No later write of the group gets a revision at or below this one.
    fn closed_revision(&self, group: GroupId) -> u64;
    fn compact_revision(&self, group: GroupId) -> u64;
    /// See [`crate::kv::Store::changes`].
    fn changes(&self, group: GroupId, query: &ChangeQuery, to: u64) -> Result<Changes, KvError>;
}

/// Which changes a watcher reads from a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeQuery {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub from: u64,
}

impl ChangeSource for MultiRaft {
    fn has_group(&self, group: GroupId) -> bool {
        MultiRaft::has_group(self, group)
    }

    fn closed_revision(&self, group: GroupId) -> u64 {
        self.store(group).map_or(0, |store| store.closed_revision())
    }

    fn compact_revision(&self, group: GroupId) -> u64 {
        self.store(group)
            .map_or(0, |store| store.compact_revision())
    }

    fn changes(&self, group: GroupId, query: &ChangeQuery, to: u64) -> Result<Changes, KvError> {
        match self.store(group) {
            Some(store) => store.changes(
                &query.key,
                &query.range_end,
                query.from,
                to,
                WATCH_RESPONSE_BYTES_MAX,
            ),
            None => Ok(Changes {
                changes: Vec::new(),
                complete_through: 0,
            }),
        }
    }
}

/// A poll of another shard's groups for a watcher (a mesh message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchPoll {
    pub query: ChangeQuery,
    pub groups: Vec<GroupId>,
}

/// The owning shard's answer to a [`WatchPoll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchPollReply {
    /// The groups' changes from the poll's revision through `complete_through`.
    Changes(Changes),
    /// The poll's revision is at or below this group compaction revision.
    Compacted { compact_revision: u64 },
    /// The owning shard does not hold one of the groups.
    Unavailable,
}

/// Answers a poll from the groups of this shard (the owning shard's side; it keeps
/// nothing).
pub fn serve_poll(source: &impl ChangeSource, poll: &WatchPoll) -> WatchPollReply {
    if poll.groups.iter().any(|&group| !source.has_group(group)) {
        return WatchPollReply::Unavailable;
    }
    let mut target = u64::MAX;
    for &group in &poll.groups {
        target = target.min(source.closed_revision(group));
    }
    match collect(source, &poll.groups, &poll.query, target) {
        Ok(changes) => WatchPollReply::Changes(changes),
        Err(compact_revision) => WatchPollReply::Compacted { compact_revision },
    }
}

/// The changes of `groups` from `query.from` through `target` (or less, where a budget
/// cut them), merged by revision; `Err` holds a compaction revision at or past `from`.
fn collect(
    source: &impl ChangeSource,
    groups: &[GroupId],
    query: &ChangeQuery,
    target: u64,
) -> Result<Changes, u64> {
    let mut through = target;
    let mut changes = Vec::new();
    if target < query.from {
        return Ok(Changes {
            changes,
            complete_through: target,
        });
    }
    for &group in groups {
        match source.changes(group, query, through) {
            Ok(found) => {
                through = through.min(found.complete_through);
                changes.extend(found.changes);
            }
            Err(KvError::Compacted {
                compact_revision, ..
            }) => return Err(compact_revision),
            Err(_) => return Err(source.compact_revision(group)),
        }
    }
    changes.retain(|change| change.revision() <= through);
    changes.sort_by_key(Change::revision);
    Ok(Changes {
        changes,
        complete_through: through,
    })
}

/// A watch's name: its connection and its id there (the create request's id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchKey {
    pub connection: ConnectionId,
    pub watch_id: u64,
}

/// What the registry asks the shard core to do.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchOutput {
    /// A response of a watch's stream; `finished` for its last.
    Reply {
        key: WatchKey,
        response: WatchResponse,
        finished: bool,
    },
    /// Send this poll to `shard`; its answer comes back with `token`.
    Poll {
        shard: u32,
        token: u64,
        poll: WatchPoll,
    },
}

/// Why a watch cannot be created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchRefusal {
    #[error("this connection holds {WATCHES_PER_CONNECTION_MAX} watches already")]
    ConnectionFull,
    #[error("this shard holds {WATCHES_PER_SHARD_MAX} watches already")]
    ShardFull,
    #[error("a watch with id {0} exists on this connection already")]
    Duplicate(u64),
}

/// Another shard's part of a watcher.
#[derive(Debug)]
struct Remote {
    shard: u32,
    groups: Vec<GroupId>,
    /// Changes polled and not sent yet, in revision order.
    buffered: VecDeque<Change>,
    /// Every change of these groups through this revision is sent or buffered.
    through: u64,
    /// The poll out, with its token and deadline tick.
    poll: Option<(u64, u64)>,
    last_poll_tick: Option<u64>,
    /// The last answer was cut short: there is more to fetch at once.
    more: bool,
    /// For a watch from now that has not started: the groups' closed revision, once the
    /// shard has said it.
    start_closed: Option<u64>,
}

#[derive(Debug)]
struct Watcher {
    create: WatchCreate,
    local: Vec<GroupId>,
    remotes: Vec<Remote>,
    /// Every change below this revision has been sent; 0 for a watch from now that has
    /// not started yet (it starts after the smallest closed revision of its groups, since
    /// every write committed later gets a revision above it, whatever the clocks say).
    next: u64,
    progress_wanted: bool,
    last_sent_tick: u64,
    held_since: Option<u64>,
}

/// The watches of one shard.
#[derive(Debug, Default)]
pub struct Watches {
    watchers: BTreeMap<WatchKey, Watcher>,
    per_connection: BTreeMap<ConnectionId, usize>,
    /// The watchers of each local group.
    by_group: BTreeMap<GroupId, BTreeSet<WatchKey>>,
    /// (closed, compaction) revision of each watched group at the last run.
    marks: BTreeMap<GroupId, (u64, u64)>,
    /// Watchers to look at in the next run.
    dirty: BTreeSet<WatchKey>,
    /// Connections with watches whose unsent replies are past a backlog bound.
    held: BTreeSet<ConnectionId>,
    /// Polls out, by token.
    polls: BTreeMap<u64, (WatchKey, u32)>,
    next_token: u64,
    tick: u64,
    /// Polls made in a run, handed out at its end.
    out_polls: Vec<WatchOutput>,
}

impl Watches {
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Whether a run has watchers to look at.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The connections that hold watches (the driver reports their backlogs).
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.per_connection.keys().copied()
    }

    /// Starts a watch over `groups` (those of `shard_here` read here, the others polled
    /// from their shard, as `shard_of` says). The created response goes out at once, or
    /// for a watch from now once it knows where its groups are closed.
    pub fn create(
        &mut self,
        key: WatchKey,
        create: WatchCreate,
        groups: &[GroupId],
        placement: (u32, &dyn Fn(GroupId) -> u32),
        out: &mut Vec<WatchOutput>,
    ) -> Result<(), WatchRefusal> {
        if self.watchers.contains_key(&key) {
            return Err(WatchRefusal::Duplicate(key.watch_id));
        }
        if self.watchers.len() >= WATCHES_PER_SHARD_MAX {
            return Err(WatchRefusal::ShardFull);
        }
        let count = self.per_connection.entry(key.connection).or_insert(0);
        if *count >= WATCHES_PER_CONNECTION_MAX {
            return Err(WatchRefusal::ConnectionFull);
        }
        *count += 1;
        let next = create.start_revision;
        let (shard_here, shard_of) = placement;
        let mut local = Vec::new();
        let mut remote: BTreeMap<u32, Vec<GroupId>> = BTreeMap::new();
        for &group in groups {
            let shard = shard_of(group);
            if shard == shard_here {
                local.push(group);
                self.by_group.entry(group).or_default().insert(key);
            } else {
                remote.entry(shard).or_default().push(group);
            }
        }
        let remotes = remote
            .into_iter()
            .map(|(shard, groups)| Remote {
                shard,
                groups,
                buffered: VecDeque::new(),
                through: next.saturating_sub(1),
                poll: None,
                last_poll_tick: None,
                more: false,
                start_closed: None,
            })
            .collect();
        self.watchers.insert(
            key,
            Watcher {
                create,
                local,
                remotes,
                next,
                progress_wanted: false,
                last_sent_tick: self.tick,
                held_since: None,
            },
        );
        self.dirty.insert(key);
        if next > 0 {
            out.push(created(key, next - 1));
        }
        Ok(())
    }

    /// Ends a watch at its client's request; false when there is none of that id.
    pub fn cancel(&mut self, key: WatchKey, out: &mut Vec<WatchOutput>) -> bool {
        let Some(watcher) = self.remove(key) else {
            return false;
        };
        out.push(end(key, watcher.next - 1, 0, String::new()));
        true
    }

    /// A progress notification is wanted; false when there is no such watch.
    pub fn want_progress(&mut self, key: WatchKey) -> bool {
        let Some(watcher) = self.watchers.get_mut(&key) else {
            return false;
        };
        watcher.progress_wanted = true;
        self.dirty.insert(key);
        true
    }

    /// The connection is gone: its watches end without an answer.
    pub fn on_connection_closed(&mut self, connection: ConnectionId) {
        let keys: Vec<WatchKey> = self
            .watchers
            .range(
                WatchKey {
                    connection,
                    watch_id: 0,
                }..=WatchKey {
                    connection,
                    watch_id: u64::MAX,
                },
            )
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.remove(key);
        }
        self.held.remove(&connection);
    }

    /// The connection's replies not yet written to its socket, in bytes and frames.
    pub fn set_backlog(&mut self, connection: ConnectionId, bytes: usize, frames: usize) {
        let held = bytes > WATCH_CONNECTION_BACKLOG_BYTES_MAX
            || frames > WATCH_CONNECTION_BACKLOG_FRAMES_MAX;
        if held {
            self.held.insert(connection);
        } else if self.held.remove(&connection) {
            self.dirty_connection(connection);
        }
    }

    /// Ends every watch, for a node that stops: the clients resume elsewhere.
    pub fn shut_down(&mut self, out: &mut Vec<WatchOutput>) {
        let keys: Vec<WatchKey> = self.watchers.keys().copied().collect();
        for key in keys {
            if let Some(watcher) = self.remove(key) {
                let reason = "the node is shutting down; resume on another node".to_string();
                out.push(end(key, watcher.next - 1, 0, reason));
            }
        }
    }

    /// Starts a watch from now once every group's closed revision is known: after the
    /// smallest of them. False while a shard has not said yet.
    fn start(
        &mut self,
        source: &impl ChangeSource,
        key: WatchKey,
        out: &mut Vec<WatchOutput>,
    ) -> bool {
        let Some(watcher) = self.watchers.get_mut(&key) else {
            return false;
        };
        let mut start = u64::MAX;
        for &group in &watcher.local {
            start = start.min(source.closed_revision(group));
        }
        for remote in &watcher.remotes {
            match remote.start_closed {
                Some(closed) => start = start.min(closed),
                None => return false,
            }
        }
        watcher.next = start + 1;
        for remote in &mut watcher.remotes {
            remote.through = start;
            remote.buffered.clear();
            remote.last_poll_tick = None;
        }
        out.push(created(key, start));
        true
    }

    /// One tick: progress notifications, held watchers and polls are due again.
    pub fn on_tick(&mut self) {
        self.tick += 1;
        if !self.watchers.is_empty() {
            self.dirty = self.watchers.keys().copied().collect();
        }
    }

    /// Another shard answered a poll.
    pub fn on_poll_reply(&mut self, token: u64, reply: WatchPollReply, out: &mut Vec<WatchOutput>) {
        let Some((key, shard)) = self.polls.remove(&token) else {
            return;
        };
        let Some(watcher) = self.watchers.get_mut(&key) else {
            return;
        };
        let starting = watcher.next == 0;
        let Some(remote) = watcher.remotes.iter_mut().find(|r| r.shard == shard) else {
            return;
        };
        if remote.poll.map(|(out_token, _)| out_token) != Some(token) {
            return;
        }
        remote.poll = None;
        match reply {
            WatchPollReply::Changes(changes) if starting => {
                remote.start_closed = Some(changes.complete_through);
                self.dirty.insert(key);
            }
            WatchPollReply::Changes(changes) => {
                let asked_through = remote.through;
                // An answer with changes may have been cut short: ask again as soon as
                // they are sent.
                remote.more = !changes.changes.is_empty();
                if changes.complete_through > remote.through {
                    remote.buffered.extend(
                        changes
                            .changes
                            .into_iter()
                            .filter(|change| change.revision() > asked_through),
                    );
                    remote.through = changes.complete_through;
                }
                self.dirty.insert(key);
            }
            WatchPollReply::Compacted { compact_revision } => {
                let next = watcher.next;
                self.remove(key);
                out.push(end(
                    key,
                    next - 1,
                    compact_revision,
                    CANCEL_COMPACTED.into(),
                ));
            }
            WatchPollReply::Unavailable => {
                let next = watcher.next;
                self.remove(key);
                let reason = "a watched group is not on this node".to_string();
                out.push(end(key, next - 1, 0, reason));
            }
        }
    }

    /// A poll could not be sent: it is sent again later.
    pub fn on_poll_undeliverable(&mut self, token: u64) {
        if let Some((key, shard)) = self.polls.remove(&token) {
            if let Some(remote) = self
                .watchers
                .get_mut(&key)
                .and_then(|watcher| watcher.remotes.iter_mut().find(|r| r.shard == shard))
            {
                remote.poll = None;
            }
        }
    }

    /// Sends what the watchers have to send: every watcher whose groups moved, or that
    /// a tick, a poll answer or a request woke.
    pub fn run(&mut self, source: &impl ChangeSource, out: &mut Vec<WatchOutput>) {
        for (group, watchers) in &self.by_group {
            let mark = (
                source.closed_revision(*group),
                source.compact_revision(*group),
            );
            if self.marks.get(group) != Some(&mark) {
                self.marks.insert(*group, mark);
                self.dirty.extend(watchers.iter().copied());
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            self.step(source, key, out);
        }
        out.append(&mut self.out_polls);
    }

    fn step(&mut self, source: &impl ChangeSource, key: WatchKey, out: &mut Vec<WatchOutput>) {
        let tick = self.tick;
        let held = self.held.contains(&key.connection);
        let Some(watcher) = self.watchers.get(&key) else {
            return;
        };
        if watcher.next == 0 && !self.start(source, key, out) {
            self.poll_remotes(key, u64::MAX);
            return;
        }
        let Some(watcher) = self.watchers.get_mut(&key) else {
            return;
        };
        let query = ChangeQuery {
            key: watcher.create.key.clone(),
            range_end: watcher.create.range_end.clone(),
            from: watcher.next,
        };
        let mut target = u64::MAX;
        for &group in &watcher.local {
            target = target.min(source.closed_revision(group));
        }
        for remote in &watcher.remotes {
            target = target.min(remote.through);
        }
        let mut ended = None;
        if held {
            if target >= watcher.next {
                let since = *watcher.held_since.get_or_insert(tick);
                if tick.saturating_sub(since) > WATCH_HELD_TICKS_MAX {
                    ended = Some(end(key, watcher.next - 1, 0, CANCEL_SLOW.into()));
                }
            }
        } else {
            watcher.held_since = None;
            if target >= watcher.next {
                match collect(source, &watcher.local, &query, target) {
                    Ok(local) => {
                        let through = local.complete_through;
                        let mut changes = local.changes;
                        for remote in &mut watcher.remotes {
                            while remote
                                .buffered
                                .front()
                                .is_some_and(|change| change.revision() <= through)
                            {
                                changes.push(remote.buffered.pop_front().expect("checked"));
                            }
                        }
                        changes.sort_by_key(Change::revision);
                        let events = to_events(&watcher.create, changes);
                        if !events.is_empty() {
                            out.push(WatchOutput::Reply {
                                key,
                                response: WatchResponse {
                                    watch_id: key.watch_id,
                                    revision: through,
                                    events,
                                    ..WatchResponse::default()
                                },
                                finished: false,
                            });
                            watcher.last_sent_tick = tick;
                        }
                        watcher.next = through + 1;
                        if through < target {
                            // Cut short by the budget: the rest in the next run.
                            self.dirty.insert(key);
                        }
                    }
                    Err(compact_revision) => {
                        ended = Some(end(
                            key,
                            watcher.next - 1,
                            compact_revision,
                            CANCEL_COMPACTED.into(),
                        ));
                    }
                }
            }
            if ended.is_none() {
                let periodic = watcher.create.progress_notify
                    && tick.saturating_sub(watcher.last_sent_tick) >= WATCH_PROGRESS_INTERVAL_TICKS;
                if watcher.progress_wanted || periodic {
                    watcher.progress_wanted = false;
                    watcher.last_sent_tick = tick;
                    out.push(WatchOutput::Reply {
                        key,
                        response: WatchResponse {
                            watch_id: key.watch_id,
                            revision: watcher.next - 1,
                            ..WatchResponse::default()
                        },
                        finished: false,
                    });
                }
            }
        }
        if let Some(ended) = ended {
            self.remove(key);
            out.push(ended);
            return;
        }
        self.poll_remotes(key, 0);
    }

    /// Polls the other shards' groups of a watcher that are due; `from` 0 polls each from
    /// where it is, `u64::MAX` only asks for its closed revision (a watch from now that
    /// has not started).
    fn poll_remotes(&mut self, key: WatchKey, from: u64) {
        let tick = self.tick;
        let Some(watcher) = self.watchers.get_mut(&key) else {
            return;
        };
        let query = ChangeQuery {
            key: watcher.create.key.clone(),
            range_end: watcher.create.range_end.clone(),
            from,
        };
        let out = &mut self.out_polls;
        for remote in &mut watcher.remotes {
            if from == u64::MAX && remote.start_closed.is_some() {
                continue;
            }
            if let Some((token, deadline)) = remote.poll {
                if tick < deadline {
                    continue;
                }
                self.polls.remove(&token);
                remote.poll = None;
            }
            let due = remote.more || remote.last_poll_tick.is_none_or(|last| last < tick);
            if !remote.buffered.is_empty() || !due {
                continue;
            }
            self.next_token += 1;
            let token = self.next_token;
            remote.poll = Some((token, tick + WATCH_POLL_TIMEOUT_TICKS));
            remote.last_poll_tick = Some(tick);
            remote.more = false;
            self.polls.insert(token, (key, remote.shard));
            let from = if from == u64::MAX {
                u64::MAX
            } else {
                remote.through + 1
            };
            out.push(WatchOutput::Poll {
                shard: remote.shard,
                token,
                poll: WatchPoll {
                    query: ChangeQuery {
                        from,
                        ..query.clone()
                    },
                    groups: remote.groups.clone(),
                },
            });
        }
    }

    fn dirty_connection(&mut self, connection: ConnectionId) {
        let keys = self
            .watchers
            .range(
                WatchKey {
                    connection,
                    watch_id: 0,
                }..=WatchKey {
                    connection,
                    watch_id: u64::MAX,
                },
            )
            .map(|(key, _)| *key);
        self.dirty.extend(keys);
    }

    fn remove(&mut self, key: WatchKey) -> Option<Watcher> {
        let watcher = self.watchers.remove(&key)?;
        if let Some(count) = self.per_connection.get_mut(&key.connection) {
            *count -= 1;
            if *count == 0 {
                self.per_connection.remove(&key.connection);
                self.held.remove(&key.connection);
            }
        }
        for group in &watcher.local {
            if let Some(watchers) = self.by_group.get_mut(group) {
                watchers.remove(&key);
                if watchers.is_empty() {
                    self.by_group.remove(group);
                    self.marks.remove(group);
                }
            }
        }
        for remote in &watcher.remotes {
            if let Some((token, _)) = remote.poll {
                self.polls.remove(&token);
            }
        }
        self.dirty.remove(&key);
        Some(watcher)
    }
}

/// The first response of a watch, starting after `revision`.
fn created(key: WatchKey, revision: u64) -> WatchOutput {
    WatchOutput::Reply {
        key,
        response: WatchResponse {
            watch_id: key.watch_id,
            revision,
            created: true,
            ..WatchResponse::default()
        },
        finished: false,
    }
}

/// The last response of a watch.
fn end(key: WatchKey, revision: u64, compact_revision: u64, reason: String) -> WatchOutput {
    WatchOutput::Reply {
        key,
        response: WatchResponse {
            watch_id: key.watch_id,
            revision,
            canceled: true,
            compact_revision,
            cancel_reason: reason,
            ..WatchResponse::default()
        },
        finished: true,
    }
}

/// The changes a watch asked for, as events.
fn to_events(create: &WatchCreate, changes: Vec<Change>) -> Vec<WatchEvent> {
    changes
        .into_iter()
        .filter_map(|change| {
            let kind = match change.kind {
                ChangeKind::Put if create.no_put => return None,
                ChangeKind::Delete if create.no_delete => return None,
                ChangeKind::Put => EventKind::Put,
                ChangeKind::Delete => EventKind::Delete,
            };
            Some(WatchEvent {
                kind,
                kv: change.kv,
                prev_kv: if create.prev_kv { change.prev_kv } else { None },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
