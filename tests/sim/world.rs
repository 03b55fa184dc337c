//! One simulated run: a cluster of nodes, each running the real shard cores
//! (`corekv::shard::ShardCore`, one per shard, with their Raft groups and KV stores), the
//! mesh between a node's shards, a disk per shard, the network, the clients, the fault
//! schedule, and the checks, all advanced one discrete step at a time from one seeded
//! generator. The world plays the part of the server's driver: it carries each core's
//! output to the simulated disk, network and mesh, in the order the core's contract asks.

use std::collections::BTreeMap;

use corekv::api::Member;
use corekv::check::{self, check_snapshot_read, CausalOrder, CheckOptions, CheckResult, History};
use corekv::keyspace::{group_of, shard_of};
use corekv::kv::{KeyValue, LogEntry, Op, OpResponse, RangeRequest, Store};
use corekv::multiraft::{GroupId, ShardConfig};
use corekv::raft::log::RaftLog;
use corekv::raft::{Message, NodeId, RaftNode};
use corekv::shard::{ConnectionId, CoreConfig, MeshMessage, Placement, ShardCore};

use crate::client::{Client, Outgoing, Role, Shared, SnapshotRead};
use crate::disk::{PendingBatch, ShardDisk};
use crate::faults::{draw_params, members_of, nodes_of_seed, Broken, FaultMix, Params};
use crate::invariants::{payload_hash, Invariants, Violation};
use crate::network::{Envelope, Network, NetworkFaults, SendOutcome, IN_FLIGHT_MESSAGES_MAX};
use crate::report::{Failure, RunConfig, RunReport, Stats, Verdict};
use crate::rng::SimRng;
use crate::trace::{Event, LossReason, PartitionKind, Trace};

/// Turns one shard may run in one step (it continues in the next step).
const READY_ROUNDS_MAX: usize = 16;
/// A new leader planned to crash goes down within this many steps of its election.
const NEW_LEADER_CRASH_STEPS_MAX: u64 = 8;
/// Steps between two log matching checks over all groups.
const LOG_MATCHING_EVERY_STEPS: u64 = 50;
/// After the main phase: steps for clients to finish what they started.
const DRAIN_STEPS_MAX: u64 = 3_000;
/// Steps for the final reads after healing; running out is a liveness failure.
const FINAL_READ_STEPS_MAX: u64 = 12_000;
/// Steps for every replica to apply everything after the final reads.
const CONVERGE_STEPS_MAX: u64 = 3_000;
/// Milliseconds of a node's physical clock per step, and where the clocks start.
const STEP_MS: u64 = 2;
const CLOCK_START_MS: u64 = 1_700_000_000_000;
/// Steps a local snapshot file takes to write, at most.
const SNAPSHOT_FILE_STEPS_MAX: u64 = 30;

/// The mesh of one node: messages between its shards, each channel first in first out.
#[derive(Debug, Default)]
struct Mesh {
    /// By (delivery step, send order).
    queue: BTreeMap<(u64, u64), MeshMessage>,
    sent: u64,
    /// Per (from, to) channel: messages queued, and the latest delivery step (so that a
    /// channel stays in order).
    channels: BTreeMap<(u32, u32), (usize, u64)>,
}

impl Mesh {
    /// Queues `message`, or gives it back when its channel holds `channel_max` already.
    fn send(
        &mut self,
        message: MeshMessage,
        at: u64,
        channel_max: usize,
    ) -> Result<(), MeshMessage> {
        let channel = self
            .channels
            .entry((message.from_shard, message.to_shard))
            .or_default();
        if channel.0 >= channel_max {
            return Err(message);
        }
        channel.0 += 1;
        channel.1 = channel.1.max(at);
        self.sent += 1;
        self.queue.insert((channel.1, self.sent), message);
        Ok(())
    }

    fn pop_due(&mut self, now: u64) -> Option<MeshMessage> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let message = entry.remove();
        let channel = self
            .channels
            .get_mut(&(message.from_shard, message.to_shard))
            .expect("a queued message has its channel");
        channel.0 -= 1;
        Some(message)
    }
}

/// One node: its shard cores (when up), a disk per shard, its mesh, and the client
/// connections it holds.
#[derive(Debug)]
struct NodeSlot {
    id: NodeId,
    cores: Option<Vec<ShardCore>>,
    disks: Vec<ShardDisk>,
    mesh: Mesh,
    /// Each client's connection to this node: its id and the shard that accepted it.
    connections: BTreeMap<usize, (ConnectionId, u32)>,
    /// The client of each connection.
    connection_clients: BTreeMap<ConnectionId, usize>,
    next_connection: ConnectionId,
    /// Requests handed to a core and not yet answered: (connection, request id).
    outstanding: BTreeMap<(ConnectionId, u64), usize>,
    restart_at: u64,
    /// This node's clock: it ticks every `tick_steps` steps, the next time at `next_tick`.
    tick_steps: u64,
    /// How far this node's physical clock is ahead of the true time (behind if negative).
    clock_offset_ms: i64,
    next_tick: u64,
}

impl NodeSlot {
    fn core(&self, group: GroupId, shards: u32) -> Option<&ShardCore> {
        self.cores.as_ref()?.get(shard_of(group, shards) as usize)
    }

    fn raft(&self, group: GroupId, shards: u32) -> Option<&RaftNode> {
        self.core(group, shards)?.groups().raft(group)
    }

    fn store(&self, group: GroupId, shards: u32) -> Option<&Store> {
        self.core(group, shards)?.groups().store(group)
    }

    fn leads_any(&self) -> bool {
        self.cores
            .iter()
            .flatten()
            .any(|core| !core.groups().led_groups().is_empty())
    }

