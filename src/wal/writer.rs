//! [`Wal`]: group commit for every Raft group of one shard, on that shard's glommio
//! executor.
//!
//! # How a batch is made
//! Records submitted by any task of the executor join the *filling* batch. A committer task
//! seals it once the tasks that were runnable have had their turn (it yields once before
//! sealing, which is the end of the loop turn), or at once when the batch is full or
//! [`Wal::flush`] asked for it. It then writes the batch with one O_DIRECT write at the next
//! block of the current segment, calls fdatasync, and wakes every waiter of that batch.
//! While one batch is written and synced the next one fills: at most two exist, and a
//! batch is written only after the previous one is durable, so a crash tears at most the
//! last batch. When the filling batch is full, [`Wal::submit`] waits in line (first come,
//! first served) and [`Wal::try_submit`] returns [`WalError::Backpressure`].
//!
//! # Two ways to append
//! - `wal.append(records).await`: submit and wait for durability, from any task.
//! - `let ticket = wal.try_submit(records)?` (synchronous: encodes into the filling batch
//!   right away) and later `wal.wait(ticket).await`. This is what a server loop turn does:
//!   submit the Ready of every group without awaiting in between, then await once. Tickets
//!   are batch sequence numbers: durability is in ticket order.
//!
//! # Background work
//! A segment task keeps `segments_ready_ahead` segments created and zeroed ahead of need
//! and deletes the segments garbage collection releases. Collection is planned by the
//! committer after a batch is durable (see `gc`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::io::DmaFile;
use glommio::task::JoinHandle;

use super::error::{fatal_error, into_io, io_error, CorruptionReason, WalError};
use super::gc;
use super::group_log::{GroupLog, GroupSummary, LogOperationError};
use super::record::{
    decode_batch, padded_batch_bytes, BatchBuilder, Entry, EntryView, LogPosition, Record,
    RecordKind, RecordViewKind, BATCH_HEADER_BYTES,
};
use super::recovery::{self, Recovery};
use super::segment::{
    create_segment, delete_segment, read_error, wal_directory, BatchLocation, BatchLocations,
};
use super::snapshot_file;
use super::WalConfig;

/// Identifies the batch a submission joined; [`Wal::wait`] resolves once it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// The batch sequence number.
    pub fn sequence(self) -> u64 {
        self.0
    }
}

/// Counters since the WAL was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub batches: u64,
    pub fsyncs: u64,
    pub records: u64,
    /// Bytes written by batches, padding included.
    pub bytes_written: u64,
    pub segments_created: u64,
    pub segments_deleted: u64,
    /// Hard state and compaction records written again by garbage collection.
    pub relogged_records: u64,
}

/// The write-ahead log of one shard. Cloning gives another handle to the same log, for
/// another task of the same executor.
#[derive(Clone)]
pub struct Wal {
    shared: Rc<Shared>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.borrow();
        formatter
            .debug_struct("Wal")
            .field("wal_dir", &self.shared.wal_dir)
            .field("durable_sequence", &state.durable_sequence)
            .field("write_segment", &state.write_segment)
            .field("write_offset", &state.write_offset)
            .finish()
    }
}

struct Shared {
    data_dir: PathBuf,
    wal_dir: PathBuf,
    config: WalConfig,
    state: RefCell<State>,
}

/// A segment file in use.
struct LiveSegment {
    sequence: u64,
    path: PathBuf,
    bytes: u64,
    file: Rc<DmaFile>,
}

struct State {
    /// The batch records join now, and its sequence number.
    filling: BatchBuilder,
    filling_sequence: u64,
    /// The builder of the batch last written, kept for its allocation.
    spare: Option<BatchBuilder>,
    /// A submission did not fit: seal without waiting for the end of the turn.
    filling_full: bool,
    flush_requested: bool,
    /// Every batch up to this one is durable.
    durable_sequence: u64,
    waiters: Vec<(u64, Waker)>,
    /// Submitters waiting for room in the filling batch, first come first served, by the
    /// id of their place in line.
    room_queue: VecDeque<(u64, Waker)>,
    next_room_place: u64,
    committer_waker: Option<Waker>,
    segment_task_waker: Option<Waker>,
    segment_waiter: Option<Waker>,
    /// Set once by the first fatal error; every later call returns it.
    failure: Option<WalError>,
    closing: bool,

    /// Segments with data, by sequence; the last one is being written.
    live: BTreeMap<u64, LiveSegment>,
    /// Zeroed segments after the write segment.
    ready: VecDeque<LiveSegment>,
    write_segment: u64,
    write_offset: u64,
    next_segment_sequence: u64,
    /// Why the last segment creation failed; cleared when the writer asks again.
    segment_error: Option<WalError>,
    locations: BatchLocations,
    /// Delete segments before `.0` once batch `.1` is durable.
    planned_deletion: Option<(u64, u64)>,
    to_delete: Vec<LiveSegment>,
    gc_needed: bool,

    groups: HashMap<u64, GroupLog>,
    snapshot_candidates: Vec<u64>,
    stats: WalStats,
    tasks: Vec<JoinHandle<()>>,
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

impl State {
    fn fits(&self, bytes: usize, records: usize, config: &WalConfig) -> bool {
        let payload = self.filling.encoded_bytes() - BATCH_HEADER_BYTES + bytes;
        padded_batch_bytes(payload) <= config.batch_bytes_max
            && self.filling.record_count() as usize + records <= config.batch_records_max as usize
    }

