//! The client subcommands of `corekv` (put, get, del, append, scan, txn, status): their
//! arguments, the transaction syntax, and the plain-text output, kept apart from `main`
//! so that the server's subcommands sit beside them as one enum variant each.
//!
//! Output is greppable text on stdout, one item per line; a key and its value are
//! separated by a tab. Bytes that would break a line or a column are escaped (`\t`, `\n`,
//! `\r`, `\\`, `\xNN` for other control bytes and invalid UTF-8). An error is one line on
//! stderr, `corekv: <what went wrong>`, and the exit code says which kind it was (see
//! [`EXIT_CODES_HELP`]).

use std::io::{self, BufRead, Write};
use std::time::Duration;

use clap::{Args, Subcommand};

use corekv::client::{
    prefix_range, Client, ClientError, ClientOptions, NodeStatus, PutOptions,
    ATTEMPT_TIMEOUT_DEFAULT, CONNECT_TIMEOUT_DEFAULT,
};
use corekv::flag_values::{self, DurationBounds, DurationError};
use corekv::kv::{self, KeyValue, TxnOpResponse};
use corekv::raft::{Role, NO_NODE};

#[path = "cli_lease.rs"]
mod lease;

/// The command did what was asked.
pub const EXIT_OK: i32 = 0;
/// `get` found no such key (like grep finding no match).
pub const EXIT_NOT_FOUND: i32 = 1;
/// The command line is wrong (clap uses the same code for its own usage errors).
pub const EXIT_USAGE: i32 = 2;
/// The server refused the request (bad key, too large, transaction across groups...).
pub const EXIT_REFUSED: i32 = 3;
/// No node could serve the request in time; a write was not applied.
pub const EXIT_UNAVAILABLE: i32 = 4;
/// A write reached the cluster but its outcome is unknown: it may have been applied.
pub const EXIT_OUTCOME_UNKNOWN: i32 = 5;
/// A server answered something this client cannot read.
pub const EXIT_PROTOCOL: i32 = 6;

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes: 0 ok; 1 key not found (get); 2 usage error; 3 refused by the server; \
4 unavailable or timed out (a write was not applied); 5 outcome unknown (a write may \
have been applied); 6 protocol error.";

/// Longest `--timeout` accepted: a deadline past a day is a mistake, not a wish.
const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// The transaction syntax, as `corekv txn --help` shows it.
const TXN_HELP: &str = r#"Runs a transaction: if every --if holds, the --then ops run, else the --else ops; atomically.

Conditions (--if), one per flag:
  value(KEY) = "text"       also !=, >, < (bytewise); a missing key never matches
  version(KEY) > 3          writes since the key was created; 0 when missing
  create(KEY) = 0           revision that created the key; 0 when missing
  mod(KEY) < 120            revision of the key's last write; 0 when missing
  The operator may also be written ==.

Operations (--then, --else), one per flag:
  put KEY VALUE             write
  get KEY                   read one key
  scan PREFIX               read every key with the prefix
  del KEY                   delete one key
  append KEY VALUE          append to the value

A KEY, VALUE or text is a bare word, or a "double-quoted" string with the escapes
\" \\ \n \t \r \xNN. Every key must belong to one group.

Without --if/--then/--else, the transaction is read from stdin, one clause per line:
  if value(k1) = "a"
  then put k1 b
  else get k1
Blank lines and lines starting with # are skipped.

Output: SUCCESS or FAILURE, then each operation's result in order (put: OK;
get/scan: KEY<tab>VALUE lines; del: the count deleted; append: the new length)."#;

/// Where the cluster is and how long to wait for it.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Client addresses (host:port) of one or more nodes, comma-separated. Requests go
    /// only to these, and to a node one of them names as a group's leader.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7379",
        value_name = "HOST:PORT,..."
    )]
    pub endpoints: Vec<String>,
    /// Deadline of the whole command: connecting, status and every retry: a number with
    /// a unit, ms, s or m (a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Writes VALUE at KEY; prints OK (and, with --prev-kv, the previous KEY<tab>VALUE).
    #[command(after_help = EXIT_CODES_HELP)]
    Put(PutArgs),
    /// Prints the value at KEY; exits with 1 and prints nothing when there is none.
    #[command(after_help = EXIT_CODES_HELP)]
    Get(GetArgs),
    /// Deletes KEY (or every key starting with it); prints how many keys were deleted.
    #[command(after_help = EXIT_CODES_HELP)]
    Del(DelArgs),
    /// Appends VALUE to the value at KEY; prints the value's new length in bytes.
    #[command(after_help = EXIT_CODES_HELP)]
    Append(AppendArgs),
    /// Prints every key starting with PREFIX, in key order, one KEY<tab>VALUE per line.
    #[command(after_help = EXIT_CODES_HELP)]
    Scan(ScanArgs),
    /// Runs a transaction (see --help for the syntax).
    #[command(long_about = TXN_HELP, after_help = EXIT_CODES_HELP)]
    Txn(TxnArgs),
    /// Prints every node and every group replica with its leader, term, commit and
    /// applied index.
    #[command(after_help = EXIT_CODES_HELP)]
    Status(StatusArgs),
    /// Drops every group's history before REVISION: reads below it are refused from then
    /// on. Prints the lowest compaction revision among the groups afterwards.
    #[command(after_help = EXIT_CODES_HELP)]
    Compact(CompactArgs),
    /// Grants, revokes, keeps alive, inspects and lists leases (`lease --help`).
    #[command(after_help = EXIT_CODES_HELP)]
    Lease(lease::LeaseArgs),
}

