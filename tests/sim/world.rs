//! One simulated run: a cluster of nodes (each one `MultiRaft` with several groups, its
//! KV stores, and a disk), the network, the clients, the fault schedule, and the checks,
//! all advanced one discrete step at a time from one seeded generator.

use std::collections::BTreeMap;

use corekv::check::{self, CheckOptions, CheckResult, History};
use corekv::multiraft::{GroupId, MultiRaft, RequestId, ShardConfig};
use corekv::raft::log::RaftLog;
use corekv::raft::{ConfState, Entry, Message, NodeId};

use crate::client::{Client, Outgoing, Role, Shared};
use crate::disk::{Disk, PendingBatch};
use crate::faults::{draw_params, members_of, nodes_of_seed, Broken, FaultMix, Params};
use crate::invariants::{Invariants, Violation};
use crate::network::{
    Envelope, Network, NetworkFaults, RequestBody, SendOutcome, IN_FLIGHT_MESSAGES_MAX,
};
use crate::report::{Failure, RunConfig, RunReport, Stats, Verdict};
use crate::rng::SimRng;
use crate::trace::{hash_bytes, Event, LossReason, PartitionKind, Trace};

/// Readies one node may produce in one step (it continues in the next step).
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

/// One node: its Raft groups (when up), its disk, and the client requests it holds.
#[derive(Debug)]
struct NodeSlot {
    id: NodeId,
    groups: Vec<GroupId>,
    shard: Option<MultiRaft>,
    disk: Disk,
    /// Requests handed to the shard and not yet answered, with the client that sent them.
    requests: BTreeMap<RequestId, usize>,
    restart_at: u64,
    /// This node's clock: it ticks every `tick_steps` steps, the next time at `next_tick`.
    tick_steps: u64,
    next_tick: u64,
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
    invariants: Invariants,
    trace: Trace,
    stats: Stats,
    next_request_id: RequestId,
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

/// Checks every group of one node for a (new) leader.
fn observe_node(
    invariants: &mut Invariants,
    trace: &mut Trace,
    now: u64,
    slot: &NodeSlot,
) -> Result<(), Violation> {
    let Some(shard) = slot.shard.as_ref() else {
        return Ok(());
    };
    for &group in &slot.groups {
        observe_group(invariants, trace, now, slot.id, group, shard)?;
    }
    Ok(())
}

fn observe_group(
    invariants: &mut Invariants,
    trace: &mut Trace,
    now: u64,
    node: NodeId,
    group: GroupId,
    shard: &MultiRaft,
) -> Result<(), Violation> {
    let raft = shard.raft(group).expect("a member holds its group");
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
            .map(|key| hash_bytes(key) % params.groups as u64)
            .collect();
        let echo = config.echo_trace;
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
            invariants: Invariants::default(),
            trace: Trace::new(echo),
            stats: Stats::default(),
            next_request_id: 0,
            next_client_id: 0,
        };
        for id in 1..=node_count as NodeId {
            let groups: Vec<GroupId> = world
                .members
                .iter()
                .filter(|(_, members)| members.contains(&id))
                .map(|(&group, _)| group)
                .collect();
            let disk = Disk::new(&groups);
            let tick_steps = world
                .rng
                .between(world.params.tick_steps_min, world.params.tick_steps_max);
            world.nodes.push(NodeSlot {
                id,
                groups,
                shard: None,
                disk,
                requests: BTreeMap::new(),
                restart_at: 0,
                tick_steps,
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

    fn shard_config(&mut self, node: NodeId) -> ShardConfig {
        let mut config = ShardConfig::new(node);
        config.compact_entries = self.params.compact_entries;
        config.proposals_pending_max = self.params.proposals_pending_max;
        config.reads_pending_max = self.params.reads_pending_max;
        config.raft.seed = self.rng.next_u64();
        config.raft.snapshot_chunk_bytes = self.params.snapshot_chunk_bytes;
        config.raft.append_bytes_max = self.params.append_bytes_max;
        config.raft.inflight_messages_max = self.params.inflight_messages_max;
        config.raft.unsafe_commit_old_terms = self.config.broken == Broken::CommitOldTerms;
        config
    }

    /// Starts (or restarts) a node from what its disk holds.
    fn start_node(&mut self, index: usize) -> Result<(), Violation> {
        let id = self.nodes[index].id;
        let config = self.shard_config(id);
        let nodes = self.nodes.len();
        let starts = self.nodes[index]
            .disk
            .group_starts(|group| ConfState::with_voters(&members_of(group, nodes)));
        let shard = MultiRaft::new(config, starts).map_err(|error| {
            Violation::new(
                "restart",
                format!("n{id} does not start from its durable state: {error}"),
            )
        })?;
        self.nodes[index].shard = Some(shard);
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
            if self.nodes[index].shard.is_none() {
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
        };
        run(&mut self.clients, &mut shared)
    }

    /// Waits until every replica of every group holds and applied the same log, then
    /// compares their state machines and logs.
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
        for (&group, members) in &self.members {
            let first = members[0];
            let reference = self.nodes[(first - 1) as usize]
                .shard
                .as_ref()
                .and_then(|shard| shard.store(group))
                .expect("every node is up after healing");
            for &member in &members[1..] {
                let store = self.nodes[(member - 1) as usize]
                    .shard
                    .as_ref()
                    .and_then(|shard| shard.store(group))
                    .expect("every node is up after healing");
                if store != reference {
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

    fn converged(&self) -> bool {
        self.members.iter().all(|(&group, members)| {
            let positions: Vec<(u64, u64, u64)> = members
                .iter()
                .filter_map(|&member| {
                    let shard = self.nodes[(member - 1) as usize].shard.as_ref()?;
                    let log = shard.raft(group)?.log();
                    Some((log.last_index(), log.committed, log.applied))
                })
                .collect();
            positions.len() == members.len()
                && positions
                    .iter()
                    .all(|&(last, committed, applied)| last == committed && committed == applied)
                && positions.windows(2).all(|pair| pair[0] == pair[1])
                && self.has_leader(group)
        })
    }

    fn has_leader(&self, group: GroupId) -> bool {
        self.members[&group].iter().any(|&member| {
            self.nodes[(member - 1) as usize]
                .shard
                .as_ref()
                .and_then(|shard| shard.raft(group))
                .is_some_and(|raft| raft.is_leader())
        })
    }

    fn group_positions(&self) -> String {
        let mut out = String::new();
        for (&group, members) in &self.members {
            out.push_str(&format!("g{group}:"));
            for &member in members {
                match self.nodes[(member - 1) as usize]
                    .shard
                    .as_ref()
                    .and_then(|shard| shard.raft(group))
                {
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
            self.complete_fsyncs(index)?;
        }
        for slot in &mut self.nodes {
            if slot.next_tick > self.now {
                continue;
            }
            slot.next_tick = self.now + slot.tick_steps;
            if let Some(shard) = slot.shard.as_mut() {
                shard.tick();
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
            self.drain_readies(index)?;
        }
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
        match envelope {
            Envelope::Peer {
                from,
                to,
                group,
                message,
            } => {
                let slot = &mut self.nodes[(to - 1) as usize];
                let reason = if slot.shard.is_none() {
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
                let shard = slot.shard.as_mut().expect("checked above");
                shard.step(group, message);
                observe_group(&mut self.invariants, &mut self.trace, now, to, group, shard)
            }
            Envelope::Request {
                client,
                to,
                request,
                group,
                body,
            } => {
                let slot = &mut self.nodes[(to - 1) as usize];
                let Some(shard) = slot.shard.as_mut() else {
                    self.trace.record(
                        now,
                        Event::RequestLost {
                            request,
                            node: to,
                            reason: LossReason::Down,
                        },
                    );
                    return Ok(());
                };
                slot.requests.insert(request, client);
                match body {
                    RequestBody::Write(command) => shard.propose(request, group, &command),
                    RequestBody::Read(op) => shard.read(request, group, op, false),
                }
                Ok(())
            }
            Envelope::Reply {
                from,
                client,
                request,
                reply,
            } => self.with_clients(now, |clients, shared| {
                clients[client].on_reply(shared, from, request, reply)
            }),
        }
    }

    /// Makes durable every pending batch whose fsync has finished, in order, then sends
    /// what waited for it and tells the node.
    fn complete_fsyncs(&mut self, index: usize) -> Result<(), Violation> {
        let now = self.now;
        loop {
            let slot = &mut self.nodes[index];
            let Some(shard) = slot.shard.as_mut() else {
                return Ok(());
            };
            let due = slot
                .disk
                .pending
                .front()
                .is_some_and(|batch| batch.durable_at <= now);
            if !due {
                return Ok(());
            }
            let batch = slot.disk.pending.pop_front().expect("checked above");
            let writes = batch.writes.len() as u32;
            slot.disk
                .make_durable(batch.writes, batch.snapshots)
                .map_err(|error| {
                    Violation::new("storage contract", format!("n{}: {error}", slot.id))
                })?;
            self.trace.record(
                now,
                Event::BatchDurable {
                    node: slot.id,
                    writes,
                },
            );
            if self.config.broken != Broken::AckBeforeFsync {
                send_messages(
                    &mut self.network,
                    &mut self.rng,
                    &mut self.trace,
                    &mut self.stats,
                    now,
                    slot.id,
                    batch.persisted_messages,
                );
            }
            shard.on_persisted(batch.token);
            observe_node(&mut self.invariants, &mut self.trace, now, slot)?;
        }
    }

    /// Runs a node's Readies: records what it applies, sends its messages and replies,
    /// and queues its writes as a WAL batch.
    fn drain_readies(&mut self, index: usize) -> Result<(), Violation> {
        let now = self.now;
        for _ in 0..READY_ROUNDS_MAX {
            let slot = &mut self.nodes[index];
            let node = slot.id;
            let Some(shard) = slot.shard.as_mut() else {
                return Ok(());
            };
            if !shard.has_ready() {
                return Ok(());
            }
            // The entries this Ready will apply: committed, durable, not yet applied.
            let mut to_apply: Vec<(GroupId, Vec<Entry>)> = Vec::new();
            for &group in &slot.groups {
                let log = shard.raft(group).expect("member").log();
                let last = log.committed.min(log.persisted());
                if last > log.applied {
                    let entries = log
                        .slice(log.applied + 1, last + 1, usize::MAX)
                        .expect("unapplied entries are in the log");
                    to_apply.push((group, entries));
                }
            }
            let ready = shard.ready();
            for (group, entries) in to_apply {
                let applied = shard.raft(group).expect("member").log().applied;
                for entry in entries.iter().filter(|entry| entry.index <= applied) {
                    self.invariants.applied(node, group, entry)?;
                }
            }
            for write in &ready.writes {
                if let Some(snapshot) = &write.snapshot {
                    self.stats.snapshots_installed += 1;
                    self.trace.record(
                        now,
                        Event::SnapshotInstalled {
                            node,
                            group: write.group,
                            index: snapshot.meta.index,
                            term: snapshot.meta.term,
                        },
                    );
                    self.invariants.snapshot_installed(
                        node,
                        write.group,
                        snapshot.meta.index,
                        snapshot.meta.term,
                    )?;
                }
            }
            self.stats.compactions += ready.snapshots.len() as u64;
            send_messages(
                &mut self.network,
                &mut self.rng,
                &mut self.trace,
                &mut self.stats,
                now,
                node,
                ready.messages,
            );
            for (request, reply) in ready.replies {
                let Some(client) = slot.requests.remove(&request) else {
                    return Err(Violation::new(
                        "one reply per request",
                        format!("n{node} answered request {request}, which it does not hold"),
                    ));
                };
                let envelope = Envelope::Reply {
                    from: node,
                    client,
                    request,
                    reply,
                };
                if self.network.send_client(&mut self.rng, now, envelope) == SendOutcome::Lost {
                    self.trace.record(now, Event::ReplyLost { request, node });
                }
            }
            let nothing_to_write = ready.writes.is_empty() && ready.snapshots.is_empty();
            if nothing_to_write && slot.disk.pending.is_empty() {
                // Nothing to make durable and nothing ahead of it: no fsync needed.
                send_messages(
                    &mut self.network,
                    &mut self.rng,
                    &mut self.trace,
                    &mut self.stats,
                    now,
                    node,
                    ready.persisted_messages,
                );
                shard.on_persisted(ready.token);
            } else {
                let mut persisted_messages = ready.persisted_messages;
                if self.config.broken == Broken::AckBeforeFsync {
                    send_messages(
                        &mut self.network,
                        &mut self.rng,
                        &mut self.trace,
                        &mut self.stats,
                        now,
                        node,
                        std::mem::take(&mut persisted_messages),
                    );
                }
                let durable_at = now + self.rng.between(0, self.params.fsync_steps_max);
                self.trace.record(
                    now,
                    Event::BatchQueued {
                        node,
                        writes: ready.writes.len() as u32,
                        entries: ready
                            .writes
                            .iter()
                            .map(|write| write.entries.len() as u32)
                            .sum(),
                        durable_at,
                    },
                );
                slot.disk.pending.push_back(PendingBatch {
                    durable_at,
                    writes: ready.writes,
                    snapshots: ready.snapshots,
                    persisted_messages,
                    token: ready.token,
                });
            }
            observe_node(&mut self.invariants, &mut self.trace, now, slot)?;
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
        for (client, request) in outgoing {
            let envelope = Envelope::Request {
                client,
                to: request.to,
                request: request.request,
                group: request.group,
                body: request.body,
            };
            if self.network.send_client(&mut self.rng, self.now, envelope) == SendOutcome::Lost {
                self.trace.record(
                    self.now,
                    Event::RequestLost {
                        request: request.request,
                        node: request.to,
                        reason: LossReason::Loss,
                    },
                );
            }
        }
        Ok(())
    }

    fn check_log_matching(&self) -> Result<(), Violation> {
        for (&group, members) in &self.members {
            let logs: Vec<(NodeId, &RaftLog)> = members
                .iter()
                .filter_map(|&member| {
                    let shard = self.nodes[(member - 1) as usize].shard.as_ref()?;
                    Some((member, shard.raft(group)?.log()))
                })
                .collect();
            Invariants::log_matching(group, &logs)?;
        }
        Ok(())
    }

    // ----- faults ------------------------------------------------------------------------

    fn inject_faults(&mut self) -> Result<(), Violation> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].shard.is_none() && self.now >= self.nodes[index].restart_at {
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
            if self.nodes[index].shard.is_some() {
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
            .filter(|&index| self.nodes[index].shard.is_some())
            .collect();
        if up.is_empty() {
            return None;
        }
        let leaders_mid_write: Vec<usize> = up
            .iter()
            .copied()
            .filter(|&index| {
                let slot = &self.nodes[index];
                !slot.disk.pending.is_empty()
                    && slot
                        .shard
                        .as_ref()
                        .is_some_and(|shard| !shard.led_groups().is_empty())
            })
            .collect();
        if !leaders_mid_write.is_empty() && self.rng.chance(0.5) {
            return Some(leaders_mid_write[self.rng.index(leaders_mid_write.len())]);
        }
        Some(up[self.rng.index(up.len())])
    }

    fn crash(&mut self, index: usize) -> Result<(), Violation> {
        let pending = self.nodes[index].disk.pending.len();
        let kept = self.rng.between(0, pending as u64) as usize;
        let down_steps = self.rng.between(10, self.params.down_steps_max);
        let slot = &mut self.nodes[index];
        let lost = slot.disk.crash(kept).map_err(|error| {
            Violation::new("storage contract", format!("n{}: {error}", slot.id))
        })?;
        slot.shard = None;
        slot.requests.clear();
        slot.restart_at = self.now + down_steps;
        self.stats.crashes += 1;
        self.stats.batches_lost += lost as u64;
        self.trace.record(
            self.now,
            Event::Crash {
                node: slot.id,
                batches_kept: kept as u32,
                batches_lost: lost as u32,
            },
        );
        Ok(())
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
        let shard = self.nodes[(leader - 1) as usize]
            .shard
            .as_mut()
            .expect("a leader is up");
        let accepted = shard.transfer_leader(group, to).is_ok();
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
        self.members[&group]
            .iter()
            .filter_map(|&member| {
                let raft = self.nodes[(member - 1) as usize]
                    .shard
                    .as_ref()?
                    .raft(group)?;
                raft.is_leader().then_some((raft.term(), member))
            })
            .max()
            .map(|(_, member)| member)
    }
}
