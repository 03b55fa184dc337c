//! Data-driven interaction tests: scripts in `src/raft/testdata/` drive a few replicas step
//! by step and compare the trace they produce with the expected text stored in the script.
//!
//! A script is a sequence of commands. Each command is one line (continued onto the next
//! line by a trailing `\`), then a line `----`, then the expected output, which ends at the
//! first blank line. Lines starting with `#` between commands are comments. Nothing happens
//! by itself: Readies are handled and messages delivered only when a command says so, so
//! the trace shows every message. `REWRITE=1 cargo test --lib interaction` replaces the
//! expected output of every command with what it produces now.
//!
//! Commands (ids are node ids, lists are written `(1,2,3)`):
//! - `add-nodes N [voters=(..)] [learners=(..)] [pre-vote=BOOL] [check-quorum=BOOL]
//!   [election-ticks=N] [heartbeat-ticks=N] [snapshot-chunk-bytes=N]
//!   [snapshot-chunks-in-flight=N] [append-bytes-max=N] [inflight-messages-max=N]
//!   [uncommitted-bytes-max=N] [unsafe-commit-old-terms=BOOL]`: the first call creates
//!   nodes 1..=N (all voters unless said otherwise); a later call adds N more nodes that
//!   start with the group's initial membership and are not members yet.
//! - `campaign ID`, `propose ID DATA`, `propose-conf-change ID add-voter|add-learner|remove
//!   NODE`, `transfer-leader FROM TO`, `read-index ID CONTEXT`, `compact ID`.
//! - `process-ready ID... [persist=false]`: takes and prints each node's Ready; with
//!   `persist=false` its writes are held (not durable) until `persist ID`.
//! - `persist ID...`: makes the held writes durable and sends what waited for them.
//! - `deliver-msgs [ID...] [drop=(..)] [type=KIND] [count=N]`: delivers queued messages to
//!   the given nodes (all when none is given and nothing is dropped) and drops those to the
//!   `drop` nodes; with `type`, only messages of that kind (`Append`, `Heartbeat`, ...);
//!   with `count`, only the first N of those.
//! - `stabilize [ID...]`: handles Readies and delivers messages until nothing moves.
//! - `tick ID N`, `tick-heartbeat ID`, `tick-election ID` (ticks until an election fires, or
//!   an election timeout for a leader, so check-quorum runs once).
//! - `partition (..) (..)...`, `isolate ID`, `heal`, `crash ID`, `restart ID`.
//! - `raft-state`, `raft-log ID...`, `status ID`.
//!
//! Notation: an entry or log position is `term/index`; a normal entry shows its payload in
//! quotes (the leader's no-op is `""`), a membership change shows `conf(kind node)`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::config::Config;
use super::harness::Cluster;
use super::node::{Ready, CAMPAIGN_TRANSFER};
use super::progress::ProgressState;
use super::types::*;

/// Rounds of `stabilize` before it reports a livelock instead of hanging.
const STABILIZE_ROUNDS_MAX: usize = 1_000;

/// Appends one line to a trace. Writing to a `String` cannot fail.
macro_rules! emit {
    ($out:expr, $($argument:tt)*) => {
        writeln!($out, $($argument)*).expect("writing to a String cannot fail")
    };
}

// ----- the script format -----------------------------------------------------------------

/// One command of a script and the output stored for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Case {
    /// 1-based line of the command in the script.
    line: usize,
    /// The command as written, continuation lines included.
    command_lines: Vec<String>,
    expected: Vec<String>,
    /// The expected output ended at a blank line (not at the end of the file).
    ends_with_blank: bool,
}

/// A script is text (comments, blank lines) and commands, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Text(String),
    Case(Case),
}

fn parse_script(text: &str) -> Result<Vec<Item>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at];
        if line.trim().is_empty() || line.starts_with('#') {
            items.push(Item::Text(line.to_string()));
            at += 1;
            continue;
        }
        let first_line = at + 1;
        let mut command_lines = vec![line.to_string()];
        while command_lines.last().is_some_and(|l| l.ends_with('\\')) {
            at += 1;
            let Some(next) = lines.get(at) else {
                return Err(format!(
                    "line {first_line}: the command continues past the end"
                ));
            };
            command_lines.push(next.to_string());
        }
        at += 1;
        if lines.get(at) != Some(&"----") {
            return Err(format!(
                "line {first_line}: expected a `----` line after the command"
            ));
        }
        at += 1;
        let mut expected = Vec::new();
        let mut ends_with_blank = false;
        while at < lines.len() {
            let line = lines[at];
            at += 1;
            if line.trim().is_empty() {
                ends_with_blank = true;
                break;
            }
            expected.push(line.to_string());
        }
        items.push(Item::Case(Case {
            line: first_line,
            command_lines,
            expected,
            ends_with_blank,
        }));
    }
    Ok(items)
}

/// The script text with `outputs[k]` as the output of its `k`th command.
fn render_script(items: &[Item], outputs: &[Vec<String>]) -> String {
    let mut text = String::new();
    let mut outputs = outputs.iter();
    for item in items {
        match item {
            Item::Text(line) => {
                text.push_str(line);
                text.push('\n');
            }
            Item::Case(case) => {
                for line in &case.command_lines {
                    text.push_str(line);
                    text.push('\n');
                }
                text.push_str("----\n");
                for line in outputs.next().expect("one output per command") {
                    text.push_str(line);
                    text.push('\n');
                }
                if case.ends_with_blank {
                    text.push('\n');
                }
            }
        }
    }
    text
}