    fn check_open(&self) -> Result<(), WalError> {
        match &self.failure {
            Some(error) => Err(error.clone()),
            None if self.closing => Err(WalError::Closed),
            None => Ok(()),
        }
    }

    /// Lets the first submitter in line check for room again.
    fn wake_room_front(&mut self) {
        if let Some((_, waker)) = self.room_queue.front() {
            waker.wake_by_ref();
        }
    }

    /// Wakes every submitter in line (the WAL stops or closes).
    fn wake_all_room_waiters(&mut self) {
        for (_, waker) in &self.room_queue {
            waker.wake_by_ref();
        }
    }

    fn advance_durable(&mut self, sequence: u64) {
        assert!(
            sequence > self.durable_sequence,
            "batches become durable in order"
        );
        self.durable_sequence = sequence;
        self.waiters.retain(|(ticket, waker)| {
            if *ticket <= sequence {
                waker.wake_by_ref();
                false
            } else {
                true
            }
        });
    }

    /// Stops the WAL: every waiter and every later call gets `error`.
    fn fail(&mut self, error: WalError) {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
        for (_, waker) in self.waiters.drain(..) {
            waker.wake();
        }
        self.wake_all_room_waiters();
        wake(&mut self.committer_waker);
        wake(&mut self.segment_task_waker);
        wake(&mut self.segment_waiter);
    }

    /// Highest batch any submitted record is in.
    fn last_submitted_sequence(&self) -> u64 {
        if self.filling.is_empty() {
            self.durable_sequence
        } else {
            self.filling_sequence
        }
    }
}

fn log_operation_error(
    group_id: u64,
    group: &GroupLog,
    operation: &'static str,
    error: LogOperationError,
) -> WalError {
    let index = match error {
        LogOperationError::BadAppend { index } => index,
        LogOperationError::CompactionRegressed { index, .. } => index,
    };
    WalError::InvalidLogOperation {
        group: group_id,
        operation,
        index,
        first_index: group.first_index(),
        last_index: group.last_index(),
        compaction_index: group.compaction_index(),
    }
}

impl Wal {
    /// Recovers the log under `<data_dir>/wal` (creating it if needed) and starts the
    /// committer and segment tasks on the current executor. A torn tail is overwritten
    /// with zeros and reported in [`Recovery::torn_tail`]; corruption anywhere else is
    /// [`WalError::Corrupt`]. Snapshot files are loaded and verified first.
    pub async fn open(data_dir: &Path, config: WalConfig) -> Result<(Wal, Recovery), WalError> {
        config.validate()?;
        let wal_dir = wal_directory(data_dir);
        let mut recovered =
            recovery::recover(data_dir, true, config.cache_bytes_per_group_max).await?;
        if let Some(torn) = &recovered.torn_tail {
            let segment = recovered
                .segments
                .iter()
                .find(|segment| segment.sequence == torn.segment)
                .expect("the torn segment was read");
            let file = segment
                .file
                .as_ref()
                .expect("writable recovery keeps files open");
            recovery::zero_torn_tail(file, torn).await?;
            eprintln!(
                "corekv: WAL torn tail truncated: {} offset {} ({} bytes zeroed): {}",
                torn.path.display(),
                torn.offset,
                torn.end_offset - torn.offset,
                torn.error
            );
        }
        for &group_id in &recovered.snapshot_outcome.stale {
            snapshot_file::remove_snapshot(data_dir, group_id)?;
        }
        let report = recovered.report();

        // Segments up to the last one with a batch hold the log; empty ones after it are
        // ready for appends if they are large enough for a batch. The others are deleted,
        // highest first, so that the remaining segments stay consecutive after a crash.
        let write_position = recovered.write_position;
        let mut live = BTreeMap::new();
        let mut ready = VecDeque::new();
        let mut unusable = Vec::new();
        for segment in recovered.segments.drain(..) {
            let file = Rc::new(segment.file.expect("writable recovery keeps files open"));
            let live_segment = LiveSegment {
                sequence: segment.sequence,
                path: segment.path,
                bytes: segment.bytes,
                file,
            };
            if write_position.is_some_and(|(write_segment, _)| segment.sequence <= write_segment) {
                live.insert(segment.sequence, live_segment);
            } else if unusable.is_empty() && segment.bytes >= config.batch_bytes_max as u64 {
                ready.push_back(live_segment);
            } else {
                unusable.push(live_segment);
            }
        }
        for segment in unusable.into_iter().rev() {
            let LiveSegment { path, file, .. } = segment;
            if let Ok(file) = Rc::try_unwrap(file) {
                let _ = file.close().await;
            }
            delete_segment(&wal_dir, &path)?;
        }
        let mut stats = WalStats::default();
        let (write_segment, write_offset) = match write_position {
            Some(position) => position,
            None => {
                let segment = match ready.pop_front() {
                    Some(segment) => segment,
                    None => {
                        let sequence = live.keys().next_back().map_or(1, |last| last + 1);
                        let file = create_segment(&wal_dir, sequence, config.segment_bytes).await?;
                        stats.segments_created += 1;
                        LiveSegment {
                            sequence,
                            path: super::segment::segment_path(&wal_dir, sequence),
                            bytes: config.segment_bytes,
                            file: Rc::new(file),
                        }
                    }
                };
                let sequence = segment.sequence;
                live.insert(sequence, segment);
                (sequence, 0)
            }
        };
        let next_segment_sequence = ready
            .back()
            .map_or(write_segment, |segment| segment.sequence)
            + 1;
        let durable_sequence = recovered.replay.last_sequence.unwrap_or(0);
        let replay = recovered.replay;
        let state = State {
            filling: BatchBuilder::new(),
            filling_sequence: durable_sequence + 1,
            spare: Some(BatchBuilder::new()),
            filling_full: false,
            flush_requested: false,
            durable_sequence,
            waiters: Vec::new(),
            room_queue: VecDeque::new(),
            next_room_place: 0,
            committer_waker: None,
            segment_task_waker: None,
            segment_waiter: None,
            failure: None,
            closing: false,
            live,
            ready,
            write_segment,
            write_offset,
            next_segment_sequence,
            segment_error: None,
            locations: replay.locations,
            planned_deletion: None,
            to_delete: Vec::new(),
            gc_needed: true,
            groups: replay.groups,
            snapshot_candidates: Vec::new(),
            stats,
            tasks: Vec::new(),
        };
        let shared = Rc::new(Shared {
            data_dir: data_dir.to_path_buf(),
            wal_dir,
            config,
            state: RefCell::new(state),
        });
        let committer = glommio::spawn_local(run_committer(shared.clone())).detach();
        let segment_task = glommio::spawn_local(run_segment_task(shared.clone())).detach();
        shared.state.borrow_mut().tasks = vec![committer, segment_task];
        let wal = Wal { shared };
        wal.record_snapshot_compactions(&recovered.snapshot_outcome.unrecorded)
            .await?;
        Ok((wal, report))
    }