/// How a read command prints what it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteOut {
    /// Values (get) or KEY<tab>VALUE lines (scan).
    #[default]
    Simple,
    /// One JSON object: the header revision, every key-value with its metadata (keys and
    /// values base64-encoded), count and more, as etcdctl prints.
    Json,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    pub revision: u64,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    pub key: String,
    pub value: String,
    /// Also print the pair as it was before the put.
    #[arg(long)]
    pub prev_kv: bool,
    /// Attach the key to this lease (hexadecimal id, as `lease grant` prints it).
    #[arg(long, value_parser = lease::parse_id, value_name = "ID")]
    pub lease: Option<u64>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub key: String,
    /// Read the local replica of the first endpoint that answers (another member's only
    /// when it cannot be reached): faster, possibly stale.
    #[arg(long)]
    pub serializable: bool,
    /// Read the key as it was at this revision (0: now).
    #[arg(long, default_value_t = 0, value_name = "REVISION")]
    pub rev: u64,
    #[arg(long, value_enum, default_value_t = WriteOut::Simple)]
    pub write_out: WriteOut,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    pub key: String,
    /// Delete every key that starts with KEY.
    #[arg(long)]
    pub prefix: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    pub key: String,
    pub value: String,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Every key starting with this is printed (every key when it is "").
    pub prefix: String,
    /// Print at most N keys (0: the server's own bound).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit: u64,
    /// Print keys only.
    #[arg(long)]
    pub keys_only: bool,
    /// Read the keys as they were at this revision (0: now, one snapshot of every group).
    #[arg(long, default_value_t = 0, value_name = "REVISION")]
    pub rev: u64,
    #[arg(long, value_enum, default_value_t = WriteOut::Simple)]
    pub write_out: WriteOut,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// A condition, e.g. 'value(k1) = "a"' or 'version(k2) > 3'.
    #[arg(long = "if", value_name = "CONDITION")]
    pub conditions: Vec<String>,
    /// An operation to run when every condition holds, e.g. 'put k1 b'.
    #[arg(long = "then", value_name = "OP")]
    pub success: Vec<String>,
    /// An operation to run otherwise, e.g. 'get k1'.
    #[arg(long = "else", value_name = "OP")]
    pub failure: Vec<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Parses "500ms", "5s", "1.5s", "2m" or "3" (seconds) into a positive duration.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let bounds = DurationBounds {
        zero_allowed: false,
        max: TIMEOUT_MAX,
        described: "positive and at most a day",
    };
    flag_values::parse_duration(text, bounds)
}

// ---------------------------------------------------------------------------------------
// Transaction syntax
// ---------------------------------------------------------------------------------------

/// A clause of a transaction that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnParseError {
    /// The clause as written.
    pub clause: String,
    pub reason: String,
}

impl std::fmt::Display for TxnParseError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "cannot parse {:?}: {}", self.clause, self.reason)
    }
}

