//! Seeded randomized tests: a restored snapshot behaves exactly like the store it came
//! from, every command and outcome survives its encoding, and no input bytes make the
//! decoders, the restore or apply panic.
//!
//! Each case runs from a seed (`crate::testing::run_seeded_cases`). A failing case prints
//! its seed and the command that replays it alone
//! (`COREKV_TEST_SEED=<seed> COREKV_TEST_CASES=1`); `COREKV_TEST_CASES=<n>` changes how
//! many cases run and `COREKV_TEST_SEED=<n>` explores other seeds.

use super::response::outcome_encoded_len;
use super::*;
use crate::raft::rng::SeededRng;

/// Default number of cases of each test; small enough for a debug build.
const CASES_DEFAULT: u64 = 200;
/// The seed of the first case unless `COREKV_TEST_SEED` says otherwise.
const SEED_BASE_DEFAULT: u64 = 0x6b76_5eed;
/// Commands applied in one case of the snapshot test.
const COMMANDS_PER_CASE_MAX: u64 = 160;
/// Client ids that carry sessions in generated commands (1..=this).
const CLIENTS: u64 = 5;

/// The crate's SplitMix64 generator with the draws these tests need.
#[derive(Debug)]
struct Rng {
    inner: SeededRng,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng {
            inner: SeededRng::new(seed),
        }
    }

    fn next(&mut self) -> u64 {
        self.inner.next_u64()
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next() as u8).collect()
    }
}

/// Runs `case` once per seed; on failure prints the seed and how to replay it.
fn run_cases(test_name: &str, case: impl Fn(u64)) {
    crate::testing::run_seeded_cases(
        &format!("cargo test --lib kv::property_tests::{test_name}"),
        SEED_BASE_DEFAULT,
        CASES_DEFAULT,
        case,
    );
}

/// Limits small enough for random commands to hit every bound.
fn small_limits() -> Limits {
    Limits {
        key_bytes_max: 4,
        value_bytes_max: 12,
        txn_ops_max: 4,
        command_bytes_max: 160,
        response_bytes_max: 160,
        sessions_max: 3,
        session_cache_bytes_max: 400,
        history_bytes_max: 1 << 20,
    }
}

/// Random limits for one case: mostly small ones with few or many sessions, sometimes
/// the defaults.
fn random_limits(rng: &mut Rng) -> Limits {
    if rng.percent(20) {
        return Limits::default();
    }
    Limits {
        sessions_max: [1, 3, 16][rng.below(3) as usize],
        ..small_limits()
    }
}

/// Keys from a tiny alphabet with the edge bytes, so keys collide and ranges overlap;
/// now and then an empty or oversized key.
fn random_key(rng: &mut Rng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ab\0\xff";
    match rng.below(25) {
        0 => Vec::new(),
        1 => vec![b'k'; 5],
        _ => {
            let length = 1 + rng.below(3) as usize;
            (0..length)
                .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
                .collect()
        }
    }
}

fn random_range_end(rng: &mut Rng, key: &[u8]) -> Vec<u8> {
    match rng.below(6) {
        0 | 1 => Vec::new(),
        2 => RANGE_END_UNBOUNDED.to_vec(),
        3 => prefix_end(key),
        _ => random_key(rng),
    }
}

fn random_value(rng: &mut Rng) -> Vec<u8> {
    let length = if rng.percent(5) {
        13
    } else {
        rng.below(7) as usize
    };
    rng.bytes(length)
}

fn random_range(rng: &mut Rng) -> RangeRequest {
    let key = random_key(rng);
    RangeRequest {
        range_end: random_range_end(rng, &key),
        key,
        limit: if rng.percent(30) { rng.below(4) } else { 0 },
        keys_only: rng.percent(20),
        count_only: rng.percent(10),
        revision: 0,
    }
}

fn random_txn_op(rng: &mut Rng) -> TxnOp {
    match rng.below(4) {
        0 => TxnOp::Range(random_range(rng)),
        1 => TxnOp::Put(PutRequest {
            key: random_key(rng),
            value: random_value(rng),
            prev_kv: rng.percent(50),
            lease: rng.below(3),
        }),
        2 => {
            let key = random_key(rng);
            TxnOp::Delete(DeleteRequest {
                range_end: random_range_end(rng, &key),
                key,
                prev_kv: rng.percent(50),
            })
        }
        _ => TxnOp::Append(AppendRequest {
            key: random_key(rng),
            value: random_value(rng),
        }),
    }
}

fn random_compare(rng: &mut Rng) -> Compare {
    let target = match rng.below(4) {
        0 => CompareTarget::Value(random_value(rng)),
        1 => CompareTarget::Version(rng.below(4)),
        2 => CompareTarget::CreateRevision(rng.below(40)),
        _ => CompareTarget::ModRevision(rng.below(40)),
    };
    let result = match rng.below(4) {
        0 => CompareResult::Equal,
        1 => CompareResult::NotEqual,
        2 => CompareResult::Greater,
        _ => CompareResult::Less,
    };
    Compare {
        key: random_key(rng),
        target,
        result,
    }
}

