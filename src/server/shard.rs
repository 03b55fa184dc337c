//! One shard's event loop on its glommio executor: a thin driver around the pure shard
//! core ([`crate::shard::ShardCore`]). Tasks for the peer transport, the mesh, the
//! ticker and the client connections feed one bounded event queue; the loop hands every
//! event to the core, then runs one turn and carries out its output: snapshot files,
//! the WAL batch (one write, one fsync), frames to peers, mesh messages and replies.
//! Single-threaded; the driver's state is shared between its tasks through
//! `Rc<RefCell<..>>`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::timer::Timer;

use super::config::ServerConfig;
use super::connections::{self, ClientRequest, Connections};
use super::error::ServerError;
use super::mesh::{MeshEnds, MeshSenders};
use super::snapshots::SnapshotFiles;
use super::storage;
use crate::api::Member;
use crate::codec::PeerBatch;
use crate::multiraft::{GroupId, ShardConfig};
use crate::shard::{CoreConfig, MeshMessage, Output, Placement, ShardCore, StorageBatch};
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

/// Something the loop must handle.
#[derive(Debug)]
pub enum Event {
    /// Raft messages from a peer shard of another node.
    Peer(PeerBatch),
    /// A client request decoded by a connection task.
    Client(ClientRequest),
    /// A message from another shard of this node.
    Mesh(MeshMessage),
    /// Every WAL batch through this sequence is durable.
    Persisted {
        sequence: u64,
    },
    /// The snapshot file of a local snapshot is durable (see [`super::snapshots`]).
    SnapshotWritten {
        group: GroupId,
        index: u64,
        term: u64,
    },
    Tick,
}

/// The driver's state, shared by its tasks.
struct Shard {
    core: ShardCore,
    wal: Wal,
    wal_config: WalConfig,
    transport: Transport,
    connections: Rc<RefCell<Connections>>,
    mesh: MeshSenders,
    events: Rc<LocalSender<Event>>,
    files: SnapshotFiles,
    last_ticket: Option<Ticket>,
    ticks: u64,
}

/// The groups a shard runs.
pub fn groups_of_shard(config: &ServerConfig, shard: u32) -> Vec<GroupId> {
    core_config(config, shard).groups_here()
}

/// The shard core's settings for shard `shard` of this node.
fn core_config(config: &ServerConfig, shard: u32) -> CoreConfig {
    let voters = config.members.keys().copied().collect();
    let mut core = CoreConfig::new(
        config.node_id,
        shard,
        config.shards,
        config.groups,
        Placement::Everywhere(voters),
    );
    core.cluster_id = config.cluster_id;
    core.members = config
        .members
        .values()
        .map(|member| Member {
            node_id: member.id,
            client_address: member.client.to_string(),
            peer_address: member.peer.to_string(),
        })
        .collect();
    let mut raft = ShardConfig::new(config.node_id);
    raft.raft.election_timeout_ticks = config.election_ticks;
    raft.raft.heartbeat_timeout_ticks = config.heartbeat_ticks;
    raft.raft.seed = config.node_id ^ (u64::from(shard) << 32) ^ config.cluster_id;
    raft.compact_entries = config.snapshot_entries;
    core.raft = raft;
    core
}