    fn has_pending_writes(&self) -> bool {
        self.disks.iter().any(|disk| !disk.pending.is_empty())
    }
}

/// Which part of the run is under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Clients issue operations; faults happen.
    Main,
    /// Healed; clients finish what they started.
    Drain,
    /// Final reads of every key.
    FinalReads,
    /// Waiting for every replica to apply everything.
    Settle,
}

/// The whole simulated world.
#[derive(Debug)]
struct World {
    config: RunConfig,
    mix: FaultMix,
    params: Params,
    rng: SimRng,
    now: u64,
    nodes: Vec<NodeSlot>,
    members: BTreeMap<GroupId, Vec<NodeId>>,
    keys: Vec<Vec<u8>>,
    key_groups: Vec<GroupId>,
    network: Network,
    partition_heal_at: Option<u64>,
    /// Crashes planned for a later step: (step, node index).
    planned_crashes: Vec<(u64, usize)>,
    clients: Vec<Client>,
    history: History,
    /// Scans finished and not yet checked (see `check_snapshot_reads`).
    snapshot_reads: Vec<SnapshotRead>,
    causal: CausalOrder,
    writes_completed_max: u64,
    invariants: Invariants,
    trace: Trace,
    stats: Stats,
    next_request_id: u64,
    next_client_id: u64,
}

/// Runs one seed.
pub fn run(config: RunConfig) -> RunReport {
    let mut world = World::new(config);
    // A panic inside corekv (an assert on an invariant) is a failed check like any other:
    // report it with the seed and the trace instead of tearing down the whole batch.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run_phases()))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(Violation::new("no panic", message))
        });
    let verdict = match &outcome {
        Ok(verdict) => *verdict,
        Err(_) => Verdict::NotChecked,
    };
    world.stats.steps = world.now;
    world.stats.events = world.trace.events();
    world.stats.leaders_elected = world.invariants.leaders_elected() as u64;
    world.stats.entries_applied = world.invariants.entries_applied;
    world.count_operations();
    for operation in world.history.operations() {
        world.trace.digest_value(operation);
    }
    world.trace.digest_value(&world.stats);
    let failure = outcome.err().map(|violation| Failure {
        check: violation.check,
        message: violation.message,
        step: world.now,
        trace: world.trace.recent_lines(),
    });
    RunReport {
        seed: world.config.seed,
        mix: world.mix,
        nodes: world.nodes.len(),
        shards: world.params.shards,
        groups: world.params.groups,
        broken: world.config.broken,
        stats: world.stats.clone(),
        verdict,
        failure,
        digest: world.trace.digest(),
    }
}

/// Hands a node's messages to the network and records what the network did to them.
fn send_messages(
    network: &mut Network,
    rng: &mut SimRng,
    trace: &mut Trace,
    stats: &mut Stats,
    now: u64,
    from: NodeId,
    messages: Vec<(GroupId, Message)>,
) {
    for (group, message) in messages {
        let kind = message.kind;
        let to = message.to;
        match network.send_peer(rng, now, from, group, message) {
            SendOutcome::Queued => {}
            SendOutcome::Lost => {
                stats.messages_dropped += 1;
                let reason = LossReason::Loss;
                trace.record(
                    now,
                    Event::MessageLost {
                        from,
                        to,
                        group,
                        kind,
                        reason,
                    },
                );
            }
            SendOutcome::Duplicated => {
                stats.messages_duplicated += 1;
                trace.record(
                    now,
                    Event::MessageDuplicated {
                        from,
                        to,
                        group,
                        kind,
                    },
                );
            }
        }
    }
}

/// Checks one group of one core for a (new) leader.
fn observe_group(
    invariants: &mut Invariants,
    trace: &mut Trace,
    now: u64,
    node: NodeId,
    group: GroupId,
    core: &ShardCore,
) -> Result<(), Violation> {
    let Some(raft) = core.groups().raft(group) else {
        return Ok(());
    };
    if invariants.observe(node, group, raft)? {
        trace.record(
            now,
            Event::BecameLeader {
                node,
                group,
                term: raft.term(),
            },
        );
    }
    Ok(())
}

/// Checks every group of one core for a (new) leader.
fn observe_core(
    invariants: &mut Invariants,
    trace: &mut Trace,
    now: u64,
    node: NodeId,
    core: &ShardCore,
) -> Result<(), Violation> {
    let groups = core.groups();
    for group in groups.group_ids() {
        let raft = groups.raft(group).expect("listed");
        if invariants.observe(node, group, raft)? {
            trace.record(
                now,
                Event::BecameLeader {
                    node,
                    group,
                    term: raft.term(),
                },
            );
        }
    }
    Ok(())
}

/// Checks every group of one node for a (new) leader.
fn observe_node(
    invariants: &mut Invariants,
    trace: &mut Trace,
    now: u64,
    slot: &NodeSlot,
) -> Result<(), Violation> {
    for core in slot.cores.iter().flatten() {
        observe_core(invariants, trace, now, slot.id, core)?;
    }
    Ok(())
}

/// A log's terms as runs, `first..=last:term`, from its snapshot on (for reports).
fn term_runs(log: &RaftLog) -> String {
    let mut runs: Vec<String> = Vec::new();
    let mut start = log.snapshot_index();
    let mut term = log.snapshot_term();
    for index in log.first_index()..=log.last_index() {
        let here = log.term(index).unwrap_or(0);
        if here != term {
            runs.push(format!("{start}..={}:{term}", index - 1));
            start = index;
            term = here;
        }
    }
    runs.push(format!("{start}..={}:{term}", log.last_index()));
    runs.join(" ")
}