/// A command line split into its name, positional arguments and `key=value` arguments.
#[derive(Debug)]
struct Command {
    name: String,
    positional: Vec<String>,
    named: BTreeMap<String, String>,
}

impl Command {
    fn parse(lines: &[String]) -> Result<Command, String> {
        let joined: String = lines
            .iter()
            .map(|line| line.strip_suffix('\\').unwrap_or(line))
            .collect::<Vec<_>>()
            .join(" ");
        let tokens = tokenize(&joined)?;
        let mut tokens = tokens.into_iter();
        let name = tokens.next().ok_or("empty command")?;
        let mut command = Command {
            name,
            positional: Vec::new(),
            named: BTreeMap::new(),
        };
        for token in tokens {
            match token.split_once('=') {
                Some((key, value)) if !token.starts_with('"') && !token.starts_with('(') => {
                    if command
                        .named
                        .insert(key.to_string(), value.to_string())
                        .is_some()
                    {
                        return Err(format!("argument {key} given twice"));
                    }
                }
                _ => command.positional.push(token),
            }
        }
        Ok(command)
    }

    fn allow(
        &self,
        keys: &[&str],
        positional_min: usize,
        positional_max: usize,
    ) -> Result<(), String> {
        if let Some(key) = self.named.keys().find(|key| !keys.contains(&key.as_str())) {
            return Err(format!("{}: unknown argument {key}", self.name));
        }
        let count = self.positional.len();
        if count < positional_min || count > positional_max {
            return Err(format!(
                "{}: expected {positional_min}..={positional_max} positional arguments, got {count}",
                self.name
            ));
        }
        Ok(())
    }

    fn id(&self, position: usize) -> Result<NodeId, String> {
        parse_u64(&self.positional[position])
    }

    fn ids(&self) -> Result<Vec<NodeId>, String> {
        self.positional.iter().map(|text| parse_u64(text)).collect()
    }

    fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        self.named.get(key).map(|text| parse_u64(text)).transpose()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        self.named
            .get(key)
            .map(|text| match text.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(format!("{key}: expected true or false, got {other:?}")),
            })
            .transpose()
    }

    fn id_list(&self, key: &str) -> Result<Option<Vec<NodeId>>, String> {
        self.named
            .get(key)
            .map(|text| parse_id_list(text))
            .transpose()
    }
}

/// Splits on spaces, keeping `(..)` groups and `".."` strings whole.
fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    for character in text.chars() {
        match character {
            '"' => {
                quoted = !quoted;
                current.push(character);
            }
            '(' if !quoted => {
                depth += 1;
                current.push(character);
            }
            ')' if !quoted => {
                depth = depth.checked_sub(1).ok_or("unbalanced `)`")?;
                current.push(character);
            }
            c if c.is_whitespace() && !quoted && depth == 0 => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(character),
        }
    }
    if quoted || depth != 0 {
        return Err(format!("unbalanced quotes or parentheses in {text:?}"));
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    Ok(tokens)
}

fn parse_u64(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("expected a number, got {text:?}"))
}

/// `(1,2,3)`, `(1 2 3)`, `()` or a bare `1`.
fn parse_id_list(text: &str) -> Result<Vec<NodeId>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or(text);
    inner
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(parse_u64)
        .collect()
}

/// A payload argument: a bare word or a quoted string.
fn parse_payload(text: &str) -> Payload {
    let text = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    Arc::from(text.as_bytes())
}

// ----- formatting ------------------------------------------------------------------------

fn id_list_text(ids: &[NodeId]) -> String {
    let parts: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("({})", parts.join(","))
}

fn entry_text(entry: &Entry) -> String {
    match entry.kind {
        EntryKind::Normal => format!(
            "{}/{} {:?}",
            entry.term,
            entry.index,
            String::from_utf8_lossy(&entry.data)
        ),
        EntryKind::ConfChange => {
            let change = match ConfChange::decode(&entry.data) {
                Some(change) => {
                    format!("{} {}", conf_change_kind_text(change.kind), change.node_id)
                }
                None => "invalid".to_string(),
            };
            format!("{}/{} conf({change})", entry.term, entry.index)
        }
    }
}

fn conf_change_kind_text(kind: ConfChangeKind) -> &'static str {
    match kind {
        ConfChangeKind::AddVoter => "add-voter",
        ConfChangeKind::AddLearner => "add-learner",
        ConfChangeKind::RemoveNode => "remove",
    }
}

fn conf_text(conf: &ConfState) -> String {
    let mut text = format!("voters={}", id_list_text(&conf.voters));
    if !conf.learners.is_empty() {
        let _ = write!(text, " learners={}", id_list_text(&conf.learners));
    }
    text
}

