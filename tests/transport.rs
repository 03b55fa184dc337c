//! The peer transport over real sockets on 127.0.0.1, each transport in its own glommio
//! executor thread: delivery once and in order, health and reconnection, refusal of
//! hostile input without disturbing real peers, and the bound on a peer's queue.
//!
//! Every wait polls a condition against a deadline and fails naming what it waited
//! for. The garbage test draws random bytes from a seed it prints; replay it with
//! `COREKV_TEST_SEED=<seed> cargo test --test transport garbage`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv::codec::{self, PeerBatch};
use corekv::frame;
use corekv::raft::rng::SeededRng;
use corekv::raft::{Entry, EntryKind, Message, MessageKind, NodeId};
use corekv::transport::{Health, InboundRejection, Transport, TransportConfig, TransportStats};
use glommio::channels::local_channel::LocalReceiver;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder};

/// Registered I/O memory per executor: small, so that many executors fit at once.
const IO_MEMORY_BYTES: usize = 1 << 20;
/// Longest any wait may take before the test fails.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// glommio 0.9 can park an executor for good while a task is runnable, when its
/// preemption timer fires between arming and the next run of the task queues (a thread
/// descheduled that long, as on a loaded machine): the run loop then reads "preempted
/// before running anything" as "nothing to run". A timer far longer than any
/// descheduling keeps it from firing in that window.
const PREEMPT_TIMER: Duration = Duration::from_secs(60);
const CLUSTER_ID: u64 = 0xc0de;
/// A shard other than 0, so that a sender that ignored the shard would be caught.
const SHARD: u32 = 3;

/// A loopback address of its own for each call, with a port that was free on it.
///
/// glommio listens with `SO_REUSEPORT`, so a port picked here and bound later could be
/// shared silently with another process that made the same choice (tests of other
/// builds run on the same machine): connections would then be spread over both. A
/// distinct address out of 127.0.0.0/8 (all of it is local on Linux) makes that
/// practically impossible.
fn free_address() -> SocketAddr {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::SeqCst);
    let mixed = (u64::from(std::process::id()) << 20 ^ call)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .to_le_bytes();
    // 127.a.b.c with c in 2..=254: never 127.0.0.1, never a broadcast-like .255.
    let ip = std::net::Ipv4Addr::new(127, mixed[5], mixed[6], 2 + mixed[7] % 253);
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind port 0");
    listener.local_addr().expect("local address")
}

fn config(node: NodeId, listen: SocketAddr, peers: &[(NodeId, SocketAddr)]) -> TransportConfig {
    let mut config = TransportConfig::new(
        CLUSTER_ID,
        node,
        SHARD,
        listen,
        peers.iter().copied().collect(),
    );
    config.backoff_min = Duration::from_millis(2);
    config.backoff_max = Duration::from_millis(50);
    config.connect_timeout = Duration::from_secs(2);
    // Executors start at slightly different times: refusals while a peer is still
    // binding must not make its link Down.
    config.failures_before_down = 10_000;
    config
}

fn executor<T, F>(name: &str, body: impl FnOnce() -> F + Send + 'static) -> ExecutorJoinHandle<T>
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    LocalExecutorBuilder::default()
        .name(name)
        .io_memory(IO_MEMORY_BYTES)
        .preempt_timer(PREEMPT_TIMER)
        .spawn(body)
        .expect("spawn executor")
}

fn join<T: Send + 'static>(handle: ExecutorJoinHandle<T>, name: &str) -> T {
    handle
        .join()
        .unwrap_or_else(|error| panic!("executor {name} failed: {error}"))
}

/// Polls `condition` inside an executor until it holds; fails naming `what` otherwise.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_TIMEOUT:?} waiting until {what}"
        );
        glommio::timer::sleep(POLL_INTERVAL).await;
    }
}

