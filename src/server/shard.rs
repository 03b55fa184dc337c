//! One shard's event loop: everything that happened since the last turn is stepped into
//! the shard's Raft groups, then one turn collects every group's Ready, writes one WAL
//! batch, sends one frame per peer, applies, and answers. Single-threaded (one glommio
//! executor); state is shared between the shard's tasks through `Rc<RefCell<..>>`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::timer::Timer;

use super::config::ServerConfig;
use super::mesh::{MeshEnds, MeshMessage, MeshSenders};
use super::requests::Requests;
use super::snapshots::SnapshotFiles;
use super::storage;
use crate::codec::PeerBatch;
use crate::keyspace::shard_of;
use crate::multiraft::{GroupId, MultiRaft, PersistToken, ShardConfig};
use crate::raft::{self, ConfState, Message};
use crate::transport::{Transport, TransportConfig};
use crate::wal::{self, Ticket, Wal, WalConfig};

/// Events waiting for the loop, across all sources (bounded: producers wait when full).
pub const EVENTS_QUEUED_MAX: usize = 4096;
/// Events handled before a turn runs, so a flood cannot starve Ready processing.
pub const EVENTS_PER_TURN_MAX: usize = 1024;
/// Messages waiting in a mesh channel to one other shard.
pub const MESH_CHANNEL_MESSAGES_MAX: usize = 4096;
/// Ticks between checks for groups that pin old WAL segments.
pub const SNAPSHOT_CHECK_TICKS: u64 = 20;
/// Ticks a shutting-down shard waits for its leaderships to move away.
pub const SHUTDOWN_TRANSFER_TICKS_MAX: u64 = 40;

/// Something the loop must handle.
#[derive(Debug)]
pub enum Event {
    /// Raft messages from a peer shard of another node.
    Peer(PeerBatch),
    /// A client request decoded by a connection task.
    Client(super::requests::ClientRequest),
    /// A message from another shard of this node.
    Mesh(MeshMessage),
    /// A WAL batch is durable: these messages may leave, and Raft learns it.
    Persisted {
        token: PersistToken,
        messages: Vec<(GroupId, Message)>,
    },
    /// The snapshot file of a local snapshot is durable (see [`super::snapshots`]).
    SnapshotWritten {
        group: GroupId,
        index: u64,
        term: u64,
    },
    Tick,
}