/// Runs shard `index` until shutdown: opens its WAL, recovers its groups, starts its
/// transport and client listener, and loops.
pub async fn run_shard(
    index: u32,
    config: Arc<ServerConfig>,
    mesh: MeshEnds,
    shutdown: Arc<AtomicBool>,
) -> Result<(), ServerError> {
    let (mesh_senders, mesh_receivers) = mesh.connect().await;
    let shard_dir = config.shard_dir(index);
    let wal_config = wal_config(&config);
    let (wal, recovery) = Wal::open(&shard_dir, wal_config.clone())
        .await
        .map_err(|error| ServerError::Wal {
            shard: index,
            error,
        })?;
    if let Some(torn) = &recovery.torn_tail {
        eprintln!("corekv: shard {index}: truncated a torn WAL tail: {torn:?}");
    }
    let core_config = core_config(&config, index);
    let recovered = storage::recover_groups(&wal, &recovery, &core_config.groups_here())
        .await
        .map_err(|error| ServerError::Recovery {
            shard: index,
            error,
        })?;
    let core = ShardCore::open(core_config, recovered).map_err(|error| ServerError::Core {
        shard: index,
        error,
    })?;

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
    let (transport, inbound) =
        Transport::start(transport_config).map_err(|error| ServerError::Transport {
            shard: index,
            error,
        })?;

    let (events, receiver) = local_channel::new_bounded(EVENTS_QUEUED_MAX);
    let events = Rc::new(events);
    let connections = Rc::new(RefCell::new(Connections::default()));
    let shard = Rc::new(RefCell::new(Shard {
        core,
        wal,
        wal_config,
        transport,
        connections: connections.clone(),
        mesh: mesh_senders,
        events: events.clone(),
        files: SnapshotFiles::new(shard_dir),
        last_ticket: None,
        ticks: 0,
    }));

    spawn_pump_peer(inbound, events.clone());
    spawn_pump_mesh(mesh_receivers, events.clone());
    spawn_ticker(config.tick, events.clone());
    let listener = connections::start_listener(config.listen_client, connections, events).map_err(
        |error| ServerError::ClientListener {
            shard: index,
            address: config.listen_client,
            error,
        },
    )?;

    run_loop(&shard, receiver, shutdown).await;
    drop(listener);
    let shard = Rc::try_unwrap(shard).map(RefCell::into_inner);
    if let Ok(shard) = shard {
        shard.transport.close().await;
        if let Err(error) = shard.wal.close().await {
            wal::fatal(&error);
        }
    }
    Ok(())
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

/// The physical clock the core's ticks carry, in Unix milliseconds.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

async fn run_loop(
    shard: &Rc<RefCell<Shard>>,
    receiver: LocalReceiver<Event>,
    shutdown: Arc<AtomicBool>,
) {
    loop {
        // Wait for news unless the core still has output to hand out (a mesh message it
        // learned was undeliverable, say); then let the other tasks (ticker, sockets) run
        // first, since the loop would otherwise not wait for anything.
        if shard.borrow().core.has_work() {
            futures_lite::future::yield_now().await;
        } else {
            let Some(event) = receiver.recv().await else {
                return;
            };
            shard.borrow_mut().handle(event);
        }
        for _ in 1..EVENTS_PER_TURN_MAX {
            match futures_lite::future::poll_once(receiver.recv()).await {
                Some(Some(event)) => shard.borrow_mut().handle(event),
                _ => break,
            }
        }
        if shutdown.load(Ordering::Relaxed) && shard.borrow_mut().shutdown_step() {
            turn(shard).await;
            drain(shard).await;
            return;
        }
        turn(shard).await;
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
            Event::Peer(batch) => self.core.on_peer_messages(batch.messages),
            Event::Client(ClientRequest {
                connection,
                request,
            }) => self.core.on_client_request(connection, request),
            Event::Mesh(message) => self.core.on_mesh(message),
            Event::Persisted { sequence } => self.core.on_persisted(sequence),
            Event::Tick => {
                self.ticks += 1;
                self.core.on_tick(unix_millis());
                if self.ticks % SNAPSHOT_CHECK_TICKS == 0 {
                    // The WAL deletes a segment only once no group needs it; a group
                    // whose old entries keep segments alive snapshots now.
                    let pinned = self.wal.groups_to_snapshot();
                    self.core.request_snapshots(&pinned);
                }
            }
            Event::SnapshotWritten { group, index, term } => {
                self.core.on_snapshot_written(group, index, term);
            }
        }
    }

    /// Advances a graceful shutdown; true once the shard may stop.
    fn shutdown_step(&mut self) -> bool {
        self.connections.borrow_mut().stop_accepting();
        self.core.shutdown_step()
    }

    /// Tells the core how far behind each connection with watches is, and which of them
    /// are gone.
    fn report_watch_connections(&mut self) {
        let watching = self.core.watch_connections();
        if watching.is_empty() {
            return;
        }
        let connections = self.connections.borrow();
        for connection in watching {
            match connections.queued(connection) {
                Some((bytes, frames)) => self.core.on_connection_backlog(connection, bytes, frames),
                None => self.core.on_connection_closed(connection),
            }
        }
    }

    /// Sends what needs no disk: Raft messages, mesh messages, replies.
    fn send(&mut self, output: &mut Output) {
        for (group, message) in output.messages.drain(..) {
            self.transport.send(group, message);
        }
        self.transport.flush();
        for message in output.mesh.drain(..) {
            if let Err(Some(message)) = self.mesh.try_send(message) {
                self.core.on_mesh_undeliverable(message);
            }
        }
        let mut connections = self.connections.borrow_mut();
        for reply in &output.replies {
            connections.reply(reply);
        }
    }
}

/// One turn: the core decides, then the driver writes installed snapshot files, sends
/// messages and replies, submits the WAL batch, and starts a local snapshot file.
async fn turn(shard: &Rc<RefCell<Shard>>) {
    let (mut output, files) = {
        let mut this = shard.borrow_mut();
        this.report_watch_connections();
        if !this.core.has_work() {
            return;
        }
        (this.core.turn(), this.files.clone())
    };
    // Installed snapshots' files first: the WAL records written below point at them.
    files
        .write_installed(std::mem::take(&mut output.installs))
        .await;
    // Messages never depend on this turn's batch (those that do wait in the core until
    // it is durable), so followers get their appends while this node's fsync runs.
    shard.borrow_mut().send(&mut output);
    if let Some(batch) = output.batch.take() {
        submit(shard, batch).await;
    }
    if let Some(job) = output.snapshot_job.take() {
        let events = shard.borrow().events.clone();
        files.start(job, &events);
    }
}

/// Writes one turn's records to the WAL (a large turn in several batches, in order) and
/// reports the core's batch durable once the last of them is.
async fn submit(shard: &Rc<RefCell<Shard>>, batch: StorageBatch) {
    let (wal, limits, events) = {
        let this = shard.borrow();
        (
            this.wal.clone(),
            this.wal_config.clone(),
            this.events.clone(),
        )
    };
    let records = storage::wal_records(batch.records);
    let mut ticket = None;
    for submission in storage::submissions(
        records,
        limits.batch_bytes_max,
        limits.batch_records_max as usize,
    ) {
        match wal.submit(submission).await {
            Ok(submitted) => ticket = Some(submitted),
            Err(error) => wal::fatal(&error),
        }
    }
    wal.flush();
    let ticket = ticket.expect("a batch has records, so at least one submission");
    shard.borrow_mut().last_ticket = Some(ticket);
    let sequence = batch.sequence;
    glommio::spawn_local(async move {
        if let Err(error) = wal.wait(ticket).await {
            wal::fatal(&error);
        }
        // A loop that is gone needs no report.
        let _ = events.send(Event::Persisted { sequence }).await;
    })
    .detach();
}

/// Waits for the snapshot file being written and the last WAL batch before the shard
/// stops.
async fn drain(shard: &Rc<RefCell<Shard>>) {
    let (wal, ticket, files) = {
        let this = shard.borrow();
        (this.wal.clone(), this.last_ticket, this.files.clone())
    };
    files.idle().await;
    if let Some(ticket) = ticket {
        if let Err(error) = wal.wait(ticket).await {
            wal::fatal(&error);
        }
    }
}