/// The same, on a plain thread.
fn wait_until_blocking(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_TIMEOUT:?} waiting until {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The group a test message travels in: derived from its sender and number, so the
/// receiver can check it.
fn group_of(from: NodeId, sequence: u64) -> u64 {
    from * 1_000 + sequence % 7
}

/// Message number `sequence` from `from` to `to`: mostly heartbeats, every fifth an
/// append with an entry whose size varies, all numbered in `context`.
fn test_message(from: NodeId, to: NodeId, sequence: u64) -> Message {
    if sequence % 5 == 0 {
        let mut append = Message::new(MessageKind::Append, from, to, 2);
        append.index = sequence;
        append.log_term = 2;
        append.commit = sequence / 2;
        append.context = sequence;
        append.entries = vec![Entry {
            term: 2,
            index: sequence + 1,
            kind: EntryKind::Normal,
            data: Arc::from(vec![sequence as u8; (sequence % 300) as usize]),
        }];
        append
    } else {
        let mut heartbeat = Message::new(MessageKind::Heartbeat, from, to, 2);
        heartbeat.commit = sequence;
        heartbeat.context = sequence;
        heartbeat
    }
}

/// Checks that the messages from each sender arrive whole, once, and in order.
#[derive(Debug, Default)]
struct Arrivals {
    next_sequence: BTreeMap<NodeId, u64>,
}

impl Arrivals {
    /// Accepts a batch whose messages must continue each sender's sequence exactly.
    fn accept(&mut self, me: NodeId, batch: &PeerBatch) {
        assert_eq!((batch.cluster_id, batch.to_shard), (CLUSTER_ID, SHARD));
        let next = self.next_sequence.entry(batch.from_node).or_insert(0);
        for (group, message) in &batch.messages {
            let expected = test_message(batch.from_node, me, *next);
            assert_eq!(
                (*group, message),
                (group_of(batch.from_node, *next), &expected),
                "node {me}: message {next} from node {}",
                batch.from_node
            );
            *next += 1;
        }
    }

    fn received_from(&self, node: NodeId) -> u64 {
        self.next_sequence.get(&node).copied().unwrap_or(0)
    }
}

/// Receives batches until the receiver closes, checking them into `arrivals`.
async fn receive_into(
    me: NodeId,
    inbound: LocalReceiver<PeerBatch>,
    arrivals: Rc<RefCell<Arrivals>>,
) {
    while let Some(batch) = inbound.recv().await {
        arrivals.borrow_mut().accept(me, &batch);
    }
}

// Three transports send each other batches over several turns: every message arrives
// exactly once, whole and in order per link, at most one frame leaves per link and
// turn, and nothing is dropped.
#[test]
fn three_transports_deliver_every_message_once_in_order() {
    const TURNS: u64 = 50;
    const MESSAGES_PER_TURN: u64 = 20;
    let nodes: Vec<(NodeId, SocketAddr)> = (1..=3).map(|node| (node, free_address())).collect();
    let finished = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = nodes
        .iter()
        .map(|&(node, listen)| {
            let peers: Vec<_> = nodes
                .iter()
                .copied()
                .filter(|&(id, _)| id != node)
                .collect();
            let finished = Arc::clone(&finished);
            let name = format!("node-{node}");
            let handle = executor(&name, move || async move {
                let (transport, inbound) =
                    Transport::start(config(node, listen, &peers)).expect("start");
                let arrivals = Rc::new(RefCell::new(Arrivals::default()));
                let receiver =
                    glommio::spawn_local(receive_into(node, inbound, arrivals.clone())).detach();
                wait_until(&format!("node {node} is connected to every peer"), || {
                    peers
                        .iter()
                        .all(|&(peer, _)| transport.health(peer) == Some(Health::Healthy))
                })
                .await;
                for turn in 0..TURNS {
                    for &(peer, _) in &peers {
                        for index in 0..MESSAGES_PER_TURN {
                            let sequence = turn * MESSAGES_PER_TURN + index;
                            transport
                                .send(group_of(node, sequence), test_message(node, peer, sequence));
                        }
                    }
                    transport.flush();
                    futures_lite::future::yield_now().await;
                }
                let expected = TURNS * MESSAGES_PER_TURN;
                wait_until(
                    &format!("node {node} received {expected} messages from each peer"),
                    || {
                        let arrivals = arrivals.borrow();
                        peers
                            .iter()
                            .all(|&(peer, _)| arrivals.received_from(peer) == expected)
                    },
                )
                .await;
                // Stay up until every node has everything: the others still read from,
                // and write to, this one.
                finished.fetch_add(1, Ordering::SeqCst);
                wait_until("every node received everything", || {
                    finished.load(Ordering::SeqCst) == 3
                })
                .await;
                let stats = transport.stats();
                let peer_count = peers.len() as u64;
                assert_eq!(stats.messages_received, peer_count * expected, "{stats:?}");
                assert_eq!(stats.messages_sent, peer_count * expected, "{stats:?}");
                assert_eq!(stats.messages_dropped(), 0, "{stats:?}");
                assert_eq!(stats.messages_queued, 0, "{stats:?}");
                assert!(
                    (peer_count..=peer_count * TURNS).contains(&stats.batches_sent),
                    "one frame per link and turn at most: {stats:?}"
                );
                assert_eq!(stats.inbound_frames_rejected, 0, "{stats:?}");
                transport.close().await;
                receiver.cancel();
                for (peer, _) in &peers {
                    assert_eq!(arrivals.borrow().received_from(*peer), expected);
                }
                stats
            });
            (name, handle)
        })
        .collect();
    let sent: u64 = handles
        .into_iter()
        .map(|(name, handle)| join(handle, &name).messages_sent)
        .sum();
    assert_eq!(sent, 3 * 2 * TURNS * MESSAGES_PER_TURN);
}

// A link to a peer that is not running probes, goes Down after the configured number
// of failed attempts, and then drops (and counts) what is queued and what is sent; when
// the peer starts, the link reconnects, becomes Healthy, and new messages arrive.
#[test]
fn link_to_a_missing_peer_goes_down_then_recovers() {
    const FAILURES_BEFORE_DOWN: u32 = 3;
    let address_1 = free_address();
    let address_2 = free_address();
    let down_observed = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));

    let node_1 = {
        let down_observed = Arc::clone(&down_observed);
        let delivered = Arc::clone(&delivered);
        executor("node-1", move || async move {
            let mut config = config(1, address_1, &[(2, address_2)]);
            config.failures_before_down = FAILURES_BEFORE_DOWN;
            let (transport, _inbound) = Transport::start(config).expect("start");
            // Nothing has run yet: the link starts by probing, and queues.
            assert_eq!(transport.health(2), Some(Health::Probing));
            for sequence in 0..5 {
                transport.send(1, test_message(1, 2, 1_000 + sequence));
            }
            transport.flush();
            assert_eq!(transport.stats().messages_queued, 5);

            wait_until("the link to the missing peer is Down", || {
                transport.health(2) == Some(Health::Down)
            })
            .await;
            let stats = transport.stats();
            assert_eq!(
                stats.messages_dropped_peer_down, 5,
                "queue cleared: {stats:?}"
            );
            assert_eq!(stats.messages_queued, 0, "{stats:?}");
            assert!(
                stats.connect_failures >= u64::from(FAILURES_BEFORE_DOWN),
                "{stats:?}"
            );
            assert_eq!(stats.connects, 0, "{stats:?}");
            for sequence in 0..4 {
                transport.send(1, test_message(1, 2, 2_000 + sequence));
            }
            transport.flush();
            assert_eq!(transport.stats().messages_dropped_peer_down, 9);
            down_observed.store(true, Ordering::SeqCst);

            wait_until("the link to the restarted peer is Healthy", || {
                transport.health(2) == Some(Health::Healthy)
            })
            .await;
            for sequence in 0..10 {
                transport.send(group_of(1, sequence), test_message(1, 2, sequence));
            }
            transport.flush();
            wait_until("node 2 received the 10 messages", || {
                delivered.load(Ordering::SeqCst) == 10
            })
            .await;
            let stats = transport.stats();
            assert_eq!((stats.connects, stats.messages_sent), (1, 10), "{stats:?}");
            assert_eq!(stats.messages_dropped(), 9, "{stats:?}");
            transport.close().await;
        })
    };

    wait_until_blocking("node 1 saw its link go Down", || {
        down_observed.load(Ordering::SeqCst)
    });
    let node_2 = {
        let delivered = Arc::clone(&delivered);
        executor("node-2", move || async move {
            let (transport, inbound) =
                Transport::start(config(2, address_2, &[(1, address_1)])).expect("start");
            // Only the messages sent after the reconnection arrive, numbered from 0.
            let arrivals = Rc::new(RefCell::new(Arrivals::default()));
            let receiver =
                glommio::spawn_local(receive_into(2, inbound, arrivals.clone())).detach();
            wait_until("node 2 received 10 messages", || {
                let received = arrivals.borrow().received_from(1);
                delivered.store(received, Ordering::SeqCst);
                received == 10
            })
            .await;
            receiver.cancel();
            // Node 1 closes once it sees the count; this side may close first.
            transport.close().await;
        })
    };
    join(node_1, "node-1");
    join(node_2, "node-2");
}

