//! The SDK against in-process fake nodes that speak the real protocol (frames carrying
//! FlatBuffers requests and responses over std TCP): pipelining, leader hints, retries
//! with the same session, per-group sessions, the retry bound, and dead nodes. Then
//! operations started without waiting (`Client::start`, `Client::batch`, `Pending`),
//! against fakes and against real `corekv server` processes: many in flight from one
//! thread, across a leader change, and a read of what was just written.
//!
//! Each fake node answers Status itself and hands every key-value request to the test's
//! behaviour, which decides per request: answer now, hold it, or close the connection.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_for, TestCluster, SMALL_SEGMENT_ARGS};
use corekv::api::{
    self, ApiError, ApiRequest, ApiResponse, ApiResult, ErrorCode, LeaderHint, Member, RequestKind,
    StatusInfo,
};
use corekv::client::{Client, ClientError, ClientOptions, Completions, Pending};
use corekv::frame::{self, FRAME_BYTES_MAX};
use corekv::keyspace::group_of;
use corekv::kv::{self, KeyValue, OpResponse};

const CLUSTER_ID: u64 = 0xc0de;

/// What a fake node does with one key-value request.
enum Reaction {
    /// Write these responses now (possibly none: the request is dropped or held).
    Send(Vec<ApiResponse>),
    /// Close the connection without answering.
    Close,
}

/// A test's fake server logic. `held` is the connection's own list of requests kept for
/// later answers.
trait Behaviour: Send + Sync + 'static {
    fn on_request(&self, node: usize, held: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction;
}

/// What a fake node saw.
#[derive(Default)]
struct Journal {
    /// (node index, key-value request) in arrival order.
    requests: Mutex<Vec<(usize, ApiRequest)>>,
    /// Connections accepted, per node.
    accepted: Mutex<HashMap<usize, usize>>,
}

impl Journal {
    fn requests(&self) -> Vec<(usize, ApiRequest)> {
        self.requests.lock().unwrap().clone()
    }

    fn accepted(&self, node: usize) -> usize {
        self.accepted
            .lock()
            .unwrap()
            .get(&node)
            .copied()
            .unwrap_or(0)
    }
}

/// A set of fake nodes on loopback.
struct FakeCluster {
    addresses: Vec<String>,
    journal: Arc<Journal>,
    stop: Arc<AtomicBool>,
}

impl FakeCluster {
    /// Starts `count` nodes; node `i` has id `i + 1`. `members` lists the nodes each one
    /// reports in its status (all of them when `None`).
    fn start(
        count: usize,
        group_count: u64,
        members: Option<Vec<usize>>,
        behaviour: impl Behaviour,
    ) -> FakeCluster {
        let listeners: Vec<TcpListener> = (0..count)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses: Vec<String> = listeners
            .iter()
            .map(|listener| listener.local_addr().unwrap().to_string())
            .collect();
        let listed = members.unwrap_or_else(|| (0..count).collect());
        let members: Vec<Member> = listed
            .iter()
            .map(|&index| Member {
                node_id: index as u64 + 1,
                client_address: addresses[index].clone(),
                peer_address: String::new(),
            })
            .collect();
        let journal = Arc::new(Journal::default());
        let stop = Arc::new(AtomicBool::new(false));
        let behaviour: Arc<dyn Behaviour> = Arc::new(behaviour);
        for (node, listener) in listeners.into_iter().enumerate() {
            let status = StatusInfo {
                node_id: node as u64 + 1,
                cluster_id: CLUSTER_ID,
                shards: 1,
                group_count,
                groups: Vec::new(),
                members: members.clone(),
            };
            let journal = Arc::clone(&journal);
            let stop = Arc::clone(&stop);
            let behaviour = Arc::clone(&behaviour);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    *journal.accepted.lock().unwrap().entry(node).or_default() += 1;
                    let journal = Arc::clone(&journal);
                    let behaviour = Arc::clone(&behaviour);
                    let status = status.clone();
                    thread::spawn(move || serve(node, stream, &status, &journal, &*behaviour));
                }
            });
        }
        FakeCluster {
            addresses,
            journal,
            stop,
        }
    }

    fn hint(&self, node: usize) -> LeaderHint {
        LeaderHint {
            node_id: node as u64 + 1,
            client_address: self.addresses[node].clone(),
        }
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake every accept loop so it sees the flag.
        for address in &self.addresses {
            let _ = TcpStream::connect(address);
        }
    }
}