/// The shard's state, shared by its tasks.
pub struct Shard {
    pub index: u32,
    pub config: Arc<ServerConfig>,
    pub raft: MultiRaft,
    pub wal: Wal,
    pub transport: Transport,
    pub requests: Requests,
    pub mesh: MeshSenders,
    pub events: Rc<LocalSender<Event>>,
    pub snapshots: SnapshotFiles,
    last_ticket: Option<Ticket>,
    ticks: u64,
    shutdown_started_tick: Option<u64>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Shard")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// The groups a shard runs.
pub fn groups_of_shard(config: &ServerConfig, shard: u32) -> Vec<GroupId> {
    (0..config.groups)
        .filter(|&group| shard_of(group, config.shards) == shard)
        .collect()
}

/// Runs shard `index` until shutdown: opens its WAL, recovers its groups, starts its
/// transport and client listener, and loops.
pub async fn run_shard(
    index: u32,
    config: Arc<ServerConfig>,
    mesh: MeshEnds,
    shutdown: Arc<AtomicBool>,
) -> Result<(), String> {
    let (mesh_senders, mesh_receivers) = mesh.connect().await;
    let shard_dir = config.shard_dir(index);
    let wal_config = wal_config(&config);
    let (wal, recovery) = Wal::open(&shard_dir, wal_config)
        .await
        .map_err(|error| format!("shard {index}: opening the WAL: {error}"))?;
    if let Some(torn) = &recovery.torn_tail {
        eprintln!("corekv: shard {index}: truncated a torn WAL tail: {torn:?}");
    }
    let groups = groups_of_shard(&config, index);
    let voters: Vec<raft::NodeId> = config.members.keys().copied().collect();
    let conf = ConfState::with_voters(&voters);
    let starts = storage::recover_groups(&wal, &recovery, &groups, &conf).await?;
    let mut shard_config = ShardConfig::new(config.node_id);
    shard_config.raft.election_timeout_ticks = config.election_ticks;
    shard_config.raft.heartbeat_timeout_ticks = config.heartbeat_ticks;
    shard_config.raft.seed = config.node_id ^ (u64::from(index) << 32) ^ config.cluster_id;
    shard_config.compact_entries = config.snapshot_entries;
    let raft = MultiRaft::new(shard_config, starts)?;

    let peers = config
        .members
        .values()
        .filter(|member| member.id != config.node_id)
        .map(|member| (member.id, shard_address(member.peer, index)))
        .collect();
    let transport_config = TransportConfig::new(
        config.cluster_id,
        config.node_id,
        index,
        shard_address(config.listen_peer, index),
        peers,
    );
    let (transport, inbound) = Transport::start(transport_config)
        .map_err(|error| format!("shard {index}: peer listener: {error}"))?;

    let (events, receiver) = local_channel::new_bounded(EVENTS_QUEUED_MAX);
    let events = Rc::new(events);
    let requests = Requests::new(index, config.clone());
    let shard = Rc::new(RefCell::new(Shard {
        index,
        config: config.clone(),
        raft,
        wal,
        transport,
        requests,
        mesh: mesh_senders,
        events: events.clone(),
        snapshots: SnapshotFiles::new(shard_dir),
        last_ticket: None,
        ticks: 0,
        shutdown_started_tick: None,
    }));

    spawn_pump_peer(inbound, events.clone());
    spawn_pump_mesh(mesh_receivers, events.clone());
    spawn_ticker(config.tick, events.clone());
    let listener = super::requests::start_client_listener(shard.clone()).map_err(|error| {
        format!(
            "shard {index}: client listener on {}: {error}",
            config.listen_client
        )
    })?;

    let result = run_loop(shard.clone(), receiver, shutdown).await;
    drop(listener);
    let shard = Rc::try_unwrap(shard).map(RefCell::into_inner);
    if let Ok(shard) = shard {
        shard.transport.close().await;
        if let Err(error) = shard.wal.close().await {
            wal::fatal(&error);
        }
    }
    result
}

/// The WAL settings of every shard of the node.
fn wal_config(config: &ServerConfig) -> WalConfig {
    WalConfig {
        segment_bytes: config.wal_segment_bytes,
        batch_bytes_max: super::config::WAL_BATCH_BYTES_MAX,
        ..WalConfig::default()
    }
}

/// The peer address of `shard`: shard `s` listens on the first peer port plus `s`.
pub fn shard_address(first: std::net::SocketAddr, shard: u32) -> std::net::SocketAddr {
    std::net::SocketAddr::new(first.ip(), first.port() + shard as u16)
}

async fn run_loop(
    shard: Rc<RefCell<Shard>>,
    receiver: LocalReceiver<Event>,
    shutdown: Arc<AtomicBool>,
) -> Result<(), String> {
    loop {
        let Some(event) = receiver.recv().await else {
            return Ok(());
        };
        shard.borrow_mut().handle(event);
        for _ in 1..EVENTS_PER_TURN_MAX {
            match futures_lite::future::poll_once(receiver.recv()).await {
                Some(Some(event)) => shard.borrow_mut().handle(event),
                _ => break,
            }
        }
        if shutdown.load(Ordering::Relaxed) && shard.borrow_mut().shutdown_step() {
            Shard::turn(&shard).await;
            Shard::drain_wal(&shard).await;
            return Ok(());
        }
        Shard::turn(&shard).await;
    }
}

fn spawn_pump_peer(inbound: LocalReceiver<PeerBatch>, events: Rc<LocalSender<Event>>) {
    glommio::spawn_local(async move {
        while let Some(batch) = inbound.recv().await {
            if events.send(Event::Peer(batch)).await.is_err() {
                return;
            }
        }
    })
    .detach();
}

fn spawn_pump_mesh(
    receivers: Vec<(u32, ConnectedReceiver<MeshMessage>)>,
    events: Rc<LocalSender<Event>>,
) {
    for (_, receiver) in receivers {
        let events = events.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                if events.send(Event::Mesh(message)).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
}

fn spawn_ticker(tick: Duration, events: Rc<LocalSender<Event>>) {
    glommio::spawn_local(async move {
        loop {
            Timer::new(tick).await;
            if events.send(Event::Tick).await.is_err() {
                return;
            }
        }
    })
    .detach();
}

impl Shard {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Peer(batch) => {
                for (group, message) in batch.messages {
                    self.raft.step(group, message);
                }
            }
            Event::Client(request) => {
                let Shard {
                    requests,
                    raft,
                    mesh,
                    ..
                } = self;
                requests.on_client_request(request, raft, mesh);
            }
            Event::Mesh(message) => {
                let Shard {
                    requests,
                    raft,
                    mesh,
                    ..
                } = self;
                requests.on_mesh_message(message, raft, mesh);
            }
            Event::Persisted { token, messages } => {
                for (group, message) in messages {
                    self.transport.send(group, message);
                }
                self.transport.flush();
                self.raft.on_persisted(token);
            }
            Event::Tick => {
                self.ticks += 1;
                self.raft.tick();
                if self.ticks % SNAPSHOT_CHECK_TICKS == 0 {
                    // The WAL deletes a segment only once no group needs it; a group
                    // whose old entries keep segments alive snapshots now.
                    for group in self.wal.groups_to_snapshot() {
                        if !self.snapshots.is_pending(group) {
                            self.raft.request_snapshot(group);
                        }
                    }
                }
                self.requests.on_tick(self.ticks, &self.mesh);
            }
            Event::SnapshotWritten { group, index, term } => {
                self.snapshots.on_written(group, index, term, &self.wal);
                self.snapshots.start_next(&self.events);
            }
        }
    }