fn random_op(rng: &mut Rng) -> Op {
    if rng.percent(25) {
        let list_length = |rng: &mut Rng| rng.below(6) as usize;
        let compare_count = list_length(rng);
        let success_count = list_length(rng);
        let failure_count = list_length(rng);
        Op::Txn(TxnRequest {
            compares: (0..compare_count).map(|_| random_compare(rng)).collect(),
            success: (0..success_count).map(|_| random_txn_op(rng)).collect(),
            failure: (0..failure_count).map(|_| random_txn_op(rng)).collect(),
        })
    } else {
        random_txn_op(rng).into()
    }
}

/// A read-only op for `Store::read`: mostly Ranges, sometimes a Txn of Ranges.
fn random_read(rng: &mut Rng) -> Op {
    if rng.percent(80) {
        return Op::Range(random_range(rng));
    }
    Op::Txn(TxnRequest {
        compares: (0..rng.below(3)).map(|_| random_compare(rng)).collect(),
        success: (0..rng.below(3))
            .map(|_| TxnOp::Range(random_range(rng)))
            .collect(),
        failure: (0..rng.below(3))
            .map(|_| TxnOp::Range(random_range(rng)))
            .collect(),
    })
}

/// What the generator remembers of each client, to produce retries and stale seqs.
#[derive(Clone, Debug, Default)]
struct ClientState {
    next_seq: u64,
    last_command: Option<Command>,
}

/// Commands as real clients send them: plain ones, fresh seqs, retries of the last
/// command, stale and skipped seqs, and sessions that start past seq 1.
fn random_command(rng: &mut Rng, clients: &mut [ClientState]) -> Command {
    let op = random_op(rng);
    if rng.percent(25) {
        let client_id = if rng.percent(50) {
            0
        } else {
            1 + rng.below(CLIENTS)
        };
        return Command {
            client_id,
            seq: 0,
            op,
        };
    }
    let client_id = 1 + rng.below(CLIENTS);
    let state = &mut clients[client_id as usize];
    if let (true, Some(last)) = (rng.percent(20), &state.last_command) {
        return last.clone();
    }
    let seq = match rng.below(10) {
        0 => rng.below(state.next_seq + 3),
        1 => state.next_seq + 1 + rng.below(3),
        _ => state.next_seq.max(1),
    };
    state.next_seq = state.next_seq.max(seq + 1);
    let command = Command { client_id, seq, op };
    state.last_command = Some(command.clone());
    command
}

// restore(snapshot(s)) answers every later command and read exactly like s, and both
// end with byte-identical snapshots, also when the copy applies owned commands; every
// outcome survives its encoding and its computed encoded length is exact; the key index
// and the session table stay consistent.
#[test]
fn restored_store_behaves_like_the_original() {
    run_cases("restored_store_behaves_like_the_original", |seed| {
        let mut rng = Rng::new(seed);
        let mut original = Store::new(random_limits(&mut rng)).expect("test limits are sound");
        let mut clients = vec![ClientState::default(); CLIENTS as usize + 1];
        let commands = 1 + rng.below(COMMANDS_PER_CASE_MAX);
        let split = rng.below(commands + 1);
        let mut restored: Option<Store> = None;
        let mut index = 0;
        for step in 0..commands {
            if step == split {
                let bytes = original.snapshot();
                let copy = Store::restore(&bytes).expect("a fresh snapshot restores");
                assert_eq!(copy, original, "restored state differs");
                assert_eq!(
                    copy.snapshot(),
                    bytes,
                    "snapshot of the restored store differs"
                );
                restored = Some(copy);
            }
            index += 1 + rng.below(3);
            if rng.percent(5) {
                original.apply_noop(index);
                if let Some(copy) = restored.as_mut() {
                    copy.apply_noop(index);
                }
                continue;
            }
            let command = random_command(&mut rng, &mut clients);
            let outcome = original.apply(index, index, &command);
            assert_eq!(
                decode_outcome(&encode_outcome(&outcome)).as_ref(),
                Ok(&outcome),
                "outcome does not survive its encoding"
            );
            assert_eq!(
                outcome_encoded_len(&outcome),
                encode_outcome(&outcome).len(),
                "computed encoded length differs from the encoding"
            );
            original.sessions.assert_consistent();
            original.keys.assert_consistent();
            if let Some(copy) = restored.as_mut() {
                // The copy takes the owned path, so the two paths are held equal too.
                assert_eq!(
                    copy.apply_owned(index, index, command.clone()),
                    outcome,
                    "apply differs at {index}"
                );
                let read = random_read(&mut rng);
                assert_eq!(
                    copy.read(&read),
                    original.read(&read),
                    "read differs at {index}"
                );
            }
        }
        let restored = restored.unwrap_or_else(|| {
            Store::restore(&original.snapshot()).expect("a fresh snapshot restores")
        });
        assert_eq!(
            restored.snapshot(),
            original.snapshot(),
            "final snapshots differ"
        );
        assert!(original.session_count() as u64 <= original.limits().sessions_max);
    });
}

