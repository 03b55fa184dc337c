//! Feeds the decoders of everything that arrives from outside (the frame layer, the
//! FlatBuffers verifier behind `codec` and `api`, and their own checks) with random bytes
//! and with valid frames and payloads that were bit-flipped, overwritten or truncated:
//! none of it may panic, and every valid frame must come back exactly as it was sent.
//!
//! Seeded and replayable: every run prints its seed (`COREKV_TEST_SEED` when set, else
//! from the clock); each case draws from a generator derived from (seed, case number), so
//! one failing case replays alone with
//! `COREKV_TEST_SEED=<seed> COREKV_FUZZ_ONLY_CASE=<case> cargo test --test fuzz_decoders`.
//! `COREKV_FUZZ_CASES` changes the number of cases (by default 100,000 mutated inputs and
//! 10,000 valid round trips).

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use corekv::api;
use corekv::codec::{self, PeerBatch};
use corekv::frame::{self, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
use corekv::proto;
use corekv::raft::rng::SeededRng;
use corekv::raft::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, Message, MessageKind, SnapshotChunk,
    SnapshotMeta,
};
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

/// Mutated and random inputs per run unless `COREKV_FUZZ_CASES` says otherwise.
const MUTATION_CASES_DEFAULT: u64 = 100_000;
/// Random valid streams per run unless `COREKV_FUZZ_CASES` says otherwise. Fewer: each
/// case builds, encodes and decodes a whole batch and more, which is slow in debug builds.
const ROUND_TRIP_CASES_DEFAULT: u64 = 10_000;
/// Valid payloads of each family built per run and then mutated.
const CORPUS_PER_FAMILY: usize = 32;
/// Longest random input, in bytes.
const RANDOM_INPUT_BYTES_MAX: usize = 512;
/// Most bit flips applied to one valid input.
const BIT_FLIPS_MAX: usize = 8;
/// Most messages in a random peer batch.
const BATCH_MESSAGES_MAX: usize = 24;
/// Most entries in a random append.
const ENTRIES_MAX: usize = 8;
/// Longest random key, value or payload, in bytes.
const BYTES_MAX: usize = 48;
/// Most items in a random list (transaction ops, key-value pairs, events, groups).
const LIST_MAX: usize = 6;

/// The crate's SplitMix64 generator with the draws the fuzzer needs.
#[derive(Debug)]
struct Rng(SeededRng);