fn message_text(message: &Message) -> String {
    let mut text = format!(
        "{}->{} {:?} term={}",
        message.from, message.to, message.kind, message.term
    );
    let reject = if message.reject { " rejected" } else { "" };
    match message.kind {
        MessageKind::Vote | MessageKind::PreVote => {
            let _ = write!(text, " last={}/{}", message.log_term, message.index);
            if message.context == CAMPAIGN_TRANSFER {
                text.push_str(" transfer");
            }
        }
        MessageKind::VoteResponse | MessageKind::PreVoteResponse => text.push_str(reject),
        MessageKind::Append => {
            let _ = write!(
                text,
                " prev={}/{} commit={}",
                message.log_term, message.index, message.commit
            );
            if !message.entries.is_empty() {
                let entries: Vec<String> = message.entries.iter().map(entry_text).collect();
                let _ = write!(text, " entries=[{}]", entries.join(", "));
            }
        }
        MessageKind::AppendResponse => {
            if message.reject {
                let _ = write!(
                    text,
                    " rejected index={} hint={}/{}",
                    message.index, message.log_term, message.reject_hint
                );
            } else {
                let _ = write!(text, " index={}", message.index);
            }
        }
        MessageKind::Heartbeat => {
            let _ = write!(text, " commit={}", message.commit);
            if message.context != 0 {
                let _ = write!(text, " read-round={}", message.context);
            }
        }
        MessageKind::HeartbeatResponse => {
            if message.context != 0 {
                let _ = write!(text, " read-round={}", message.context);
            }
        }
        MessageKind::Snapshot => {
            let _ = write!(text, " commit={}", message.commit);
            if let Some(chunk) = &message.snapshot {
                let end = chunk.offset + chunk.data.len() as u64;
                let _ = write!(
                    text,
                    " snapshot={}/{} {} bytes=[{},{})/{} {:?}",
                    chunk.meta.term,
                    chunk.meta.index,
                    conf_text(&chunk.meta.conf),
                    chunk.offset,
                    end,
                    chunk.total_bytes,
                    String::from_utf8_lossy(&chunk.data)
                );
            }
        }
        MessageKind::SnapshotResponse => {
            let _ = write!(
                text,
                " snapshot-index={} received-bytes={}{reject}",
                message.commit, message.index
            );
        }
        MessageKind::TimeoutNow => {}
        MessageKind::ReadIndex => {
            let _ = write!(text, " context={}", message.context);
        }
        MessageKind::ReadIndexResponse => {
            let _ = write!(text, " context={}", message.context);
            if message.reject {
                text.push_str(reject);
            } else {
                let _ = write!(text, " index={}", message.index);
            }
        }
        MessageKind::CloseRequest => {
            let _ = write!(text, " revision={}", message.index);
        }
    }
    text
}

fn describe_ready(ready: &Ready, out: &mut String) {
    let start = out.len();
    if let Some(soft) = ready.soft_state {
        emit!(
            out,
            "  soft state: {:?} term={} leader={}",
            soft.role,
            soft.term,
            soft.leader
        );
    }
    if let Some(hard) = ready.hard_state {
        emit!(
            out,
            "  hard state: term={} vote={} commit={}",
            hard.term,
            hard.vote,
            hard.commit
        );
    }
    if let Some(snapshot) = &ready.snapshot {
        emit!(
            out,
            "  snapshot: {}/{} {} data={:?}",
            snapshot.meta.term,
            snapshot.meta.index,
            conf_text(&snapshot.meta.conf),
            String::from_utf8_lossy(&snapshot.data)
        );
    }
    let sections: [(&str, Vec<String>); 4] = [
        ("entries", ready.entries.iter().map(entry_text).collect()),
        ("send", ready.messages.iter().map(message_text).collect()),
        (
            "send after persist",
            ready.persisted_messages.iter().map(message_text).collect(),
        ),
        (
            "apply",
            ready.committed_entries.iter().map(entry_text).collect(),
        ),
    ];
    for (title, lines) in sections {
        if !lines.is_empty() {
            emit!(out, "  {title}:");
            for line in lines {
                emit!(out, "    {line}");
            }
        }
    }
    for read in &ready.read_states {
        emit!(
            out,
            "  read state: context={} index={}",
            read.context,
            read.index
        );
    }
    for context in &ready.failed_reads {
        emit!(out, "  failed read: context={context}");
    }
    if out.len() == start {
        emit!(out, "  (nothing)");
    }
}

// ----- the driver ------------------------------------------------------------------------

/// Settings `add-nodes` may change; unset ones keep `Config::new`'s defaults.
#[derive(Clone, Copy, Debug, Default)]
struct Settings {
    pre_vote: Option<bool>,
    check_quorum: Option<bool>,
    election_timeout_ticks: Option<u64>,
    heartbeat_timeout_ticks: Option<u64>,
    snapshot_chunk_bytes: Option<u64>,
    snapshot_chunks_in_flight_max: Option<u64>,
    append_bytes_max: Option<u64>,
    inflight_messages_max: Option<u64>,
    uncommitted_bytes_max: Option<u64>,
    unsafe_commit_old_terms: Option<bool>,
}

impl Settings {
    const KEYS: [&'static str; 12] = [
        "voters",
        "learners",
        "pre-vote",
        "check-quorum",
        "election-ticks",
        "heartbeat-ticks",
        "snapshot-chunk-bytes",
        "snapshot-chunks-in-flight",
        "append-bytes-max",
        "inflight-messages-max",
        "uncommitted-bytes-max",
        "unsafe-commit-old-terms",
    ];

    fn parse(command: &Command) -> Result<Settings, String> {
        Ok(Settings {
            pre_vote: command.bool("pre-vote")?,
            check_quorum: command.bool("check-quorum")?,
            election_timeout_ticks: command.u64("election-ticks")?,
            heartbeat_timeout_ticks: command.u64("heartbeat-ticks")?,
            snapshot_chunk_bytes: command.u64("snapshot-chunk-bytes")?,
            snapshot_chunks_in_flight_max: command.u64("snapshot-chunks-in-flight")?,
            append_bytes_max: command.u64("append-bytes-max")?,
            inflight_messages_max: command.u64("inflight-messages-max")?,
            uncommitted_bytes_max: command.u64("uncommitted-bytes-max")?,
            unsafe_commit_old_terms: command.bool("unsafe-commit-old-terms")?,
        })
    }

