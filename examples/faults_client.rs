//! The client side of `tools/faults.sh`: SDK clients that run put/get/append/cas/delete/
//! range over a small key set and record every operation (invoke and end times from the
//! host's clock, outcome), and the checks after the heal: the whole history (the CLI's
//! operations recorded by the script included) is linearizable by `corekv::check`, every
//! key reads back through every node's own replica the same, and per-fault-kind figures.
//!
//! ```text
//! faults_client run   --endpoints A,B,C --client N --history FILE --stop FILE --seed S ...
//! faults_client check --dir RUN_DIR --endpoints A,B,C
//! ```
//!
//! History lines (tab-separated, one file per client process, `*.history` in the run
//! directory): `client kind key argument expected invoke_ns end_ns outcome output`, with
//! kind put/get/delete/append/cas, outcome ok/fail/unknown, `-` for "none"; a get's
//! output is the value read or `-` for absent, a cas's `1` or `0`. Faults are lines of
//! `faults.tsv`: `kind start_ns heal_ns detail`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corekv::check::{
    check, CheckOptions, CheckResult, ClientId, History, Input, Operation, Outcome, Output,
};
use corekv::client::{
    Client, ClientError, ClientOptions, Compare, CompareResult, CompareTarget, ErrorCode, TxnOp,
    TxnRequest,
};
use corekv::keyspace::group_of;
use corekv::kv::{self, PutRequest, RangeRequest};
use corekv::raft::rng::SeededRng;

/// Most operations one client process records: a bound on the history's size, so the
/// checker always decides it (the script runs several processes).
const OPERATIONS_PER_PROCESS_MAX: u64 = 200_000;
/// How long `check` tries to see every replica agree before it fails.
const REPLICAS_AGREE_WITHIN: Duration = Duration::from_secs(60);
/// How long after a heal the recovery of writes to every group is looked for.
const RECOVERY_LOOKED_FOR: Duration = Duration::from_secs(60);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// `--name value` pairs.
fn flags(arguments: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut found = BTreeMap::new();
    let mut rest = arguments.iter();
    while let Some(flag) = rest.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("expected a --flag, got {flag}"))?;
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        found.insert(name.to_string(), value.clone());
    }
    Ok(found)
}