/// Reads a "double-quoted" string at the start of `text` (which starts with the quote);
/// returns its bytes and the rest of the text after the closing quote.
fn parse_quoted(text: &str) -> Result<(Vec<u8>, &str), String> {
    debug_assert!(text.starts_with('"'));
    let mut bytes = Vec::new();
    let mut characters = text.char_indices().skip(1);
    while let Some((position, character)) = characters.next() {
        match character {
            '"' => return Ok((bytes, &text[position + 1..])),
            '\\' => {
                let Some((_, escaped)) = characters.next() else {
                    break;
                };
                match escaped {
                    '"' => bytes.push(b'"'),
                    '\\' => bytes.push(b'\\'),
                    'n' => bytes.push(b'\n'),
                    't' => bytes.push(b'\t'),
                    'r' => bytes.push(b'\r'),
                    'x' => {
                        let digits: String = (0..2)
                            .filter_map(|_| characters.next().map(|(_, digit)| digit))
                            .collect();
                        let byte = u8::from_str_radix(&digits, 16)
                            .ok()
                            .filter(|_| digits.len() == 2)
                            .ok_or_else(|| format!("\\x needs two hex digits, got {digits:?}"))?;
                        bytes.push(byte);
                    }
                    other => return Err(format!("unknown escape \\{other}")),
                }
            }
            other => {
                let mut buffer = [0u8; 4];
                bytes.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    Err("unterminated quoted string".to_string())
}

/// Splits an operation into words: bare words end at whitespace; quoted strings may hold
/// anything.
fn split_words(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut words = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (word, after) = parse_quoted(rest)?;
            if after.starts_with(|character: char| !character.is_whitespace()) {
                return Err("a quoted string must be followed by a space".to_string());
            }
            words.push(word);
            rest = after.trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            if word.contains('"') {
                return Err(format!("stray quote in {word:?}"));
            }
            words.push(word.as_bytes().to_vec());
            rest = rest[end..].trim_start();
        }
    }
    Ok(words)
}

/// Parses one operation of a transaction branch.
pub fn parse_txn_op(clause: &str) -> Result<kv::TxnOp, TxnParseError> {
    let fail = |reason: String| TxnParseError {
        clause: clause.to_string(),
        reason,
    };
    let words = split_words(clause).map_err(fail)?;
    let Some((verb, arguments)) = words.split_first() else {
        return Err(fail("an empty operation".to_string()));
    };
    let arity = |count: usize, usage: &str| {
        if arguments.len() == count {
            Ok(())
        } else {
            Err(fail(format!("expected `{usage}`")))
        }
    };
    match verb.as_slice() {
        b"put" => {
            arity(2, "put KEY VALUE")?;
            Ok(kv::TxnOp::Put(kv::PutRequest {
                key: arguments[0].clone(),
                value: arguments[1].clone(),
                ..kv::PutRequest::default()
            }))
        }
        b"get" => {
            arity(1, "get KEY")?;
            Ok(kv::TxnOp::Range(kv::RangeRequest::get(&arguments[0])))
        }
        b"scan" => {
            arity(1, "scan PREFIX")?;
            Ok(kv::TxnOp::Range(prefix_range(&arguments[0])))
        }
        b"del" => {
            arity(1, "del KEY")?;
            Ok(kv::TxnOp::Delete(kv::DeleteRequest {
                key: arguments[0].clone(),
                ..kv::DeleteRequest::default()
            }))
        }
        b"append" => {
            arity(2, "append KEY VALUE")?;
            Ok(kv::TxnOp::Append(kv::AppendRequest {
                key: arguments[0].clone(),
                value: arguments[1].clone(),
            }))
        }
        other => Err(fail(format!(
            "unknown operation {:?}: use put, get, scan, del or append",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Parses one condition: `TARGET(KEY) OPERATOR OPERAND`.
pub fn parse_compare(clause: &str) -> Result<kv::Compare, TxnParseError> {
    parse_compare_inner(clause).map_err(|reason| TxnParseError {
        clause: clause.to_string(),
        reason,
    })
}

fn parse_compare_inner(clause: &str) -> Result<kv::Compare, String> {
    let text = clause.trim();
    let open = text
        .find('(')
        .ok_or("expected TARGET(KEY), e.g. value(k1)")?;
    let target_name = text[..open].trim();
    let after_open = text[open + 1..].trim_start();
    let (key, after_key) = if after_open.starts_with('"') {
        parse_quoted(after_open)?
    } else {
        let close = after_open.find(')').ok_or("missing ) after the key")?;
        (
            after_open[..close].trim_end().as_bytes().to_vec(),
            &after_open[close..],
        )
    };
    let after_key = after_key.trim_start();
    let after_close = after_key
        .strip_prefix(')')
        .ok_or("missing ) after the key")?
        .trim_start();
    if key.is_empty() {
        return Err("the key is empty".to_string());
    }
    let (result, operand) = [
        ("==", kv::CompareResult::Equal),
        ("!=", kv::CompareResult::NotEqual),
        ("=", kv::CompareResult::Equal),
        (">", kv::CompareResult::Greater),
        ("<", kv::CompareResult::Less),
    ]
    .iter()
    .find_map(|&(operator, result)| {
        after_close
            .strip_prefix(operator)
            .map(|operand| (result, operand.trim()))
    })
    .ok_or("expected an operator: =, ==, !=, > or <")?;
    if operand.is_empty() {
        return Err("missing the operand after the operator".to_string());
    }
    let text_operand = || -> Result<Vec<u8>, String> {
        if operand.starts_with('"') {
            let (bytes, rest) = parse_quoted(operand)?;
            if !rest.trim().is_empty() {
                return Err(format!("unexpected {:?} after the operand", rest.trim()));
            }
            Ok(bytes)
        } else if operand.contains(char::is_whitespace) || operand.contains('"') {
            Err("quote an operand that holds spaces or quotes".to_string())
        } else {
            Ok(operand.as_bytes().to_vec())
        }
    };
    let number_operand = || -> Result<u64, String> {
        operand
            .parse()
            .map_err(|_| format!("{operand:?} is not a non-negative integer"))
    };
    let target = match target_name {
        "value" => kv::CompareTarget::Value(text_operand()?),
        "version" => kv::CompareTarget::Version(number_operand()?),
        "create" => kv::CompareTarget::CreateRevision(number_operand()?),
        "mod" => kv::CompareTarget::ModRevision(number_operand()?),
        other => {
            return Err(format!(
                "unknown target {other:?}: use value, version, create or mod"
            ))
        }
    };
    Ok(kv::Compare {
        key,
        target,
        result,
    })
}

/// Which clause a line of a transaction read from stdin is.
fn parse_txn_line(line: &str, request: &mut kv::TxnRequest) -> Result<(), TxnParseError> {
    let trimmed = line.trim();
    let (keyword, rest) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    match keyword {
        "if" => request.compares.push(parse_compare(rest)?),
        "then" => request.success.push(parse_txn_op(rest)?),
        "else" => request.failure.push(parse_txn_op(rest)?),
        _ => {
            return Err(TxnParseError {
                clause: line.to_string(),
                reason: "a line starts with if, then or else".to_string(),
            })
        }
    }
    Ok(())
}

/// Builds a transaction from the flags' clauses.
pub fn parse_txn_args(
    conditions: &[String],
    success: &[String],
    failure: &[String],
) -> Result<kv::TxnRequest, TxnParseError> {
    Ok(kv::TxnRequest {
        compares: conditions
            .iter()
            .map(|clause| parse_compare(clause))
            .collect::<Result<_, _>>()?,
        success: success
            .iter()
            .map(|clause| parse_txn_op(clause))
            .collect::<Result<_, _>>()?,
        failure: failure
            .iter()
            .map(|clause| parse_txn_op(clause))
            .collect::<Result<_, _>>()?,
    })
}

/// Builds a transaction from lines (`if ...`, `then ...`, `else ...`).
pub fn parse_txn_lines<'a>(
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<kv::TxnRequest, TxnParseError> {
    let mut request = kv::TxnRequest::default();
    for line in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        parse_txn_line(line, &mut request)?;
    }
    Ok(request)
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

/// Bytes as one line of text: valid UTF-8 stays as is, except what would break a line
/// or a column; everything else is escaped.
pub fn escape(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for character in chunk.valid().chars() {
            match character {
                '\\' => text.push_str("\\\\"),
                '\t' => text.push_str("\\t"),
                '\n' => text.push_str("\\n"),
                '\r' => text.push_str("\\r"),
                control if control.is_control() && (control as u32) < 0x100 => {
                    text.push_str(&format!("\\x{:02x}", control as u32));
                }
                other => text.push(other),
            }
        }
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

/// `KEY<tab>VALUE`.
pub fn format_pair(pair: &KeyValue) -> String {
    format!("{}\t{}", escape(&pair.key), escape(&pair.value))
}

fn format_pairs(pairs: &[KeyValue], keys_only: bool) -> Vec<String> {
    pairs
        .iter()
        .map(|pair| {
            if keys_only {
                escape(&pair.key)
            } else {
                format_pair(pair)
            }
        })
        .collect()
}

/// The lines of a transaction's answer.
pub fn format_txn(response: &kv::TxnResponse) -> Vec<String> {
    let mut lines = vec![if response.succeeded {
        "SUCCESS".to_string()
    } else {
        "FAILURE".to_string()
    }];
    for op in &response.responses {
        match op {
            TxnOpResponse::Put(put) => {
                lines.push("OK".to_string());
                lines.extend(put.prev_kv.iter().map(format_pair));
            }
            TxnOpResponse::Range(range) => lines.extend(format_pairs(&range.kvs, false)),
            TxnOpResponse::Delete(delete) => lines.push(delete.deleted.to_string()),
            TxnOpResponse::Append(append) => lines.push(append.value_bytes.to_string()),
        }
    }
    lines
}

/// Rows padded into columns two spaces apart; the last column is not padded.
fn format_table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                if column + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
                }
            }
            line
        })
        .collect()
}

fn role_name(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Leader) => "leader",
        Some(Role::Follower) => "follower",
        Some(Role::Candidate) => "candidate",
        Some(Role::PreCandidate) => "precandidate",
        None => "unknown",
    }
}