    fn apply(&self, config: &mut Config) {
        let to_usize = |value: u64| usize::try_from(value).expect("fits in usize");
        if let Some(value) = self.pre_vote {
            config.pre_vote = value;
        }
        if let Some(value) = self.check_quorum {
            config.check_quorum = value;
        }
        if let Some(value) = self.election_timeout_ticks {
            config.election_timeout_ticks = value;
        }
        if let Some(value) = self.heartbeat_timeout_ticks {
            config.heartbeat_timeout_ticks = value;
        }
        if let Some(value) = self.snapshot_chunk_bytes {
            config.snapshot_chunk_bytes = to_usize(value);
        }
        if let Some(value) = self.snapshot_chunks_in_flight_max {
            config.snapshot_chunks_in_flight_max = value;
        }
        if let Some(value) = self.append_bytes_max {
            config.append_bytes_max = to_usize(value);
        }
        if let Some(value) = self.inflight_messages_max {
            config.inflight_messages_max = to_usize(value);
        }
        if let Some(value) = self.uncommitted_bytes_max {
            config.uncommitted_bytes_max = to_usize(value);
        }
        if let Some(value) = self.unsafe_commit_old_terms {
            config.unsafe_commit_old_terms = value;
        }
    }
}

/// Which queued messages `deliver-msgs` takes, besides their recipients.
#[derive(Clone, Copy, Debug)]
struct Filter<'a> {
    /// Only messages of this kind (`Append`, `Heartbeat`, ...).
    kind: Option<&'a str>,
    /// At most this many messages, oldest first.
    count_max: usize,
}

impl Default for Filter<'_> {
    fn default() -> Self {
        Filter {
            kind: None,
            count_max: usize::MAX,
        }
    }
}

/// A cluster driven one explicit step at a time, with a trace of every step.
#[derive(Debug, Default)]
struct Interaction {
    cluster: Option<Cluster>,
    /// Readies handed out whose writes are not durable yet, oldest first.
    held: BTreeMap<NodeId, Vec<Ready>>,
    /// Each node's state machine: the payloads of the normal entries it applied.
    machines: BTreeMap<NodeId, Vec<String>>,
}