impl Rng {
    fn for_case(seed: u64, case: u64) -> Rng {
        let mut rng = Rng(SeededRng::new(
            seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..bound` (bound > 0); the modulo bias is irrelevant here.
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    /// Mostly small numbers, sometimes the edges, sometimes anything.
    fn number(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => self.next(),
            _ => self.next() % 1000,
        }
    }

    fn bytes(&mut self, length_max: usize) -> Vec<u8> {
        let length = self.below(length_max + 1);
        (0..length).map(|_| self.next() as u8).collect()
    }

    /// Sorted, unique, nonzero node ids.
    fn node_ids(&mut self, exclude: &[u64]) -> Vec<u64> {
        let mut ids: Vec<u64> = (0..self.below(5))
            .map(|_| 1 + self.next() % 9)
            .filter(|id| !exclude.contains(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// The run's seed: `COREKV_TEST_SEED`, or the clock when it is not set.
fn run_seed() -> u64 {
    corekv::testing::test_seed()
}

/// Runs `case` for every case number with its own generator, printing what replays a
/// failure.
fn run_cases(test: &str, seed: u64, cases_default: u64, mut case: impl FnMut(&mut Rng)) {
    let cases = env_u64("COREKV_FUZZ_CASES").unwrap_or(cases_default);
    let only_case = env_u64("COREKV_FUZZ_ONLY_CASE");
    println!(
        "{test}: seed {seed}, {cases} cases; replay: COREKV_TEST_SEED={seed} \
         cargo test --test fuzz_decoders {test}"
    );
    let numbers: Box<dyn Iterator<Item = u64>> = match only_case {
        Some(number) => Box::new(std::iter::once(number)),
        None => Box::new(0..cases),
    };
    for number in numbers {
        let mut rng = Rng::for_case(seed, number);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| case(&mut rng)));
        if let Err(payload) = outcome {
            eprintln!(
                "{test}: case {number} failed; replay it alone: COREKV_TEST_SEED={seed} \
                 COREKV_FUZZ_ONLY_CASE={number} cargo test --test fuzz_decoders {test}"
            );
            panic::resume_unwind(payload);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Valid values
// ---------------------------------------------------------------------------------------

const KINDS: [MessageKind; 13] = [
    MessageKind::Vote,
    MessageKind::VoteResponse,
    MessageKind::PreVote,
    MessageKind::PreVoteResponse,
    MessageKind::Append,
    MessageKind::AppendResponse,
    MessageKind::Heartbeat,
    MessageKind::HeartbeatResponse,
    MessageKind::Snapshot,
    MessageKind::SnapshotResponse,
    MessageKind::TimeoutNow,
    MessageKind::ReadIndex,
    MessageKind::ReadIndexResponse,
];

fn random_entries(rng: &mut Rng, after_index: u64) -> Vec<Entry> {
    let count = rng.below(ENTRIES_MAX + 1) as u64;
    let after_index = after_index.min(u64::MAX - count);
    let mut term = rng.number() / 2;
    (1..=count)
        .map(|offset| {
            term = term.saturating_add(rng.below(2) as u64);
            let (kind, data) = if rng.below(4) == 0 {
                let change = ConfChange {
                    kind: [
                        ConfChangeKind::AddVoter,
                        ConfChangeKind::AddLearner,
                        ConfChangeKind::RemoveNode,
                    ][rng.below(3)],
                    node_id: rng.number(),
                };
                (EntryKind::ConfChange, change.encode())
            } else {
                (EntryKind::Normal, Arc::from(rng.bytes(BYTES_MAX)))
            };
            Entry {
                term,
                index: after_index + offset,
                kind,
                data,
            }
        })
        .collect()
}

fn random_chunk(rng: &mut Rng) -> SnapshotChunk {
    let voters = rng.node_ids(&[]);
    let learners = rng.node_ids(&voters);
    let data: Arc<[u8]> = Arc::from(rng.bytes(BYTES_MAX));
    let offset = rng.number() % (1 << 40);
    let total_bytes = offset + data.len() as u64 + rng.number() % 100;
    SnapshotChunk {
        meta: SnapshotMeta {
            index: rng.number(),
            term: rng.number(),
            conf: ConfState { voters, learners },
        },
        offset,
        total_bytes,
        data,
    }
}

fn random_message(rng: &mut Rng) -> Message {
    let kind = KINDS[rng.below(KINDS.len())];
    let mut message = Message::new(kind, rng.number(), rng.number(), rng.number());
    message.log_term = rng.number();
    message.index = rng.number();
    message.commit = rng.number();
    message.reject = rng.coin();
    message.reject_hint = rng.number();
    message.context = rng.number();
    match kind {
        MessageKind::Append => {
            message.entries = random_entries(rng, message.index);
            if let Some(first) = message.entries.first() {
                message.index = first.index - 1;
            }
        }
        MessageKind::Snapshot => message.snapshot = Some(random_chunk(rng)),
        _ => {}
    }
    message
}

fn random_batch(rng: &mut Rng) -> PeerBatch {
    PeerBatch {
        cluster_id: rng.number(),
        from_node: 1 + rng.number() % 1000,
        from_shard: rng.next() as u32,
        to_shard: rng.next() as u32,
        messages: (0..rng.below(BATCH_MESSAGES_MAX + 1))
            .map(|_| (rng.number(), random_message(rng)))
            .collect(),
    }
}

type Builder = FlatBufferBuilder<'static>;

fn key_range(
    rng: &mut Rng,
    builder: &mut Builder,
) -> (
    WIPOffset<flatbuffers::Vector<'static, u8>>,
    Option<WIPOffset<flatbuffers::Vector<'static, u8>>>,
) {
    let key = rng.bytes(BYTES_MAX);
    let key = builder.create_vector(&key);
    let range_end = rng.coin().then(|| rng.bytes(BYTES_MAX));
    let range_end = range_end.map(|end| builder.create_vector(&end));
    (key, range_end)
}

/// One of the four operations a transaction may hold: (union discriminant index, value).
fn random_simple_op(rng: &mut Rng, builder: &mut Builder) -> (usize, WIPOffset<UnionWIPOffset>) {
    let (key, range_end) = key_range(rng, builder);
    let value = rng.bytes(BYTES_MAX);
    let value = Some(builder.create_vector(&value));
    match rng.below(4) {
        0 => {
            let args = proto::PutRequestArgs {
                key: Some(key),
                value,
                lease: rng.number(),
                prev_kv: rng.coin(),
            };
            (
                0,
                proto::PutRequest::create(builder, &args).as_union_value(),
            )
        }
        1 => {
            let args = proto::RangeRequestArgs {
                key: Some(key),
                range_end,
                limit: rng.number(),
                keys_only: rng.coin(),
                count_only: rng.coin(),
                revision: rng.number(),
            };
            (
                1,
                proto::RangeRequest::create(builder, &args).as_union_value(),
            )
        }
        2 => {
            let args = proto::DeleteRequestArgs {
                key: Some(key),
                range_end,
                prev_kv: rng.coin(),
            };
            (
                2,
                proto::DeleteRequest::create(builder, &args).as_union_value(),
            )
        }
        _ => {
            let args = proto::AppendRequestArgs {
                key: Some(key),
                value,
            };
            (
                3,
                proto::AppendRequest::create(builder, &args).as_union_value(),
            )
        }
    }
}

const SIMPLE_OPS: [proto::Op; 4] = [
    proto::Op::PutRequest,
    proto::Op::RangeRequest,
    proto::Op::DeleteRequest,
    proto::Op::AppendRequest,
];
const TXN_OPS: [proto::TxnOp; 4] = [
    proto::TxnOp::PutRequest,
    proto::TxnOp::RangeRequest,
    proto::TxnOp::DeleteRequest,
    proto::TxnOp::AppendRequest,
];

fn random_txn_ops(
    rng: &mut Rng,
    builder: &mut Builder,
) -> WIPOffset<
    flatbuffers::Vector<'static, flatbuffers::ForwardsUOffset<proto::TxnRequestOp<'static>>>,
> {
    let ops: Vec<_> = (0..rng.below(LIST_MAX + 1))
        .map(|_| {
            let (which, op) = random_simple_op(rng, builder);
            let args = proto::TxnRequestOpArgs {
                op_type: TXN_OPS[which],
                op: Some(op),
            };
            proto::TxnRequestOp::create(builder, &args)
        })
        .collect();
    builder.create_vector(&ops)
}

fn random_request(rng: &mut Rng) -> Vec<u8> {
    let mut builder = Builder::new();
    let builder = &mut builder;
    let (op_type, op) = match rng.below(12) {
        0..=3 => {
            let (which, op) = random_simple_op(rng, builder);
            (SIMPLE_OPS[which], op)
        }
        4 => {
            let compares: Vec<_> = (0..rng.below(LIST_MAX + 1))
                .map(|_| {
                    let key = rng.bytes(BYTES_MAX);
                    let key = builder.create_vector(&key);
                    let value = rng.bytes(BYTES_MAX);
                    let value = builder.create_vector(&value);
                    let args = proto::CompareArgs {
                        key: Some(key),
                        target: proto::CompareTarget::ENUM_VALUES[rng.below(4)],
                        result: proto::CompareResult::ENUM_VALUES[rng.below(4)],
                        value: Some(value),
                        number: rng.number(),
                    };
                    proto::Compare::create(builder, &args)
                })
                .collect();
            let compares = builder.create_vector(&compares);
            let success = random_txn_ops(rng, builder);
            let failure = random_txn_ops(rng, builder);
            let args = proto::TxnRequestArgs {
                compares: Some(compares),
                success: Some(success),
                failure: Some(failure),
            };
            let txn = proto::TxnRequest::create(builder, &args);
            (proto::Op::TxnRequest, txn.as_union_value())
        }
        5 => {
            let args = proto::LeaseGrantRequestArgs {
                ttl_seconds: rng.number(),
                id: rng.number(),
            };
            let op = proto::LeaseGrantRequest::create(builder, &args);
            (proto::Op::LeaseGrantRequest, op.as_union_value())
        }
        6 => {
            let args = proto::LeaseRevokeRequestArgs { id: rng.number() };
            let op = proto::LeaseRevokeRequest::create(builder, &args);
            (proto::Op::LeaseRevokeRequest, op.as_union_value())
        }
        7 => {
            let args = proto::LeaseKeepAliveRequestArgs { id: rng.number() };
            let op = proto::LeaseKeepAliveRequest::create(builder, &args);
            (proto::Op::LeaseKeepAliveRequest, op.as_union_value())
        }
        8 => {
            let args = proto::LeaseTimeToLiveRequestArgs {
                id: rng.number(),
                keys: rng.coin(),
            };
            let op = proto::LeaseTimeToLiveRequest::create(builder, &args);
            (proto::Op::LeaseTimeToLiveRequest, op.as_union_value())
        }
        9 => {
            let (key, range_end) = key_range(rng, builder);
            let args = proto::WatchCreateRequestArgs {
                key: Some(key),
                range_end,
                start_revision: rng.number(),
                prev_kv: rng.coin(),
                progress_notify: rng.coin(),
                no_put: rng.coin(),
                no_delete: rng.coin(),
            };
            let op = proto::WatchCreateRequest::create(builder, &args);
            (proto::Op::WatchCreateRequest, op.as_union_value())
        }
        10 => {
            let args = proto::WatchCancelRequestArgs {
                watch_id: rng.number(),
            };
            let op = proto::WatchCancelRequest::create(builder, &args);
            (proto::Op::WatchCancelRequest, op.as_union_value())
        }
        _ => {
            let op = proto::StatusRequest::create(builder, &proto::StatusRequestArgs {});
            (proto::Op::StatusRequest, op.as_union_value())
        }
    };
    let args = proto::RequestArgs {
        request_id: rng.number(),
        client_id: rng.number(),
        seq: rng.number(),
        serializable: rng.coin(),
        op_type,
        op: Some(op),
        group: rng.coin().then(|| rng.number()),
        seen_revision: rng.number(),
    };
    let root = proto::Request::create(builder, &args);
    builder.finish_minimal(root);
    builder.finished_data().to_vec()
}

fn random_key_value(rng: &mut Rng, builder: &mut Builder) -> WIPOffset<proto::KeyValue<'static>> {
    let key = rng.bytes(BYTES_MAX);
    let key = builder.create_vector(&key);
    let value = rng.bytes(BYTES_MAX);
    let value = builder.create_vector(&value);
    let args = proto::KeyValueArgs {
        key: Some(key),
        value: Some(value),
        create_revision: rng.number(),
        mod_revision: rng.number(),
        version: rng.number(),
        lease: rng.number(),
    };
    proto::KeyValue::create(builder, &args)
}

fn random_key_values(
    rng: &mut Rng,
    builder: &mut Builder,
) -> WIPOffset<flatbuffers::Vector<'static, flatbuffers::ForwardsUOffset<proto::KeyValue<'static>>>>
{
    let kvs: Vec<_> = (0..rng.below(LIST_MAX + 1))
        .map(|_| random_key_value(rng, builder))
        .collect();
    builder.create_vector(&kvs)
}

/// One of the four results a transaction may hold: (union discriminant index, value).
fn random_simple_result(
    rng: &mut Rng,
    builder: &mut Builder,
) -> (usize, WIPOffset<UnionWIPOffset>) {
    match rng.below(4) {
        0 => {
            let prev_kv = rng.coin().then(|| random_key_value(rng, builder));
            let args = proto::PutResultArgs { prev_kv };
            (0, proto::PutResult::create(builder, &args).as_union_value())
        }
        1 => {
            let kvs = random_key_values(rng, builder);
            let args = proto::RangeResultArgs {
                kvs: Some(kvs),
                count: rng.number(),
                more: rng.coin(),
            };
            (
                1,
                proto::RangeResult::create(builder, &args).as_union_value(),
            )
        }
        2 => {
            let prev_kvs = random_key_values(rng, builder);
            let args = proto::DeleteResultArgs {
                deleted: rng.number(),
                prev_kvs: Some(prev_kvs),
            };
            (
                2,
                proto::DeleteResult::create(builder, &args).as_union_value(),
            )
        }
        _ => {
            let args = proto::AppendResultArgs {
                value_bytes: rng.number(),
            };
            (
                3,
                proto::AppendResult::create(builder, &args).as_union_value(),
            )
        }
    }
}

const SIMPLE_RESULTS: [proto::OpResult; 4] = [
    proto::OpResult::PutResult,
    proto::OpResult::RangeResult,
    proto::OpResult::DeleteResult,
    proto::OpResult::AppendResult,
];
const TXN_RESULTS: [proto::TxnOpResult; 4] = [
    proto::TxnOpResult::PutResult,
    proto::TxnOpResult::RangeResult,
    proto::TxnOpResult::DeleteResult,
    proto::TxnOpResult::AppendResult,
];

fn random_response(rng: &mut Rng) -> Vec<u8> {
    let mut builder = Builder::new();
    let builder = &mut builder;
    let result = match rng.below(12) {
        0..=3 => {
            let (which, result) = random_simple_result(rng, builder);
            Some((SIMPLE_RESULTS[which], result))
        }
        4 => {
            let responses: Vec<_> = (0..rng.below(LIST_MAX + 1))
                .map(|_| {
                    let (which, result) = random_simple_result(rng, builder);
                    let args = proto::TxnResponseOpArgs {
                        result_type: TXN_RESULTS[which],
                        result: Some(result),
                    };
                    proto::TxnResponseOp::create(builder, &args)
                })
                .collect();
            let responses = builder.create_vector(&responses);
            let args = proto::TxnResultArgs {
                succeeded: rng.coin(),
                responses: Some(responses),
            };
            let result = proto::TxnResult::create(builder, &args);
            Some((proto::OpResult::TxnResult, result.as_union_value()))
        }
        5 => {
            let args = proto::LeaseGrantResultArgs {
                id: rng.number(),
                ttl_seconds: rng.number(),
            };
            let result = proto::LeaseGrantResult::create(builder, &args);
            Some((proto::OpResult::LeaseGrantResult, result.as_union_value()))
        }
        6 => {
            let result = proto::LeaseRevokeResult::create(builder, &Default::default());
            Some((proto::OpResult::LeaseRevokeResult, result.as_union_value()))
        }
        7 => {
            let args = proto::LeaseKeepAliveResultArgs {
                id: rng.number(),
                ttl_seconds: rng.number(),
            };
            let result = proto::LeaseKeepAliveResult::create(builder, &args);
            Some((
                proto::OpResult::LeaseKeepAliveResult,
                result.as_union_value(),
            ))
        }
        8 => {
            let keys: Vec<_> = (0..rng.below(LIST_MAX + 1))
                .map(|_| {
                    let key = rng.bytes(BYTES_MAX);
                    let key = builder.create_vector(&key);
                    proto::LeaseKey::create(builder, &proto::LeaseKeyArgs { key: Some(key) })
                })
                .collect();
            let keys = builder.create_vector(&keys);
            let args = proto::LeaseTimeToLiveResultArgs {
                id: rng.number(),
                ttl_seconds: rng.number(),
                granted_ttl_seconds: rng.number(),
                keys: Some(keys),
            };
            let result = proto::LeaseTimeToLiveResult::create(builder, &args);
            Some((
                proto::OpResult::LeaseTimeToLiveResult,
                result.as_union_value(),
            ))
        }
        9 => {
            let events: Vec<_> = (0..rng.below(LIST_MAX + 1))
                .map(|_| {
                    let kv = random_key_value(rng, builder);
                    let prev_kv = rng.coin().then(|| random_key_value(rng, builder));
                    let args = proto::EventArgs {
                        kind: proto::EventKind::ENUM_VALUES[rng.below(2)],
                        kv: Some(kv),
                        prev_kv,
                    };
                    proto::Event::create(builder, &args)
                })
                .collect();
            let events = builder.create_vector(&events);
            let args = proto::WatchResultArgs {
                watch_id: rng.number(),
                created: rng.coin(),
                canceled: rng.coin(),
                compact_revision: rng.number(),
                events: Some(events),
                cancel_reason: None,
            };
            let result = proto::WatchResult::create(builder, &args);
            Some((proto::OpResult::WatchResult, result.as_union_value()))
        }
        10 => {
            let groups: Vec<_> = (0..rng.below(LIST_MAX + 1))
                .map(|_| {
                    let args = proto::GroupStatusArgs {
                        group_id: rng.number(),
                        leader: rng.number(),
                        term: rng.number(),
                        commit: rng.number(),
                        applied: rng.number(),
                        ..Default::default()
                    };
                    proto::GroupStatus::create(builder, &args)
                })
                .collect();
            let groups = builder.create_vector(&groups);
            let args = proto::StatusResultArgs {
                node_id: rng.number(),
                shards: rng.next() as u32,
                groups: Some(groups),
                ..Default::default()
            };
            let result = proto::StatusResult::create(builder, &args);
            Some((proto::OpResult::StatusResult, result.as_union_value()))
        }
        _ => None,
    };
    let status = if result.is_some() {
        proto::StatusCode::Ok
    } else {
        proto::StatusCode::ENUM_VALUES[rng.below(proto::StatusCode::ENUM_VALUES.len())]
    };
    let message = (status != proto::StatusCode::Ok).then(|| builder.create_string("refused"));
    let leader = (status == proto::StatusCode::NotLeader).then(|| {
        let address = builder.create_string("127.0.0.3:2379");
        let args = proto::LeaderHintArgs {
            node_id: rng.number(),
            client_address: Some(address),
        };
        proto::LeaderHint::create(builder, &args)
    });
    let (result_type, result) = match result {
        Some((result_type, result)) => (result_type, Some(result)),
        None => (proto::OpResult::NONE, None),
    };
    let args = proto::ResponseArgs {
        request_id: rng.number(),
        status,
        message,
        leader,
        revision: rng.number(),
        result_type,
        result,
    };
    let root = proto::Response::create(builder, &args);
    builder.finish_minimal(root);
    builder.finished_data().to_vec()
}

// ---------------------------------------------------------------------------------------
// Reading everything a verified request or response exposes
// ---------------------------------------------------------------------------------------

/// Sums every scalar and byte a reader could touch, so no accessor is skipped; the sum
/// itself means nothing.
#[derive(Debug, Default)]
struct Reader(u64);

impl Reader {
    fn number(&mut self, value: u64) {
        self.0 = self.0.wrapping_add(value);
    }

    fn numbers(&mut self, values: &[u64]) {
        for &value in values {
            self.number(value);
        }
    }

    fn bytes(&mut self, bytes: Option<flatbuffers::Vector<'_, u8>>) {
        if let Some(bytes) = bytes {
            self.number(bytes.bytes().iter().map(|&byte| u64::from(byte)).sum());
        }
    }

    fn key_value(&mut self, kv: proto::KeyValue<'_>) {
        self.bytes(Some(kv.key()));
        self.bytes(kv.value());
        for value in [
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease(),
        ] {
            self.number(value);
        }
    }

    fn key_values(
        &mut self,
        kvs: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<proto::KeyValue<'_>>>>,
    ) {
        for kv in kvs.iter().flatten() {
            self.key_value(kv);
        }
    }

    fn simple_op(
        &mut self,
        put: Option<proto::PutRequest<'_>>,
        range: Option<proto::RangeRequest<'_>>,
        delete: Option<proto::DeleteRequest<'_>>,
        append: Option<proto::AppendRequest<'_>>,
    ) {
        if let Some(put) = put {
            self.bytes(Some(put.key()));
            self.bytes(put.value());
            self.numbers(&[put.lease(), u64::from(put.prev_kv())]);
        }
        if let Some(range) = range {
            self.bytes(Some(range.key()));
            self.bytes(range.range_end());
            self.number(range.limit() ^ range.revision());
            self.numbers(&[u64::from(range.keys_only()), u64::from(range.count_only())]);
        }
        if let Some(delete) = delete {
            self.bytes(Some(delete.key()));
            self.bytes(delete.range_end());
            self.number(u64::from(delete.prev_kv()));
        }
        if let Some(append) = append {
            self.bytes(Some(append.key()));
            self.bytes(append.value());
        }
    }

    fn request(&mut self, request: proto::Request<'_>) {
        self.number(request.request_id() ^ request.client_id() ^ request.seq());
        self.number(u64::from(request.serializable()));
        self.simple_op(
            request.op_as_put_request(),
            request.op_as_range_request(),
            request.op_as_delete_request(),
            request.op_as_append_request(),
        );
        if let Some(txn) = request.op_as_txn_request() {
            for compare in txn.compares().iter().flatten() {
                self.bytes(Some(compare.key()));
                self.bytes(compare.value());
                self.number(compare.number());
                self.numbers(&[u64::from(compare.target().0), u64::from(compare.result().0)]);
            }
            for op in txn
                .success()
                .iter()
                .flatten()
                .chain(txn.failure().iter().flatten())
            {
                self.simple_op(
                    op.op_as_put_request(),
                    op.op_as_range_request(),
                    op.op_as_delete_request(),
                    op.op_as_append_request(),
                );
            }
        }
        if let Some(grant) = request.op_as_lease_grant_request() {
            self.number(grant.ttl_seconds() ^ grant.id());
        }
        if let Some(revoke) = request.op_as_lease_revoke_request() {
            self.number(revoke.id());
        }
        if let Some(keep_alive) = request.op_as_lease_keep_alive_request() {
            self.number(keep_alive.id());
        }
        if let Some(time_to_live) = request.op_as_lease_time_to_live_request() {
            self.numbers(&[time_to_live.id(), u64::from(time_to_live.keys())]);
        }
        if let Some(watch) = request.op_as_watch_create_request() {
            self.bytes(Some(watch.key()));
            self.bytes(watch.range_end());
            self.numbers(&[watch.start_revision(), u64::from(watch.prev_kv())]);
        }
        if let Some(cancel) = request.op_as_watch_cancel_request() {
            self.number(cancel.watch_id());
        }
        if request.op_as_status_request().is_some() {
            self.number(1);
        }
    }

    fn simple_result(
        &mut self,
        put: Option<proto::PutResult<'_>>,
        range: Option<proto::RangeResult<'_>>,
        delete: Option<proto::DeleteResult<'_>>,
        append: Option<proto::AppendResult<'_>>,
    ) {
        if let Some(put) = put {
            if let Some(kv) = put.prev_kv() {
                self.key_value(kv);
            }
        }
        if let Some(range) = range {
            self.key_values(range.kvs());
            self.numbers(&[range.count(), u64::from(range.more())]);
        }
        if let Some(delete) = delete {
            self.key_values(delete.prev_kvs());
            self.number(delete.deleted());
        }
        if let Some(append) = append {
            self.number(append.value_bytes());
        }
    }

    fn response(&mut self, response: proto::Response<'_>) {
        self.number(response.request_id() ^ response.revision());
        self.number(u64::from(response.status().0));
        self.number(response.message().map_or(0, |message| message.len() as u64));
        if let Some(leader) = response.leader() {
            self.number(leader.node_id());
            self.number(
                leader
                    .client_address()
                    .map_or(0, |address| address.len() as u64),
            );
        }
        self.simple_result(
            response.result_as_put_result(),
            response.result_as_range_result(),
            response.result_as_delete_result(),
            response.result_as_append_result(),
        );
        if let Some(txn) = response.result_as_txn_result() {
            self.number(u64::from(txn.succeeded()));
            for op in txn.responses().iter().flatten() {
                self.simple_result(
                    op.result_as_put_result(),
                    op.result_as_range_result(),
                    op.result_as_delete_result(),
                    op.result_as_append_result(),
                );
            }
        }
        if let Some(grant) = response.result_as_lease_grant_result() {
            self.number(grant.id() ^ grant.ttl_seconds());
        }
        if response.result_as_lease_revoke_result().is_some() {
            self.number(1);
        }
        if let Some(keep_alive) = response.result_as_lease_keep_alive_result() {
            self.number(keep_alive.id() ^ keep_alive.ttl_seconds());
        }
        if let Some(time_to_live) = response.result_as_lease_time_to_live_result() {
            self.number(time_to_live.id() ^ time_to_live.ttl_seconds());
            self.number(time_to_live.granted_ttl_seconds());
            for key in time_to_live.keys().iter().flatten() {
                self.bytes(Some(key.key()));
            }
        }
        if let Some(watch) = response.result_as_watch_result() {
            self.number(watch.watch_id() ^ watch.compact_revision());
            self.numbers(&[u64::from(watch.created()), u64::from(watch.canceled())]);
            for event in watch.events().iter().flatten() {
                self.number(u64::from(event.kind().0));
                self.key_value(event.kv());
                if let Some(kv) = event.prev_kv() {
                    self.key_value(kv);
                }
            }
        }
        if let Some(status) = response.result_as_status_result() {
            self.numbers(&[status.node_id(), u64::from(status.shards())]);
            for group in status.groups().iter().flatten() {
                for value in [
                    group.group_id(),
                    group.leader(),
                    group.term(),
                    group.commit(),
                    group.applied(),
                ] {
                    self.number(value);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// Valid payloads of every family, built once per run from the run's seed.
#[derive(Debug)]
struct Corpus {
    payloads: Vec<Vec<u8>>,
}

impl Corpus {
    fn new(seed: u64) -> Corpus {
        let mut rng = Rng::for_case(seed, u64::MAX);
        let mut payloads = Vec::new();
        for _ in 0..CORPUS_PER_FAMILY {
            payloads.push(codec::peer_batch_to_bytes(&random_batch(&mut rng)));
            payloads.push(codec::message_to_bytes(&random_message(&mut rng)));
            payloads.push(random_request(&mut rng));
            payloads.push(random_response(&mut rng));
        }
        Corpus { payloads }
    }
}

/// How many inputs each decoder accepted: proof that the mutations reach past the first
/// check of each decoder instead of all being rejected at the door.
#[derive(Debug, Default)]
struct Accepted {
    frames: u64,
    batches: u64,
    messages: u64,
    requests: u64,
    responses: u64,
}

/// Feeds one input to every decoder. Whatever a decoder accepts must also be readable
/// through every accessor, and a frame it accepts is fed on as a payload.
fn feed_every_decoder(input: &[u8], accepted: &mut Accepted) {
    for payload_bytes_max in [FRAME_BYTES_MAX, 64] {
        if let Ok(Some(frame)) = frame::decode(input, payload_bytes_max) {
            assert!(frame.payload.len() <= payload_bytes_max);
            assert_eq!(
                frame.consumed_bytes,
                FRAME_HEADER_BYTES + frame.payload.len()
            );
            accepted.frames += 1;
            feed_payload_decoders(frame.payload, accepted);
        }
    }
    feed_payload_decoders(input, accepted);
}

fn feed_payload_decoders(payload: &[u8], accepted: &mut Accepted) {
    if let Ok(batch) = codec::decode_peer_batch(payload) {
        accepted.batches += 1;
        // Whatever decodes must encode to something that decodes to the same value.
        let again = codec::peer_batch_to_bytes(&batch);
        assert_eq!(codec::decode_peer_batch(&again), Ok(batch));
    }
    if let Ok(message) = codec::message_from_bytes(payload) {
        accepted.messages += 1;
        let again = codec::message_to_bytes(&message);
        assert_eq!(codec::message_from_bytes(&again), Ok(message));
    }
    let mut reader = Reader::default();
    if let Ok(request) = api::verify_request(payload) {
        accepted.requests += 1;
        reader.request(request);
    }
    if let Ok(response) = api::verify_response(payload) {
        accepted.responses += 1;
        reader.response(response);
    }
    std::hint::black_box(reader);
    // The protocol's decoders read past the verifier: what they accept must encode to
    // something that decodes to the same value.
    if let Ok(request) = api::decode_request(payload) {
        let again = api::request_to_bytes(&request);
        assert_eq!(api::decode_request(&again), Ok(request));
    }
    if let Ok(response) = api::decode_response(payload) {
        let again = api::response_to_bytes(&response);
        assert_eq!(api::decode_response(&again), Ok(response));
    }
}

fn flip_bits(rng: &mut Rng, bytes: &mut [u8]) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..=rng.below(BIT_FLIPS_MAX) {
        let position = rng.below(bytes.len());
        bytes[position] ^= 1 << rng.below(8);
    }
}

// Random bytes and valid frames or payloads that were bit-flipped, overwritten or cut
// short never make any decoder panic.
#[test]
fn random_and_mutated_inputs_never_panic() {
    let seed = run_seed();
    let corpus = Corpus::new(seed);
    let test = "random_and_mutated_inputs_never_panic";
    let mut accepted = Accepted::default();
    run_cases(test, seed, MUTATION_CASES_DEFAULT, |rng| {
        let valid = &corpus.payloads[rng.below(corpus.payloads.len())];
        let mut framed = Vec::new();
        frame::encode(&mut framed, valid).expect("corpus payloads are small");
        let mutation = rng.below(7);
        let input = match mutation {
            0 => rng.bytes(RANDOM_INPUT_BYTES_MAX),
            1 => {
                flip_bits(rng, &mut framed);
                framed
            }
            2 => {
                framed.truncate(rng.below(framed.len()));
                framed
            }
            3 => {
                let mut payload = valid.clone();
                flip_bits(rng, &mut payload);
                payload
            }
            4 => {
                let mut payload = valid.clone();
                payload.truncate(rng.below(payload.len()));
                payload
            }
            5 => {
                // Overwrite a run of bytes with random ones: offsets and lengths change
                // wholesale instead of by one bit.
                let mut payload = valid.clone();
                let start = rng.below(payload.len());
                let end = (start + 1 + rng.below(8)).min(payload.len());
                for byte in &mut payload[start..end] {
                    *byte = rng.next() as u8;
                }
                payload
            }
            _ => {
                // A header that claims any length, followed by a valid payload.
                let mut input = (rng.next() as u32).to_le_bytes().to_vec();
                input.extend_from_slice(&framed[4..]);
                input
            }
        };
        // A mutated payload is also sent in a well-formed frame half of the time: a peer
        // with a bug computes a correct crc over wrong bytes, and the codec must catch
        // what the frame layer cannot.
        let payload_mutation = (3..=5).contains(&mutation);
        if payload_mutation && rng.coin() && input.len() <= FRAME_BYTES_MAX {
            let mut framed = Vec::new();
            frame::encode(&mut framed, &input).expect("within the bound");
            feed_every_decoder(&framed, &mut accepted);
        } else {
            feed_every_decoder(&input, &mut accepted);
        }
    });
    println!("{test}: accepted {accepted:?}");
    if env_u64("COREKV_FUZZ_ONLY_CASE").is_none() {
        // Most bit flips land in scalars or padding, so a fair share of mutated inputs
        // must still decode; if none do, the mutations test nothing past the verifier.
        let Accepted {
            frames,
            batches,
            messages,
            requests,
            responses,
        } = accepted;
        assert!(
            [frames, batches, messages, requests, responses]
                .iter()
                .all(|&count| count > 0),
            "{test}: some decoder accepted no input at all"
        );
    }
}

// A valid batch or message, framed, decodes back to itself through the frame layer and
// the codec; every strict prefix of the frame asks for more input.
#[test]
fn valid_frames_always_round_trip() {
    let test = "valid_frames_always_round_trip";
    run_cases(test, run_seed(), ROUND_TRIP_CASES_DEFAULT, |rng| {
        let mut stream = Vec::new();
        let batch = random_batch(rng);
        let payload = codec::peer_batch_to_bytes(&batch);
        frame::encode(&mut stream, &payload).unwrap();
        let message = random_message(rng);
        frame::encode(&mut stream, &codec::message_to_bytes(&message)).unwrap();
        let request = random_request(rng);
        frame::encode(&mut stream, &request).unwrap();
        let response = random_response(rng);
        frame::encode(&mut stream, &response).unwrap();

        let split = rng.below(FRAME_HEADER_BYTES + payload.len());
        assert_eq!(frame::decode(&stream[..split], FRAME_BYTES_MAX), Ok(None));

        let mut offset = 0;
        let mut next_payload = || {
            let frame = frame::decode(&stream[offset..], FRAME_BYTES_MAX)
                .expect("valid frame")
                .expect("whole frame");
            offset += frame.consumed_bytes;
            frame.payload
        };
        assert_eq!(codec::decode_peer_batch(next_payload()), Ok(batch));
        assert_eq!(codec::message_from_bytes(next_payload()), Ok(message));
        let request_payload = next_payload();
        assert_eq!(request_payload, &request[..]);
        let mut reader = Reader::default();
        reader.request(api::verify_request(request_payload).expect("valid request"));
        let response_payload = next_payload();
        assert_eq!(response_payload, &response[..]);
        reader.response(api::verify_response(response_payload).expect("valid response"));
        assert_eq!(offset, stream.len());
    });
}