impl World {
    fn new(config: RunConfig) -> World {
        let mut rng = SimRng::new(config.seed);
        let mix = FaultMix::of_seed(config.seed);
        let node_count = nodes_of_seed(config.seed);
        let (params, faults) = draw_params(&mut rng, mix);
        let members: BTreeMap<GroupId, Vec<NodeId>> = (0..params.groups as GroupId)
            .map(|group| (group, members_of(group, node_count)))
            .collect();
        let keys: Vec<Vec<u8>> = (0..params.keys)
            .map(|key| format!("k{key}").into_bytes())
            .collect();
        let key_groups = keys
            .iter()
            .map(|key| group_of(key, params.groups as u64))
            .collect();
        let echo = config.echo_trace;
        let shards = params.shards as usize;
        let mut world = World {
            config,
            mix,
            params,
            rng,
            now: 0,
            nodes: Vec::new(),
            members,
            keys,
            key_groups,
            network: Network::new(faults),
            partition_heal_at: None,
            planned_crashes: Vec::new(),
            clients: Vec::new(),
            history: History::new(),
            snapshot_reads: Vec::new(),
            causal: CausalOrder::new(),
            writes_completed_max: 0,
            invariants: Invariants::default(),
            trace: Trace::new(echo),
            stats: Stats::default(),
            next_request_id: 0,
            next_client_id: 0,
        };
        for id in 1..=node_count as NodeId {
            let tick_steps = world
                .rng
                .between(world.params.tick_steps_min, world.params.tick_steps_max);
            let offset_max = world.params.clock_offset_ms_max;
            let clock_offset_ms = world.rng.between(0, 2 * offset_max) as i64 - offset_max as i64;
            world.nodes.push(NodeSlot {
                id,
                cores: None,
                disks: (0..shards).map(|_| ShardDisk::default()).collect(),
                mesh: Mesh::default(),
                connections: BTreeMap::new(),
                connection_clients: BTreeMap::new(),
                next_connection: 0,
                outstanding: BTreeMap::new(),
                restart_at: 0,
                tick_steps,
                clock_offset_ms,
                next_tick: world.rng.between(1, tick_steps),
            });
        }
        for index in 0..node_count {
            world
                .start_node(index)
                .expect("a node with an empty disk starts");
        }
        for _ in 0..world.params.clients {
            world.next_client_id += 1;
            let first_op_at = world.rng.between(0, 50);
            world
                .clients
                .push(Client::new(Role::Worker, world.next_client_id, first_op_at));
        }
        world
    }

    fn core_config(&mut self, node: NodeId, shard: u32) -> CoreConfig {
        let mut raft = ShardConfig::new(node);
        raft.compact_entries = self.params.compact_entries;
        raft.proposals_pending_max = self.params.proposals_pending_max;
        raft.reads_pending_max = self.params.reads_pending_max;
        raft.raft.seed = self.rng.next_u64();
        raft.raft.snapshot_chunk_bytes = self.params.snapshot_chunk_bytes;
        raft.raft.append_bytes_max = self.params.append_bytes_max;
        raft.raft.inflight_messages_max = self.params.inflight_messages_max;
        raft.raft.unsafe_commit_old_terms = self.config.broken == Broken::CommitOldTerms;
        raft.close_interval_ticks = self.params.close_interval_ticks;
        raft.limits.history_bytes_max = self.params.history_bytes_max;
        raft.unsafe_stamp_at_closed = self.config.broken == Broken::StampAtClosed;
        raft.unsafe_read_unclosed_revisions = self.config.broken == Broken::ReadUnclosed;
        let placement = Placement::PerGroup(self.members.clone());
        let mut config = CoreConfig::new(
            node,
            shard,
            self.params.shards,
            self.params.groups as u64,
            placement,
        );
        config.members = (1..=self.nodes.len() as NodeId)
            .map(|id| Member {
                node_id: id,
                client_address: format!("n{id}"),
                peer_address: format!("n{id}:peer"),
            })
            .collect();
        config.raft = raft;
        config.forward_timeout_ticks = self.params.forward_timeout_ticks;
        config.unsafe_ack_before_fsync = self.config.broken == Broken::AckBeforeFsync;
        config.unsafe_ignore_seen_revision = self.config.broken == Broken::IgnoreSeenRevision;
        config.unsafe_forward_reads_as_serializable =
            self.config.broken == Broken::ForwardReadsSerializable;
        config
    }

    /// Starts (or restarts) a node: every shard core from what its disk holds.
    fn start_node(&mut self, index: usize) -> Result<(), Violation> {
        let id = self.nodes[index].id;
        let mut cores = Vec::with_capacity(self.params.shards as usize);
        for shard in 0..self.params.shards {
            let config = self.core_config(id, shard);
            let recovered = self.nodes[index].disks[shard as usize].recover(&config.groups_here());
            let core = ShardCore::open(config, recovered).map_err(|error| {
                Violation::new(
                    "restart",
                    format!("n{id}/s{shard} does not start from its durable state: {error}"),
                )
            })?;
            cores.push(core);
        }
        self.nodes[index].cores = Some(cores);
        Ok(())
    }