impl Interaction {
    /// Runs one command and returns its output (`ok` when it prints nothing).
    fn run(&mut self, command: &Command) -> Result<String, String> {
        let mut out = String::new();
        match command.name.as_str() {
            "add-nodes" => self.add_nodes(command)?,
            "campaign" => {
                command.allow(&[], 1, 1)?;
                let id = self.live(command.id(0)?)?;
                self.cluster_mut().node_mut(id).campaign_now();
            }
            "propose" => {
                command.allow(&[], 2, 2)?;
                let id = self.live(command.id(0)?)?;
                let data = parse_payload(&command.positional[1]);
                match self.cluster_mut().node_mut(id).propose(data) {
                    Ok(index) => emit!(out, "ok index={index}"),
                    Err(error) => emit!(out, "error: {error}"),
                }
            }
            "propose-conf-change" => self.propose_conf_change(command, &mut out)?,
            "transfer-leader" => {
                command.allow(&[], 2, 2)?;
                let id = self.live(command.id(0)?)?;
                let target = command.id(1)?;
                if let Err(error) = self.cluster_mut().node_mut(id).transfer_leader(target) {
                    emit!(out, "error: {error}");
                }
            }
            "read-index" => {
                command.allow(&[], 2, 2)?;
                let id = self.live(command.id(0)?)?;
                let context = command.id(1)?;
                if let Err(error) = self.cluster_mut().node_mut(id).read_index(context) {
                    emit!(out, "error: {error}");
                }
            }
            "compact" => self.compact(command, &mut out)?,
            "process-ready" => {
                command.allow(&["persist"], 1, usize::MAX)?;
                let persist = command.bool("persist")?.unwrap_or(true);
                for id in command.ids()? {
                    let id = self.live(id)?;
                    if !self.process_ready(id, persist, &mut out) {
                        emit!(out, "> {id} has no Ready");
                    }
                }
            }
            "persist" => {
                command.allow(&[], 1, usize::MAX)?;
                for id in command.ids()? {
                    let id = self.live(id)?;
                    if !self.persist(id, true, &mut out) {
                        emit!(out, "> {id} has nothing to persist");
                    }
                }
            }
            "deliver-msgs" => {
                command.allow(&["drop", "type", "count"], 0, usize::MAX)?;
                let filter = Filter {
                    kind: command.named.get("type").map(String::as_str),
                    count_max: command.u64("count")?.map_or(usize::MAX, |count| {
                        usize::try_from(count).expect("fits in usize")
                    }),
                };
                let drop: BTreeSet<NodeId> = command
                    .id_list("drop")?
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let mut to: BTreeSet<NodeId> = command.ids()?.into_iter().collect();
                if to.is_empty() && drop.is_empty() {
                    to = self.cluster()?.peers.keys().copied().collect();
                }
                if self.deliver(&to, &drop, filter, &mut out) == 0 {
                    emit!(out, "no messages");
                }
            }
            "stabilize" => {
                command.allow(&[], 0, usize::MAX)?;
                let mut ids = command.ids()?;
                if ids.is_empty() {
                    ids = self.cluster()?.peers.keys().copied().collect();
                }
                self.stabilize(&ids, &mut out)?;
            }
            "tick" => {
                command.allow(&[], 2, 2)?;
                let id = self.live(command.id(0)?)?;
                for _ in 0..command.id(1)? {
                    self.cluster_mut().node_mut(id).tick();
                }
            }
            "tick-heartbeat" => {
                command.allow(&[], 1, 1)?;
                let id = self.live(command.id(0)?)?;
                let ticks = self.cluster()?.peers[&id].config.heartbeat_timeout_ticks;
                for _ in 0..ticks {
                    self.cluster_mut().node_mut(id).tick();
                }
            }
            "tick-election" => self.tick_election(command, &mut out)?,
            "partition" => {
                command.allow(&[], 2, usize::MAX)?;
                let groups: Vec<Vec<NodeId>> = command
                    .positional
                    .iter()
                    .map(|text| parse_id_list(text))
                    .collect::<Result<_, _>>()?;
                let cluster = self.cluster_mut();
                for (k, left) in groups.iter().enumerate() {
                    for right in &groups[k + 1..] {
                        cluster.partition(left, right);
                    }
                }
            }
            "isolate" => {
                command.allow(&[], 1, 1)?;
                let id = self.known(command.id(0)?)?;
                self.cluster_mut().isolate(id);
            }
            "heal" => {
                command.allow(&[], 0, 0)?;
                self.cluster_mut().heal();
            }
            "crash" => self.crash(command, &mut out)?,
            "restart" => {
                command.allow(&[], 1, 1)?;
                let id = self.known(command.id(0)?)?;
                if !self.cluster()?.down.contains(&id) {
                    return Err(format!("node {id} is not down"));
                }
                let cluster = self.cluster_mut();
                // Whatever was sent to the node while it was down never reached it.
                let (lost, kept): (Vec<Message>, Vec<Message>) = cluster
                    .in_flight
                    .drain(..)
                    .partition(|message| message.to == id);
                cluster.in_flight = kept.into();
                for message in &lost {
                    emit!(out, "dropped, sent while down: {}", message_text(message));
                }
                cluster.restart(id);
                let snapshot = cluster.peers[&id].storage.snapshot.clone();
                self.machines.insert(
                    id,
                    snapshot.map_or_else(Vec::new, |snapshot| restore_machine(&snapshot.data)),
                );
                self.node_state(id, &mut out);
            }
            "raft-state" => {
                command.allow(&[], 0, 0)?;
                let ids: Vec<NodeId> = self.cluster()?.peers.keys().copied().collect();
                for id in ids {
                    self.node_state(id, &mut out);
                }
            }
            "raft-log" => {
                command.allow(&[], 1, usize::MAX)?;
                for id in command.ids()? {
                    let id = self.known(id)?;
                    self.raft_log(id, &mut out);
                }
            }
            "status" => {
                command.allow(&[], 1, 1)?;
                let id = self.known(command.id(0)?)?;
                self.status(id, &mut out);
            }
            other => return Err(format!("unknown command {other:?}")),
        }
        if out.is_empty() {
            out.push_str("ok\n");
        }
        Ok(out)
    }

    fn cluster(&self) -> Result<&Cluster, String> {
        self.cluster
            .as_ref()
            .ok_or_else(|| "no nodes yet: start with add-nodes".to_string())
    }

    /// Only called after `known` or `live` proved the cluster exists.
    fn cluster_mut(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("checked by known()")
    }

    fn known(&self, id: NodeId) -> Result<NodeId, String> {
        if self.cluster()?.peers.contains_key(&id) {
            Ok(id)
        } else {
            Err(format!("no node {id}"))
        }
    }

    fn live(&self, id: NodeId) -> Result<NodeId, String> {
        let id = self.known(id)?;
        if self.cluster()?.down.contains(&id) {
            return Err(format!("node {id} is down"));
        }
        Ok(id)
    }

    fn add_nodes(&mut self, command: &Command) -> Result<(), String> {
        command.allow(&Settings::KEYS, 1, 1)?;
        let count = command.id(0)?;
        let settings = Settings::parse(command)?;
        let mut probe = Config::new(1);
        settings.apply(&mut probe);
        probe.validate()?;
        let configure = |config: &mut Config| settings.apply(config);
        let added: Vec<NodeId> = match self.cluster.as_mut() {
            None => {
                let all: Vec<NodeId> = (1..=count).collect();
                let learners = command.id_list("learners")?.unwrap_or_default();
                let voters = match command.id_list("voters")? {
                    Some(voters) => voters,
                    None => all
                        .iter()
                        .copied()
                        .filter(|id| !learners.contains(id))
                        .collect(),
                };
                let mut members: Vec<NodeId> = voters.iter().chain(&learners).copied().collect();
                members.sort_unstable();
                if members != all {
                    return Err(format!(
                        "voters and learners must be exactly the nodes 1..={count}"
                    ));
                }
                self.cluster = Some(Cluster::with_learners(&voters, &learners, configure));
                all
            }
            Some(cluster) => {
                if command.named.contains_key("voters") || command.named.contains_key("learners") {
                    return Err("later nodes join through membership changes".to_string());
                }
                let first = cluster.peers.keys().max().copied().unwrap_or(0) + 1;
                let ids: Vec<NodeId> = (first..first + count).collect();
                for &id in &ids {
                    cluster.add_empty_peer(id, configure);
                }
                ids
            }
        };
        for id in added {
            self.machines.insert(id, Vec::new());
        }
        Ok(())
    }