fn flag<T: std::str::FromStr>(
    flags: &BTreeMap<String, String>,
    name: &str,
    default: Option<T>,
) -> Result<T, String> {
    match flags.get(name) {
        Some(text) => text
            .parse()
            .map_err(|_| format!("--{name}: cannot read {text:?}")),
        None => default.ok_or_else(|| format!("--{name} is required")),
    }
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = arguments.split_first() else {
        eprintln!("usage: faults_client run|check --flag value ...");
        return ExitCode::from(2);
    };
    let result = flags(rest).and_then(|flags| match mode.as_str() {
        "run" => run(&flags),
        "check" => check_run(&flags),
        other => Err(format!("unknown mode {other}")),
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("faults_client: {error}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------------------

/// One recorded operation, as written to a history file.
struct Line<'a> {
    client: u64,
    kind: &'a str,
    key: &'a str,
    argument: &'a str,
    expected: &'a str,
    invoke_ns: u64,
    end_ns: u64,
    outcome: &'a str,
    output: &'a str,
}

fn write_line(out: &mut impl Write, line: &Line<'_>) -> std::io::Result<()> {
    writeln!(
        out,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        line.client,
        line.kind,
        line.key,
        line.argument,
        line.expected,
        line.invoke_ns,
        line.end_ns,
        line.outcome,
        line.output
    )
}

/// What an SDK error says about its operation: `fail` only when it cannot have applied
/// (the SDK's contract, `src/client/error.rs`), else `unknown`.
fn ending(error: &ClientError) -> &'static str {
    match error {
        ClientError::InvalidArgument(_)
        | ClientError::RequestTooLarge { .. }
        | ClientError::Unavailable { .. }
        | ClientError::Timeout { .. } => "fail",
        ClientError::Rejected {
            code: ErrorCode::KeyTooLarge | ErrorCode::ValueTooLarge | ErrorCode::EmptyKey,
            ..
        } => "fail",
        _ => "unknown",
    }
}

/// The key set: `keys` keys under `prefix`.
fn key_names(prefix: &str, keys: u64) -> Vec<String> {
    (0..keys)
        .map(|index| format!("{prefix}{index:03}"))
        .collect()
}

fn run(flags: &BTreeMap<String, String>) -> Result<bool, String> {
    let endpoints: Vec<String> = flag::<String>(flags, "endpoints", None)?
        .split(',')
        .map(str::to_string)
        .collect();
    let client_id: u64 = flag(flags, "client", None)?;
    let history_path: PathBuf = flag(flags, "history", None)?;
    let stop_path: PathBuf = flag(flags, "stop", None)?;
    let seed: u64 = flag(flags, "seed", Some(1))?;
    let prefix: String = flag(flags, "prefix", Some("f/".to_string()))?;
    let keys = key_names(&prefix, flag(flags, "keys", Some(16))?);
    let timeout_ms: u64 = flag(flags, "timeout-ms", Some(3000))?;
    // Operations per second at most: a run of many minutes keeps a history the checker
    // reads in seconds (and under OPERATIONS_PER_PROCESS_MAX).
    let rate: u64 = flag(flags, "rate", Some(200))?;
    let interval = Duration::from_secs(1) / rate.max(1) as u32;
    let mut previous_start = Instant::now() - interval;
    let range_slack_ns: u64 = flag::<u64>(flags, "range-slack-ms", Some(150))? * 1_000_000;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(timeout_ms),
        attempt_timeout: Duration::from_millis(timeout_ms.min(1000)),
        connect_timeout: Duration::from_millis(timeout_ms.min(1000)),
        ..ClientOptions::default()
    };
    let mut out = BufWriter::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&history_path)
            .map_err(|error| format!("{}: {error}", history_path.display()))?,
    );
    let mut random = SeededRng::new(seed ^ client_id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut client: Option<Client> = None;
    let mut sequence = 0u64;
    let mut last_flush = Instant::now();
    while !stop_path.exists() && sequence < OPERATIONS_PER_PROCESS_MAX {
        let sdk = match &client {
            Some(sdk) => sdk,
            None => match Client::connect(&endpoints, options.clone()) {
                Ok(sdk) => client.insert(sdk),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        // Paced from the previous operation's start, so a client held up by a fault does
        // not burst to catch up afterwards.
        if let Some(wait) = (previous_start + interval).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        previous_start = Instant::now();
        sequence += 1;
        let key = &keys[random.range(0, keys.len() as u64) as usize];
        let value = format!("c{client_id}.{sequence}");
        let draw = random.range(0, 100);
        let invoke_ns = now_ns();
        let mut line = Line {
            client: client_id,
            kind: "",
            key,
            argument: "-",
            expected: "-",
            invoke_ns,
            end_ns: 0,
            outcome: "ok",
            output: "-",
        };
        let output: String;
        let mut scan: Option<(Result<corekv::client::RangeResponse, ClientError>, u64)> = None;
        let result: Result<String, ClientError> = if draw < 30 {
            line.kind = "put";
            line.argument = &value;
            sdk.put(key, &value).map(|_| "-".to_string())
        } else if draw < 55 {
            line.kind = "get";
            sdk.get(key).map(|found| {
                found.map_or("-".to_string(), |pair| {
                    String::from_utf8_lossy(&pair.value).into_owned()
                })
            })
        } else if draw < 67 {
            line.kind = "append";
            line.argument = &value;
            sdk.append(key, &value).map(|_| "-".to_string())
        } else if draw < 79 {
            // Compare-and-set against what this client last read of the key: a read
            // first (recorded on its own), then a one-key transaction.
            line.kind = "cas";
            line.argument = &value;
            let read_invoke = now_ns();
            let read = sdk.get(key);
            let read_end = now_ns();
            let (read_outcome, read_output) = match &read {
                Ok(found) => (
                    "ok",
                    found.as_ref().map_or("-".to_string(), |pair| {
                        String::from_utf8_lossy(&pair.value).into_owned()
                    }),
                ),
                Err(error) => (ending(error), "-".to_string()),
            };
            let _ = write_line(
                &mut out,
                &Line {
                    client: client_id,
                    kind: "get",
                    key,
                    argument: "-",
                    expected: "-",
                    invoke_ns: read_invoke,
                    end_ns: read_end,
                    outcome: read_outcome,
                    output: &read_output,
                },
            );
            line.invoke_ns = now_ns();
            let expected = read.ok().flatten().map(|pair| pair.value);
            let compare = Compare {
                key: key.as_bytes().to_vec(),
                target: match &expected {
                    Some(value) => CompareTarget::Value(value.clone()),
                    None => CompareTarget::Version(0),
                },
                result: CompareResult::Equal,
            };
            let request = TxnRequest {
                compares: vec![compare],
                success: vec![TxnOp::Put(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                    ..PutRequest::default()
                })],
                failure: vec![],
            };
            output = expected.map_or("-".to_string(), |value| {
                String::from_utf8_lossy(&value).into_owned()
            });
            line.expected = &output;
            sdk.txn(request).map(|answer| {
                if answer.succeeded {
                    "1".to_string()
                } else {
                    "0".to_string()
                }
            })
        } else if draw < 97 {
            line.kind = "delete";
            sdk.delete(key).map(|_| "-".to_string())
        } else {
            // A range over the whole key set, recorded as one get of each key. A range
            // across groups is served at one revision taken from the serving node's
            // clock, and the store promises that revisions follow real time only up to
            // the clocks' offset (`max_clock_offset_ms`): each key's value was current
            // at some moment from `range_slack` before the call to its return.
            line.kind = "range";
            let answer = sdk.range(RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: kv::prefix_end(prefix.as_bytes()),
                ..RangeRequest::default()
            });
            scan = Some((answer, invoke_ns.saturating_sub(range_slack_ns)));
            Ok(String::new())
        };
        let end_ns = now_ns();
        if let Some((answer, invoke_ns)) = scan {
            for each in &keys {
                let (outcome, found) = match &answer {
                    Ok(range) => match range.kvs.iter().find(|pair| pair.key == each.as_bytes()) {
                        Some(pair) => ("ok", String::from_utf8_lossy(&pair.value).into_owned()),
                        None if !range.more => ("ok", "-".to_string()),
                        None => ("unknown", "-".to_string()),
                    },
                    Err(error) => (ending(error), "-".to_string()),
                };
                let _ = write_line(
                    &mut out,
                    &Line {
                        client: client_id,
                        kind: "get",
                        key: each,
                        argument: "-",
                        expected: "-",
                        invoke_ns,
                        end_ns,
                        outcome,
                        output: &found,
                    },
                );
            }
        } else {
            line.end_ns = end_ns;
            let text;
            match &result {
                Ok(answer) => {
                    text = answer.clone();
                    line.output = &text;
                }
                Err(error) => line.outcome = ending(error),
            }
            write_line(&mut out, &line).map_err(|error| error.to_string())?;
        }
        if last_flush.elapsed() > Duration::from_millis(200) {
            out.flush().map_err(|error| error.to_string())?;
            last_flush = Instant::now();
        }
    }
    out.flush().map_err(|error| error.to_string())?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------

/// One operation read back from a history file.
#[derive(Clone, Debug)]
struct Recorded {
    kind: String,
    key: String,
    invoke_ns: u64,
    end_ns: u64,
    outcome: String,
    operation: Operation,
}

fn value_of(text: &str) -> Option<Vec<u8>> {
    (text != "-").then(|| text.as_bytes().to_vec())
}

fn parse_line(line: &str) -> Result<Recorded, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [client, kind, key, argument, expected, invoke, end, outcome, output] = fields[..] else {
        return Err(format!(
            "a history line of {} fields: {line:?}",
            fields.len()
        ));
    };
    let number = |text: &str| {
        text.parse::<u64>()
            .map_err(|_| format!("not a number: {text:?} in {line:?}"))
    };
    let (client, invoke_ns, end_ns) = (number(client)?, number(invoke)?, number(end)?);
    let key_bytes = key.as_bytes().to_vec();
    let argument_bytes = argument.as_bytes().to_vec();
    let input = match kind {
        "put" => Input::Put {
            key: key_bytes,
            value: argument_bytes,
        },
        "get" => Input::Get { key: key_bytes },
        "delete" => Input::Delete { key: key_bytes },
        "append" => Input::Append {
            key: key_bytes,
            value: argument_bytes,
        },
        "cas" => Input::CompareAndSet {
            key: key_bytes,
            expected: value_of(expected),
            new_value: argument_bytes,
        },
        other => return Err(format!("unknown operation {other:?}")),
    };
    let output_value = match kind {
        "get" => Output::Value(value_of(output)),
        "cas" => Output::Swapped(output == "1"),
        _ => Output::Done,
    };
    // Clocks of the host may not be monotonic; an end before its invoke is read as at it.
    let end_ns = end_ns.max(invoke_ns);
    let outcome_value = match outcome {
        "ok" => Outcome::Completed {
            output: output_value,
            return_time: end_ns,
        },
        "fail" => Outcome::Failed {
            return_time: end_ns,
        },
        "unknown" => Outcome::Pending {
            give_up_time: Some(end_ns),
        },
        other => return Err(format!("unknown outcome {other:?}")),
    };
    Ok(Recorded {
        kind: kind.to_string(),
        key: key.to_string(),
        invoke_ns,
        end_ns,
        outcome: outcome.to_string(),
        operation: Operation {
            client: ClientId(client),
            input,
            invoke_time: invoke_ns,
            outcome: outcome_value,
        },
    })
}