/// One connection of a fake node: reads request frames, answers Status, hands the rest
/// to the behaviour.
fn serve(
    node: usize,
    mut stream: TcpStream,
    status: &StatusInfo,
    journal: &Journal,
    behaviour: &dyn Behaviour,
) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut held = Vec::new();
    loop {
        let read = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        buffer.extend_from_slice(&chunk[..read]);
        let mut consumed = 0;
        while let Some(decoded) = frame::decode(&buffer[consumed..], FRAME_BYTES_MAX).unwrap() {
            consumed += decoded.consumed_bytes;
            let request = api::decode_request(decoded.payload).expect("a valid request");
            let reaction = match &request.kind {
                RequestKind::Status => Reaction::Send(vec![ApiResponse {
                    request_id: request.request_id,
                    result: Ok(ApiResult::Status(status.clone())),
                }]),
                RequestKind::Kv { .. }
                | RequestKind::Compact { .. }
                | RequestKind::WatchCreate { .. }
                | RequestKind::WatchCancel { .. }
                | RequestKind::WatchProgress { .. }
                | RequestKind::Lease { .. } => {
                    journal
                        .requests
                        .lock()
                        .unwrap()
                        .push((node, request.clone()));
                    behaviour.on_request(node, &mut held, request)
                }
            };
            match reaction {
                Reaction::Send(responses) => {
                    let mut out = Vec::new();
                    for response in &responses {
                        frame::encode(&mut out, &api::response_to_bytes(response)).unwrap();
                    }
                    if stream.write_all(&out).is_err() {
                        return;
                    }
                }
                Reaction::Close => {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        buffer.drain(..consumed);
    }
}

fn command(request: &ApiRequest) -> &kv::Command {
    match &request.kind {
        RequestKind::Kv { command, .. } => command,
        _ => panic!("a key-value request"),
    }
}

fn session_of(request: &ApiRequest) -> (u64, u64) {
    let command = command(request);
    (command.client_id, command.seq)
}

/// The successful answer a real store would give, with `value-of-<key>` for reads.
fn success(request: &ApiRequest) -> ApiResponse {
    let op = match &command(request).op {
        kv::Op::Put(_) => OpResponse::Put(kv::PutResponse::default()),
        kv::Op::Range(range) => OpResponse::Range(kv::RangeResponse {
            kvs: vec![KeyValue {
                key: range.key.clone(),
                value: [b"value-of-", &range.key[..]].concat(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                lease: 0,
            }],
            count: 1,
            more: false,
        }),
        kv::Op::Delete(_) => OpResponse::Delete(kv::DeleteResponse::default()),
        kv::Op::Append(_) => OpResponse::Append(kv::AppendResponse::default()),
        kv::Op::Txn(_) => OpResponse::Txn(kv::TxnResponse::default()),
    };
    ApiResponse {
        request_id: request.request_id,
        result: Ok(ApiResult::Kv(kv::Response { revision: 9, op })),
    }
}

fn failure(request: &ApiRequest, code: ErrorCode, leader: Option<LeaderHint>) -> ApiResponse {
    ApiResponse {
        request_id: request.request_id,
        result: Err(ApiError {
            code,
            message: format!("fake {code}"),
            leader,
            revision: 0,
        }),
    }
}

/// Options with short pauses so that retries do not slow the tests down.
fn quick_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(20),
        attempt_timeout: Duration::from_secs(10),
        retry_backoff_initial: Duration::from_millis(1),
        retry_backoff_max: Duration::from_millis(5),
        ..ClientOptions::default()
    }
}

fn connect(cluster: &FakeCluster, node: usize, options: ClientOptions) -> Client {
    Client::connect(&[cluster.addresses[node].clone()], options).expect("connect")
}

/// Answers every key-value request with success.
struct AlwaysSucceed;

impl Behaviour for AlwaysSucceed {
    fn on_request(&self, _: usize, _: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        Reaction::Send(vec![success(&request)])
    }
}

/// Holds requests until `batch` are in, then answers them all, last first.
struct AnswerBatchReversed {
    batch: usize,
}

impl Behaviour for AnswerBatchReversed {
    fn on_request(&self, _: usize, held: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        held.push(request);
        if held.len() < self.batch {
            return Reaction::Send(Vec::new());
        }
        Reaction::Send(
            held.drain(..)
                .rev()
                .map(|request| success(&request))
                .collect(),
        )
    }
}

// Many threads share one connection: all their requests are in flight at once (the fake
// answers only when it holds all of them), and each caller gets its own answer although
// the answers come back in reverse order.
#[test]
fn pipelined_requests_share_one_connection_and_match_out_of_order() {
    const CALLERS: usize = 32;
    let cluster = FakeCluster::start(1, 8, None, AnswerBatchReversed { batch: CALLERS });
    let client = connect(&cluster, 0, quick_options());
    thread::scope(|scope| {
        for caller in 0..CALLERS {
            let client = &client;
            scope.spawn(move || {
                let key = format!("key-{caller}");
                let pair = client.get(&key).unwrap().expect("the fake returns the key");
                assert_eq!(pair.value, format!("value-of-{key}").into_bytes());
            });
        }
    });
    assert_eq!(
        cluster.journal.accepted(0),
        1,
        "one connection carries everything"
    );
    let requests = cluster.journal.requests();
    assert_eq!(requests.len(), CALLERS);
    let mut ids: Vec<u64> = requests
        .iter()
        .map(|(_, request)| request.request_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        CALLERS,
        "request ids are unique on the connection"
    );
}

/// Node `leader` serves writes; the others answer NotLeader with a hint to it.
struct LeaderOnly {
    leader: usize,
    hint: LeaderHint,
}

impl Behaviour for LeaderOnly {
    fn on_request(&self, node: usize, _: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        if node == self.leader {
            Reaction::Send(vec![success(&request)])
        } else {
            Reaction::Send(vec![failure(
                &request,
                ErrorCode::NotLeader,
                Some(self.hint.clone()),
            )])
        }
    }
}

/// [`LeaderOnly`] whose hint is filled in once the cluster's addresses are known.
struct LeaderOnceKnown {
    leader: usize,
    hint: Arc<Mutex<Option<LeaderHint>>>,
}

impl Behaviour for LeaderOnceKnown {
    fn on_request(&self, node: usize, held: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        let hint = self
            .hint
            .lock()
            .unwrap()
            .clone()
            .expect("hint set before use");
        LeaderOnly {
            leader: self.leader,
            hint,
        }
        .on_request(node, held, request)
    }
}

/// Starts `count` nodes where `leader` serves writes and the others redirect to it;
/// `members` as in [`FakeCluster::start`].
fn start_with_leader(count: usize, leader: usize, members: Option<Vec<usize>>) -> FakeCluster {
    let hint = Arc::new(Mutex::new(None));
    let behaviour = LeaderOnceKnown {
        leader,
        hint: Arc::clone(&hint),
    };
    let cluster = FakeCluster::start(count, 1, members, behaviour);
    *hint.lock().unwrap() = Some(cluster.hint(leader));
    cluster
}

// A write sent to a follower follows the NotLeader hint to the leader, and the next
// writes of that group go straight to the cached leader, with the same session seqs as
// if no redirect had happened.
#[test]
fn writes_follow_the_leader_hint_and_cache_it() {
    let cluster = start_with_leader(3, 2, None);
    let client = connect(&cluster, 0, quick_options());
    for round in 0..10 {
        client.put("k", format!("v{round}")).unwrap();
    }
    let requests = cluster.journal.requests();
    let at_followers = requests.iter().filter(|(node, _)| *node != 2).count();
    let at_leader: Vec<(u64, u64)> = requests
        .iter()
        .filter(|(node, _)| *node == 2)
        .map(|(_, request)| session_of(request))
        .collect();
    assert!(at_followers <= 1, "{at_followers} writes reached followers");
    assert_eq!(at_leader.len(), 10);
    let client_id = at_leader[0].0;
    let expected: Vec<(u64, u64)> = (1..=10).map(|seq| (client_id, seq)).collect();
    assert_eq!(at_leader, expected);
}

// A hint may name a node the client was never told about: the client adds it and
// writes there.
#[test]
fn a_hint_to_an_unknown_node_adds_it() {
    // Node 0 reports only itself as a member.
    let cluster = start_with_leader(2, 1, Some(vec![0]));
    let client = connect(&cluster, 0, quick_options());
    assert_eq!(client.node_addresses(), vec![cluster.addresses[0].clone()]);
    client.put("k", "v").unwrap();
    assert_eq!(
        client.node_addresses(),
        vec![cluster.addresses[0].clone(), cluster.addresses[1].clone()]
    );
    let nodes: Vec<usize> = cluster
        .journal
        .requests()
        .iter()
        .map(|(node, _)| *node)
        .collect();
    assert_eq!(nodes, vec![0, 1]);
}

// Serializable reads spread over the nodes the client routes to (here every member, with
// route_to_all_members); with serializable_reads_at_endpoint they all go to the node the
// client connected through.
#[test]
fn serializable_reads_can_stay_at_the_endpoint() {
    const READS: usize = 12;
    for at_endpoint in [false, true] {
        let cluster = FakeCluster::start(3, 4, None, AlwaysSucceed);
        let options = ClientOptions {
            serializable_reads_at_endpoint: at_endpoint,
            route_to_all_members: true,
            ..quick_options()
        };
        let client = connect(&cluster, 1, options);
        for read in 0..READS {
            client
                .get_serializable(format!("k{read}"))
                .expect("serializable get");
        }
        let nodes: BTreeSet<usize> = cluster
            .journal
            .requests()
            .iter()
            .map(|(node, _)| *node)
            .collect();
        if at_endpoint {
            assert_eq!(nodes, BTreeSet::from([1]));
        } else {
            assert!(nodes.len() > 1, "reads went only to {nodes:?}");
        }
    }
}

/// Node 0 is hung (takes requests, never answers); every other node answers.
struct FirstNodeHung;

impl Behaviour for FirstNodeHung {
    fn on_request(&self, node: usize, _: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        if node == 0 {
            Reaction::Send(Vec::new())
        } else {
            Reaction::Send(vec![success(&request)])
        }
    }
}

// After an attempt on a hung node times out, the retry asks another node, not the hung
// one again (however the rotation over nodes stands, with many threads moving it).
#[test]
fn a_retry_after_a_timeout_avoids_the_node_that_timed_out() {
    let cluster = FakeCluster::start(2, 64, None, FirstNodeHung);
    let options = ClientOptions {
        attempt_timeout: Duration::from_millis(100),
        ..quick_options()
    };
    let client = connect(&cluster, 1, options);
    thread::scope(|scope| {
        for thread in 0..8 {
            let client = &client;
            scope.spawn(move || {
                for write in 0..5 {
                    client
                        .put(format!("avoid/{thread}/{write}"), "v")
                        .expect("put");
                }
            });
        }
    });
    // A write is its key (each is written once).
    let mut sent_to_hung: HashMap<String, usize> = HashMap::new();
    for (node, request) in cluster.journal.requests() {
        let kv::Op::Put(put) = &command(&request).op else {
            panic!("only puts were sent: {request:?}");
        };
        if node == 0 {
            let key = String::from_utf8_lossy(&put.key).into_owned();
            *sent_to_hung.entry(key).or_default() += 1;
        }
    }
    assert!(
        sent_to_hung.values().all(|&count| count == 1),
        "a write went to the hung node again after timing out there: {sent_to_hung:?}"
    );
}

/// Answers every part of a range delete with success, except group 2's with NoLeader.
struct GroupTwoHasNoLeader;

impl Behaviour for GroupTwoHasNoLeader {
    fn on_request(&self, _: usize, _: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        match request.kind {
            RequestKind::Kv { group: Some(2), .. } => {
                Reaction::Send(vec![failure(&request, ErrorCode::NoLeader, None)])
            }
            _ => Reaction::Send(vec![success(&request)]),
        }
    }
}

// A range delete goes to every group as its own part; when one group cannot take it
// while others applied theirs, the caller learns the outcome is unknown (not
// "unavailable", which promises nothing was applied), and every part was waited for.
// Starting a range delete without a group is refused, pointing to delete_with.
#[test]
fn a_range_delete_that_fails_part_way_is_an_unknown_outcome() {
    let groups = 4;
    let cluster = FakeCluster::start(1, groups, None, GroupTwoHasNoLeader);
    let options = ClientOptions {
        retries_max: 2,
        ..quick_options()
    };
    let client = connect(&cluster, 0, options);
    let error = client.delete_range("a", "z").unwrap_err();
    assert!(
        matches!(error, ClientError::OutcomeUnknown { .. }),
        "{error:?}"
    );
    let mut scoped: Vec<u64> = cluster
        .journal
        .requests()
        .iter()
        .map(|(_, request)| match &request.kind {
            RequestKind::Kv { group, .. } => group.expect("every part names its group"),
            other => panic!("{other:?}"),
        })
        .collect();
    scoped.sort_unstable();
    scoped.dedup();
    assert_eq!(scoped, (0..groups).collect::<Vec<_>>());
    let ranged = kv::Op::Delete(kv::DeleteRequest {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        prev_kv: false,
    });
    assert!(matches!(
        client.start(ranged, false),
        Err(ClientError::InvalidArgument(_))
    ));
}

/// Loses the answer to the first write: closes the connection (`close`) or stays silent.
struct LoseFirstWrite {
    close: bool,
    writes: AtomicUsize,
}

impl Behaviour for LoseFirstWrite {
    fn on_request(&self, _: usize, _: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        if self.writes.fetch_add(1, Ordering::SeqCst) > 0 {
            return Reaction::Send(vec![success(&request)]);
        }
        if self.close {
            Reaction::Close
        } else {
            Reaction::Send(Vec::new())
        }
    }
}

fn check_retry_keeps_the_session(close: bool) {
    let cluster = FakeCluster::start(
        1,
        1,
        None,
        LoseFirstWrite {
            close,
            writes: AtomicUsize::new(0),
        },
    );
    let options = ClientOptions {
        attempt_timeout: Duration::from_millis(200),
        ..quick_options()
    };
    let client = connect(&cluster, 0, options);
    client.put("k", "v1").unwrap();
    client.put("k", "v2").unwrap();
    let sessions: Vec<(u64, u64)> = cluster
        .journal
        .requests()
        .iter()
        .map(|(_, request)| session_of(request))
        .collect();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let client_id = sessions[0].0;
    assert_ne!(client_id, 0);
    assert_eq!(
        sessions,
        vec![(client_id, 1), (client_id, 1), (client_id, 2)],
        "the retry repeats (client id, seq); the next write takes the next seq"
    );
}

// A write whose connection closes before the answer is retried with the same
// (client id, seq).
#[test]
fn a_write_is_retried_with_the_same_session_after_the_connection_drops() {
    check_retry_keeps_the_session(true);
}

// A write whose answer never comes is retried after the attempt timeout with the same
// (client id, seq).
#[test]
fn a_write_is_retried_with_the_same_session_after_a_silent_drop() {
    check_retry_keeps_the_session(false);
}

// Each group's session starts at seq 1 and rises by one per write, independently of the
// other groups, under one client id.
#[test]
fn session_seqs_are_per_group_and_start_at_one() {
    const GROUPS: u64 = 4;
    let cluster = FakeCluster::start(1, GROUPS, None, AlwaysSucceed);
    let client = connect(&cluster, 0, quick_options());
    for key in 0..40 {
        client.put(format!("key-{key}"), "v").unwrap();
    }
    let mut seqs_by_group: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut client_ids = Vec::new();
    for (_, request) in cluster.journal.requests() {
        let command = command(&request);
        let kv::Op::Put(put) = &command.op else {
            panic!("only puts were sent")
        };
        client_ids.push(command.client_id);
        seqs_by_group
            .entry(group_of(&put.key, GROUPS))
            .or_default()
            .push(command.seq);
    }
    client_ids.dedup();
    assert_eq!(client_ids.len(), 1, "one thread reuses one session");
    assert_eq!(
        seqs_by_group.len(),
        GROUPS as usize,
        "every group was written"
    );
    for (group, seqs) in seqs_by_group {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "group {group}");
    }
}