fn node_name(node_id: u64) -> String {
    if node_id == NO_NODE {
        "-".to_string()
    } else {
        node_id.to_string()
    }
}

/// The `status` report: the cluster line, a table of nodes, a table of group replicas
/// (one row per group per node that answered, sorted by group then node).
pub fn format_status(cluster_id: u64, group_count: u64, nodes: &[NodeStatus]) -> Vec<String> {
    let mut lines = vec![format!("cluster {cluster_id:#018x}  groups {group_count}")];
    let mut node_rows = vec![vec![
        "NODE".to_string(),
        "ADDRESS".to_string(),
        "SHARDS".to_string(),
        "GROUPS".to_string(),
        "STATE".to_string(),
    ]];
    let mut replicas: Vec<(u64, u64, &corekv::api::GroupStatus)> = Vec::new();
    for node in nodes {
        match &node.result {
            Ok(status) => {
                node_rows.push(vec![
                    node_name(status.node_id),
                    node.address.clone(),
                    status.shards.to_string(),
                    status.groups.len().to_string(),
                    "ok".to_string(),
                ]);
                replicas.extend(
                    status
                        .groups
                        .iter()
                        .map(|group| (group.group_id, status.node_id, group)),
                );
            }
            Err(error) => node_rows.push(vec![
                node_name(node.node_id),
                node.address.clone(),
                "-".to_string(),
                "-".to_string(),
                format!("unreachable: {error}"),
            ]),
        }
    }
    lines.extend(format_table(&node_rows));
    if replicas.is_empty() {
        return lines;
    }
    replicas.sort_by_key(|&(group, node, _)| (group, node));
    let mut group_rows = vec![[
        "GROUP", "NODE", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "FIRST", "LAST", "VOTERS",
    ]
    .map(String::from)
    .to_vec()];
    for (group_id, node_id, group) in replicas {
        let voters: Vec<String> = group.voters.iter().map(u64::to_string).collect();
        group_rows.push(vec![
            group_id.to_string(),
            node_name(node_id),
            role_name(group.role).to_string(),
            node_name(group.leader),
            group.term.to_string(),
            group.commit.to_string(),
            group.applied.to_string(),
            group.first_index.to_string(),
            group.last_index.to_string(),
            if voters.is_empty() {
                "-".to_string()
            } else {
                voters.join(",")
            },
        ]);
    }
    lines.push(String::new());
    lines.extend(format_table(&group_rows));
    lines
}