    /// Writes the compactions recovery took from snapshot files (their own records never
    /// became durable), before anything else is appended: from now on they are pinned and
    /// relogged like any other, and a reset is recorded before entries that follow it.
    async fn record_snapshot_compactions(
        &self,
        unrecorded: &[(u64, LogPosition, bool)],
    ) -> Result<(), WalError> {
        let mut remaining = unrecorded;
        while !remaining.is_empty() {
            let ticket = {
                let mut state = self.shared.state.borrow_mut();
                while let Some(&(group_id, position, keeps_log)) = remaining.first() {
                    let (index, term) = (position.index, position.term);
                    let kind = if keeps_log {
                        RecordKind::Compaction { index, term }
                    } else {
                        RecordKind::LogReset { index, term }
                    };
                    let record = Record { group_id, kind };
                    if !push_internal(&mut state, &[record], &self.shared.config) {
                        break;
                    }
                    let sequence = state.filling_sequence;
                    if let Some(group) = state.groups.get_mut(&group_id) {
                        group.compaction_written(sequence);
                    }
                    remaining = &remaining[1..];
                }
                state.flush_requested = true;
                Ticket(state.filling_sequence)
            };
            self.wait(ticket).await?;
        }
        Ok(())
    }

    /// Adds `records` to the filling batch now, without awaiting, and returns the ticket
    /// of that batch. Records are checked first as a whole (shape and size), then applied
    /// in order; if one breaks its group's log ([`WalError::InvalidLogOperation`]) the
    /// records before it in this call stay submitted. When the filling batch has no room,
    /// returns [`WalError::Backpressure`]; await [`Wal::submit`] then.
    pub fn try_submit(&self, records: Vec<Record>) -> Result<Ticket, WalError> {
        let shared = &*self.shared;
        let mut state = shared.state.borrow_mut();
        state.check_open()?;
        let (bytes, count) = measure(&records, &shared.config)?;
        if !state.room_queue.is_empty() || !state.fits(bytes, count, &shared.config) {
            state.filling_full = true;
            wake(&mut state.committer_waker);
            return Err(WalError::Backpressure);
        }
        submit_records(&mut state, shared, records)
    }

    /// Like [`Wal::try_submit`], but waits for room in the filling batch instead of
    /// returning [`WalError::Backpressure`]. It never waits for durability.
    pub async fn submit(&self, records: Vec<Record>) -> Result<Ticket, WalError> {
        let shared = &*self.shared;
        let (bytes, count) = measure(&records, &shared.config)?;
        // Submitters get room in the order they asked for it: without a line, tasks woken
        // by a durable batch would take the room before those already waiting, every time.
        let mut place = RoomPlace {
            shared,
            id: 0,
            queued: false,
        };
        poll_fn(|context| {
            let mut state = shared.state.borrow_mut();
            if let Err(error) = state.check_open() {
                return Poll::Ready(Err(error));
            }
            let turn = if place.queued {
                state
                    .room_queue
                    .front()
                    .is_some_and(|(id, _)| *id == place.id)
            } else {
                state.room_queue.is_empty()
            };
            if turn && state.fits(bytes, count, &shared.config) {
                if place.queued {
                    state.room_queue.pop_front();
                    place.queued = false;
                    state.wake_room_front();
                }
                return Poll::Ready(Ok(()));
            }
            state.filling_full = true;
            wake(&mut state.committer_waker);
            if place.queued {
                if let Some(entry) = state.room_queue.iter_mut().find(|(id, _)| *id == place.id) {
                    entry.1 = context.waker().clone();
                }
            } else {
                place.id = state.next_room_place;
                state.next_room_place += 1;
                state
                    .room_queue
                    .push_back((place.id, context.waker().clone()));
                place.queued = true;
            }
            Poll::Pending
        })
        .await?;
        // Nothing else runs between the room check and this call: the executor is single
        // threaded and there is no await in between.
        let mut state = shared.state.borrow_mut();
        submit_records(&mut state, shared, records)
    }