/// Always answers with one error code.
struct AlwaysFail(ErrorCode);

impl Behaviour for AlwaysFail {
    fn on_request(&self, _: usize, _: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        Reaction::Send(vec![failure(&request, self.0, None)])
    }
}

// With no leader, a write is tried exactly retries_max + 1 times with one session, then
// fails as Unavailable naming the cause; since it was never accepted, the next write
// reuses the seq.
#[test]
fn gives_up_after_retries_max_with_a_clear_error() {
    let cluster = FakeCluster::start(1, 1, None, AlwaysFail(ErrorCode::NoLeader));
    let options = ClientOptions {
        retries_max: 3,
        ..quick_options()
    };
    let client = connect(&cluster, 0, options);
    let error = client.put("k", "v").unwrap_err();
    let ClientError::Unavailable {
        attempts,
        last_error,
    } = &error
    else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert_eq!(*attempts, 4);
    assert!(last_error.contains("NoLeader"), "{error}");
    let sessions: Vec<(u64, u64)> = cluster
        .journal
        .requests()
        .iter()
        .map(|(_, request)| session_of(request))
        .collect();
    assert_eq!(sessions.len(), 4);
    assert!(sessions.iter().all(|&session| session == sessions[0]));
    assert_eq!(sessions[0].1, 1);

    let _ = client.put("k", "v").unwrap_err();
    let after = cluster.journal.requests();
    assert_eq!(
        session_of(&after[4].1),
        sessions[0],
        "the seq was not used up"
    );
}