// ---------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------

/// Why a command failed.
#[derive(Debug)]
enum CliError {
    Usage(String),
    Client(ClientError),
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        CliError::Client(error)
    }
}

impl From<TxnParseError> for CliError {
    fn from(error: TxnParseError) -> CliError {
        CliError::Usage(error.to_string())
    }
}

/// The exit code of a client error.
pub fn exit_code(error: &ClientError) -> i32 {
    match error {
        ClientError::InvalidArgument(_) => EXIT_USAGE,
        ClientError::Rejected { .. } | ClientError::RequestTooLarge { .. } => EXIT_REFUSED,
        ClientError::Unavailable { .. } | ClientError::Timeout { .. } => EXIT_UNAVAILABLE,
        ClientError::OutcomeUnknown { .. } => EXIT_OUTCOME_UNKNOWN,
        ClientError::Protocol(_) => EXIT_PROTOCOL,
    }
}

fn connect(connection: &ConnectionArgs) -> Result<Client, ClientError> {
    connect_with(connection, false)
}

/// Connects; with `all_members`, every member the first status lists is asked too (the
/// status report shows the whole cluster).
fn connect_with(connection: &ConnectionArgs, all_members: bool) -> Result<Client, ClientError> {
    let options = ClientOptions {
        route_to_all_members: all_members,
        request_timeout: connection.timeout,
        attempt_timeout: ATTEMPT_TIMEOUT_DEFAULT.min(connection.timeout),
        connect_timeout: CONNECT_TIMEOUT_DEFAULT.min(connection.timeout),
        // A serializable read asks the node named, as etcdctl does.
        serializable_reads_at_endpoint: true,
        ..ClientOptions::default()
    };
    let endpoints: Vec<String> = connection
        .endpoints
        .iter()
        .map(|endpoint| endpoint.trim().to_string())
        .filter(|endpoint| !endpoint.is_empty())
        .collect();
    // `--timeout` bounds the whole command: connecting and every operation after it.
    let deadline = std::time::Instant::now() + connection.timeout;
    let mut client = Client::connect(&endpoints, options)?;
    client.set_deadline(deadline);
    Ok(client)
}

/// What a successful command prints and how it exits.
struct Output {
    lines: Vec<String>,
    code: i32,
}

impl Output {
    fn ok(lines: Vec<String>) -> Output {
        Output {
            lines,
            code: EXIT_OK,
        }
    }
}