    fn run_phases(&mut self) -> Result<Verdict, Violation> {
        while self.now < self.config.steps {
            self.step(Phase::Main)?;
        }
        self.heal()?;
        let drain_end = self.now + DRAIN_STEPS_MAX;
        while self.now < drain_end && self.clients.iter().any(Client::is_busy) {
            self.step(Phase::Drain)?;
        }
        self.give_up_all()?;
        for key in 0..self.keys.len() {
            self.next_client_id += 1;
            self.clients.push(Client::new(
                Role::FinalReader { key },
                self.next_client_id,
                self.now,
            ));
        }
        let reads_end = self.now + FINAL_READ_STEPS_MAX;
        while self.now < reads_end && self.clients.iter().any(|client| !client.finished_reading()) {
            self.step(Phase::FinalReads)?;
        }
        if let Some(client) = self
            .clients
            .iter()
            .find(|client| !client.finished_reading() || client.gave_up)
        {
            return Err(Violation::new(
                "liveness after healing",
                format!(
                    "with every node up and the network healed since step {}, the final read \
                     by client {} did not complete by step {}",
                    self.config.steps, client.client_id, self.now
                ),
            ));
        }
        self.settle()?;
        self.give_up_all()?;
        match check::check(&self.history, &CheckOptions::default()) {
            CheckResult::Ok => Ok(Verdict::Linearizable),
            CheckResult::Unknown => Ok(Verdict::Unknown),
            CheckResult::Illegal(violation) => {
                Err(Violation::new("linearizability", violation.to_string()))
            }
        }
    }

    /// Ends every fault: all nodes up, no partition, no loss, short delays.
    fn heal(&mut self) -> Result<(), Violation> {
        self.trace.record(self.now, Event::Heal);
        self.network.heal();
        self.partition_heal_at = None;
        self.planned_crashes.clear();
        let delay = self.network.faults.delay_steps_max;
        self.network.faults = NetworkFaults::calm(delay);
        for index in 0..self.nodes.len() {
            if self.nodes[index].cores.is_none() {
                self.restart(index)?;
            }
        }
        Ok(())
    }

    fn give_up_all(&mut self) -> Result<(), Violation> {
        let now = self.now;
        self.with_clients(now, |clients, shared| {
            for client in clients {
                if client.is_busy() {
                    client.give_up(shared)?;
                }
            }
            Ok(())
        })
    }