// decode(encode(c)) == c for random commands, valid or not, and encoded_len is exact.
#[test]
fn commands_round_trip() {
    run_cases("commands_round_trip", |seed| {
        let mut rng = Rng::new(seed);
        let mut clients = vec![ClientState::default(); CLIENTS as usize + 1];
        for _ in 0..50 {
            let mut command = random_command(&mut rng, &mut clients);
            if rng.percent(10) {
                command.client_id = rng.next();
                command.seq = rng.next();
            }
            let bytes = command.encode();
            assert_eq!(bytes.len(), command.encoded_len());
            assert_eq!(Command::decode(&bytes), Ok(command));
        }
    });
}

/// One random change to valid bytes: a bit flip, a byte set, a cut, an insertion or a
/// removal.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.push(rng.next() as u8);
        return;
    }
    let position = rng.below(bytes.len() as u64) as usize;
    match rng.below(5) {
        0 => bytes[position] ^= 1 << rng.below(8),
        1 => bytes[position] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5) as usize],
        2 => bytes.truncate(position),
        3 => bytes.insert(position, rng.next() as u8),
        _ => {
            bytes.remove(position);
        }
    }
}

/// Rewrites the trailing crc of a snapshot so mutations reach the parser behind it.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= 4 {
        let body_bytes = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body_bytes]);
        bytes[body_bytes..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A store with keys, sessions and cached outcomes, for snapshots to mutate.
fn populated_store(rng: &mut Rng) -> Store {
    let mut store = Store::new(small_limits()).expect("test limits are sound");
    let mut clients = vec![ClientState::default(); CLIENTS as usize + 1];
    for index in 1..=rng.below(40) {
        let command = random_command(rng, &mut clients);
        let _ = store.apply(index, index, &command);
    }
    store
}

// Random and mutated bytes never make a decoder, restore or apply panic; whatever a
// decoder accepts re-encodes to the same bytes, and whatever restores snapshots again.
#[test]
fn garbage_never_panics() {
    run_cases("garbage_never_panics", |seed| {
        let mut rng = Rng::new(seed);
        let mut clients = vec![ClientState::default(); CLIENTS as usize + 1];
        let mut store = populated_store(&mut rng);
        let mut index = store.applied_index();

        let random_bytes = rng.below(200) as usize;
        let random = rng.bytes(random_bytes);
        let _ = Command::decode(&random);
        let _ = Response::decode(&random);
        let _ = KvError::decode(&random);
        let _ = decode_outcome(&random);
        let _ = Store::restore(&random);

        for _ in 0..20 {
            let mut command = random_command(&mut rng, &mut clients).encode();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut command);
            }
            if let Ok(decoded) = Command::decode(&command) {
                assert_eq!(
                    decoded.encode(),
                    command,
                    "accepted a non-canonical command"
                );
                index += 1;
                let _ = store.apply(index, index, &decoded);
                let _ = store.read(&decoded.op);
            }

            let outcome = store.read(&random_read(&mut rng));
            let mut outcome_bytes = encode_outcome(&outcome);
            mutate(&mut rng, &mut outcome_bytes);
            if let Ok(decoded) = decode_outcome(&outcome_bytes) {
                assert_eq!(
                    encode_outcome(&decoded),
                    outcome_bytes,
                    "accepted a non-canonical outcome"
                );
            }
            if let Ok(response) = &outcome {
                let mut response_bytes = response.encode();
                mutate(&mut rng, &mut response_bytes);
                if let Ok(decoded) = Response::decode(&response_bytes) {
                    assert_eq!(decoded.encode(), response_bytes);
                }
            }
        }

        let original = store.snapshot();
        for _ in 0..20 {
            let mut snapshot = original.clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut snapshot);
            }
            if rng.percent(80) {
                reseal(&mut snapshot);
            }
            if let Ok(mut restored) = Store::restore(&snapshot) {
                assert_eq!(
                    restored.snapshot(),
                    snapshot,
                    "accepted a non-canonical snapshot"
                );
                // A forged applied index or closed revision may sit at the very top of
                // the range; the proposer stamps above the closed revision.
                let next = restored.applied_index().checked_add(1);
                let revision = restored.closed_revision().checked_add(1);
                if let (Some(next), Some(revision)) = (next, revision) {
                    let command = random_command(&mut rng, &mut clients);
                    let _ = restored.apply(next, revision, &command);
                }
            }
        }
    });
}
