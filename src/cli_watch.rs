//! `corekv watch`: prints every change of a key or a prefix as it happens, one line per
//! event, until interrupted; resumes by itself on another node when the serving one
//! fails (see `client/watch.rs`).

use std::io::{self, Write};
use std::time::Duration;

use clap::Args;
use corekv::client::{
    Client, ClientOptions, EventKind, WatchCreate, WatchError, WatchEvent, WatchItem,
};
use corekv::kv::KeyValue;

use crate::cli::{self, ConnectionArgs, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE};
use crate::cli_json::base64;

/// How long one wait for the next event lasts before it checks stdout again.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key to watch (with --prefix: the prefix; "" for every key).
    pub key: String,
    /// Watch every key that starts with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Start at this revision (inclusive; 0: changes from now on).
    #[arg(long, default_value_t = 0, value_name = "REVISION")]
    pub rev: u64,
    /// Print each changed key's previous value too.
    #[arg(long)]
    pub prev_kv: bool,
    /// Print progress notifications ("every change through REVISION was printed").
    #[arg(long)]
    pub progress: bool,
    /// Stop after this many events (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub count: u64,
    #[arg(long, value_enum, default_value_t = cli::WriteOut::Simple)]
    pub write_out: cli::WriteOut,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs the watch and returns the exit code.
pub fn run(arguments: WatchArgs) -> i32 {
    let options = ClientOptions {
        request_timeout: arguments.connection.timeout,
        connect_timeout: arguments.connection.timeout.min(Duration::from_secs(2)),
        ..ClientOptions::default()
    };
    let client = match Client::connect(&arguments.connection.endpoints, options) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("corekv: {error}");
            return cli::exit_code(&error);
        }
    };
    let base = if arguments.prefix {
        WatchCreate::prefix(arguments.key.as_bytes())
    } else {
        WatchCreate::key(arguments.key.as_bytes())
    };
    let create = WatchCreate {
        start_revision: arguments.rev,
        prev_kv: arguments.prev_kv,
        progress_notify: arguments.progress,
        ..base
    };
    let mut stream = match client.watch(create) {
        Ok(stream) => stream,
        Err(error) => return fail(&error),
    };
    let mut printed = 0u64;
    let mut stdout = io::stdout().lock();
    loop {
        let item = match stream.next(POLL_INTERVAL) {
            Ok(Some(item)) => item,
            Ok(None) => continue,
            Err(error) => return fail(&error),
        };
        let lines = match item {
            WatchItem::Events { events, .. } => events
                .iter()
                .map(|event| format_event(event, arguments.write_out))
                .collect(),
            WatchItem::Progress { revision } => vec![match arguments.write_out {
                cli::WriteOut::Simple => format!("PROGRESS\t{revision}"),
                cli::WriteOut::Json => format!("{{\"progress_revision\":{revision}}}"),
            }],
        };
        for line in lines {
            if writeln!(stdout, "{line}").is_err() {
                return EXIT_OK;
            }
            if !line.starts_with("PROGRESS") && !line.starts_with("{\"progress") {
                printed += 1;
            }
        }
        let _ = stdout.flush();
        if arguments.count > 0 && printed >= arguments.count {
            return EXIT_OK;
        }
    }
}

fn fail(error: &WatchError) -> i32 {
    eprintln!("corekv: {error}");
    match error {
        WatchError::Unavailable { .. } => EXIT_UNAVAILABLE,
        _ => EXIT_REFUSED,
    }
}

/// One event's line: `PUT|DELETE<tab>KEY<tab>VALUE<tab>REVISION`, then the previous
/// value when there is one; or one JSON object.
pub fn format_event(event: &WatchEvent, write_out: cli::WriteOut) -> String {
    let kind = match event.kind {
        EventKind::Put => "PUT",
        EventKind::Delete => "DELETE",
    };
    match write_out {
        cli::WriteOut::Simple => {
            let mut line = format!(
                "{kind}\t{}\t{}\t{}",
                cli::escape(&event.kv.key),
                cli::escape(&event.kv.value),
                event.kv.mod_revision
            );
            if let Some(prev) = &event.prev_kv {
                line.push('\t');
                line.push_str(&cli::escape(&prev.value));
            }
            line
        }
        cli::WriteOut::Json => {
            let prev = event
                .prev_kv
                .as_ref()
                .map(|prev| format!(",\"prev_kv\":{}", json_pair(prev)))
                .unwrap_or_default();
            format!(
                "{{\"type\":\"{kind}\",\"kv\":{}{prev}}}",
                json_pair(&event.kv)
            )
        }
    }
}

fn json_pair(pair: &KeyValue) -> String {
    format!(
        "{{\"key\":\"{}\",\"create_revision\":{},\"mod_revision\":{},\"version\":{},\
         \"value\":\"{}\",\"lease\":{}}}",
        base64(&pair.key),
        pair.create_revision,
        pair.mod_revision,
        pair.version,
        base64(&pair.value),
        pair.lease
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // An event prints as one tab-separated line, or as one JSON object.
    #[test]
    fn events_print_one_line_each() {
        let pair = |value: &str, revision| KeyValue {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: revision,
            version: 2,
            lease: 0,
        };
        let event = WatchEvent {
            kind: EventKind::Put,
            kv: pair("new", 7),
            prev_kv: Some(pair("old", 5)),
        };
        assert_eq!(
            format_event(&event, cli::WriteOut::Simple),
            "PUT\tk\tnew\t7\told"
        );
        assert_eq!(
            format_event(&event, cli::WriteOut::Json),
            "{\"type\":\"PUT\",\"kv\":{\"key\":\"aw==\",\"create_revision\":1,\
             \"mod_revision\":7,\"version\":2,\"value\":\"bmV3\",\"lease\":0},\
             \"prev_kv\":{\"key\":\"aw==\",\"create_revision\":1,\"mod_revision\":5,\
             \"version\":2,\"value\":\"b2xk\",\"lease\":0}}"
        );
    }
}
