//! `corekv lease grant TTL | revoke ID | keepalive ID | ttl ID [--keys] | list`: the lease
//! commands of the CLI, in the style of etcdctl's (`docs/LEASES.md`).

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

use corekv::client::{ClientError, ErrorCode, KEEP_ALIVE_INTERVAL_MIN};

use super::{connect, escape, CliError, ConnectionArgs, Output};

#[derive(Debug, Args)]
pub struct LeaseArgs {
    #[command(subcommand)]
    pub command: LeaseCommand,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grants a lease of TTL seconds; prints its id (hexadecimal, as etcdctl does).
    Grant(GrantArgs),
    /// Revokes lease ID: every key attached to it is deleted.
    Revoke(IdArgs),
    /// Keeps lease ID alive until interrupted, printing each renewal; exits with 3 once
    /// the lease is gone.
    Keepalive(KeepAliveArgs),
    /// Prints the seconds lease ID has left (and, with --keys, its keys).
    Ttl(TtlArgs),
    /// Prints every lease id, one per line.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    pub ttl_seconds: u64,
    /// Grant under this id (hexadecimal) instead of one the cluster chooses.
    #[arg(long, value_parser = parse_id)]
    pub id: Option<u64>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The lease id, hexadecimal.
    #[arg(value_parser = parse_id)]
    pub id: u64,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct KeepAliveArgs {
    #[arg(value_parser = parse_id)]
    pub id: u64,
    /// Stop after this many renewals (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct TtlArgs {
    #[arg(value_parser = parse_id)]
    pub id: u64,
    /// Also print every key attached to the lease.
    #[arg(long)]
    pub keys: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// A lease id that is not hexadecimal.
#[derive(Debug, thiserror::Error)]
#[error("lease id {text:?}: {error}")]
pub struct LeaseIdError {
    text: String,
    error: std::num::ParseIntError,
}

/// A lease id as etcdctl prints it: hexadecimal, without a prefix (`0x` accepted).
pub fn parse_id(text: &str) -> Result<u64, LeaseIdError> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16).map_err(|error| LeaseIdError {
        text: text.to_string(),
        error,
    })
}

pub fn execute(arguments: LeaseArgs) -> Result<Output, CliError> {
    match arguments.command {
        LeaseCommand::Grant(arguments) => {
            let client = connect(&arguments.connection)?;
            let lease = client.lease_grant(arguments.ttl_seconds, arguments.id.unwrap_or(0))?;
            Ok(Output::ok(vec![format!(
                "lease {:x} granted with TTL({}s)",
                lease.id, lease.ttl_seconds
            )]))
        }
        LeaseCommand::Revoke(arguments) => {
            let client = connect(&arguments.connection)?;
            client.lease_revoke(arguments.id)?;
            Ok(Output::ok(vec![format!(
                "lease {:x} revoked",
                arguments.id
            )]))
        }
        LeaseCommand::Keepalive(arguments) => {
            let client = connect(&arguments.connection)?;
            let mut renewals = 0;
            loop {
                let ttl_seconds = match client.lease_keep_alive_once(arguments.id) {
                    Ok(ttl_seconds) => ttl_seconds,
                    // Unavailable for a whole request timeout: the lease may live on under
                    // a new leader; keep trying.
                    Err(ClientError::Unavailable { .. } | ClientError::Timeout { .. }) => {
                        std::thread::sleep(KEEP_ALIVE_INTERVAL_MIN);
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                let line = format!(
                    "lease {:x} keepalived with TTL({ttl_seconds})",
                    arguments.id
                );
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{line}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return Ok(Output::ok(Vec::new()));
                }
                renewals += 1;
                if arguments.count != 0 && renewals >= arguments.count {
                    return Ok(Output::ok(Vec::new()));
                }
                let pause = (Duration::from_secs(ttl_seconds) / 3).max(KEEP_ALIVE_INTERVAL_MIN);
                std::thread::sleep(pause);
            }
        }
        LeaseCommand::Ttl(arguments) => {
            let client = connect(&arguments.connection)?;
            let lease = match client.lease_time_to_live(arguments.id, arguments.keys) {
                Ok(lease) => lease,
                Err(ClientError::Rejected {
                    code: ErrorCode::LeaseNotFound,
                    ..
                }) => {
                    return Ok(Output::ok(vec![format!(
                        "lease {:x} already expired",
                        arguments.id
                    )]))
                }
                Err(error) => return Err(error.into()),
            };
            let mut line = format!(
                "lease {:x} granted with TTL({}s), remaining({}s)",
                lease.id, lease.granted_ttl_seconds, lease.ttl_seconds
            );
            if arguments.keys {
                let keys: Vec<String> = lease.keys.iter().map(|key| escape(key)).collect();
                line.push_str(&format!(", attached keys([{}])", keys.join(" ")));
            }
            Ok(Output::ok(vec![line]))
        }
        LeaseCommand::List(arguments) => {
            let client = connect(&arguments.connection)?;
            let ids = client.lease_list()?;
            let mut lines = vec![format!("found {} leases", ids.len())];
            lines.extend(ids.iter().map(|id| format!("{id:x}")));
            Ok(Output::ok(lines))
        }
    }
}