    /// One turn: persist, send, apply, answer.
    async fn turn(shard: &Rc<RefCell<Shard>>) {
        let (ready, installs) = {
            let mut this = shard.borrow_mut();
            if !this.raft.has_ready() && !this.snapshots.has_compactions() {
                return;
            }
            let ready = this.raft.ready();
            let installs: Vec<(GroupId, raft::Snapshot)> = ready
                .writes
                .iter()
                .filter_map(|write| Some((write.group, write.snapshot.clone()?)))
                .collect();
            (ready, installs)
        };
        // Installed snapshots' files first: the WAL records written below point at them.
        if !installs.is_empty() {
            let groups: Vec<GroupId> = installs.iter().map(|(group, _)| *group).collect();
            let writer = shard.borrow_mut().snapshots.prepare_install(&groups);
            writer.write_installed(installs).await;
        }
        let (records, token, persisted_messages) = {
            let mut this = shard.borrow_mut();
            // Compactions whose snapshot files became durable go first: they are older
            // than anything this turn resets.
            let mut records = this.snapshots.take_compactions();
            records.extend(storage::records_for(&ready.writes));
            for taken in ready.snapshots {
                this.snapshots.queue(taken.group, taken.snapshot);
            }
            let events = this.events.clone();
            this.snapshots.start_next(&events);
            for (group, message) in ready.messages {
                this.transport.send(group, message);
            }
            this.transport.flush();
            let Shard { requests, mesh, .. } = &mut *this;
            for (request, reply) in ready.replies {
                requests.on_reply(request, reply, mesh);
            }
            (records, ready.token, ready.persisted_messages)
        };
        let wal = shard.borrow().wal.clone();
        let mut ticket = shard.borrow().last_ticket;
        // A turn may hold more than one batch (many groups, big entries): its records go
        // in order, and the last batch's ticket covers the ones before it.
        let limits = wal_config(&shard.borrow().config);
        let batch_records_max = limits.batch_records_max as usize;
        for submission in storage::submissions(records, limits.batch_bytes_max, batch_records_max) {
            match wal.submit(submission).await {
                Ok(submitted) => {
                    shard.borrow_mut().last_ticket = Some(submitted);
                    ticket = Some(submitted);
                }
                Err(error) => wal::fatal(&error),
            }
        }
        wal.flush();
        let events = shard.borrow().events.clone();
        glommio::spawn_local(async move {
            if let Some(ticket) = ticket {
                if let Err(error) = wal.wait(ticket).await {
                    wal::fatal(&error);
                }
            }
            let _ = events
                .send(Event::Persisted {
                    token,
                    messages: persisted_messages,
                })
                .await;
        })
        .detach();
    }

    /// Advances a graceful shutdown; true once the shard may stop.
    fn shutdown_step(&mut self) -> bool {
        let started = *self.shutdown_started_tick.get_or_insert_with(|| {
            self.requests.stop_accepting();
            self.ticks
        });
        let led = self.raft.led_groups();
        if !led.is_empty() && self.ticks < started + SHUTDOWN_TRANSFER_TICKS_MAX {
            // Hand each group to another member so clients see a short leader change
            // instead of an election timeout.
            let others: Vec<raft::NodeId> = self
                .config
                .members
                .keys()
                .copied()
                .filter(|&id| id != self.config.node_id)
                .collect();
            for (k, group) in led.iter().enumerate() {
                if let Some(&target) = others.get(k % others.len().max(1)) {
                    let _ = self.raft.transfer_leader(*group, target);
                }
            }
            return false;
        }
        self.requests.fail_all_shutting_down(&self.mesh);
        true
    }

    async fn drain_wal(shard: &Rc<RefCell<Shard>>) {
        let (wal, ticket, snapshot_writer) = {
            let this = shard.borrow();
            (
                this.wal.clone(),
                this.last_ticket,
                this.snapshots.file_writer(),
            )
        };
        snapshot_writer.idle().await;
        if let Some(ticket) = ticket {
            if let Err(error) = wal.wait(ticket).await {
                wal::fatal(&error);
            }
        }
    }
}