fn execute(command: ClientCommand) -> Result<Output, CliError> {
    match command {
        ClientCommand::Put(arguments) => {
            let client = connect(&arguments.connection)?;
            let options = PutOptions {
                prev_kv: arguments.prev_kv,
                lease: arguments.lease.unwrap_or(0),
            };
            let response = client.put_with(&arguments.key, &arguments.value, options)?;
            let mut lines = vec!["OK".to_string()];
            lines.extend(response.prev_kv.iter().map(format_pair));
            Ok(Output::ok(lines))
        }
        ClientCommand::Get(arguments) => {
            let client = connect(&arguments.connection)?;
            let request = kv::RangeRequest {
                revision: arguments.rev,
                ..kv::RangeRequest::get(arguments.key.as_bytes())
            };
            let (revision, found) = read(&client, request, arguments.serializable)?;
            let code = if found.kvs.is_empty() {
                EXIT_NOT_FOUND
            } else {
                EXIT_OK
            };
            let lines = match arguments.write_out {
                WriteOut::Json => vec![crate::cli_json::range(
                    client.cluster_id(),
                    revision,
                    &found.kvs,
                    found.count,
                    found.more,
                )],
                WriteOut::Simple => found.kvs.iter().map(|pair| escape(&pair.value)).collect(),
            };
            Ok(Output { lines, code })
        }
        ClientCommand::Del(arguments) => {
            let client = connect(&arguments.connection)?;
            let response = if arguments.prefix {
                let range = prefix_range(arguments.key.as_bytes());
                client.delete_range(range.key, range.range_end)?
            } else {
                client.delete(&arguments.key)?
            };
            Ok(Output::ok(vec![response.deleted.to_string()]))
        }
        ClientCommand::Append(arguments) => {
            let client = connect(&arguments.connection)?;
            let response = client.append(&arguments.key, &arguments.value)?;
            Ok(Output::ok(vec![response.value_bytes.to_string()]))
        }
        ClientCommand::Scan(arguments) => {
            let client = connect(&arguments.connection)?;
            let request = kv::RangeRequest {
                limit: arguments.limit,
                keys_only: arguments.keys_only,
                revision: arguments.rev,
                ..prefix_range(arguments.prefix.as_bytes())
            };
            let (revision, response) = read(&client, request, false)?;
            Ok(Output::ok(match arguments.write_out {
                WriteOut::Json => vec![crate::cli_json::range(
                    client.cluster_id(),
                    revision,
                    &response.kvs,
                    response.count,
                    response.more,
                )],
                WriteOut::Simple => format_pairs(&response.kvs, arguments.keys_only),
            }))
        }
        ClientCommand::Txn(arguments) => {
            // Parsed before connecting: a typo should not wait for the network.
            let request = if arguments.conditions.is_empty()
                && arguments.success.is_empty()
                && arguments.failure.is_empty()
            {
                let lines: Vec<String> = io::stdin()
                    .lock()
                    .lines()
                    .collect::<Result<_, _>>()
                    .map_err(|error| CliError::Usage(format!("cannot read stdin: {error}")))?;
                parse_txn_lines(lines.iter().map(String::as_str))?
            } else {
                parse_txn_args(
                    &arguments.conditions,
                    &arguments.success,
                    &arguments.failure,
                )?
            };
            let client = connect(&arguments.connection)?;
            let response = client.txn(request)?;
            Ok(Output::ok(format_txn(&response)))
        }
        ClientCommand::Lease(arguments) => lease::execute(arguments),
        ClientCommand::Compact(arguments) => {
            let client = connect(&arguments.connection)?;
            let compacted = client.compact(arguments.revision)?;
            Ok(Output::ok(vec![compacted.to_string()]))
        }
        ClientCommand::Status(arguments) => {
            let client = connect_with(&arguments.connection, true)?;
            let nodes = client.status_all();
            Ok(Output::ok(format_status(
                client.cluster_id(),
                client.group_count(),
                &nodes,
            )))
        }
    }
}

/// A read with the revision it saw.
fn read(
    client: &Client,
    request: kv::RangeRequest,
    serializable: bool,
) -> Result<(u64, kv::RangeResponse), CliError> {
    let response = client.execute(kv::Op::Range(request), serializable)?;
    match response.op {
        kv::OpResponse::Range(range) => Ok((response.revision, range)),
        other => Err(CliError::Client(ClientError::Protocol(format!(
            "asked for a range, got {other:?}"
        )))),
    }
}