    /// Runs `run` with the clients and the world state they share (one borrow of each
    /// field, so the clients can be iterated while the shared state changes).
    fn with_clients<T>(
        &mut self,
        now: u64,
        run: impl FnOnce(&mut [Client], &mut Shared<'_>) -> T,
    ) -> T {
        let mut shared = Shared {
            now,
            rng: &mut self.rng,
            history: &mut self.history,
            trace: &mut self.trace,
            keys: &self.keys,
            key_groups: &self.key_groups,
            members: &self.members,
            next_request_id: &mut self.next_request_id,
            next_client_id: &mut self.next_client_id,
            snapshot_reads: &mut self.snapshot_reads,
            causal: &mut self.causal,
            writes_completed_max: &mut self.writes_completed_max,
        };
        run(&mut self.clients, &mut shared)
    }

    /// Checks every scan that finished against the groups' history at its revision, as
    /// a replica that has closed the revision (and not compacted it away) holds it: by
    /// then every write at or below the revision is applied there. A group without such
    /// a replica right now leaves the scan unchecked (counted).
    fn check_snapshot_reads(&mut self) -> Result<(), Violation> {
        let shards = self.params.shards;
        for read in std::mem::take(&mut self.snapshot_reads) {
            let request = Op::Range(RangeRequest {
                key: read.start.clone(),
                range_end: read.end.clone(),
                revision: read.revision,
                ..RangeRequest::default()
            });
            let mut expected: Vec<KeyValue> = Vec::new();
            let mut verified = true;
            for (&group, members) in &self.members {
                let answer = members.iter().find_map(|&member| {
                    let store = self.node(member).store(group, shards)?;
                    store.read_at(&request, read.revision).ok()
                });
                match answer.map(|response| response.op) {
                    Some(OpResponse::Range(range)) => expected.extend(range.kvs),
                    _ => verified = false,
                }
            }
            if !verified {
                self.stats.snapshot_reads_unchecked += 1;
                continue;
            }
            expected.sort_by(|left, right| left.key.cmp(&right.key));
            check_snapshot_read(read.revision, &read.kvs, &expected).map_err(|error| {
                Violation::new(
                    "snapshot reads",
                    format!(
                        "client {}'s scan from {:?} at revision {} ({} keys in {} pages): \
                         {error}",
                        read.client,
                        String::from_utf8_lossy(&read.start),
                        read.revision,
                        read.kvs.len(),
                        read.pages
                    ),
                )
            })?;
            self.stats.snapshot_reads_checked += 1;
        }
        Ok(())
    }

    /// The node with id `id`.
    fn node(&self, id: NodeId) -> &NodeSlot {
        &self.nodes[(id - 1) as usize]
    }

    /// Waits until every replica of every group holds and applied the same log, and
    /// every request a core took was answered; then compares the replicas' state
    /// machines and logs.
    fn settle(&mut self) -> Result<(), Violation> {
        let settle_end = self.now + CONVERGE_STEPS_MAX;
        while !self.converged() {
            if self.now >= settle_end {
                return Err(Violation::new(
                    "liveness after healing",
                    format!(
                        "replicas did not converge by step {}: {}",
                        self.now,
                        self.group_positions()
                    ),
                ));
            }
            self.step(Phase::Settle)?;
        }
        let shards = self.params.shards;
        for (&group, members) in &self.members {
            let first = members[0];
            let reference = self
                .node(first)
                .store(group, shards)
                .expect("every node is up after healing");
            for &member in &members[1..] {
                let store = self
                    .node(member)
                    .store(group, shards)
                    .expect("every node is up after healing");
                if !store.same_contents(reference) {
                    return Err(Violation::new(
                        "replica convergence",
                        format!(
                            "group {group}: n{first} and n{member} applied the same log up to \
                             index {} but their stores differ ({} vs {} keys, {} vs {} sessions)",
                            reference.applied_index(),
                            reference.key_count(),
                            store.key_count(),
                            reference.session_count(),
                            store.session_count()
                        ),
                    ));
                }
            }
        }
        self.check_log_matching()
    }

    /// Every request answered, and every group with a leader whose members all applied
    /// every write in their logs and hold the same data. Close promises keep coming in an
    /// idle group (the leader closes every interval), so positions never stop moving:
    /// only writes and data are compared.
    fn converged(&self) -> bool {
        let shards = self.params.shards;
        let answered = self.nodes.iter().all(|slot| slot.outstanding.is_empty());
        answered
            && self.members.iter().all(|(&group, members)| {
                let replicas: Vec<(&RaftNode, &Store)> = members
                    .iter()
                    .filter_map(|&member| {
                        let slot = self.node(member);
                        Some((slot.raft(group, shards)?, slot.store(group, shards)?))
                    })
                    .collect();
                let writes_applied = |raft: &RaftNode| {
                    let log = raft.log();
                    (log.applied + 1..=log.last_index()).all(|index| {
                        log.entry_at(index)
                            .is_none_or(|entry| !LogEntry::is_write(&entry.data))
                    })
                };
                replicas.len() == members.len()
                    && replicas.iter().all(|(raft, _)| writes_applied(raft))
                    && replicas
                        .windows(2)
                        .all(|pair| pair[0].1.same_contents(pair[1].1))
                    && self.has_leader(group)
            })
    }

    fn has_leader(&self, group: GroupId) -> bool {
        let shards = self.params.shards;
        self.members[&group].iter().any(|&member| {
            self.node(member)
                .raft(group, shards)
                .is_some_and(|raft| raft.is_leader())
        })
    }

    fn group_positions(&self) -> String {
        let shards = self.params.shards;
        let mut out = String::new();
        for slot in &self.nodes {
            if !slot.outstanding.is_empty() {
                out.push_str(&format!(
                    "n{} holds {} unanswered requests; ",
                    slot.id,
                    slot.outstanding.len()
                ));
            }
        }
        for (&group, members) in &self.members {
            out.push_str(&format!("g{group}:"));
            for &member in members {
                match self.node(member).raft(group, shards) {
                    Some(raft) => {
                        let status = raft.status();
                        out.push_str(&format!(
                            " n{member}({:?} term {} last {} commit {} applied {} terms [{}]",
                            status.role,
                            status.term,
                            status.last_index,
                            status.commit,
                            status.applied,
                            term_runs(raft.log())
                        ));
                        if raft.is_leader() {
                            for &follower in members.iter().filter(|&&id| id != member) {
                                if let Some(progress) = raft.progress(follower) {
                                    out.push_str(&format!(
                                        " n{follower}: {:?} matched {} next {}",
                                        progress.state, progress.matched, progress.next
                                    ));
                                }
                            }
                        }
                        out.push(')');
                    }
                    None => out.push_str(&format!(" n{member}(down)")),
                }
            }
            out.push_str("; ");
        }
        out
    }

    fn count_operations(&mut self) {
        use corekv::check::Outcome;
        for operation in self.history.operations() {
            self.stats.operations += 1;
            match operation.outcome {
                Outcome::Completed { .. } => self.stats.operations_completed += 1,
                Outcome::Failed { .. } => self.stats.operations_failed += 1,
                Outcome::Pending { .. } => self.stats.operations_pending += 1,
            }
        }
    }

    /// One step of simulated time.
    fn step(&mut self, phase: Phase) -> Result<(), Violation> {
        self.now += 1;
        while let Some(envelope) = self.network.pop_due(self.now) {
            self.deliver(envelope)?;
        }
        for index in 0..self.nodes.len() {
            self.deliver_mesh(index);
            self.complete_disks(index)?;
        }
        for slot in &mut self.nodes {
            if slot.next_tick > self.now {
                continue;
            }
            slot.next_tick = self.now + slot.tick_steps;
            let now_ms =
                CLOCK_START_MS.saturating_add_signed(slot.clock_offset_ms) + self.now * STEP_MS;
            for core in slot.cores.iter_mut().flatten() {
                core.on_tick(now_ms);
            }
            observe_node(&mut self.invariants, &mut self.trace, self.now, slot)?;
        }
        if phase == Phase::Main {
            self.inject_faults()?;
        } else {
            self.invariants.new_leaders.clear();
        }
        self.run_clients(phase)?;
        for index in 0..self.nodes.len() {
            for shard in 0..self.params.shards as usize {
                self.run_turns(index, shard)?;
            }
        }
        self.check_snapshot_reads()?;
        if self.now % LOG_MATCHING_EVERY_STEPS == 0 {
            self.check_log_matching()?;
        }
        if self.network.in_flight() > IN_FLIGHT_MESSAGES_MAX {
            return Err(Violation::new(
                "message storm",
                format!(
                    "more than {IN_FLIGHT_MESSAGES_MAX} messages in flight: messages are \
                     multiplying"
                ),
            ));
        }
        Ok(())
    }

    fn deliver(&mut self, envelope: Envelope) -> Result<(), Violation> {
        let now = self.now;
        let shards = self.params.shards;
        match envelope {
            Envelope::Peer {
                from,
                to,
                group,
                message,
            } => {
                let slot = &mut self.nodes[(to - 1) as usize];
                let reason = if slot.cores.is_none() {
                    Some(LossReason::Down)
                } else if self.network.is_cut(from, to) {
                    Some(LossReason::Partition)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.stats.messages_dropped += 1;
                    self.trace.record(
                        now,
                        Event::MessageLost {
                            from,
                            to,
                            group,
                            kind: message.kind,
                            reason,
                        },
                    );
                    return Ok(());
                }
                self.stats.messages_delivered += 1;
                self.trace.record(
                    now,
                    Event::Deliver {
                        from,
                        to,
                        group,
                        kind: message.kind,
                        term: message.term,
                        index: message.index,
                        commit: message.commit,
                        entries: message.entries.len() as u32,
                        reject: message.reject,
                    },
                );
                let cores = slot.cores.as_mut().expect("checked above");
                let core = &mut cores[shard_of(group, shards) as usize];
                core.on_peer_message(group, message);
                observe_group(&mut self.invariants, &mut self.trace, now, to, group, core)
            }
            Envelope::Request {
                client,
                to,
                request,
            } => {
                let slot = &mut self.nodes[(to - 1) as usize];
                let Some(cores) = slot.cores.as_mut() else {
                    self.trace.record(
                        now,
                        Event::RequestLost {
                            request: request.request_id,
                            node: to,
                            reason: LossReason::Down,
                        },
                    );
                    return Ok(());
                };
                // The kernel spreads connections over the shards' listeners.
                let (connection, shard) = match slot.connections.get(&client) {
                    Some(&known) => known,
                    None => {
                        slot.next_connection += 1;
                        let accepted = (
                            slot.next_connection,
                            self.rng.below(u64::from(shards)) as u32,
                        );
                        slot.connections.insert(client, accepted);
                        slot.connection_clients.insert(accepted.0, client);
                        accepted
                    }
                };
                if slot
                    .outstanding
                    .insert((connection, request.request_id), client)
                    .is_some()
                {
                    return Err(Violation::new(
                        "client protocol",
                        format!(
                            "request id {} sent twice on one connection to n{to}",
                            request.request_id
                        ),
                    ));
                }
                cores[shard as usize].on_client_request(connection, request);
                Ok(())
            }
            Envelope::Reply {
                from,
                client,
                response,
            } => self.with_clients(now, |clients, shared| {
                clients[client].on_reply(shared, from, response)
            }),
        }
    }

    /// Delivers the mesh messages of one node that are due.
    fn deliver_mesh(&mut self, index: usize) {
        let now = self.now;
        let slot = &mut self.nodes[index];
        let Some(cores) = slot.cores.as_mut() else {
            return;
        };
        while let Some(message) = slot.mesh.pop_due(now) {
            self.stats.mesh_messages += 1;
            let to = message.to_shard as usize;
            cores[to].on_mesh(message);
        }
    }

    /// Makes durable every pending batch of a node's shards whose fsync has finished, in
    /// order, and finishes the snapshot files whose write is done; tells the cores.
    fn complete_disks(&mut self, index: usize) -> Result<(), Violation> {
        let now = self.now;
        let slot = &mut self.nodes[index];
        let Some(cores) = slot.cores.as_mut() else {
            return Ok(());
        };
        for (shard, (core, disk)) in cores.iter_mut().zip(&mut slot.disks).enumerate() {
            let mut durable = None;
            while disk
                .pending
                .front()
                .is_some_and(|pending| pending.durable_at <= now)
            {
                let pending = disk.pending.pop_front().expect("checked above");
                let sequence = pending.batch.sequence;
                let records = pending.batch.records.len() as u32;
                disk.make_durable(pending.batch).map_err(|error| {
                    Violation::new(
                        "storage contract",
                        format!("n{}/s{shard}: {error}", slot.id),
                    )
                })?;
                self.trace.record(
                    now,
                    Event::BatchDurable {
                        node: slot.id,
                        shard: shard as u32,
                        records,
                    },
                );
                durable = Some(sequence);
            }
            if let Some(sequence) = durable {
                core.on_persisted(sequence);
                observe_core(&mut self.invariants, &mut self.trace, now, slot.id, core)?;
            }
            if let Some((group, snapshot_index, term)) = disk.finish_file(now) {
                core.on_snapshot_written(group, snapshot_index, term);
            }
        }
        Ok(())
    }

    /// Runs one shard's turns and carries out their output the way the server's driver
    /// does: installed snapshot files, messages, mesh, replies, then the log batch and the
    /// local snapshot file.
    fn run_turns(&mut self, index: usize, shard: usize) -> Result<(), Violation> {
        let now = self.now;
        for _ in 0..READY_ROUNDS_MAX {
            let slot = &mut self.nodes[index];
            let node = slot.id;
            let Some(cores) = slot.cores.as_mut() else {
                return Ok(());
            };
            let core = &mut cores[shard];
            if !core.has_work() {
                return Ok(());
            }
            // The entries this turn will apply (committed, durable, not yet applied), as
            // the state machine safety check remembers them: the turn may compact them away.
            let mut to_apply: Vec<(GroupId, (u64, u64, u64))> = Vec::new();
            let groups = core.groups();
            for group in groups.group_ids() {
                let log = groups.raft(group).expect("listed").log();
                let last = log.committed.min(log.persisted());
                for index in log.applied + 1..=last {
                    let entry = log
                        .entry_at(index)
                        .expect("unapplied entries are in the log");
                    self.invariants.committed_entry(group, entry)?;
                    to_apply.push((group, (entry.index, entry.term, payload_hash(entry))));
                }
            }
            let mut output = core.turn();
            for (group, applied_entry) in to_apply {
                let applied = core.groups().raft(group).expect("member").log().applied;
                if applied_entry.0 <= applied {
                    self.invariants.applied(node, group, applied_entry)?;
                }
            }
            let disk = &mut slot.disks[shard];
            for (group, snapshot) in std::mem::take(&mut output.installs) {
                self.stats.snapshots_installed += 1;
                self.trace.record(
                    now,
                    Event::SnapshotInstalled {
                        node,
                        group,
                        index: snapshot.meta.index,
                        term: snapshot.meta.term,
                    },
                );
                self.invariants.snapshot_installed(
                    node,
                    group,
                    snapshot.meta.index,
                    snapshot.meta.term,
                )?;
                disk.write_installed(group, &snapshot);
            }
            send_messages(
                &mut self.network,
                &mut self.rng,
                &mut self.trace,
                &mut self.stats,
                now,
                node,
                std::mem::take(&mut output.messages),
            );
            for message in std::mem::take(&mut output.mesh) {
                let at = now + self.rng.between(0, self.params.mesh_delay_steps_max);
                let channel_max = self.params.mesh_channel_messages_max;
                if let Err(message) = slot.mesh.send(message, at, channel_max) {
                    self.stats.mesh_refused += 1;
                    self.trace.record(
                        now,
                        Event::MeshRefused {
                            node,
                            from_shard: message.from_shard,
                            to_shard: message.to_shard,
                        },
                    );
                    core.on_mesh_undeliverable(message);
                }
            }
            for reply in std::mem::take(&mut output.replies) {
                let key = (reply.connection, reply.response.request_id);
                let Some(client) = slot.outstanding.remove(&key) else {
                    return Err(Violation::new(
                        "one reply per request",
                        format!(
                            "n{node}/s{shard} answered request {} on connection {}, which \
                             it does not hold (or answered already)",
                            key.1, key.0
                        ),
                    ));
                };
                debug_assert_eq!(
                    slot.connection_clients.get(&reply.connection),
                    Some(&client)
                );
                let envelope = Envelope::Reply {
                    from: node,
                    client,
                    response: reply.response,
                };
                if self.network.send_client(&mut self.rng, now, envelope) == SendOutcome::Lost {
                    self.trace.record(
                        now,
                        Event::ReplyLost {
                            request: key.1,
                            node,
                        },
                    );
                }
            }
            if let Some(batch) = output.batch.take() {
                let durable_at = now + self.rng.between(0, self.params.fsync_steps_max);
                self.trace.record(
                    now,
                    Event::BatchQueued {
                        node,
                        shard: shard as u32,
                        records: batch.records.len() as u32,
                        durable_at,
                    },
                );
                disk.pending.push_back(PendingBatch { durable_at, batch });
            }
            if let Some(job) = output.snapshot_job.take() {
                self.stats.compactions += 1;
                let done_at = now + self.rng.between(0, SNAPSHOT_FILE_STEPS_MAX);
                disk.start_file(&job, done_at).map_err(|error| {
                    Violation::new("storage contract", format!("n{node}/s{shard}: {error}"))
                })?;
            }
            observe_core(&mut self.invariants, &mut self.trace, now, node, core)?;
        }
        Ok(())
    }

    fn run_clients(&mut self, phase: Phase) -> Result<(), Violation> {
        let issue_new = phase == Phase::Main;
        let mut outgoing: Vec<(usize, Outgoing)> = Vec::new();
        let now = self.now;
        self.with_clients(now, |clients, shared| {
            for (index, client) in clients.iter_mut().enumerate() {
                if let Some(request) = client.poll(shared, issue_new)? {
                    outgoing.push((index, request));
                }
            }
            Ok::<(), Violation>(())
        })?;
        for (client, Outgoing { to, request }) in outgoing {
            let request_id = request.request_id;
            let envelope = Envelope::Request {
                client,
                to,
                request,
            };
            if self.network.send_client(&mut self.rng, self.now, envelope) == SendOutcome::Lost {
                self.trace.record(
                    self.now,
                    Event::RequestLost {
                        request: request_id,
                        node: to,
                        reason: LossReason::Loss,
                    },
                );
            }
        }
        Ok(())
    }

    fn check_log_matching(&self) -> Result<(), Violation> {
        let shards = self.params.shards;
        for (&group, members) in &self.members {
            let logs: Vec<(NodeId, &RaftLog)> = members
                .iter()
                .filter_map(|&member| Some((member, self.node(member).raft(group, shards)?.log())))
                .collect();
            Invariants::log_matching(group, &logs)?;
        }
        Ok(())
    }

    // ----- faults ------------------------------------------------------------------------

    fn inject_faults(&mut self) -> Result<(), Violation> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].cores.is_none() && self.now >= self.nodes[index].restart_at {
                self.restart(index)?;
            }
        }
        for node in std::mem::take(&mut self.invariants.new_leaders) {
            if self.rng.chance(self.params.new_leader_crash_probability) {
                let at = self.now + self.rng.between(0, NEW_LEADER_CRASH_STEPS_MAX);
                self.planned_crashes.push((at, (node - 1) as usize));
            }
        }
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) =
            self.planned_crashes.iter().partition(|&&(at, _)| at <= now);
        self.planned_crashes = later;
        for (_, index) in due {
            if self.nodes[index].cores.is_some() {
                self.crash(index)?;
            }
        }
        if self.rng.chance(self.params.crash_probability) {
            if let Some(victim) = self.pick_crash_victim() {
                self.crash(victim)?;
            }
        }
        if self.rng.chance(self.params.transfer_probability) {
            self.transfer_leadership();
        }
        if let Some(heal_at) = self.partition_heal_at {
            if self.now >= heal_at {
                self.network.heal();
                self.partition_heal_at = None;
                self.trace.record(self.now, Event::PartitionHealed);
            }
        } else if self.rng.chance(self.params.partition_probability) {
            self.start_partition();
        }
        Ok(())
    }

    /// Half the time a leader with writes not yet durable (mid-replication), else any
    /// node that is up.
    fn pick_crash_victim(&mut self) -> Option<usize> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&index| self.nodes[index].cores.is_some())
            .collect();
        if up.is_empty() {
            return None;
        }
        let leaders_mid_write: Vec<usize> = up
            .iter()
            .copied()
            .filter(|&index| {
                let slot = &self.nodes[index];
                slot.has_pending_writes() && slot.leads_any()
            })
            .collect();
        if !leaders_mid_write.is_empty() && self.rng.chance(0.5) {
            return Some(leaders_mid_write[self.rng.index(leaders_mid_write.len())]);
        }
        Some(up[self.rng.index(up.len())])
    }

    fn crash(&mut self, index: usize) -> Result<(), Violation> {
        let down_steps = self.rng.between(10, self.params.down_steps_max);
        let mut kept_total = 0;
        let mut lost_total = 0;
        for shard in 0..self.nodes[index].disks.len() {
            let pending = self.nodes[index].disks[shard].pending.len();
            let kept = self.rng.between(0, pending as u64) as usize;
            let file_landed = self.rng.chance(0.5);
            let slot = &mut self.nodes[index];
            let lost = slot.disks[shard]
                .crash(kept, file_landed)
                .map_err(|error| {
                    Violation::new(
                        "storage contract",
                        format!("n{}/s{shard}: {error}", slot.id),
                    )
                })?;
            kept_total += kept;
            lost_total += lost;
        }
        let slot = &mut self.nodes[index];
        slot.cores = None;
        slot.mesh = Mesh::default();
        slot.connections.clear();
        slot.connection_clients.clear();
        slot.outstanding.clear();
        slot.restart_at = self.now + down_steps;
        self.stats.crashes += 1;
        self.stats.batches_lost += lost_total as u64;
        self.trace.record(
            self.now,
            Event::Crash {
                node: slot.id,
                batches_kept: kept_total as u32,
                batches_lost: lost_total as u32,
            },
        );
        // The clients' connections to the node are gone, and the answers they waited for.
        let node = slot.id;
        self.with_clients(self.now, |clients, shared| {
            for client in clients {
                client.on_node_crashed(shared, node)?;
            }
            Ok(())
        })
    }

    fn restart(&mut self, index: usize) -> Result<(), Violation> {
        self.start_node(index)?;
        self.stats.restarts += 1;
        let id = self.nodes[index].id;
        self.trace.record(self.now, Event::Restart { node: id });
        observe_node(
            &mut self.invariants,
            &mut self.trace,
            self.now,
            &self.nodes[index],
        )
    }

    fn start_partition(&mut self) {
        let node_count = self.nodes.len();
        let mut order: Vec<NodeId> = (1..=node_count as NodeId).collect();
        // Fisher-Yates, so every side is equally likely.
        for position in (1..order.len()).rev() {
            let other = self.rng.index(position + 1);
            order.swap(position, other);
        }
        let kind = match self.rng.below(4) {
            0 => PartitionKind::Split,
            1 => PartitionKind::LeaderIsolated,
            2 => PartitionKind::Asymmetric,
            _ => PartitionKind::Bridge,
        };
        match kind {
            PartitionKind::Split => {
                let cut = self.rng.between(1, node_count as u64 - 1) as usize;
                let (left, right) = order.split_at(cut);
                self.network.cut_between(left, right);
            }
            PartitionKind::LeaderIsolated => {
                let group = self.rng.below(self.params.groups as u64);
                let leader = self.current_leader(group).unwrap_or(order[0]);
                let others: Vec<NodeId> = order
                    .iter()
                    .copied()
                    .filter(|&node| node != leader)
                    .collect();
                self.network.cut_between(&[leader], &others);
            }
            PartitionKind::Asymmetric => {
                // order[0] still hears everyone; some others stop hearing it.
                let deaf = self.rng.between(1, node_count as u64 - 1) as usize;
                let speaker = order[0];
                for &listener in &order[1..=deaf] {
                    self.network.cut_link(speaker, listener);
                }
            }
            PartitionKind::Bridge => {
                // order[0] is the bridge; the rest split into two non-empty sides.
                let rest = &order[1..];
                let cut = self.rng.between(1, rest.len() as u64 - 1) as usize;
                let (left, right) = rest.split_at(cut);
                self.network.cut_between(left, right);
            }
        }
        let heal_at = self.now + self.rng.between(50, self.params.partition_steps_max);
        self.partition_heal_at = Some(heal_at);
        self.stats.partitions += 1;
        self.trace.record(
            self.now,
            Event::PartitionStart {
                kind,
                cut_links: self.network.cut_mask(),
                heal_at,
            },
        );
    }

    /// Asks the leader of a random group to hand leadership to a random other member.
    fn transfer_leadership(&mut self) {
        let group = self.rng.below(self.params.groups as u64);
        let Some(leader) = self.current_leader(group) else {
            return;
        };
        let others: Vec<NodeId> = self.members[&group]
            .iter()
            .copied()
            .filter(|&member| member != leader)
            .collect();
        let to = others[self.rng.index(others.len())];
        let shard = shard_of(group, self.params.shards) as usize;
        let core = &mut self.nodes[(leader - 1) as usize]
            .cores
            .as_mut()
            .expect("a leader is up")[shard];
        let accepted = core.transfer_leader(group, to);
        self.stats.transfers += 1;
        self.trace.record(
            self.now,
            Event::TransferLeader {
                group,
                from: leader,
                to,
                accepted,
            },
        );
    }

    /// The node that leads `group` in the highest term, if any.
    fn current_leader(&self, group: GroupId) -> Option<NodeId> {
        let shards = self.params.shards;
        self.members[&group]
            .iter()
            .filter_map(|&member| {
                let raft = self.node(member).raft(group, shards)?;
                raft.is_leader().then_some((raft.term(), member))
            })
            .max()
            .map(|(_, member)| member)
    }
}
