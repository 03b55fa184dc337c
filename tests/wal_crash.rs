//! Crash tests with real processes: this test binary runs itself again as a child that
//! appends from many groups with group commit, printing every operation before it is
//! submitted and after it is acknowledged; the parent kills it with SIGKILL at random
//! moments, sometimes adds torn-write garbage after the end of the log, recovers, and
//! checks that the recovered log is exactly what some prefix of the submitted operations
//! produces, a prefix that contains every acknowledged one. `tools/wal-crash.sh N` runs
//! it longer.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use corekv::raft::rng::SeededRng;
use corekv::testing::{test_seed, test_seed_from_env, TEST_SEED_VARIABLE};
use corekv::wal::record::{decode_batch_header, BLOCK_BYTES};
use corekv::wal::segment::{list_segments, wal_directory};
use corekv::wal::snapshot_file::{self, Snapshot};
use corekv::wal::{
    inspect, Entry, HardState, Inspection, Record, RecordKind, Wal, WalConfig, WalError,
};
use glommio::LocalExecutorBuilder;

const CHILD_DIRECTORY: &str = "COREKV_WAL_CRASH_CHILD";
const CHILD_GENERATION: &str = "COREKV_WAL_CRASH_GENERATION";
const CHILD_FATAL: &str = "COREKV_WAL_CRASH_FATAL";
const ITERATIONS_VARIABLE: &str = "COREKV_WAL_CRASH_ITERATIONS";
/// Kills per CI run; `tools/wal-crash.sh` sets more.
const DEFAULT_ITERATIONS: u64 = 40;
const GROUPS: u64 = 12;
/// A new data folder every this many kills (the others restart on the same folder).
const FRESH_DIRECTORY_EVERY: u64 = 10;
/// A child stops by itself after this long, should the parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const TEST_NAME: &str = "kill_nine_never_loses_acknowledged_records";

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 256 * 1024,
        batch_bytes_max: 64 * 1024,
        batch_records_max: 512,
        segments_ready_ahead: 1,
        cache_bytes_per_group_max: 16 * 1024,
        segments_pinned_max: 3,
    }
}

/// The crate's SplitMix64 generator with the draws this test needs.
struct Random(SeededRng);