/// Runs one client command and returns the process exit code.
pub fn run(command: ClientCommand) -> i32 {
    match execute(command) {
        Ok(output) => {
            let mut stdout = io::stdout().lock();
            for line in &output.lines {
                // A closed stdout (`| head`) ends the output, not the command's result.
                if writeln!(stdout, "{line}").is_err() {
                    break;
                }
            }
            let _ = stdout.flush();
            output.code
        }
        Err(CliError::Usage(message)) => {
            eprintln!("corekv: {message}");
            EXIT_USAGE
        }
        Err(CliError::Client(error)) => {
            eprintln!("corekv: {error}");
            exit_code(&error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv::api::{ErrorCode, GroupStatus, StatusInfo};
    use corekv::kv::{CompareResult, CompareTarget, TxnOp};

    fn compare(key: &str, target: CompareTarget, result: CompareResult) -> kv::Compare {
        kv::Compare {
            key: key.as_bytes().to_vec(),
            target,
            result,
        }
    }

    // Every target and operator parses, with bare, quoted and escaped operands and keys.
    #[test]
    fn conditions_parse() {
        let cases = [
            (
                r#"value(k1) = "a""#,
                compare(
                    "k1",
                    CompareTarget::Value(b"a".to_vec()),
                    CompareResult::Equal,
                ),
            ),
            (
                "value(k1)==a",
                compare(
                    "k1",
                    CompareTarget::Value(b"a".to_vec()),
                    CompareResult::Equal,
                ),
            ),
            (
                r#"value( "my key" ) != "x y\t\x00""#,
                compare(
                    "my key",
                    CompareTarget::Value(b"x y\t\x00".to_vec()),
                    CompareResult::NotEqual,
                ),
            ),
            (
                "version(k2) > 3",
                compare("k2", CompareTarget::Version(3), CompareResult::Greater),
            ),
            (
                "create(k) = 0",
                compare("k", CompareTarget::CreateRevision(0), CompareResult::Equal),
            ),
            (
                "  mod(a/b) < 120  ",
                compare("a/b", CompareTarget::ModRevision(120), CompareResult::Less),
            ),
            (
                r#"value(k) = """#,
                compare("k", CompareTarget::Value(Vec::new()), CompareResult::Equal),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_compare(text), Ok(expected), "{text}");
        }
    }

    // Malformed conditions are refused with the clause and a reason.
    #[test]
    fn bad_conditions_are_refused() {
        for text in [
            "value k1 = a",
            "value(k1 = a",
            "size(k1) = 3",
            "version(k1) = abc",
            "version(k1) = -1",
            "value(k1) ~ a",
            "value(k1) =",
            "value() = a",
            r#"value(k1) = "unterminated"#,
            r#"value(k1) = "a" trailing"#,
            "value(k1) = two words",
            r#"value(k1) = "\q""#,
            r#"value(k1) = "\x4""#,
        ] {
            let error = parse_compare(text).unwrap_err();
            assert_eq!(error.clause, text);
            assert!(!error.reason.is_empty());
        }
    }

    // Every operation parses, with quoted words.
    #[test]
    fn operations_parse() {
        assert_eq!(
            parse_txn_op(r#"put k1 "b c""#),
            Ok(TxnOp::Put(kv::PutRequest {
                key: b"k1".to_vec(),
                value: b"b c".to_vec(),
                ..kv::PutRequest::default()
            }))
        );
        assert_eq!(
            parse_txn_op("get k1"),
            Ok(TxnOp::Range(kv::RangeRequest::get(b"k1")))
        );
        assert_eq!(
            parse_txn_op("scan dir/"),
            Ok(TxnOp::Range(kv::RangeRequest::prefix(b"dir/")))
        );
        assert_eq!(
            parse_txn_op("  del   k2 "),
            Ok(TxnOp::Delete(kv::DeleteRequest {
                key: b"k2".to_vec(),
                ..kv::DeleteRequest::default()
            }))
        );
        assert_eq!(
            parse_txn_op(r#"append log "\n""#),
            Ok(TxnOp::Append(kv::AppendRequest {
                key: b"log".to_vec(),
                value: b"\n".to_vec(),
            }))
        );
        for bad in [
            "",
            "put k1",
            "get",
            "get a b",
            "drop k",
            r#"put "k"v x"#,
            r#"put k" v"#,
        ] {
            assert!(parse_txn_op(bad).is_err(), "{bad:?} accepted");
        }
    }

    // The flags and the stdin form build the same transaction; comments and blank lines
    // are skipped, and a line without a keyword is refused.
    #[test]
    fn flags_and_lines_build_the_same_transaction() {
        let from_flags = parse_txn_args(
            &[r#"value(k1) = "a""#.to_string()],
            &["put k1 b".to_string(), "del k2".to_string()],
            &["get k1".to_string()],
        )
        .unwrap();
        let from_lines = parse_txn_lines([
            "# swap k1",
            r#"if value(k1) = "a""#,
            "",
            "then put k1 b",
            "then del k2",
            "else get k1",
        ])
        .unwrap();
        assert_eq!(from_flags, from_lines);
        assert_eq!(
            (
                from_flags.compares.len(),
                from_flags.success.len(),
                from_flags.failure.len()
            ),
            (1, 2, 1)
        );
        assert!(parse_txn_lines(["put k v"]).is_err());
    }

    // Text passes through; tabs, newlines, backslashes, control bytes and invalid UTF-8
    // are escaped so one pair stays on one line with one tab.
    #[test]
    fn escaping_keeps_lines_and_columns() {
        assert_eq!(escape(b"plain text/\xc3\xa9"), "plain text/é");
        assert_eq!(escape(b"a\tb\nc\rd\\e"), "a\\tb\\nc\\rd\\\\e");
        assert_eq!(escape(b"\x00\x1b\x7f"), "\\x00\\x1b\\x7f");
        assert_eq!(escape(b"ok\xff\xfe!"), "ok\\xff\\xfe!");
        let pair = KeyValue {
            key: b"k\t1".to_vec(),
            value: b"v\n".to_vec(),
            ..KeyValue::default()
        };
        assert_eq!(format_pair(&pair), "k\\t1\tv\\n");
    }

    // A transaction prints its branch, then each op's result in order.
    #[test]
    fn transaction_output() {
        let response = kv::TxnResponse {
            succeeded: false,
            responses: vec![
                TxnOpResponse::Put(kv::PutResponse { prev_kv: None }),
                TxnOpResponse::Range(kv::RangeResponse {
                    kvs: vec![KeyValue {
                        key: b"k1".to_vec(),
                        value: b"a".to_vec(),
                        ..KeyValue::default()
                    }],
                    count: 1,
                    more: false,
                }),
                TxnOpResponse::Delete(kv::DeleteResponse {
                    deleted: 2,
                    prev_kvs: Vec::new(),
                }),
                TxnOpResponse::Append(kv::AppendResponse { value_bytes: 7 }),
            ],
        };
        assert_eq!(
            format_txn(&response),
            vec!["FAILURE", "OK", "k1\ta", "2", "7"]
        );
    }

    // The status report lists every node (reachable or not) and one aligned row per
    // group replica, sorted by group then node.
    #[test]
    fn status_output() {
        let group = |group_id, role, leader| GroupStatus {
            group_id,
            role: Some(role),
            leader,
            term: 3,
            commit: 120,
            applied: 119,
            first_index: 1,
            last_index: 121,
            voters: vec![1, 2],
        };
        let nodes = vec![
            NodeStatus {
                address: "127.0.0.1:7379".to_string(),
                node_id: 1,
                result: Ok(StatusInfo {
                    node_id: 1,
                    shards: 2,
                    groups: vec![group(1, Role::Follower, 2), group(0, Role::Leader, 1)],
                    ..StatusInfo::default()
                }),
            },
            NodeStatus {
                address: "127.0.0.1:7389".to_string(),
                node_id: 2,
                result: Err(ClientError::Rejected {
                    code: ErrorCode::ShuttingDown,
                    message: "bye".to_string(),
                }),
            },
        ];
        let lines = format_status(0xc0de, 2, &nodes);
        assert_eq!(
            lines,
            vec![
                "cluster 0x000000000000c0de  groups 2",
                "NODE  ADDRESS         SHARDS  GROUPS  STATE",
                "1     127.0.0.1:7379  2       2       ok",
                "2     127.0.0.1:7389  -       -       unreachable: refused by the server: ShuttingDown: bye",
                "",
                "GROUP  NODE  ROLE      LEADER  TERM  COMMIT  APPLIED  FIRST  LAST  VOTERS",
                "0      1     leader    1       3     120     119      1      121   1,2",
                "1      1     follower  2       3     120     119      1      121   1,2",
            ]
        );
    }

    // Durations take ms, s, m or a bare number of seconds, and must be positive.
    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        for bad in ["", "0s", "-1s", "5h", "s", "NaNs", "100000m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    // Each client error has its documented exit code, all distinct from success and from
    // "not found".
    #[test]
    fn exit_codes_by_cause() {
        let unavailable = ClientError::Unavailable {
            attempts: 1,
            last_error: String::new(),
        };
        let timeout = ClientError::Timeout {
            timeout: Duration::from_secs(1),
            attempts: 1,
            last_error: String::new(),
        };
        let unknown = ClientError::OutcomeUnknown {
            attempts: 1,
            last_error: String::new(),
        };
        let refused = ClientError::Rejected {
            code: ErrorCode::EmptyKey,
            message: String::new(),
        };
        assert_eq!(exit_code(&unavailable), EXIT_UNAVAILABLE);
        assert_eq!(exit_code(&timeout), EXIT_UNAVAILABLE);
        assert_eq!(exit_code(&unknown), EXIT_OUTCOME_UNKNOWN);
        assert_eq!(exit_code(&refused), EXIT_REFUSED);
        assert_eq!(
            exit_code(&ClientError::Protocol(String::new())),
            EXIT_PROTOCOL
        );
        assert_eq!(
            exit_code(&ClientError::InvalidArgument(String::new())),
            EXIT_USAGE
        );
        let codes = [
            EXIT_OK,
            EXIT_NOT_FOUND,
            EXIT_USAGE,
            EXIT_REFUSED,
            EXIT_UNAVAILABLE,
            EXIT_OUTCOME_UNKNOWN,
            EXIT_PROTOCOL,
        ];
        for (position, code) in codes.iter().enumerate() {
            assert!(!codes[..position].contains(code));
        }
    }
}