fn read_histories(dir: &Path) -> Result<Vec<Recorded>, String> {
    let mut recorded = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "history")
        })
        .collect();
    paths.sort();
    for path in paths {
        let file = File::open(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|error| error.to_string())?;
            // A client killed mid-line leaves a partial last line: skip it.
            if line.split('\t').count() != 9 {
                continue;
            }
            recorded.push(parse_line(&line)?);
        }
    }
    recorded.sort_by_key(|operation| (operation.invoke_ns, operation.end_ns));
    Ok(recorded)
}

/// One fault window of `faults.tsv`.
struct Fault {
    kind: String,
    start_ns: u64,
    heal_ns: u64,
    detail: String,
}

fn read_faults(path: &Path) -> Result<Vec<Fault>, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut faults = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        let [kind, start, heal, detail] = fields[..] else {
            return Err(format!("a fault line of {} fields: {line:?}", fields.len()));
        };
        faults.push(Fault {
            kind: kind.to_string(),
            start_ns: start
                .parse()
                .map_err(|_| format!("bad start in {line:?}"))?,
            heal_ns: heal.parse().map_err(|_| format!("bad heal in {line:?}"))?,
            detail: detail.to_string(),
        });
    }
    Ok(faults)
}

/// Per-kind figures of the faults.
#[derive(Default)]
struct KindFigures {
    faults: u64,
    ok: u64,
    failed: u64,
    unknown: u64,
    longest_unavailable_ns: u64,
    longest_recovery_ns: u64,
    recoveries_not_seen: u64,
}