// A write whose outcome stays unknown (the server keeps answering Timeout) ends as
// OutcomeUnknown, not as Unavailable.
#[test]
fn an_unknown_outcome_is_reported_as_such() {
    let cluster = FakeCluster::start(1, 1, None, AlwaysFail(ErrorCode::Timeout));
    let options = ClientOptions {
        retries_max: 2,
        ..quick_options()
    };
    let client = connect(&cluster, 0, options);
    let error = client.put("k", "v").unwrap_err();
    assert!(
        matches!(error, ClientError::OutcomeUnknown { attempts: 3, .. }),
        "{error:?}"
    );
    // The next write does not stand beside a copy that may still be in flight: it opens a
    // fresh client id.
    let first = session_of(&cluster.journal.requests()[0].1);
    let _ = client.put("k", "v").unwrap_err();
    let next = session_of(&cluster.journal.requests()[3].1);
    assert_ne!(next.0, first.0);
    assert_eq!(next.1, 1);
    // Reads are never "outcome unknown".
    let error = client.get("k").unwrap_err();
    assert!(
        matches!(error, ClientError::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
}

/// Refuses the second write with SessionExpired, as a group that evicted the session
/// would, and accepts everything else.
struct ExpireSecondWrite {
    writes: AtomicUsize,
}

impl Behaviour for ExpireSecondWrite {
    fn on_request(&self, _: usize, _: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        if self.writes.fetch_add(1, Ordering::SeqCst) == 1 {
            Reaction::Send(vec![failure(&request, ErrorCode::SessionExpired, None)])
        } else {
            Reaction::Send(vec![success(&request)])
        }
    }
}

// A write refused as SessionExpired on its first delivery was not applied: it is sent
// again as seq 1 of a fresh client id, and the caller sees success.
#[test]
fn an_expired_session_is_replaced_transparently() {
    let cluster = FakeCluster::start(
        1,
        1,
        None,
        ExpireSecondWrite {
            writes: AtomicUsize::new(0),
        },
    );
    let client = connect(&cluster, 0, quick_options());
    client.put("k", "v1").unwrap();
    client.put("k", "v2").unwrap();
    client.put("k", "v3").unwrap();
    let sessions: Vec<(u64, u64)> = cluster
        .journal
        .requests()
        .iter()
        .map(|(_, request)| session_of(request))
        .collect();
    let (old, fresh) = (sessions[0].0, sessions[2].0);
    assert_ne!(old, fresh);
    assert_eq!(
        sessions,
        vec![(old, 1), (old, 2), (fresh, 1), (fresh, 2)],
        "{sessions:?}"
    );
}

// A refused write is reported with its code and message, and is not retried.
#[test]
fn a_refusal_is_reported_once() {
    let cluster = FakeCluster::start(1, 1, None, AlwaysFail(ErrorCode::ValueTooLarge));
    let client = connect(&cluster, 0, quick_options());
    let error = client.put("k", "v").unwrap_err();
    assert_eq!(
        error,
        ClientError::Rejected {
            code: ErrorCode::ValueTooLarge,
            message: "fake ValueTooLarge".to_string()
        }
    );
    assert_eq!(cluster.journal.requests().len(), 1);
}

/// Node 0 accepts connections and closes them at once; the others serve.
struct FirstNodeDead;

impl Behaviour for FirstNodeDead {
    fn on_request(&self, node: usize, _: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        if node == 0 {
            Reaction::Close
        } else {
            Reaction::Send(vec![success(&request)])
        }
    }
}

// A node that drops every connection and a node that refuses connections are skipped:
// every read succeeds on the live node, the dropping node is contacted only a bounded
// number of times, and status_all reports each node's state.
#[test]
fn dead_nodes_are_skipped() {
    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let cluster = FakeCluster::start(2, 4, None, FirstNodeDead);
    // The client connects through the live node and learns the two fake nodes; the
    // refused address comes in as an extra endpoint that is never a member, so it is
    // reached only through `status`.
    let options = ClientOptions {
        reconnect_backoff_initial: Duration::from_secs(30),
        reconnect_backoff_max: Duration::from_secs(30),
        ..quick_options()
    };
    let client = Client::connect(&[refused.clone(), cluster.addresses[1].clone()], options)
        .expect("the live endpoint answers");
    for read in 0..30 {
        let key = format!("key-{read}");
        let pair = client.get(&key).unwrap().expect("present");
        assert_eq!(pair.value, format!("value-of-{key}").into_bytes());
    }
    assert!(
        cluster.journal.accepted(0) <= 1,
        "the dead node was contacted {} times",
        cluster.journal.accepted(0)
    );
    let statuses = client.status_all();
    assert_eq!(statuses.len(), 2);
    assert!(statuses[0].result.is_err(), "{:?}", statuses[0]);
    assert_eq!(statuses[1].result.as_ref().unwrap().node_id, 2);
    assert!(matches!(
        client.status(&refused),
        Err(ClientError::Unavailable { .. })
    ));
}

// With every endpoint dead, connect fails as Unavailable naming the last endpoint.
#[test]
fn connect_to_dead_endpoints_is_unavailable() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let error = Client::connect(std::slice::from_ref(&dead), quick_options()).unwrap_err();
    match error {
        ClientError::Unavailable {
            attempts,
            last_error,
        } => {
            assert_eq!(attempts, 1);
            assert!(last_error.contains(&dead), "{last_error}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        Client::connect(&[], quick_options()),
        Err(ClientError::InvalidArgument(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Operations started without waiting
// ---------------------------------------------------------------------------------------

/// How long a test waits for all of its pending operations before it fails.
const HARVEST_WAIT_MAX: Duration = Duration::from_secs(60);
/// How often every pending operation is moved on, for the retry pauses and attempt
/// timeouts that raise no completion tag.
const SWEEP_INTERVAL: Duration = Duration::from_millis(10);

fn put_op(key: &str, value: &str) -> kv::Op {
    kv::Op::Put(kv::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..kv::PutRequest::default()
    })
}

fn get_op(key: &str) -> kv::Op {
    kv::Op::Range(kv::RangeRequest::get(key.as_bytes()))
}

/// Waits for every operation through its completion queue (each is tagged with its
/// index), and moves all of them on every [`SWEEP_INTERVAL`]; returns the results in
/// order.
fn harvest(
    completions: &Completions,
    pendings: Vec<Pending<'_>>,
) -> Vec<Result<kv::Response, ClientError>> {
    let mut pendings: Vec<Option<Pending<'_>>> = pendings.into_iter().map(Some).collect();
    let mut results: Vec<Option<Result<kv::Response, ClientError>>> =
        pendings.iter().map(|_| None).collect();
    let mut left = pendings.len();
    let deadline = Instant::now() + HARVEST_WAIT_MAX;
    let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
    let mut tags = Vec::new();
    while left > 0 {
        assert!(
            Instant::now() < deadline,
            "{left} operations still pending after {HARVEST_WAIT_MAX:?}"
        );
        tags.clear();
        completions.wait_until(next_sweep, &mut tags);
        let candidates: Vec<usize> = if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + SWEEP_INTERVAL;
            (0..pendings.len()).collect()
        } else {
            tags.iter().map(|&tag| tag as usize).collect()
        };
        for index in candidates {
            let Some(pending) = pendings[index].as_mut() else {
                continue;
            };
            if pending.is_ready() {
                let pending = pendings[index].take().expect("present");
                results[index] = Some(pending.wait());
                left -= 1;
            }
        }
    }
    assert_eq!(completions.registered(), 0, "every operation unregistered");
    results
        .into_iter()
        .map(|result| result.expect("harvested"))
        .collect()
}

fn value_of(response: &kv::Response, key: &str) -> Option<KeyValue> {
    match &response.op {
        OpResponse::Range(range) => range
            .kvs
            .iter()
            .find(|pair| pair.key == key.as_bytes())
            .cloned(),
        other => panic!("a get answered {other:?}"),
    }
}

// Pending writes that each reach a follower first follow its NotLeader hint to the
// leader and are answered there, each keeping its own (client id, seq) across the
// redirect.
#[test]
fn pending_writes_follow_a_redirect_with_their_sessions() {
    const WRITES: usize = 9;
    let cluster = start_with_leader(3, 2, None);
    let client = connect(&cluster, 0, quick_options());
    let completions = Arc::new(Completions::new(WRITES).unwrap());
    // Answers are taken only when a write is harvested (or, for a fast one, while the
    // next writes start), so mostly no leader is cached yet and the writes spread over
    // all three nodes.
    let pendings: Vec<Pending<'_>> = (0..WRITES)
        .map(|index| {
            client
                .start_tagged(
                    put_op("k", &format!("v{index}")),
                    false,
                    &completions,
                    index as u64,
                )
                .unwrap()
        })
        .collect();
    for result in harvest(&completions, pendings) {
        assert!(matches!(result.unwrap().op, OpResponse::Put(_)));
    }
    let requests = cluster.journal.requests();
    let delivered_at_leader = requests.iter().filter(|(node, _)| *node == 2).count();
    let at_leader: BTreeSet<(u64, u64)> = requests
        .iter()
        .filter(|(node, _)| *node == 2)
        .map(|(_, request)| session_of(request))
        .collect();
    assert_eq!(delivered_at_leader, WRITES);
    let at_followers: Vec<(u64, u64)> = requests
        .iter()
        .filter(|(node, _)| *node != 2)
        .map(|(_, request)| session_of(request))
        .collect();
    assert_eq!(
        at_leader.len(),
        WRITES,
        "one delivery per write at the leader"
    );
    assert!(
        !at_followers.is_empty(),
        "some writes went to a follower first"
    );
    for session in &at_followers {
        assert!(
            at_leader.contains(session),
            "{session:?} was redirected under another session"
        );
    }
    // Each write in flight holds its own session; a session goes back to the pool only
    // with its write's result (a fast answer may come while the next writes start), so a
    // client id's writes carry seqs 1, 2, ... with neither a repeat nor a gap.
    let mut seqs_by_client: HashMap<u64, Vec<u64>> = HashMap::new();
    for &(client_id, seq) in &at_leader {
        seqs_by_client.entry(client_id).or_default().push(seq);
    }
    for (client_id, seqs) in &seqs_by_client {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, &expected, "client id {client_id:x}");
    }
}

// Waiting for an operation of a batch that was not flushed yet sends its request first:
// the one delivery is answered, with no retry after an attempt timeout.
#[test]
fn waiting_on_an_unflushed_batch_sends_the_request() {
    let cluster = FakeCluster::start(1, 4, None, AlwaysSucceed);
    let client = connect(&cluster, 0, quick_options());
    let mut batch = client.batch();
    let pending = batch.start(get_op("k"), false).unwrap();
    let response = pending.wait().expect("answered");
    assert_eq!(
        value_of(&response, "k").map(|pair| pair.value),
        Some(b"value-of-k".to_vec())
    );
    assert_eq!(cluster.journal.requests().len(), 1);
    drop(batch);
}

/// Never answers the first write (as a node whose reply was lost), answers the rest.
struct HoldFirstWrite {
    writes: AtomicUsize,
}

impl Behaviour for HoldFirstWrite {
    fn on_request(&self, _: usize, held: &mut Vec<ApiRequest>, request: ApiRequest) -> Reaction {
        if self.writes.fetch_add(1, Ordering::SeqCst) == 0 {
            held.push(request);
            return Reaction::Send(Vec::new());
        }
        Reaction::Send(vec![success(&request)])
    }
}

// A pending write dropped before its answer may still apply, so its session is retired:
// the next write does not reuse its (client id, seq).
#[test]
fn a_dropped_pending_write_retires_its_session() {
    let cluster = FakeCluster::start(
        1,
        1,
        None,
        HoldFirstWrite {
            writes: AtomicUsize::new(0),
        },
    );
    let options = ClientOptions {
        sessions_max: 1,
        ..quick_options()
    };
    let client = connect(&cluster, 0, options);
    let abandoned = client.start(put_op("k", "first"), false).unwrap();
    wait_for("the first write to arrive", || {
        (!cluster.journal.requests().is_empty()).then_some(())
    });
    drop(abandoned);
    client.put("k", "second").unwrap();
    let sessions: Vec<(u64, u64)> = cluster
        .journal
        .requests()
        .iter()
        .map(|(_, request)| session_of(request))
        .collect();
    assert_eq!(sessions.len(), 2);
    assert_ne!(sessions[0].0, sessions[1].0, "{sessions:?}");
    assert_eq!(sessions[1].1, 1);
}

// A write's session comes back only when its owner takes the result: a thread whose own
// pending writes hold every session gets a timeout from the next write's start instead of
// waiting forever.
#[test]
fn start_times_out_when_every_session_is_held() {
    let cluster = FakeCluster::start(1, 1, None, AnswerBatchReversed { batch: 2 });
    let options = ClientOptions {
        sessions_max: 1,
        request_timeout: Duration::from_secs(1),
        ..quick_options()
    };
    let client = connect(&cluster, 0, options);
    let held = client.start(put_op("a", "1"), false).unwrap();
    // A read needs no session; with it the fake holds two requests and answers both.
    let read = client.start(get_op("c"), false).unwrap();
    assert!(read.wait().is_ok());
    let error = client.start(put_op("b", "2"), false).unwrap_err();
    assert!(
        matches!(error, ClientError::Timeout { attempts: 0, .. }),
        "{error:?}"
    );
    // The held write's answer came long before its deadline passed.
    assert!(held.wait().is_ok());
}

/// Options of the real-cluster tests: long deadlines for a busy machine, room for many
/// writes in flight from one thread, and a short attempt timeout so that a request to a
/// frozen leader is retried elsewhere soon.
fn cluster_options(sessions_max: usize) -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(30),
        attempt_timeout: Duration::from_millis(500),
        sessions_max,
        ..ClientOptions::default()
    }
}

// Hundreds of puts started from one thread before any answer is taken (half of them
// written together through a batch) are all answered and applied exactly once: every put
// has its own log position, and each key's version counts exactly its puts.
#[test]
fn many_pending_puts_from_one_thread_apply_once() {
    const KEYS: usize = 64;
    const PUTS_PER_KEY: usize = 4;
    const PUTS: usize = KEYS * PUTS_PER_KEY;
    let cluster = TestCluster::start_with("pending-many", 3, 1, 4, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    let client = Client::connect(&cluster.endpoints(), cluster_options(PUTS)).expect("connect");
    let completions = Arc::new(Completions::new(PUTS).unwrap());
    let key = |index: usize| format!("many/{}", index % KEYS);
    let value = |index: usize| format!("value-{index}");
    let mut batch = client.batch();
    let pendings: Vec<Pending<'_>> = (0..PUTS)
        .map(|index| {
            let op = put_op(&key(index), &value(index));
            let tag = index as u64;
            if index % 2 == 0 {
                client.start_tagged(op, false, &completions, tag)
            } else {
                batch.start_tagged(op, false, &completions, tag)
            }
            .expect("start")
        })
        .collect();
    batch.flush();
    assert_eq!(completions.registered(), PUTS);
    let mut positions = BTreeSet::new();
    for (index, result) in harvest(&completions, pendings).into_iter().enumerate() {
        let response = result.unwrap_or_else(|error| panic!("put {index}: {error}"));
        assert!(matches!(response.op, OpResponse::Put(_)), "{response:?}");
        let group = group_of(key(index).as_bytes(), cluster.groups);
        assert!(
            positions.insert((group, response.revision)),
            "put {index} shares log position {} of group {group}",
            response.revision
        );
    }
    for index in 0..KEYS {
        let pair = client.get(key(index)).expect("get").expect("present");
        assert_eq!(pair.version, PUTS_PER_KEY as u64, "{}", key(index));
        let written: Vec<Vec<u8>> = (0..PUTS_PER_KEY)
            .map(|round| value(index + round * KEYS).into_bytes())
            .collect();
        assert!(
            written.contains(&pair.value),
            "{}: {:?}",
            key(index),
            pair.value
        );
    }
}

// A pending get started right after a put of the same key was answered returns that put's
// value, for many keys at once from one thread.
#[test]
fn a_pending_get_returns_the_key_just_put() {
    const KEYS: usize = 32;
    let cluster = TestCluster::start_with("pending-get", 3, 1, 4, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    let client = Client::connect(&cluster.endpoints(), cluster_options(KEYS)).expect("connect");
    let completions = Arc::new(Completions::new(KEYS).unwrap());
    let key = |index: usize| format!("just-put/{index}");
    let value = |index: usize| format!("fresh-{index}");
    let pendings: Vec<Pending<'_>> = (0..KEYS)
        .map(|index| {
            let put = client
                .start(put_op(&key(index), &value(index)), false)
                .unwrap();
            put.wait().expect("put");
            client
                .start_tagged(get_op(&key(index)), false, &completions, index as u64)
                .expect("start")
        })
        .collect();
    for (index, result) in harvest(&completions, pendings).into_iter().enumerate() {
        let response = result.expect("get");
        let pair = value_of(&response, &key(index)).expect("the key just put");
        assert_eq!(pair.value, value(index).into_bytes());
    }
}

// Pending puts sent to a leader frozen with SIGSTOP are answered after the others elect a
// new leader (the attempt times out and the retry finds the new one), each applied once
// even after the frozen node wakes up and reads the first copies.
#[test]
fn pending_puts_are_answered_after_a_leader_change() {
    const PUTS: usize = 16;
    let cluster = TestCluster::start_with("pending-leader", 3, 1, 4, &SMALL_SEGMENT_ARGS);
    let leaders = cluster.wait_for_leaders();
    let client = Client::connect(&cluster.endpoints(), cluster_options(PUTS)).expect("connect");
    let group = group_of(b"leader-change/warm", cluster.groups);
    let leader = leaders[&group];
    // The write teaches the client the group's leader, so the pending puts go there.
    client.put("leader-change/warm", "x").expect("put");
    let keys: Vec<String> = (0..)
        .map(|index| format!("leader-change/{index}"))
        .filter(|key| group_of(key.as_bytes(), cluster.groups) == group)
        .take(PUTS)
        .collect();
    cluster.signal(leader, "-STOP");
    let completions = Arc::new(Completions::new(PUTS).unwrap());
    let pendings: Vec<Pending<'_>> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            client
                .start_tagged(put_op(key, "after"), false, &completions, index as u64)
                .expect("start")
        })
        .collect();
    let results = harvest(&completions, pendings);
    // Before the frozen node wakes up, the others agree on a new leader of the group.
    let new_leader = cluster.wait_for_new_leader(group, leader);
    cluster.signal(leader, "-CONT");
    println!("group {group}: froze node {leader}, new leader {new_leader}");
    for (key, result) in keys.iter().zip(results) {
        let response = result.unwrap_or_else(|error| panic!("{key}: {error}"));
        assert!(matches!(response.op, OpResponse::Put(_)), "{response:?}");
    }
    // The woken node has read the first copies by the time it caught up: none applied a
    // second time.
    cluster.wait_for_catch_up(leader);
    for key in &keys {
        let pair = client.get(key).expect("get").expect("present");
        assert_eq!(
            (pair.value.as_slice(), pair.version),
            (b"after".as_slice(), 1),
            "{key}"
        );
    }
}