impl Random {
    fn new(seed: u64) -> Self {
        Random(SeededRng::new(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// The content of entry (`group`, `index`, `term`): a pure function, so that the parent can
/// check every byte it reads back. Sizes range from empty to three blocks.
fn payload(group: u64, index: u64, term: u64) -> Vec<u8> {
    let mut random = Random::new(group << 48 ^ index << 8 ^ term.rotate_left(29));
    let length = match random.below(10) {
        0 => 0,
        1 => 9000 + random.below(3000),
        _ => random.below(1500),
    } as usize;
    (0..length).map(|_| random.next() as u8).collect()
}

fn entry_kind(group: u64, index: u64, term: u64) -> u8 {
    (group.wrapping_add(index).wrapping_add(term) % 3) as u8
}

fn snapshot_data(group: u64, index: u64, term: u64) -> Vec<u8> {
    format!("snapshot of group {group} through {index} at term {term}").into_bytes()
}

/// Starts every line of the child's protocol: libtest writes its own text on the same
/// stdout (such as "test name ... " before the first line), so the parent reads only what
/// follows the marker.
const LINE_MARKER: &str = "@wal ";

fn emit(line: &str) {
    // One write per line, flushed, so that the line is in the pipe before the next step.
    let mut out = std::io::stdout().lock();
    out.write_all(format!("\n{LINE_MARKER}{line}\n").as_bytes())
        .expect("stdout");
    out.flush().expect("stdout");
}

fn on_fresh_executor<T, F, G>(make: G) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
    G: FnOnce() -> F + Send + 'static,
{
    LocalExecutorBuilder::default()
        // See corekv::server::EXECUTOR_PREEMPT_TIMER: avoids a glommio hang under load.
        .preempt_timer(corekv::server::EXECUTOR_PREEMPT_TIMER)
        .spawn(make)
        .expect("executor starts")
        .join()
        .expect("executor runs")
}

// ---------------------------------------------------------------------------------------
// The child.

fn child_main(directory: PathBuf) -> ! {
    let generation: u64 = env::var(CHILD_GENERATION)
        .ok()
        .and_then(|text| text.parse().ok())
        .expect("generation");
    // The parent hands each child its own seed in the one seed variable.
    let seed = test_seed_from_env().expect("the parent sets the child's seed");
    let outcome = LocalExecutorBuilder::default()
        .preempt_timer(corekv::server::EXECUTOR_PREEMPT_TIMER)
        .spawn(move || async move { child_run(directory, generation, seed).await })
        .expect("executor starts")
        .join();
    match outcome {
        Ok(Ok(())) => std::process::exit(0),
        Ok(Err(error)) => {
            emit(&format!("ERROR {error}"));
            std::process::exit(2)
        }
        Err(error) => {
            emit(&format!("ERROR executor: {error}"));
            std::process::exit(3)
        }
    }
}

async fn child_run(directory: PathBuf, generation: u64, seed: u64) -> Result<(), WalError> {
    let (wal, _) = Wal::open(&directory, config()).await?;
    emit("READY");
    let deadline = Instant::now() + CHILD_LIFETIME;
    let tasks: Vec<_> = (1..=GROUPS)
        .map(|group| {
            let wal = wal.clone();
            let directory = directory.clone();
            glommio::spawn_local(group_task(
                wal, directory, group, generation, seed, deadline,
            ))
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    wal.close().await
}

/// One group appending, truncating, snapshotting and reading back, one operation at a
/// time, printing `S ...` before submitting and `A <group>` after durability.
async fn group_task(
    wal: Wal,
    directory: PathBuf,
    group: u64,
    generation: u64,
    seed: u64,
    deadline: Instant,
) -> Result<(), WalError> {
    let mut random = Random::new(seed ^ generation.wrapping_mul(0x51_7CC1_B727_220A) ^ group);
    let mut rewrites = 0u64;
    while Instant::now() < deadline {
        let (first_index, last_index) = wal
            .group(group)
            .map_or((1, 0), |summary| (summary.first_index, summary.last_index));
        let compaction_index = first_index - 1;
        let held = last_index - compaction_index;
        let roll = random.below(100);
        if roll < 4 && held > 0 {
            let index = compaction_index + 1 + random.below(held);
            let term = wal.term(group, index).expect("the log holds it");
            emit(&format!("S {group} C {index} {term}"));
            let snapshot = Snapshot {
                group_id: group,
                index,
                term,
                data: snapshot_data(group, index, term),
            };
            snapshot_file::write_snapshot(&directory, &snapshot)?;
            wal.compact(group, index, term).await?;
            emit(&format!("A {group}"));
        } else {
            let truncate = roll < 14 && held > 0;
            let first = if truncate {
                last_index - random.below(held.min(3))
            } else {
                last_index + 1
            };
            if truncate {
                rewrites += 1;
            }
            let term = generation << 32 | rewrites;
            let count = 1 + random.below(4);
            let commit = first - 1;
            emit(&format!("S {group} E {first} {count} {term} {commit}"));
            let entries = (first..first + count)
                .map(|index| Entry {
                    index,
                    term,
                    kind: entry_kind(group, index, term),
                    payload: payload(group, index, term).into(),
                })
                .collect();
            let records = vec![
                Record {
                    group_id: group,
                    kind: RecordKind::Entries { entries },
                },
                Record {
                    group_id: group,
                    kind: RecordKind::HardState(HardState {
                        term,
                        vote: group,
                        commit,
                    }),
                },
            ];
            wal.append(records).await?;
            emit(&format!("A {group}"));
        }
        if random.below(40) == 0 {
            // Read the whole log back (mostly from disk: the cache is small).
            let summary = wal.group(group).expect("the group exists");
            let read = wal
                .read_entries(group, summary.first_index, summary.last_index + 1)
                .await?;
            for entry in &read {
                if entry.payload[..] != payload(group, entry.index, entry.term)[..]
                    || Some(entry.term) != wal.term(group, entry.index)
                {
                    emit(&format!(
                        "BAD read back group {group} index {}",
                        entry.index
                    ));
                    std::process::exit(4);
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The parent's model of what the child did.

#[derive(Clone, Debug)]
enum Operation {
    Entries {
        first: u64,
        count: u64,
        term: u64,
        commit: u64,
    },
    Compact {
        index: u64,
        term: u64,
    },
}

/// A group's log as a prefix of its operations produces it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ModelGroup {
    /// (index, term) of the compaction point; (0, 0) for none.
    compaction: (u64, u64),
    /// Terms of the entries after the compaction point.
    terms: Vec<u64>,
    hard_state: Option<HardState>,
}

impl ModelGroup {
    fn apply(&mut self, group: u64, operation: &Operation) {
        let base = self.compaction.0;
        match *operation {
            Operation::Entries {
                first,
                count,
                term,
                commit,
            } => {
                assert!(
                    first > base && first <= base + self.terms.len() as u64 + 1,
                    "the child appends in order"
                );
                self.terms.truncate((first - base - 1) as usize);
                self.terms.extend(std::iter::repeat_n(term, count as usize));
                self.hard_state = Some(HardState {
                    term,
                    vote: group,
                    commit,
                });
            }
            Operation::Compact { index, term } => {
                let held = base + self.terms.len() as u64;
                let matches = (index == base && term == self.compaction.1)
                    || (index > base
                        && index <= held
                        && self.terms[(index - base - 1) as usize] == term);
                if matches {
                    self.terms.drain(..(index - base) as usize);
                } else {
                    self.terms.clear();
                }
                self.compaction = (index, term);
            }
        }
    }

    fn is_empty(&self) -> bool {
        *self == ModelGroup::default()
    }

    /// Differences between this model and what recovery found, or None.
    fn compare(&self, group: u64, inspection: &Inspection) -> Option<String> {
        let Some(found) = inspection.groups.get(&group) else {
            return if self.is_empty() {
                None
            } else {
                Some("the group is missing".to_string())
            };
        };
        let compaction = found
            .summary
            .compaction
            .map_or((0, 0), |position| (position.index, position.term));
        if compaction != self.compaction {
            return Some(format!(
                "compaction {compaction:?}, expected {:?}",
                self.compaction
            ));
        }
        if found.summary.hard_state != self.hard_state {
            return Some(format!(
                "hard state {:?}, expected {:?}",
                found.summary.hard_state, self.hard_state
            ));
        }
        if self.compaction.0 > 0 {
            let Some(snapshot) = inspection.recovery.snapshots.get(&group) else {
                return Some("the snapshot file is missing".to_string());
            };
            let (index, term) = self.compaction;
            if (snapshot.index, snapshot.term) != (index, term)
                || snapshot.data != snapshot_data(group, index, term)
            {
                return Some(format!(
                    "snapshot file ({}, {}) does not match",
                    snapshot.index, snapshot.term
                ));
            }
        }
        if found.entries.len() != self.terms.len() {
            return Some(format!(
                "{} entries, expected {}",
                found.entries.len(),
                self.terms.len()
            ));
        }
        for (position, (entry, &term)) in found.entries.iter().zip(&self.terms).enumerate() {
            let index = self.compaction.0 + 1 + position as u64;
            if entry.index != index || entry.term != term {
                return Some(format!(
                    "entry ({}, {}), expected ({index}, {term})",
                    entry.index, entry.term
                ));
            }
            if entry.kind != entry_kind(group, index, term)
                || entry.payload[..] != payload(group, index, term)[..]
            {
                return Some(format!("entry {index} holds bytes the child never wrote"));
            }
        }
        None
    }
}

/// Per group: the state after everything verified so far, the operations of the current
/// child, and how many of those were acknowledged.
#[derive(Debug, Default)]
struct Model {
    groups: BTreeMap<u64, (ModelGroup, Vec<Operation>, usize)>,
    acknowledged_total: u64,
}

impl Model {
    fn absorb(&mut self, lines: &[String]) -> Result<(), String> {
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |position: usize| -> Result<u64, String> {
                words
                    .get(position)
                    .and_then(|word| word.parse().ok())
                    .ok_or_else(|| format!("bad line {line:?}"))
            };
            match words.first().copied() {
                Some("S") => {
                    let operation = match words.get(2).copied() {
                        Some("E") => Operation::Entries {
                            first: number(3)?,
                            count: number(4)?,
                            term: number(5)?,
                            commit: number(6)?,
                        },
                        Some("C") => Operation::Compact {
                            index: number(3)?,
                            term: number(4)?,
                        },
                        _ => return Err(format!("bad line {line:?}")),
                    };
                    let (_, operations, acknowledged) = self.groups.entry(number(1)?).or_default();
                    if operations.len() != *acknowledged {
                        return Err(format!("two operations in flight for one group: {line:?}"));
                    }
                    operations.push(operation);
                }
                Some("A") => {
                    let (_, operations, acknowledged) = self.groups.entry(number(1)?).or_default();
                    if *acknowledged >= operations.len() {
                        return Err(format!("acknowledgement without a submission: {line:?}"));
                    }
                    *acknowledged += 1;
                    self.acknowledged_total += 1;
                }
                Some("BAD") | Some("ERROR") => return Err(format!("child reported: {line}")),
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks that every group's recovered state is what a prefix of its operations that
    /// includes every acknowledged one produces, and makes that state the new base.
    fn verify_and_rebase(&mut self, inspection: &Inspection) -> Result<(), String> {
        for &group in inspection.groups.keys() {
            if !self.groups.contains_key(&group) {
                return Err(format!("group {group} was recovered but never written"));
            }
        }
        for (&group, (base, operations, acknowledged)) in &mut self.groups {
            let mut state = base.clone();
            let mut matched = None;
            for applied in 0..=operations.len() {
                if applied >= *acknowledged && state.compare(group, inspection).is_none() {
                    matched = Some(state.clone());
                    break;
                }
                if applied < operations.len() {
                    state.apply(group, &operations[applied]);
                }
            }
            let Some(matched) = matched else {
                let mut acknowledged_state = base.clone();
                for operation in &operations[..*acknowledged] {
                    acknowledged_state.apply(group, operation);
                }
                return Err(format!(
                    "group {group}: no prefix of its {} operations with the {} acknowledged ones matches; \
                     against the acknowledged prefix: {}",
                    operations.len(),
                    acknowledged,
                    acknowledged_state.compare(group, inspection).unwrap_or_default()
                ));
            };
            *base = matched;
            operations.clear();
            *acknowledged = 0;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The parent.

struct ChildRun {
    lines: Vec<String>,
    stderr: Vec<String>,
}

fn run_child(directory: &Path, generation: u64, seed: u64, random: &mut Random) -> ChildRun {
    let mut child = Command::new(env::current_exe().expect("test binary"))
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIRECTORY, directory)
        .env(CHILD_GENERATION, generation.to_string())
        .env(TEST_SEED_VARIABLE, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (ready_sender, ready_receiver) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some(position) = line.find(LINE_MARKER) else {
                continue;
            };
            let line = line[position + LINE_MARKER.len()..].to_string();
            if line == "READY" {
                let _ = ready_sender.send(());
            }
            lines.push(line);
        }
        lines
    });
    let error_reader = thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    // One kill in five lands early: during recovery, torn-tail zeroing or segment creation.
    // The pause is the random crash point, not a synchronisation.
    if random.below(5) == 0 {
        thread::sleep(Duration::from_millis(random.below(40)));
    } else {
        let ready = ready_receiver.recv_timeout(READY_TIMEOUT);
        if ready.is_ok() {
            thread::sleep(Duration::from_millis(5 + random.below(250)));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    ChildRun {
        lines: reader.join().expect("reader"),
        stderr: error_reader.join().expect("reader"),
    }
}

/// Writes garbage blocks after the end of the log's data, as a torn write of an
/// unacknowledged batch whose first block never reached the disk would. Returns whether it
/// did (there must be room in the last segment with data).
fn add_torn_garbage(directory: &Path, random: &mut Random) -> bool {
    let listing = list_segments(&wal_directory(directory)).expect("listing");
    let mut last_with_data = None;
    for (_, path) in listing.segments {
        let bytes = fs::read(&path).expect("segment");
        if decode_batch_header(&bytes).is_ok() {
            last_with_data = Some((path, bytes));
        }
    }
    let Some((path, mut bytes)) = last_with_data else {
        return false;
    };
    let mut end = 0;
    while let Ok(header) = decode_batch_header(&bytes[end..]) {
        end += header.padded_bytes();
        if end >= bytes.len() {
            return false;
        }
    }
    if bytes[end..].iter().any(|&byte| byte != 0) {
        // The kill already left something here; keep it as it is.
        return false;
    }
    let blocks = (1 + random.below(3) as usize).min((bytes.len() - end) / BLOCK_BYTES);
    let skip = if blocks > 1 { BLOCK_BYTES } else { 0 };
    for byte in &mut bytes[end + skip..end + blocks * BLOCK_BYTES] {
        *byte = random.next() as u8;
    }
    fs::write(&path, &bytes).expect("segment");
    true
}

/// Opens the log for real, checks it against the model through `read_entries`, appends
/// one more operation per group, and checks those survive a restart.
fn final_check(directory: &Path, model: &mut Model) -> Result<(), String> {
    let inspection = inspect_on_fresh_executor(directory)?;
    model.verify_and_rebase(&inspection)?;
    let expected: Vec<(u64, ModelGroup)> = model
        .groups
        .iter()
        .map(|(&group, (state, _, _))| (group, state.clone()))
        .collect();
    let open_directory = directory.to_path_buf();
    let appended: Vec<(u64, Operation)> = on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&open_directory, config())
            .await
            .map_err(|error| error.to_string())?;
        let mut appended = Vec::new();
        for (group, state) in &expected {
            if state.is_empty() {
                continue;
            }
            let summary = wal.group(*group).ok_or(format!("group {group} missing"))?;
            let read = wal
                .read_entries(*group, summary.first_index, summary.last_index + 1)
                .await
                .map_err(|error| error.to_string())?;
            let terms: Vec<u64> = read.iter().map(|entry| entry.term).collect();
            if terms != state.terms {
                return Err(format!(
                    "group {group}: read_entries disagrees with recovery"
                ));
            }
            let first = summary.last_index + 1;
            let term = u64::MAX - 1;
            let record = Record {
                group_id: *group,
                kind: RecordKind::Entries {
                    entries: vec![Entry {
                        index: first,
                        term,
                        kind: entry_kind(*group, first, term),
                        payload: payload(*group, first, term).into(),
                    }],
                },
            };
            let hard_state = Record {
                group_id: *group,
                kind: RecordKind::HardState(HardState {
                    term,
                    vote: *group,
                    commit: first - 1,
                }),
            };
            wal.append(vec![record, hard_state])
                .await
                .map_err(|error| error.to_string())?;
            appended.push((
                *group,
                Operation::Entries {
                    first,
                    count: 1,
                    term,
                    commit: first - 1,
                },
            ));
        }
        wal.close().await.map_err(|error| error.to_string())?;
        Ok(appended)
    })?;
    for (group, operation) in appended {
        let (_, operations, acknowledged) = model.groups.get_mut(&group).expect("known group");
        operations.push(operation);
        *acknowledged += 1;
    }
    let inspection = inspect_on_fresh_executor(directory)?;
    model.verify_and_rebase(&inspection)
}

fn inspect_on_fresh_executor(directory: &Path) -> Result<Inspection, String> {
    let directory = directory.to_path_buf();
    on_fresh_executor(move || async move {
        inspect(&directory).await.map_err(|error| error.to_string())
    })
}

// Killing a process that appends with group commit never loses an acknowledged record,
// never invents one, and appending continues after recovery (on the same and on new
// folders).
#[test]
fn kill_nine_never_loses_acknowledged_records() {
    if let Ok(directory) = env::var(CHILD_DIRECTORY) {
        child_main(PathBuf::from(directory));
    }
    if env::var(CHILD_FATAL).is_ok() {
        return;
    }
    let seed = test_seed();
    let iterations = env::var(ITERATIONS_VARIABLE)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let replay = format!("{TEST_SEED_VARIABLE}={seed} {ITERATIONS_VARIABLE}={iterations} cargo test --release --test wal_crash");
    println!("wal_crash: seed {seed}, {iterations} kills; replay with: {replay}");
    let mut random = Random::new(seed);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wal-crash-{seed}"));
    let _ = fs::remove_dir_all(&root);
    let mut directory = root.join("0");
    let mut model = Model::default();
    let (mut torn_added, mut torn_repaired, mut directories) = (0, 0, 1);
    let mut acknowledged_total = 0;
    let started = Instant::now();
    for iteration in 0..iterations {
        let fail = |message: String| -> ! {
            panic!("wal_crash failed at kill {iteration}: {message}\nreplay with: {replay}")
        };
        if iteration > 0 && iteration % FRESH_DIRECTORY_EVERY == 0 {
            final_check(&directory, &mut model).unwrap_or_else(|message| fail(message));
            acknowledged_total += model.acknowledged_total;
            directory = root.join(iteration.to_string());
            model = Model::default();
            directories += 1;
        }
        fs::create_dir_all(&directory).expect("data folder");
        let run = run_child(&directory, iteration + 1, seed ^ iteration, &mut random);
        torn_repaired += run
            .stderr
            .iter()
            .filter(|line| line.contains("torn tail truncated"))
            .count();
        if let Err(message) = model.absorb(&run.lines) {
            fail(format!(
                "{message}\nchild stderr:\n{}",
                run.stderr.join("\n")
            ));
        }
        if random.below(3) == 0 && add_torn_garbage(&directory, &mut random) {
            torn_added += 1;
            let inspection =
                inspect_on_fresh_executor(&directory).unwrap_or_else(|message| fail(message));
            if inspection.recovery.torn_tail.is_none() {
                fail("garbage after the log was not reported as a torn tail".to_string());
            }
        }
        let inspection =
            inspect_on_fresh_executor(&directory).unwrap_or_else(|message| fail(message));
        model
            .verify_and_rebase(&inspection)
            .unwrap_or_else(|message| {
                fail(format!(
                    "{message}\nchild stderr:\n{}",
                    run.stderr.join("\n")
                ))
            });
    }
    final_check(&directory, &mut model)
        .unwrap_or_else(|message| panic!("final check: {message}\nreplay with: {replay}"));
    acknowledged_total += model.acknowledged_total;
    println!(
        "wal_crash: {iterations} kills over {directories} folders in {:.1} s: {} acknowledged operations checked, \
         {torn_added} torn tails added, {torn_repaired} repaired by a child",
        started.elapsed().as_secs_f64(),
        acknowledged_total,
    );
    assert!(acknowledged_total > 0, "the children acknowledged nothing");
    let _ = fs::remove_dir_all(&root);
}

// A fatal WAL error stops the process with the documented exit status.
#[test]
fn fatal_stops_the_process_with_its_exit_code() {
    if env::var(CHILD_FATAL).is_ok() {
        corekv::wal::fatal(&WalError::Closed);
    }
    if env::var(CHILD_DIRECTORY).is_ok() {
        return;
    }
    let output = Command::new(env::current_exe().expect("test binary"))
        .args([
            "fatal_stops_the_process_with_its_exit_code",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_FATAL, "1")
        .output()
        .expect("child runs");
    assert_eq!(output.status.code(), Some(corekv::wal::FATAL_EXIT_CODE));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("fatal storage failure, stopping: write-ahead log error"));
}
