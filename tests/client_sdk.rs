//! The SDK against in-process fake nodes that speak the real protocol (frames carrying
//! FlatBuffers requests and responses over std TCP): pipelining, leader hints, retries
//! with the same session, per-group sessions, the retry bound, and dead nodes.
//!
//! Each fake node answers Status itself and hands every key-value request to the test's
//! behaviour, which decides per request: answer now, hold it, or close the connection.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use corekv::api::{
    self, ApiError, ApiRequest, ApiResponse, ApiResult, ErrorCode, LeaderHint, Member, RequestKind,
    StatusInfo,
};
use corekv::client::{Client, ClientError, ClientOptions};
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
                RequestKind::Kv { .. } => {
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
        RequestKind::Status => panic!("a key-value request"),
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