fn check_run(flags: &BTreeMap<String, String>) -> Result<bool, String> {
    let dir: PathBuf = flag(flags, "dir", None)?;
    let endpoints: Vec<String> = flag::<String>(flags, "endpoints", None)?
        .split(',')
        .map(str::to_string)
        .collect();
    let prefix: String = flag(flags, "prefix", Some("f/".to_string()))?;
    let keys = key_names(&prefix, flag(flags, "keys", Some(16))?);
    let final_client: u64 = flag(flags, "final-client", Some(1_000_000))?;
    let mut passed = true;

    // Final reads of every key, after the heal, through the SDK: recorded in the history
    // so that a lost acknowledged write shows up as a violation.
    let options = ClientOptions {
        request_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let client = Client::connect(&endpoints, options.clone())
        .map_err(|error| format!("final reads: {error}"))?;
    let mut final_lines =
        BufWriter::new(File::create(dir.join("final.history")).map_err(|error| error.to_string())?);
    let mut final_values: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for key in &keys {
        let invoke_ns = now_ns();
        let read = client
            .get(key)
            .map_err(|error| format!("final read of {key}: {error}"))?;
        let end_ns = now_ns();
        let value = read.map(|pair| pair.value);
        let text = value.as_ref().map_or("-".to_string(), |value| {
            String::from_utf8_lossy(value).into_owned()
        });
        write_line(
            &mut final_lines,
            &Line {
                client: final_client,
                kind: "get",
                key,
                argument: "-",
                expected: "-",
                invoke_ns,
                end_ns,
                outcome: "ok",
                output: &text,
            },
        )
        .map_err(|error| error.to_string())?;
        final_values.insert(key.clone(), value);
    }
    final_lines.flush().map_err(|error| error.to_string())?;
    drop(final_lines);

    let recorded = read_histories(&dir)?;
    let mut history = History::with_capacity(recorded.len());
    for operation in &recorded {
        history
            .push(operation.operation.clone())
            .map_err(|error| error.to_string())?;
    }
    let started = Instant::now();
    // Ten times the default budget: a fault run's keys have thousands of operations,
    // many of them concurrent with a range's backdated gets.
    let verdict = check(
        &history,
        &CheckOptions {
            part_search_steps_max: 10 * CheckOptions::default().part_search_steps_max,
        },
    );
    let took = started.elapsed();
    let (mut ok, mut failed, mut unknown) = (0u64, 0u64, 0u64);
    for operation in &recorded {
        match operation.outcome.as_str() {
            "ok" => ok += 1,
            "fail" => failed += 1,
            _ => unknown += 1,
        }
    }
    println!(
        "history: {} operations ({ok} ok, {failed} failed, {unknown} unknown) over {} keys, checked in {took:?}",
        recorded.len(),
        keys.len()
    );
    match verdict {
        CheckResult::Ok => println!("linearizable: yes"),
        CheckResult::Illegal(violation) => {
            println!("linearizable: NO\n{violation}");
            passed = false;
        }
        CheckResult::Unknown => {
            println!("linearizable: undecided within the checker's budget");
            passed = false;
        }
    }

    // Every replica agrees: each node's own replica (a serializable read at it) holds
    // the final value of every key, once it has caught up.
    let deadline = Instant::now() + REPLICAS_AGREE_WITHIN;
    for endpoint in &endpoints {
        let at_node = ClientOptions {
            serializable_reads_at_endpoint: true,
            ..options.clone()
        };
        let mut disagreement = String::new();
        loop {
            let node = Client::connect(std::slice::from_ref(endpoint), at_node.clone());
            disagreement.clear();
            match node {
                Ok(node) => {
                    for key in &keys {
                        match node.get_serializable(key) {
                            Ok(found) => {
                                let found = found.map(|pair| pair.value);
                                if Some(&found) != final_values.get(key) {
                                    disagreement =
                                        format!("{key}: {found:?} != {:?}", final_values[key]);
                                    break;
                                }
                            }
                            Err(error) => {
                                disagreement = format!("{key}: {error}");
                                break;
                            }
                        }
                    }
                }
                Err(error) => disagreement = error.to_string(),
            }
            if disagreement.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if disagreement.is_empty() {
            println!("replica at {endpoint}: agrees on all {} keys", keys.len());
        } else {
            println!("replica at {endpoint}: DISAGREES: {disagreement}");
            passed = false;
        }
    }

    let recovery_bound = Duration::from_millis(flag(flags, "recovery-bound-ms", Some(5_000))?);
    passed &= print_figures(
        &dir,
        &recorded,
        flag(flags, "groups", Some(0))?,
        recovery_bound,
    )?;
    Ok(passed)
}

/// Per fault kind: operations invoked during its faults (ok / failed / unknown), the
/// longest stretch from a fault's start to its heal plus recovery without any completed
/// write, and the time after each heal until a write to every group completed. False when
/// some heal was not followed by writes to every group within `recovery_bound` (before the
/// next fault began).
fn print_figures(
    dir: &Path,
    recorded: &[Recorded],
    groups: u64,
    recovery_bound: Duration,
) -> Result<bool, String> {
    let mut recovered_in_bound = true;
    let faults = read_faults(&dir.join("faults.tsv"))?;
    let mut by_kind: BTreeMap<String, KindFigures> = BTreeMap::new();
    let writes: Vec<&Recorded> = recorded
        .iter()
        .filter(|operation| operation.kind != "get" && operation.outcome == "ok")
        .collect();
    let mut completions: Vec<u64> = writes.iter().map(|operation| operation.end_ns).collect();
    completions.sort_unstable();
    let all_groups: BTreeSet<u64> = if groups > 0 {
        recorded
            .iter()
            .map(|operation| group_of(operation.key.as_bytes(), groups))
            .collect()
    } else {
        BTreeSet::new()
    };
    for fault in &faults {
        let figures = by_kind.entry(fault.kind.clone()).or_default();
        figures.faults += 1;
        for operation in recorded.iter().filter(|operation| {
            operation.invoke_ns >= fault.start_ns && operation.invoke_ns < fault.heal_ns
        }) {
            match operation.outcome.as_str() {
                "ok" => figures.ok += 1,
                "fail" => figures.failed += 1,
                _ => figures.unknown += 1,
            }
        }
        // Recovery: from the heal until every group had a write invoked after the heal
        // complete.
        let mut resumed: BTreeMap<u64, u64> = BTreeMap::new();
        // Looked for until the next fault begins (which may hold writes up again).
        let next_fault = faults
            .iter()
            .map(|other| other.start_ns)
            .filter(|&start| start > fault.heal_ns)
            .min()
            .unwrap_or(u64::MAX);
        let horizon = (fault.heal_ns + RECOVERY_LOOKED_FOR.as_nanos() as u64).min(next_fault);
        for operation in writes
            .iter()
            .filter(|operation| operation.invoke_ns >= fault.heal_ns && operation.end_ns <= horizon)
        {
            let group = if groups > 0 {
                group_of(operation.key.as_bytes(), groups)
            } else {
                0
            };
            let at = resumed.entry(group).or_insert(operation.end_ns);
            *at = (*at).min(operation.end_ns);
        }
        let wanted = if groups > 0 { all_groups.len() } else { 1 };
        let recovered_at = if resumed.len() >= wanted {
            resumed.values().max().copied()
        } else {
            None
        };
        match recovered_at {
            Some(at) => {
                let recovery = at - fault.heal_ns;
                figures.longest_recovery_ns = figures.longest_recovery_ns.max(recovery);
                if recovery > recovery_bound.as_nanos() as u64 {
                    println!(
                        "SLOW RECOVERY: {} ({}): writes to every group {} ms after the heal",
                        fault.kind,
                        fault.detail,
                        recovery / 1_000_000
                    );
                    recovered_in_bound = false;
                }
            }
            None => {
                figures.recoveries_not_seen += 1;
                println!(
                    "NO RECOVERY SEEN: {} ({}): no write to every group before the next fault",
                    fault.kind, fault.detail
                );
                recovered_in_bound = false;
            }
        }
        // Unavailability: the longest gap between completed writes from the fault's start
        // to its recovery.
        let end = recovered_at.unwrap_or(horizon);
        let mut previous = fault.start_ns;
        for &completion in completions
            .iter()
            .filter(|&&at| at > fault.start_ns && at <= end)
        {
            figures.longest_unavailable_ns =
                figures.longest_unavailable_ns.max(completion - previous);
            previous = completion;
        }
        figures.longest_unavailable_ns = figures
            .longest_unavailable_ns
            .max(end.saturating_sub(previous));
    }
    println!(
        "{:<10} {:>6} {:>8} {:>8} {:>8} {:>16} {:>16} {:>10}",
        "fault",
        "count",
        "ok",
        "failed",
        "unknown",
        "unavailable_max",
        "recovery_max",
        "unrecovered"
    );
    for (kind, figures) in &by_kind {
        println!(
            "{:<10} {:>6} {:>8} {:>8} {:>8} {:>14}ms {:>14}ms {:>10}",
            kind,
            figures.faults,
            figures.ok,
            figures.failed,
            figures.unknown,
            figures.longest_unavailable_ns / 1_000_000,
            figures.longest_recovery_ns / 1_000_000,
            figures.recoveries_not_seen
        );
    }
    println!(
        "recovery bound: {} ms after each heal",
        recovery_bound.as_millis()
    );
    Ok(recovered_in_bound)
}