/// What the victim of the garbage test publishes for the test thread.
#[derive(Debug, Default)]
struct Published {
    /// The transport has started: its listener is bound.
    listening: bool,
    stats: TransportStats,
    last_rejection: Option<InboundRejection>,
    received_from_peer: u64,
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame::encode(&mut bytes, payload).expect("small payload");
    bytes
}

fn batch_bytes(cluster_id: u64, from_node: NodeId, to_shard: u32, to: NodeId) -> Vec<u8> {
    framed(&codec::peer_batch_to_bytes(&PeerBatch {
        cluster_id,
        from_node,
        from_shard: SHARD,
        to_shard,
        messages: vec![(group_of(from_node, 0), test_message(from_node, to, 0))],
    }))
}

/// `length` bytes from the crate's generator seeded with `seed`.
fn random_bytes(seed: u64, length: usize) -> Vec<u8> {
    let mut random = SeededRng::new(seed);
    (0..length).map(|_| random.next_u64() as u8).collect()
}

/// Sends `bytes` from a raw client (closing its sending side when `then_close`), and
/// waits until the transport closes the connection.
fn send_raw_and_expect_close(address: SocketAddr, bytes: &[u8], then_close: bool, case: &str) {
    let mut stream = std::net::TcpStream::connect(address).expect("raw connect");
    stream
        .set_read_timeout(Some(WAIT_TIMEOUT))
        .expect("read timeout");
    // The transport may close (and reset) before everything is written: that is fine.
    let _ = stream.write_all(bytes);
    if then_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut sink = [0u8; 64];
    match stream.read(&mut sink) {
        Ok(0) => {}
        Ok(read) => panic!("{case}: the transport sent {read} bytes on an inbound connection"),
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{case}: the connection was not closed within {WAIT_TIMEOUT:?}")
        }
        Err(_) => {} // Reset: closed with our bytes unread.
    }
}