    fn propose_conf_change(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow(&[], 3, 3)?;
        let id = self.live(command.id(0)?)?;
        let kind = match command.positional[1].as_str() {
            "add-voter" => ConfChangeKind::AddVoter,
            "add-learner" => ConfChangeKind::AddLearner,
            "remove" => ConfChangeKind::RemoveNode,
            other => return Err(format!("unknown membership change {other:?}")),
        };
        let change = ConfChange {
            kind,
            node_id: command.id(2)?,
        };
        match self.cluster_mut().node_mut(id).propose_conf_change(change) {
            Ok(index) => emit!(out, "ok index={index}"),
            Err(error) => emit!(out, "error: {error}"),
        }
        Ok(())
    }

    fn compact(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow(&[], 1, 1)?;
        let id = self.live(command.id(0)?)?;
        // The snapshot holds the state machine as of the applied index.
        let data: Payload = Arc::from(self.machines[&id].join(",").as_bytes());
        let cluster = self.cluster_mut();
        cluster.compact(id, data);
        let node = cluster.node(id);
        let snapshot = node.snapshot().expect("just compacted");
        emit!(
            out,
            "snapshot {}/{} {} data={:?}; log now starts at {}",
            snapshot.meta.term,
            snapshot.meta.index,
            conf_text(&snapshot.meta.conf),
            String::from_utf8_lossy(&snapshot.data),
            node.log().first_index()
        );
        Ok(())
    }

    /// Takes and prints one Ready of `id`; returns false when it had none.
    fn process_ready(&mut self, id: NodeId, persist: bool, out: &mut String) -> bool {
        let cluster = self.cluster.as_mut().expect("checked by live()");
        let node = cluster.node_mut(id);
        if !node.has_ready() {
            return false;
        }
        let mut ready = node.ready();
        emit!(out, "> {id} handling Ready");
        describe_ready(&ready, out);
        cluster
            .in_flight
            .extend(std::mem::take(&mut ready.messages));
        let machine = self.machines.entry(id).or_default();
        if let Some(snapshot) = &ready.snapshot {
            *machine = restore_machine(&snapshot.data);
        }
        for entry in &ready.committed_entries {
            if entry.kind == EntryKind::Normal && !entry.data.is_empty() {
                machine.push(String::from_utf8_lossy(&entry.data).into_owned());
            }
        }
        self.held.entry(id).or_default().push(ready);
        if persist {
            self.persist(id, false, out);
        }
        true
    }

    /// Writes the held Readies of `id` to its storage, reports them durable and sends what
    /// waited for that. Returns false when nothing was held.
    fn persist(&mut self, id: NodeId, print: bool, out: &mut String) -> bool {
        let readies = self.held.remove(&id).unwrap_or_default();
        let Some(last) = readies.last().map(|ready| ready.number) else {
            return false;
        };
        let cluster = self.cluster.as_mut().expect("checked by live()");
        let peer = cluster.peers.get_mut(&id).expect("known node");
        for ready in &readies {
            peer.storage.write(ready);
        }
        peer.node.on_persisted(last);
        if print {
            emit!(out, "> {id} persisting {} Ready(s)", readies.len());
        }
        for ready in readies {
            for message in ready.persisted_messages {
                if print {
                    emit!(out, "  send: {}", message_text(&message));
                }
                cluster.in_flight.push_back(message);
            }
        }
        true
    }

    /// Delivers the queued messages addressed to `to` and drops those addressed to `drop`,
    /// as far as `filter` selects them; the rest stay queued. Returns how many messages
    /// were taken off the queue.
    fn deliver(
        &mut self,
        to: &BTreeSet<NodeId>,
        drop: &BTreeSet<NodeId>,
        filter: Filter<'_>,
        out: &mut String,
    ) -> usize {
        let Some(cluster) = self.cluster.as_mut() else {
            return 0;
        };
        let mut by_recipient: BTreeMap<NodeId, Vec<Message>> = BTreeMap::new();
        let mut rest = VecDeque::new();
        let mut selected = 0;
        for message in cluster.in_flight.drain(..) {
            let kind_matches = filter
                .kind
                .is_none_or(|kind| format!("{:?}", message.kind) == kind);
            let addressed = to.contains(&message.to) || drop.contains(&message.to);
            if kind_matches && addressed && selected < filter.count_max {
                selected += 1;
                by_recipient.entry(message.to).or_default().push(message);
            } else {
                rest.push_back(message);
            }
        }
        cluster.in_flight = rest;
        let mut count = 0;
        for (recipient, messages) in by_recipient {
            emit!(out, "> {recipient} receiving messages");
            for message in messages {
                count += 1;
                let text = message_text(&message);
                let why_dropped = if drop.contains(&recipient) {
                    Some("dropped")
                } else if cluster.cut.contains(&(message.from, message.to)) {
                    Some("dropped, link cut")
                } else if cluster.down.contains(&recipient) {
                    Some("dropped, node down")
                } else if !cluster.peers.contains_key(&recipient) {
                    Some("dropped, no such node")
                } else {
                    None
                };
                match why_dropped {
                    Some(why) => emit!(out, "  {text} ({why})"),
                    None => {
                        emit!(out, "  {text}");
                        cluster.node_mut(recipient).step(message);
                    }
                }
            }
        }
        count
    }

