//! One node of the cluster as the blocking SDK sees it: its address and the health of
//! its connection (healthy, probing, down), so that a dead node is skipped
//! until it answers again instead of costing every request a connection timeout.
//!
//! ```text
//!   Idle ──connect ok──▶ Healthy ──closed after answering──▶ (next use) Probing
//!     │                   ▲   │                                  │      │
//!     │                   │   └─closed before any answer─┐       │      │
//!     └──connect fails─┐  └───────────connect ok─────────┼───────┘      │ connect fails
//!                      ▼                                 ▼              ▼
//!                     Down { retry_at } ◀────────────────┴──────────────┘
//!                          └──retry_at passed, next use──▶ Probing
//! ```
//!
//! Exactly one caller probes a node at a time; the others skip it meanwhile. After `n`
//! failures in a row (a refused connection, or one closed before it answered anything)
//! the node is skipped for the reconnect backoff of `n` (doubling, capped). A connection
//! that served answers and then closed (a server restart, an idle close) is replaced at
//! once on the next use.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::connection::Connection;
use super::options::{backoff, ClientOptions};

/// Where a node's connection stands.
#[derive(Debug)]
enum Health {
    /// Never tried.
    Idle,
    /// Connected after `failures` failures in a row; the connection may have closed
    /// since, which the next use notices.
    Healthy {
        connection: Arc<Connection>,
        failures: u32,
    },
    /// One caller is connecting (it remembers how many attempts failed before).
    Probing,
    /// Skipped until `retry_at`.
    Down {
        retry_at: Instant,
        failures: u32,
        reason: String,
    },
}

/// Why a node cannot take a request now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeUnavailable {
    pub(crate) reason: String,
}

/// One node and its connection (its id is the router's to know).
#[derive(Debug)]
pub(crate) struct Node {
    address: String,
    health: Mutex<Health>,
}

fn lock(mutex: &Mutex<Health>) -> MutexGuard<'_, Health> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Node {
    pub(crate) fn new(address: String) -> Node {
        Node {
            address,
            health: Mutex::new(Health::Idle),
        }
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// A short word for the node's state, for diagnostics.
    pub(crate) fn health_name(&self) -> &'static str {
        match &*lock(&self.health) {
            Health::Idle => "idle",
            Health::Healthy { connection, .. } if connection.closed_reason().is_none() => "healthy",
            Health::Healthy { .. } => "closed",
            Health::Probing => "probing",
            Health::Down { .. } => "down",
        }
    }

    /// The node's open connection, connecting first when the node is due for it. Fails
    /// at once, without touching the network, while the node is down or another caller
    /// is probing it. `wait_until` caps the connection timeout.
    pub(crate) fn connection(
        &self,
        options: &ClientOptions,
        wait_until: Instant,
    ) -> Result<Arc<Connection>, NodeUnavailable> {
        let now = Instant::now();
        let failures = {
            let mut health = lock(&self.health);
            let failures = match &*health {
                Health::Healthy {
                    connection,
                    failures,
                } => match connection.closed_reason() {
                    None => return Ok(Arc::clone(connection)),
                    // A connection that served answers is replaced at once: a server
                    // restart or an idle close should not cost a backoff.
                    Some(_) if connection.has_answered() => 0,
                    // One that closed before answering anything is a failure like a
                    // refused connection, so a node that accepts and drops connections
                    // is skipped like a dead one.
                    Some(reason) => {
                        let failures = failures.saturating_add(1);
                        let reason = format!("closed before answering: {reason}");
                        return Err(self.mark_down(options, &mut health, failures, reason));
                    }
                },
                Health::Idle => 0,
                Health::Probing => {
                    return Err(NodeUnavailable {
                        reason: format!("{}: another request is connecting", self.address),
                    })
                }
                Health::Down {
                    retry_at,
                    failures,
                    reason,
                } => {
                    if now < *retry_at {
                        return Err(NodeUnavailable {
                            reason: format!(
                                "{}: down for another {:?} ({reason})",
                                self.address,
                                *retry_at - now
                            ),
                        });
                    }
                    *failures
                }
            };
            *health = Health::Probing;
            failures
        };

        let connect_timeout = options
            .connect_timeout
            .min(wait_until.saturating_duration_since(now))
            .max(Duration::from_millis(1));
        let opened = Connection::open(
            &self.address,
            connect_timeout,
            options.attempt_timeout,
            options.in_flight_max,
        );
        let mut health = lock(&self.health);
        match opened {
            Ok(connection) => {
                let connection = Arc::new(connection);
                *health = Health::Healthy {
                    connection: Arc::clone(&connection),
                    failures,
                };
                Ok(connection)
            }
            Err(error) => {
                let failures = failures.saturating_add(1);
                Err(self.mark_down(
                    options,
                    &mut health,
                    failures,
                    format!("connect failed: {error}"),
                ))
            }
        }
    }

    /// The node took a connection and then did not answer in time (a stopped process, a
    /// path cut after the handshake): it is skipped like one that refused, so that the
    /// next request goes to another node without waiting for it again.
    pub(crate) fn mark_unresponsive(&self, options: &ClientOptions, reason: String) {
        let mut health = lock(&self.health);
        let failures = match &*health {
            Health::Healthy { failures, .. } | Health::Down { failures, .. } => {
                failures.saturating_add(1)
            }
            Health::Idle | Health::Probing => 1,
        };
        self.mark_down(options, &mut health, failures, reason);
    }

    /// Skips the node for the reconnect backoff of `failures` failures in a row.
    fn mark_down(
        &self,
        options: &ClientOptions,
        health: &mut Health,
        failures: u32,
        reason: String,
    ) -> NodeUnavailable {
        let pause = backoff(
            options.reconnect_backoff_initial,
            options.reconnect_backoff_max,
            failures,
        );
        let unavailable = NodeUnavailable {
            reason: format!("{}: {reason}", self.address),
        };
        *health = Health::Down {
            retry_at: Instant::now() + pause,
            failures,
            reason,
        };
        unavailable
    }
}