    /// Resolves once the batch of `ticket` is durable, or with the error that stopped the
    /// WAL.
    pub async fn wait(&self, ticket: Ticket) -> Result<(), WalError> {
        poll_fn(|context| {
            let mut state = self.shared.state.borrow_mut();
            if state.durable_sequence >= ticket.0 {
                return Poll::Ready(Ok(()));
            }
            if let Some(error) = &state.failure {
                return Poll::Ready(Err(error.clone()));
            }
            if state.closing && state.filling.is_empty() {
                return Poll::Ready(Err(WalError::Closed));
            }
            state.waiters.push((ticket.0, context.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Submits `records` and waits until they are durable.
    pub async fn append(&self, records: Vec<Record>) -> Result<(), WalError> {
        let ticket = self.submit(records).await?;
        self.wait(ticket).await
    }

    /// True once the batch of `ticket` is durable.
    pub fn is_durable(&self, ticket: Ticket) -> bool {
        self.shared.state.borrow().durable_sequence >= ticket.0
    }

    /// Asks the committer to seal the filling batch as soon as the previous one is
    /// durable, without waiting for the other tasks of this loop turn.
    pub fn flush(&self) {
        let mut state = self.shared.state.borrow_mut();
        if !state.filling.is_empty() {
            state.flush_requested = true;
            wake(&mut state.committer_waker);
        }
    }

    /// Records that the group's log through `index` (whose entry has `term`) is covered by
    /// the group's snapshot file, which must already be written (see
    /// [`snapshot_file::write_snapshot`]), and waits until that is durable. Segments the
    /// group no longer needs are deleted after that.
    pub async fn compact(&self, group_id: u64, index: u64, term: u64) -> Result<(), WalError> {
        self.append(vec![Record {
            group_id,
            kind: RecordKind::Compaction { index, term },
        }])
        .await
    }

    /// Forgets a group: writes a GroupRemoved record, waits until it is durable, then
    /// removes the group's snapshot file.
    pub async fn remove_group(&self, group_id: u64) -> Result<(), WalError> {
        self.append(vec![Record {
            group_id,
            kind: RecordKind::GroupRemoved,
        }])
        .await?;
        snapshot_file::remove_snapshot(&self.shared.data_dir, group_id)?;
        Ok(())
    }

    /// Groups whose old entries keep at least `segments_pinned_max` segments alive: the
    /// server should ask them to snapshot (and then call [`Wal::compact`]). Updated when a
    /// segment fills up and after compactions.
    pub fn groups_to_snapshot(&self) -> Vec<u64> {
        self.shared.state.borrow().snapshot_candidates.clone()
    }

    /// What the log knows about a group (including records not durable yet).
    pub fn group(&self, group_id: u64) -> Option<GroupSummary> {
        self.shared
            .state
            .borrow()
            .groups
            .get(&group_id)
            .map(|group| group.summary(group_id))
    }

    /// Every group with state in the log.
    pub fn groups(&self) -> Vec<GroupSummary> {
        let state = self.shared.state.borrow();
        let mut groups: Vec<GroupSummary> = state
            .groups
            .iter()
            .map(|(&id, group)| group.summary(id))
            .collect();
        groups.sort_unstable_by_key(|summary| summary.group_id);
        groups
    }

    /// Term of the group's entry at `index`, if the log holds it (or it is the compaction
    /// point).
    pub fn term(&self, group_id: u64, index: u64) -> Option<u64> {
        self.shared
            .state
            .borrow()
            .groups
            .get(&group_id)?
            .term(index)
    }

    /// The group's entries `[low, high)`: recent ones from memory, older ones read back
    /// from their segments (entries not durable yet are waited for).
    pub async fn read_entries(
        &self,
        group_id: u64,
        low: u64,
        high: u64,
    ) -> Result<Vec<Entry>, WalError> {
        let unavailable = |first_index, last_index| WalError::Unavailable {
            group: group_id,
            low,
            high,
            first_index,
            last_index,
        };
        // The ranges to read from disk, by batch (batches only grow along the log, so the
        // runs of one batch are next to each other), then the cached tail.
        let (pieces, cached) = {
            let state = self.shared.state.borrow();
            let Some(group) = state.groups.get(&group_id) else {
                return Err(unavailable(1, 0));
            };
            if low > high || low < group.first_index() || high > group.last_index() + 1 {
                return Err(unavailable(group.first_index(), group.last_index()));
            }
            let split = group
                .cache_first_index()
                .map_or(high, |first| first.clamp(low, high));
            let mut pieces: Vec<(u64, u64, u64)> = Vec::new();
            for run in group.runs_between(low, split) {
                let (first, end) = (run.first_index.max(low), (run.last_index + 1).min(split));
                match pieces.last_mut() {
                    Some(piece) if piece.0 == run.batch_sequence && piece.2 == first => {
                        piece.2 = end
                    }
                    _ => pieces.push((run.batch_sequence, first, end)),
                }
            }
            let cached = if split < high {
                group.cached(split, high)
            } else {
                Vec::new()
            };
            (pieces, cached)
        };
        let mut entries = Vec::with_capacity((high - low) as usize);
        for (batch_sequence, first, end) in pieces {
            self.wait(Ticket(batch_sequence)).await?;
            let found = {
                let state = self.shared.state.borrow();
                state.locations.get(batch_sequence).and_then(|location| {
                    let segment = state.live.get(&location.segment)?;
                    Some((location, segment.file.clone(), segment.path.clone()))
                })
            };
            // A batch gone by now was collected after a compaction passed these entries.
            let (location, file, path) = found.ok_or_else(|| unavailable(0, 0))?;
            let bytes = file
                .read_at_aligned(location.offset, location.padded_bytes as usize)
                .await
                .map_err(|error| read_error(&path, into_io(error)))?;
            let corrupt = |reason| WalError::Corrupt {
                path: path.clone(),
                offset: location.offset,
                reason,
            };
            let batch = decode_batch(&bytes, location.segment, location.offset)
                .map_err(|error| corrupt(CorruptionReason::ReadBack(error)))?;
            // The group's records in this batch, in order: later ones win.
            let mut slots: Vec<Option<EntryView<'_>>> = vec![None; (end - first) as usize];
            for record in batch
                .records
                .iter()
                .filter(|record| record.group_id == group_id)
            {
                if let RecordViewKind::Entries { entries: views } = &record.kind {
                    for view in views
                        .iter()
                        .filter(|view| (first..end).contains(&view.index))
                    {
                        slots[(view.index - first) as usize] = Some(*view);
                    }
                }
            }
            for (slot, index) in slots.into_iter().zip(first..) {
                let view = slot.ok_or_else(|| {
                    corrupt(CorruptionReason::EntryMissing {
                        group: group_id,
                        index,
                    })
                })?;
                entries.push(view.to_entry());
            }
        }
        entries.extend(cached);
        assert!(
            entries.len() as u64 == high - low
                && entries
                    .iter()
                    .zip(low..)
                    .all(|(entry, index)| entry.index == index),
            "read_entries returns exactly [low, high)"
        );
        Ok(entries)
    }

    pub fn stats(&self) -> WalStats {
        self.shared.state.borrow().stats
    }

    /// Sequence of the last durable batch.
    pub fn durable_sequence(&self) -> u64 {
        self.shared.state.borrow().durable_sequence
    }

    /// Makes everything submitted durable, stops the background tasks and closes the
    /// files. Other handles of this WAL get [`WalError::Closed`] afterwards. A WAL stopped
    /// by an error is closed all the same, and the error is returned.
    pub async fn close(self) -> Result<(), WalError> {
        let last = {
            let mut state = self.shared.state.borrow_mut();
            if state.closing {
                return Err(WalError::Closed);
            }
            state.flush_requested = true;
            wake(&mut state.committer_waker);
            state.last_submitted_sequence()
        };
        let flushed = self.wait(Ticket(last)).await.and_then(|()| {
            // Nothing may have been pending when the WAL stopped: report why it stopped.
            self.shared
                .state
                .borrow()
                .failure
                .clone()
                .map_or(Ok(()), Err)
        });
        let tasks = {
            let mut state = self.shared.state.borrow_mut();
            state.closing = true;
            wake(&mut state.committer_waker);
            wake(&mut state.segment_task_waker);
            wake(&mut state.segment_waiter);
            state.wake_all_room_waiters();
            std::mem::take(&mut state.tasks)
        };
        for task in tasks {
            task.await;
        }
        let files: Vec<Rc<DmaFile>> = {
            let mut state = self.shared.state.borrow_mut();
            let live = std::mem::take(&mut state.live);
            let ready = std::mem::take(&mut state.ready);
            live.into_values()
                .chain(ready)
                .map(|segment| segment.file)
                .collect()
        };
        let mut closed = Ok(());
        for file in files {
            if let Err(error) = file.close_rc().await {
                closed = closed.and(Err(io_error(
                    "closing",
                    &self.shared.wal_dir,
                    into_io(error),
                )));
            }
        }
        flushed.and(closed)
    }
}

/// A submitter's place in the line for room. A submitter that gives up (its future is
/// dropped) leaves the line and hands the turn on, so the line never stalls.
struct RoomPlace<'a> {
    shared: &'a Shared,
    id: u64,
    queued: bool,
}

impl Drop for RoomPlace<'_> {
    fn drop(&mut self) {
        if !self.queued {
            return;
        }
        let mut state = self.shared.state.borrow_mut();
        let was_front = state
            .room_queue
            .front()
            .is_some_and(|(id, _)| *id == self.id);
        state.room_queue.retain(|(id, _)| *id != self.id);
        if was_front {
            state.wake_room_front();
        }
    }
}

/// Checks the shape and size of a submission; returns its encoded bytes and record count.
fn measure(records: &[Record], config: &WalConfig) -> Result<(usize, usize), WalError> {
    let mut bytes = 0;
    for record in records {
        record
            .validate()
            .map_err(|reason| WalError::InvalidRecord {
                group: record.group_id,
                reason,
            })?;
        bytes += record.encoded_bytes();
    }
    if padded_batch_bytes(bytes) > config.batch_bytes_max
        || records.len() > config.batch_records_max as usize
    {
        return Err(WalError::SubmissionTooLarge {
            bytes,
            records: records.len(),
            bytes_max: config.batch_bytes_max,
            records_max: config.batch_records_max,
        });
    }
    Ok((bytes, records.len()))
}

/// Encodes `records` into the filling batch and applies them to their groups. The caller
/// checked that they fit.
fn submit_records(
    state: &mut State,
    shared: &Shared,
    records: Vec<Record>,
) -> Result<Ticket, WalError> {
    let sequence = state.filling_sequence;
    let was_empty = state.filling.is_empty();
    let cache_bytes_max = shared.config.cache_bytes_per_group_max;
    let mut outcome = Ok(Ticket(sequence));
    for record in records {
        let group_id = record.group_id;
        let empty = GroupLog::default();
        let group = state.groups.get(&group_id).unwrap_or(&empty);
        let checked = match &record.kind {
            RecordKind::Entries { entries } => group
                .check_append(entries[0].index)
                .map_err(|error| log_operation_error(group_id, group, "append", error)),
            RecordKind::Compaction { index, .. } | RecordKind::LogReset { index, .. } => group
                .check_compaction(*index)
                .map_err(|error| log_operation_error(group_id, group, "compact", error))
                .and_then(|()| check_snapshot_covers(&shared.data_dir, group_id, *index)),
            RecordKind::HardState(_) | RecordKind::GroupRemoved => Ok(()),
        };
        if let Err(error) = checked {
            outcome = Err(error);
            break;
        }
        // A snapshot that disagrees with the log replaces it. The writer decides here, with
        // the whole log at hand, and records the decision, because recovery may no longer
        // hold the entry whose term decides it.
        let record = match record.kind {
            RecordKind::Compaction { index, term }
                if !group.compaction_keeps_log(LogPosition { index, term }) =>
            {
                Record {
                    group_id,
                    kind: RecordKind::LogReset { index, term },
                }
            }
            _ => record,
        };
        state.filling.push(&record);
        state.stats.records += 1;
        let group = state.groups.entry(group_id).or_default();
        match record.kind {
            RecordKind::Entries { entries } => {
                group.append(&entries, sequence, cache_bytes_max);
            }
            RecordKind::HardState(hard_state) => group.set_hard_state(hard_state, sequence),
            RecordKind::Compaction { index, term } => {
                group.compact(LogPosition { index, term }, sequence);
                state.gc_needed = true;
            }
            RecordKind::LogReset { index, term } => {
                group.reset(LogPosition { index, term }, sequence);
                state.gc_needed = true;
            }
            RecordKind::GroupRemoved => {
                state.groups.remove(&group_id);
                state.gc_needed = true;
            }
        }
    }
    if !state.filling.is_empty() && was_empty {
        wake(&mut state.committer_waker);
    }
    if state.filling.record_count() >= shared.config.batch_records_max {
        state.filling_full = true;
        wake(&mut state.committer_waker);
    }
    outcome
}

/// A compaction needs a snapshot file covering its index: recovery refuses a log whose
/// compaction point no snapshot covers.
fn check_snapshot_covers(data_dir: &Path, group_id: u64, index: u64) -> Result<(), WalError> {
    match snapshot_file::read_snapshot_metadata(data_dir, group_id)? {
        Some(metadata) if metadata.index >= index => Ok(()),
        _ => Err(WalError::SnapshotMissing {
            group: group_id,
            index,
        }),
    }
}

/// Waits until the filling batch has records (true) or the WAL stops (false).
async fn wait_for_records(shared: &Shared) -> bool {
    poll_fn(|context| {
        let mut state = shared.state.borrow_mut();
        if state.failure.is_some() {
            Poll::Ready(false)
        } else if !state.filling.is_empty() {
            Poll::Ready(true)
        } else if state.closing {
            Poll::Ready(false)
        } else {
            state.committer_waker = Some(context.waker().clone());
            Poll::Pending
        }
    })
    .await
}

async fn run_committer(shared: Rc<Shared>) {
    while wait_for_records(&shared).await {
        let seal_now = {
            let state = shared.state.borrow();
            state.flush_requested || state.filling_full
        };
        if !seal_now {
            // The end of the loop turn: every task that is runnable now adds its records
            // before the batch is sealed.
            glommio::executor().yield_now().await;
        }
        let (sequence, mut sealed) = {
            let mut state = shared.state.borrow_mut();
            if state.failure.is_some() {
                break;
            }
            let spare = state.spare.take().unwrap_or_default();
            let sealed = std::mem::replace(&mut state.filling, spare);
            let sequence = state.filling_sequence;
            state.filling_sequence += 1;
            state.filling_full = false;
            state.flush_requested = false;
            state.wake_room_front();
            (sequence, sealed)
        };
        assert!(!sealed.is_empty());
        let result = write_batch(&shared, sequence, &mut sealed).await;
        sealed.clear();
        let mut state = shared.state.borrow_mut();
        state.spare = Some(sealed);
        match result {
            Ok(()) => {
                state.advance_durable(sequence);
                collect_garbage(&mut state, &shared.config);
            }
            Err(error) => {
                eprintln!("corekv: write-ahead log stopped: {error}");
                state.fail(error);
                break;
            }
        }
    }
}

/// Writes one sealed batch at the end of the log and makes it durable. Any error here is
/// fatal (or disk full when no new segment could be made).
async fn write_batch(
    shared: &Shared,
    sequence: u64,
    sealed: &mut BatchBuilder,
) -> Result<(), WalError> {
    let padded = padded_batch_bytes(sealed.encoded_bytes() - BATCH_HEADER_BYTES);
    let (segment, offset, file, path) = place_batch(shared, padded as u64).await?;
    let offset_u32 = u32::try_from(offset).expect("segments are at most 4 GiB");
    let bytes = sealed.seal(sequence, segment, offset_u32);
    let mut buffer = file.alloc_dma_buffer(padded);
    let target = buffer.as_bytes_mut();
    target[..bytes.len()].copy_from_slice(bytes);
    target[bytes.len()..].fill(0);
    match file.write_at(buffer, offset).await {
        Ok(written) if written == padded => {}
        Ok(written) => {
            let short = io::Error::new(
                io::ErrorKind::WriteZero,
                format!("wrote {written} of {padded} bytes"),
            );
            return Err(fatal_error("writing", path, short));
        }
        Err(error) => return Err(fatal_error("writing", path, into_io(error))),
    }
    file.fdatasync()
        .await
        .map_err(|error| fatal_error("syncing", &path, into_io(error)))?;
    let mut state = shared.state.borrow_mut();
    state.locations.push(
        sequence,
        BatchLocation {
            segment,
            offset,
            padded_bytes: padded as u32,
        },
    );
    state.write_offset = offset + padded as u64;
    state.stats.batches += 1;
    state.stats.fsyncs += 1;
    state.stats.bytes_written += padded as u64;
    Ok(())
}

/// Finds where the next batch of `padded` bytes goes, moving to the next ready segment
/// when the current one cannot hold it (its tail stays zero).
async fn place_batch(
    shared: &Shared,
    padded: u64,
) -> Result<(u64, u64, Rc<DmaFile>, PathBuf), WalError> {
    loop {
        {
            let mut state = shared.state.borrow_mut();
            let current = state
                .live
                .get(&state.write_segment)
                .expect("the write segment is live");
            if state.write_offset + padded <= current.bytes {
                return Ok((
                    state.write_segment,
                    state.write_offset,
                    current.file.clone(),
                    current.path.clone(),
                ));
            }
            if let Some(next) = state.ready.pop_front() {
                state.write_segment = next.sequence;
                state.write_offset = 0;
                state.live.insert(next.sequence, next);
                state.gc_needed = true;
                wake(&mut state.segment_task_waker);
                continue;
            }
            // No segment is ready: ask for one (again, if the last attempt failed).
            state.segment_error = None;
            wake(&mut state.segment_task_waker);
        }
        poll_fn(|context| {
            let mut state = shared.state.borrow_mut();
            if !state.ready.is_empty() {
                Poll::Ready(Ok(()))
            } else if let Some(error) = state.segment_error.clone() {
                Poll::Ready(Err(error))
            } else {
                state.segment_waiter = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await?;
    }
}

/// After a durable batch: carries out a planned deletion whose records are durable now,
/// and plans the next collection when something changed (see `gc`).
fn collect_garbage(state: &mut State, config: &WalConfig) {
    if let Some((before_segment, when_durable)) = state.planned_deletion {
        if state.durable_sequence >= when_durable {
            state.planned_deletion = None;
            let write_segment = state.write_segment;
            // Nothing still needed may sit in a segment about to go. O(groups), once per
            // deleted batch of segments.
            for (group_id, group) in &state.groups {
                for batch in [group.oldest_entry_batch(), group.oldest_state_batch()]
                    .into_iter()
                    .flatten()
                {
                    let segment = state.locations.segment_of(batch, write_segment);
                    assert!(
                        segment >= before_segment.min(write_segment),
                        "group {group_id} still needs batch {batch} in segment {segment}, \
                         which is about to be deleted (before {before_segment})"
                    );
                }
            }
            let doomed: Vec<u64> = state
                .live
                .range(..before_segment.min(write_segment))
                .map(|(&sequence, _)| sequence)
                .collect();
            for sequence in doomed {
                let segment = state.live.remove(&sequence).expect("listed above");
                state.to_delete.push(segment);
            }
            state
                .locations
                .drop_before_segment(before_segment.min(write_segment));
            wake(&mut state.segment_task_waker);
            // The next segment may be free as well.
            state.gc_needed = true;
        }
    }
    if !state.gc_needed || state.planned_deletion.is_some() {
        return;
    }
    let oldest_segment = *state.live.keys().next().expect("the write segment is live");
    let write_segment = state.write_segment;
    let plan = {
        let locations = &state.locations;
        gc::plan(
            &state.groups,
            |batch| locations.segment_of(batch, write_segment),
            oldest_segment,
            write_segment,
            config.segments_pinned_max,
        )
    };
    state.snapshot_candidates = plan.snapshot;
    for &group_id in &plan.relog {
        if !relog(state, group_id, config) {
            // No room now; the next durable batch tries again.
            return;
        }
    }
    state.gc_needed = false;
    if plan.delete_before_segment > oldest_segment {
        let when_durable = state.last_submitted_sequence();
        state.planned_deletion = Some((plan.delete_before_segment, when_durable));
    }
}

/// Writes the group's hard state and compaction point again into the filling batch so
/// that the segment holding the old records is no longer needed. False when there is no
/// room.
fn relog(state: &mut State, group_id: u64, config: &WalConfig) -> bool {
    let Some(group) = state.groups.get(&group_id) else {
        return true;
    };
    let mut records = Vec::with_capacity(2);
    if let Some(hard_state) = group.hard_state() {
        records.push(Record {
            group_id,
            kind: RecordKind::HardState(hard_state),
        });
    }
    if let Some(position) = group.compaction() {
        records.push(Record {
            group_id,
            kind: RecordKind::Compaction {
                index: position.index,
                term: position.term,
            },
        });
    }
    if !push_internal(state, &records, config) {
        return false;
    }
    let sequence = state.filling_sequence;
    state
        .groups
        .get_mut(&group_id)
        .expect("checked above")
        .relogged(sequence);
    state.stats.relogged_records += records.len() as u64;
    true
}

/// Adds records the WAL writes on its own behalf (they restate what the group state
/// already holds) to the filling batch. False when there is no room.
fn push_internal(state: &mut State, records: &[Record], config: &WalConfig) -> bool {
    let bytes = records.iter().map(Record::encoded_bytes).sum();
    if !state.fits(bytes, records.len(), config) {
        return false;
    }
    let was_empty = state.filling.is_empty();
    for record in records {
        state.filling.push(record);
    }
    if was_empty {
        wake(&mut state.committer_waker);
    }
    true
}

/// What the segment task does next.
enum SegmentWork {
    Delete(Vec<LiveSegment>),
    Create(u64),
}

async fn run_segment_task(shared: Rc<Shared>) {
    loop {
        let work = poll_fn(|context| {
            let mut state = shared.state.borrow_mut();
            if state.closing {
                Poll::Ready(None)
            } else if !state.to_delete.is_empty() {
                Poll::Ready(Some(SegmentWork::Delete(std::mem::take(
                    &mut state.to_delete,
                ))))
            } else if state.failure.is_none()
                && state.segment_error.is_none()
                && state.ready.len() < shared.config.segments_ready_ahead
            {
                Poll::Ready(Some(SegmentWork::Create(state.next_segment_sequence)))
            } else {
                state.segment_task_waker = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await;
        match work {
            None => break,
            Some(SegmentWork::Delete(segments)) => {
                // Oldest first, so that a crash leaves the remaining segments consecutive.
                for segment in segments {
                    let LiveSegment { path, file, .. } = segment;
                    if let Ok(file) = Rc::try_unwrap(file) {
                        let _ = file.close().await;
                    }
                    let wal_dir = shared.wal_dir.clone();
                    let deleted = glommio::executor()
                        .spawn_blocking(move || delete_segment(&wal_dir, &path).map(|()| path))
                        .await;
                    match deleted {
                        Ok(_) => shared.state.borrow_mut().stats.segments_deleted += 1,
                        Err(error) => eprintln!("corekv: could not delete a WAL segment: {error}"),
                    }
                }
            }
            Some(SegmentWork::Create(sequence)) => {
                let created =
                    create_segment(&shared.wal_dir, sequence, shared.config.segment_bytes).await;
                let mut state = shared.state.borrow_mut();
                match created {
                    Ok(file) => {
                        state.next_segment_sequence = sequence + 1;
                        state.ready.push_back(LiveSegment {
                            sequence,
                            path: super::segment::segment_path(&shared.wal_dir, sequence),
                            bytes: shared.config.segment_bytes,
                            file: Rc::new(file),
                        });
                        state.stats.segments_created += 1;
                    }
                    Err(error) => {
                        eprintln!("corekv: cannot prepare WAL segment {sequence}: {error}");
                        state.segment_error = Some(error);
                    }
                }
                wake(&mut state.segment_waiter);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The configuration rejects impossible relations between its fields.
    #[test]
    fn configuration_relations() {
        assert!(WalConfig::default().validate().is_ok());
        let small = WalConfig {
            segment_bytes: 4096,
            ..WalConfig::default()
        };
        assert!(matches!(small.validate(), Err(WalError::Config(_))));
        let batch_too_big = WalConfig {
            segment_bytes: 1 << 20,
            batch_bytes_max: 2 << 20,
            ..WalConfig::default()
        };
        assert!(matches!(batch_too_big.validate(), Err(WalError::Config(_))));
        let unaligned = WalConfig {
            batch_bytes_max: 5000,
            ..WalConfig::default()
        };
        assert!(matches!(unaligned.validate(), Err(WalError::Config(_))));
    }

    // A submission larger than a batch is refused as a value.
    #[test]
    fn oversized_submission_is_an_error() {
        let config = WalConfig {
            batch_bytes_max: 8192,
            ..WalConfig::default()
        };
        let record = Record {
            group_id: 1,
            kind: RecordKind::Entries {
                entries: vec![Entry {
                    index: 1,
                    term: 1,
                    kind: 0,
                    payload: vec![0; 9000].into(),
                }],
            },
        };
        assert!(matches!(
            measure(&[record], &config),
            Err(WalError::SubmissionTooLarge { .. })
        ));
    }
}