    fn stabilize(&mut self, ids: &[NodeId], out: &mut String) -> Result<(), String> {
        let recipients: BTreeSet<NodeId> = ids.iter().copied().collect();
        for _ in 0..STABILIZE_ROUNDS_MAX {
            let mut busy = false;
            for &id in ids {
                let id = self.known(id)?;
                if self.cluster()?.down.contains(&id) {
                    continue;
                }
                if self.process_ready(id, true, out) || self.persist(id, true, out) {
                    busy = true;
                }
            }
            if self.deliver(&recipients, &BTreeSet::new(), Filter::default(), out) > 0 {
                busy = true;
            }
            if !busy {
                return Ok(());
            }
        }
        Err(format!(
            "the cluster did not settle within {STABILIZE_ROUNDS_MAX} rounds"
        ))
    }

    /// Ticks a follower or candidate until its election timer fires (its role or term
    /// changes, or it suddenly has messages to send), at most twice the election timeout
    /// (the randomized timeout is below that). Ticks a leader for one election timeout, so
    /// its check-quorum round runs exactly once.
    fn tick_election(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow(&[], 1, 1)?;
        let id = self.live(command.id(0)?)?;
        let timeout = self.cluster()?.peers[&id].config.election_timeout_ticks;
        let node = self.cluster_mut().node_mut(id);
        if node.is_leader() {
            for _ in 0..timeout {
                node.tick();
                if !node.is_leader() {
                    break;
                }
            }
            return Ok(());
        }
        let before = (node.role(), node.term());
        let had_ready = node.has_ready();
        for _ in 0..2 * timeout {
            node.tick();
            if (node.role(), node.term()) != before || (!had_ready && node.has_ready()) {
                return Ok(());
            }
        }
        emit!(out, "no election after {} ticks", 2 * timeout);
        Ok(())
    }

    fn crash(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow(&[], 1, 1)?;
        let id = self.live(command.id(0)?)?;
        for ready in self.held.remove(&id).unwrap_or_default() {
            if !ready.must_persist() && ready.persisted_messages.is_empty() {
                continue;
            }
            let mut lost = String::from("lost unpersisted Ready:");
            if !ready.entries.is_empty() {
                let entries: Vec<String> = ready.entries.iter().map(entry_text).collect();
                let _ = write!(lost, " entries=[{}]", entries.join(", "));
            }
            if let Some(hard) = ready.hard_state {
                let _ = write!(
                    lost,
                    " hard state term={} vote={} commit={}",
                    hard.term, hard.vote, hard.commit
                );
            }
            if let Some(snapshot) = &ready.snapshot {
                let _ = write!(
                    lost,
                    " snapshot {}/{}",
                    snapshot.meta.term, snapshot.meta.index
                );
            }
            if !ready.must_persist() {
                lost.push_str(" nothing to write");
            }
            emit!(out, "{lost}");
            for message in &ready.persisted_messages {
                emit!(out, "  never sent: {}", message_text(message));
            }
        }
        let cluster = self.cluster_mut();
        for message in &cluster.in_flight {
            if message.from == id || message.to == id {
                emit!(out, "dropped: {}", message_text(message));
            }
        }
        cluster.crash(id);
        Ok(())
    }

    fn node_state(&self, id: NodeId, out: &mut String) {
        let cluster = self.cluster.as_ref().expect("checked by known()");
        let status = cluster.node(id).status();
        let down = if cluster.down.contains(&id) {
            " (down)"
        } else {
            ""
        };
        emit!(
            out,
            "{id}: {:?} term={} vote={} leader={} commit={} applied={} last={}{down}",
            status.role,
            status.term,
            status.vote,
            status.leader,
            status.commit,
            status.applied,
            status.last_index
        );
    }

    fn raft_log(&self, id: NodeId, out: &mut String) {
        let cluster = self.cluster.as_ref().expect("checked by known()");
        let log = cluster.node(id).log();
        emit!(
            out,
            "{id}: commit={} applied={}",
            log.committed,
            log.applied
        );
        if log.snapshot_index() > 0 {
            emit!(
                out,
                "  snapshot {}/{}",
                log.snapshot_term(),
                log.snapshot_index()
            );
        }
        let entries = log
            .slice(log.first_index(), log.last_index() + 1, usize::MAX)
            .expect("the log starts at its first index");
        if entries.is_empty() {
            emit!(out, "  no entries");
        }
        for entry in &entries {
            emit!(out, "  {}", entry_text(entry));
        }
    }

    fn status(&self, id: NodeId, out: &mut String) {
        self.node_state(id, out);
        let cluster = self.cluster.as_ref().expect("checked by known()");
        let node = cluster.node(id);
        let status = node.status();
        emit!(
            out,
            "  {} persisted={} first={}",
            conf_text(&status.conf),
            status.persisted,
            status.first_index
        );
        emit!(out, "  state={:?}", self.machines[&id].join(","));
        if let Some(target) = node.transferee() {
            emit!(out, "  transferring leadership to {target}");
        }
        for member in status.conf.members() {
            let Some(progress) = node.progress(member) else {
                continue;
            };
            if member == id {
                // The leader's own record only tracks what its disk holds.
                emit!(out, "  progress {member}: self match={}", progress.matched);
                continue;
            }
            let mut line = format!(
                "  progress {member}: {:?} match={} next={}",
                progress.state, progress.matched, progress.next
            );
            if progress.is_learner {
                line.push_str(" learner");
            }
            if progress.state == ProgressState::Probe && progress.probe_sent {
                line.push_str(" probe-sent");
            }
            if !progress.inflights.is_empty() {
                let _ = write!(line, " inflight={}", progress.inflights.len());
            }
            if let Some(send) = progress.snapshot {
                let _ = write!(
                    line,
                    " snapshot={} acked-bytes={} sent-bytes={}",
                    send.index, send.acked_offset, send.sent_offset
                );
            }
            if progress.recent_active {
                line.push_str(" active");
            }
            emit!(out, "{line}");
        }
    }
}