// Garbage from a raw TCP client (random bytes, an oversized length, a bad checksum, a
// frame that is not a FlatBuffers batch, batches for another shard, cluster or node,
// from an unknown node) closes that connection and is counted, while the real peer's
// messages keep arriving in order.
#[test]
fn garbage_closes_only_its_connection() {
    let seed = corekv::testing::test_seed();
    println!(
        "garbage test seed {seed}; replay: COREKV_TEST_SEED={seed} cargo test --test transport garbage"
    );
    const FRAME_BYTES_MAX: usize = 64 << 10;
    let address_1 = free_address();
    let address_2 = free_address();
    let published = Arc::new(Mutex::new(Published::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let victim = {
        let published = Arc::clone(&published);
        let stop = Arc::clone(&stop);
        executor("victim", move || async move {
            let mut config = config(1, address_1, &[(2, address_2)]);
            config.frame_bytes_max = FRAME_BYTES_MAX;
            config.queue_bytes_max = FRAME_BYTES_MAX / 2;
            let (transport, inbound) = Transport::start(config).expect("start");
            let arrivals = Rc::new(RefCell::new(Arrivals::default()));
            let receiver =
                glommio::spawn_local(receive_into(1, inbound, arrivals.clone())).detach();
            wait_until("the test is over", || {
                let mut published = published.lock().unwrap();
                published.stats = transport.stats();
                published.last_rejection = transport.last_inbound_rejection();
                published.received_from_peer = arrivals.borrow().received_from(2);
                stop.load(Ordering::SeqCst)
            })
            .await;
            receiver.cancel();
            transport.close().await;
        })
    };
    let peer = {
        let stop = Arc::clone(&stop);
        executor("peer", move || async move {
            let (transport, _inbound) =
                Transport::start(config(2, address_2, &[(1, address_1)])).expect("start");
            let mut sequence = 0;
            // One message per poll: a steady stream until the test ends.
            wait_until("the test is over", || {
                if stop.load(Ordering::SeqCst) {
                    return true;
                }
                if transport.health(1) == Some(Health::Healthy) {
                    transport.send(group_of(2, sequence), test_message(2, 1, sequence));
                    transport.flush();
                    sequence += 1;
                }
                false
            })
            .await;
            // The victim may close before this side sees the stop, so a batch in flight
            // may be lost then; before that, nothing was refused.
            let stats = transport.stats();
            assert_eq!(
                stats.messages_dropped_queue_full + stats.messages_dropped_peer_down,
                0,
                "{stats:?}"
            );
            transport.close().await;
        })
    };

    let snapshot = || {
        let published = published.lock().unwrap();
        (
            published.stats,
            published.last_rejection.clone(),
            published.received_from_peer,
        )
    };
    wait_until_blocking("the real peer delivered 10 messages", || snapshot().2 >= 10);

    let valid = batch_bytes(CLUSTER_ID, 2, SHARD, 1);
    let mut bad_checksum = valid.clone();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0x40;
    let oversized_length = [
        &(FRAME_BYTES_MAX as u32 + 1).to_le_bytes()[..],
        &[0u8; 4][..],
    ]
    .concat();
    type Expectation = fn(&InboundRejection) -> bool;
    let cases: Vec<(&str, Vec<u8>, Option<Expectation>)> = vec![
        ("random bytes", random_bytes(seed, 4096), None),
        (
            "oversized length",
            oversized_length,
            Some(|r| {
                matches!(
                    r,
                    InboundRejection::Frame(frame::FrameError::TooLarge { .. })
                )
            }),
        ),
        (
            "bad checksum",
            bad_checksum,
            Some(|r| {
                matches!(
                    r,
                    InboundRejection::Frame(frame::FrameError::BadChecksum { .. })
                )
            }),
        ),
        (
            "not a FlatBuffers batch",
            framed(&random_bytes(seed ^ 1, 200)),
            Some(|r| matches!(r, InboundRejection::Batch(_))),
        ),
        (
            "wrong shard",
            batch_bytes(CLUSTER_ID, 2, SHARD + 1, 1),
            Some(|r| matches!(r, InboundRejection::WrongShard { .. })),
        ),
        (
            "wrong cluster",
            batch_bytes(CLUSTER_ID + 1, 2, SHARD, 1),
            Some(|r| matches!(r, InboundRejection::WrongCluster { .. })),
        ),
        (
            "unknown node",
            batch_bytes(CLUSTER_ID, 9, SHARD, 1),
            Some(|r| matches!(r, InboundRejection::UnknownNode { node: 9 })),
        ),
        (
            "message for another node",
            batch_bytes(CLUSTER_ID, 2, SHARD, 3),
            Some(|r| matches!(r, InboundRejection::WrongDestination { to: 3, .. })),
        ),
    ];
    for (case, bytes, expectation) in cases {
        let (before, _, received_before) = snapshot();
        // Random bytes may look like the start of a long frame: closing our side ends
        // it as a truncated stream instead of a wait.
        send_raw_and_expect_close(address_1, &bytes, expectation.is_none(), case);
        wait_until_blocking(&format!("{case}: the connection is counted"), || {
            let stats = snapshot().0;
            stats.inbound_frames_rejected + stats.inbound_connections_truncated
                > before.inbound_frames_rejected + before.inbound_connections_truncated
        });
        let (after, last_rejection, _) = snapshot();
        if let Some(expectation) = expectation {
            assert_eq!(
                after.inbound_frames_rejected,
                before.inbound_frames_rejected + 1,
                "{case}"
            );
            let rejection = last_rejection.expect("a rejection is recorded");
            assert!(expectation(&rejection), "{case}: {rejection:?}");
        }
        wait_until_blocking(&format!("{case}: the real peer still delivers"), || {
            snapshot().2 >= received_before + 5
        });
    }
    let (stats, _, _) = snapshot();
    assert_eq!(stats.inbound_connections_replaced, 0, "{stats:?}");
    stop.store(true, Ordering::SeqCst);
    join(victim, "victim");
    join(peer, "peer");
}

// Inbound connections over the bound are closed as they are accepted, and a node's
// newer connection replaces its older one (which a restarted peer leaves behind).
#[test]
fn inbound_connections_are_bounded_and_replaced() {
    let address = free_address();
    let published = Arc::new(Mutex::new(Published::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let victim = {
        let published = Arc::clone(&published);
        let stop = Arc::clone(&stop);
        executor("bounded", move || async move {
            // Node 2 never runs: only raw clients speak for it.
            let mut config = config(1, address, &[(2, free_address())]);
            config.inbound_connections_max = 2;
            let (transport, inbound) = Transport::start(config).expect("start");
            let arrivals = Rc::new(RefCell::new(Arrivals::default()));
            let receiver =
                glommio::spawn_local(receive_into(1, inbound, arrivals.clone())).detach();
            wait_until("the test is over", || {
                let mut published = published.lock().unwrap();
                published.listening = true;
                published.stats = transport.stats();
                stop.load(Ordering::SeqCst)
            })
            .await;
            transport.close().await;
            receiver.cancel();
        })
    };
    let stats = || published.lock().unwrap().stats;
    let connect = || {
        let stream = std::net::TcpStream::connect(address).expect("raw connect");
        stream
            .set_read_timeout(Some(WAIT_TIMEOUT))
            .expect("read timeout");
        stream
    };
    // Message 0 from node 2 on the first connection, message 1 on the second: the
    // receiver checks they arrive in order.
    let batch = |sequence: u64| {
        framed(&codec::peer_batch_to_bytes(&PeerBatch {
            cluster_id: CLUSTER_ID,
            from_node: 2,
            from_shard: SHARD,
            to_shard: SHARD,
            messages: vec![(group_of(2, sequence), test_message(2, 1, sequence))],
        }))
    };
    let expect_closed = |stream: &mut std::net::TcpStream, what: &str| {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            other => panic!("{what}: expected the connection closed, got {other:?}"),
        }
    };

    wait_until_blocking("the transport listens", || {
        published.lock().unwrap().listening
    });
    let mut first = connect();
    first.write_all(&batch(0)).expect("write");
    wait_until_blocking("the first batch arrived", || stats().batches_received == 1);
    let idle = connect();
    wait_until_blocking("two connections are open", || {
        stats().inbound_connections_open == 2
    });
    let mut refused = connect();
    expect_closed(&mut refused, "a third connection");
    wait_until_blocking("the third connection is counted", || {
        stats().inbound_connections_refused == 1
    });

    drop(idle);
    wait_until_blocking("the idle connection is gone", || {
        stats().inbound_connections_open == 1
    });
    let mut second = connect();
    second.write_all(&batch(1)).expect("write");
    expect_closed(&mut first, "the older connection of node 2");
    wait_until_blocking("the replacement is counted", || {
        let stats = stats();
        stats.inbound_connections_replaced == 1 && stats.batches_received == 2
    });
    let final_stats = stats();
    assert_eq!(
        final_stats.inbound_connections_accepted, 3,
        "{final_stats:?}"
    );
    assert_eq!(final_stats.inbound_frames_rejected, 0, "{final_stats:?}");
    stop.store(true, Ordering::SeqCst);
    join(victim, "bounded");
}

// Flooding a peer that accepts the connection but never reads: once the socket buffers
// are full the writer waits, the queue stays within its bounds, and every further
// message is dropped and counted instead of held.
#[test]
fn flooding_a_peer_that_does_not_read_drops_at_the_bound() {
    const QUEUE_MESSAGES_MAX: usize = 256;
    const QUEUE_BYTES_MAX: usize = 256 << 10;
    const ENTRY_BYTES: usize = 4 << 10;
    const MESSAGES_PER_TURN: u64 = 16;
    /// Enough to fill the loopback socket buffers many times over.
    const TURNS_MAX: u64 = 4_096;
    let stalled_peer = std::net::TcpListener::bind(free_address()).expect("bind");
    let stalled_address = stalled_peer.local_addr().expect("address");
    let accepter = std::thread::spawn(move || {
        // Accept, and hold the connection without ever reading it.
        let (stream, _) = stalled_peer.accept().expect("accept");
        stream
    });
    let flooder = executor("flooder", move || async move {
        let mut config = config(1, free_address(), &[(2, stalled_address)]);
        config.queue_messages_max = QUEUE_MESSAGES_MAX;
        config.queue_bytes_max = QUEUE_BYTES_MAX;
        config.frame_bytes_max = 1 << 20;
        // The writer must stay blocked for the whole flood, not give up and reconnect.
        config.write_timeout = Duration::from_secs(600);
        let (transport, _inbound) = Transport::start(config).expect("start");
        wait_until("the flooder is connected", || {
            transport.health(2) == Some(Health::Healthy)
        })
        .await;
        let mut offered = 0u64;
        let mut turns = 0;
        while transport.stats().messages_dropped_queue_full < 1_000 {
            assert!(
                turns < TURNS_MAX,
                "nothing was dropped after {TURNS_MAX} turns: {:?}",
                transport.stats()
            );
            for _ in 0..MESSAGES_PER_TURN {
                let mut append = Message::new(MessageKind::Append, 1, 2, 1);
                append.index = offered;
                append.entries = vec![Entry {
                    term: 1,
                    index: offered + 1,
                    kind: EntryKind::Normal,
                    data: Arc::from(vec![0xab; ENTRY_BYTES]),
                }];
                transport.send(1, append);
                offered += 1;
            }
            transport.flush();
            let stats = transport.stats();
            assert!(
                stats.bytes_queued <= QUEUE_BYTES_MAX as u64
                    && stats.messages_queued <= QUEUE_MESSAGES_MAX as u64,
                "queue over its bounds: {stats:?}"
            );
            turns += 1;
            futures_lite::future::yield_now().await;
        }
        let stats = transport.stats();
        assert_eq!(
            stats.messages_sent + stats.messages_dropped_queue_full + stats.messages_queued,
            offered,
            "every message is sent, dropped or queued: {stats:?}"
        );
        assert_eq!(
            stats.messages_dropped_unsent + stats.messages_dropped_peer_down,
            0
        );
        assert!(
            stats.bytes_sent < offered * ENTRY_BYTES as u64 / 2,
            "most of the flood never reached the socket: {stats:?}"
        );
        assert_eq!(
            transport.health(2),
            Some(Health::Healthy),
            "blocked, not failed"
        );
        transport.close().await;
        let stats = transport.stats();
        assert_eq!(
            stats.messages_queued, 0,
            "close empties the queue: {stats:?}"
        );
        stats
    });
    let stats = join(flooder, "flooder");
    let _stalled_connection = accepter.join().expect("accepter");
    println!("flood: {stats:?}");
}