fn restore_machine(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split(',')
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}

// ----- running scripts -------------------------------------------------------------------

fn script_path(name: &str) -> String {
    format!("{}/src/raft/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs every command of one script; with `REWRITE=1` stores the new outputs, otherwise
/// fails on the first command whose output differs.
fn run_script(name: &str) {
    let path = script_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let items = parse_script(&text).unwrap_or_else(|error| panic!("{path}: {error}"));
    let rewrite = std::env::var("REWRITE").is_ok_and(|value| !value.is_empty() && value != "0");
    let mut interaction = Interaction::default();
    let mut outputs = Vec::new();
    let mut mismatches = Vec::new();
    for item in &items {
        let Item::Case(case) = item else { continue };
        let location = format!("{path}:{}", case.line);
        let command = Command::parse(&case.command_lines)
            .unwrap_or_else(|error| panic!("{location}: {error}"));
        let result = catch_unwind(AssertUnwindSafe(|| interaction.run(&command)));
        let output = match result {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => panic!("{location}: {}: {error}", case.command_lines.join(" ")),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_default();
                panic!(
                    "{location}: `{}` panicked: {message}",
                    case.command_lines.join(" ")
                );
            }
        };
        let lines: Vec<String> = output.lines().map(str::to_string).collect();
        assert!(
            lines.iter().all(|line| !line.trim().is_empty()),
            "{location}: output must not contain blank lines"
        );
        if lines != case.expected {
            mismatches.push((
                location,
                case.command_lines.join("\n"),
                case.expected.clone(),
                lines.clone(),
            ));
        }
        outputs.push(lines);
    }
    if rewrite {
        std::fs::write(&path, render_script(&items, &outputs))
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        return;
    }
    if let Some((location, command, expected, actual)) = mismatches.first() {
        panic!(
            "{location}: output of\n{command}\ndiffers ({} command(s) differ in this script; \
             REWRITE=1 cargo test --lib interaction regenerates them)\n\
             --- expected\n{}\n--- actual\n{}\n",
            mismatches.len(),
            expected.join("\n"),
            actual.join("\n")
        );
    }
}

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        $(
            // The trace of this script matches the expected output stored in it.
            #[test]
            fn $name() {
                run_script(concat!(stringify!($name), ".txt"));
            }
        )*
        const SCRIPTS: &[&str] = &[$(concat!(stringify!($name), ".txt")),*];
    };
}

scripts!(
    election,
    prevote,
    checkquorum,
    log_conflict,
    figure8,
    read_index,
    transfer,
    snapshot,
    confchange,
    crash_restart,
);

// Every script in testdata/ has a test, so none is silently skipped.
#[test]
fn every_script_runs() {
    let directory = script_path("");
    let mut found: Vec<String> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("{directory}: {error}"))
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".txt"))
        .collect();
    found.sort();
    let mut listed: Vec<String> = SCRIPTS.iter().map(|name| name.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

// Rendering a parsed script with its own expected outputs gives back the same text, so a
// rewrite keeps comments, spacing and continuation lines.
#[test]
fn scripts_round_trip() {
    for name in SCRIPTS {
        let path = script_path(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        let items = parse_script(&text).unwrap_or_else(|error| panic!("{path}: {error}"));
        let outputs: Vec<Vec<String>> = items
            .iter()
            .filter_map(|item| match item {
                Item::Case(case) => Some(case.expected.clone()),
                Item::Text(_) => None,
            })
            .collect();
        assert_eq!(render_script(&items, &outputs), text, "{path}");
    }
}

// The parser handles comments, continuation lines, output at the end of the file, and
// rejects a command without its `----` line.
#[test]
fn parser_handles_the_format() {
    let text =
        "# a comment\n\nadd-nodes 3 \\\n  voters=(1,2,3)\n----\nok\n\nraft-state\n----\n1: x\n2: y";
    let items = parse_script(text).expect("valid script");
    assert_eq!(items.len(), 4);
    let Item::Case(first) = &items[2] else {
        panic!("expected a command, got {:?}", items[2])
    };
    assert_eq!(first.line, 3);
    assert_eq!(first.command_lines.len(), 2);
    assert_eq!(first.expected, vec!["ok".to_string()]);
    let command = Command::parse(&first.command_lines).expect("valid command");
    assert_eq!(command.name, "add-nodes");
    assert_eq!(command.positional, vec!["3".to_string()]);
    assert_eq!(command.id_list("voters").unwrap(), Some(vec![1, 2, 3]));
    let Item::Case(last) = &items[3] else {
        panic!("expected a command, got {:?}", items[3])
    };
    assert!(!last.ends_with_blank);
    assert_eq!(last.expected.len(), 2);
    assert!(parse_script("campaign 1\nok\n").is_err());
    let partition = Command::parse(&["partition (1) (2 3) \"a b\"".to_string()]).unwrap();
    assert_eq!(partition.positional, vec!["(1)", "(2 3)", "\"a b\""]);
}
