//! The SDK's settings: every bound and timeout a [`Client`](super::Client) works within,
//! with defaults and a check that they can work together.

use std::time::Duration;

use super::ClientError;

/// Default deadline of one operation, retries included.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default wait for the answer to one attempt before retrying (on a cut-off leader the
/// answer never comes; the server does not time out requests it accepted).
pub const ATTEMPT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Default bound on establishing one TCP connection.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// Default number of retries after the first attempt.
pub const RETRIES_MAX_DEFAULT: u32 = 16;
/// Default bound on requests in flight on one connection.
pub const IN_FLIGHT_MAX_DEFAULT: usize = 1024;
/// Default bound on sessions (client ids), which is the bound on concurrent writes.
pub const SESSIONS_MAX_DEFAULT: usize = 256;
/// Default first pause between two attempts; it doubles after each failure.
pub const RETRY_BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_millis(10);
/// Default longest pause between two attempts.
pub const RETRY_BACKOFF_MAX_DEFAULT: Duration = Duration::from_millis(500);
/// Default time a node that refused a connection is skipped; it doubles after each
/// failed reconnection.
pub const RECONNECT_BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_millis(100);
/// Default longest time a down node is skipped before the next reconnection attempt.
pub const RECONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);

/// Largest value accepted for `in_flight_max`: request ids and slots are cheap, but a
/// bound this high would no longer bound anything useful.
pub const IN_FLIGHT_CEILING: usize = 1 << 20;
/// Largest value accepted for `sessions_max`: each session is a client id the server
/// remembers per group (its session table is bounded too).
pub const SESSIONS_CEILING: usize = 1 << 16;
/// Largest value accepted for `retries_max`.
pub const RETRIES_CEILING: u32 = 1 << 16;

/// How a [`Client`](super::Client) talks to the cluster. `Default` gives values fit for
/// a LAN cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Deadline of one operation from its call to its result, retries included.
    pub request_timeout: Duration,
    /// Wait for the answer to one attempt before retrying (capped by the deadline).
    pub attempt_timeout: Duration,
    /// Bound on establishing one connection (capped by the deadline).
    pub connect_timeout: Duration,
    /// Retries after the first attempt of an operation; following a leader hint counts.
    pub retries_max: u32,
    /// Requests in flight on one connection; a caller past it waits for a free slot.
    pub in_flight_max: usize,
    /// Sessions in the pool: writes in flight at once from this client. A writer past it
    /// waits for a session to be returned.
    pub sessions_max: usize,
    /// First pause after a failed attempt; doubled after each one (with jitter).
    pub retry_backoff_initial: Duration,
    /// Longest pause between two attempts.
    pub retry_backoff_max: Duration,
    /// First time a node is skipped after its connection failed.
    pub reconnect_backoff_initial: Duration,
    /// Longest time a down node is skipped.
    pub reconnect_backoff_max: Duration,
    /// Serve serializable reads from the replica of the node that first answered
    /// `connect` (one of the endpoints given) instead of spreading them over every
    /// member; for looking at one replica, as `corekv get --serializable` does. Another
    /// node is asked only when that one cannot be reached.
    pub serializable_reads_at_endpoint: bool,
    /// Also send to the members the first status lists that were not among the
    /// endpoints given. Off by default: a client sends only to its endpoints and to nodes
    /// a live node names as a group's leader (see `client/routing.rs`), so that leaving a
    /// dead node out of the endpoints keeps the client away from it.
    pub route_to_all_members: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            attempt_timeout: ATTEMPT_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            retries_max: RETRIES_MAX_DEFAULT,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            sessions_max: SESSIONS_MAX_DEFAULT,
            retry_backoff_initial: RETRY_BACKOFF_INITIAL_DEFAULT,
            retry_backoff_max: RETRY_BACKOFF_MAX_DEFAULT,
            reconnect_backoff_initial: RECONNECT_BACKOFF_INITIAL_DEFAULT,
            reconnect_backoff_max: RECONNECT_BACKOFF_MAX_DEFAULT,
            serializable_reads_at_endpoint: false,
            route_to_all_members: false,
        }
    }
}

impl ClientOptions {
    /// Checks that the options can work: no zero timeout or bound, no bound past its
    /// ceiling, no initial backoff above its maximum.
    pub fn check(&self) -> Result<(), ClientError> {
        let fail = |reason: &str| Err(ClientError::InvalidArgument(reason.to_string()));
        if self.request_timeout.is_zero()
            || self.attempt_timeout.is_zero()
            || self.connect_timeout.is_zero()
        {
            return fail("request_timeout, attempt_timeout and connect_timeout must be positive");
        }
        if self.retries_max > RETRIES_CEILING {
            return fail("retries_max must be at most 2^16");
        }
        if self.in_flight_max == 0 || self.in_flight_max > IN_FLIGHT_CEILING {
            return fail("in_flight_max must be in 1..=2^20");
        }
        if self.sessions_max == 0 || self.sessions_max > SESSIONS_CEILING {
            return fail("sessions_max must be in 1..=2^16");
        }
        if self.retry_backoff_initial.is_zero()
            || self.retry_backoff_initial > self.retry_backoff_max
        {
            return fail("retry_backoff_initial must be positive and at most retry_backoff_max");
        }
        if self.reconnect_backoff_initial.is_zero()
            || self.reconnect_backoff_initial > self.reconnect_backoff_max
        {
            return fail(
                "reconnect_backoff_initial must be positive and at most reconnect_backoff_max",
            );
        }
        Ok(())
    }
}

/// The pause after the `failures`-th consecutive failure (1 for the first): `initial`
/// doubled per failure, capped at `max`.
pub(crate) fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    debug_assert!(failures >= 1);
    // 2^20 times any sensible initial pause is past any sensible cap; the shift stays
    // far from overflowing a u32.
    let factor = 1u32 << failures.saturating_sub(1).min(20);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The defaults pass their own check, and each broken bound is refused.
    #[test]
    fn defaults_are_sound_and_bounds_are_checked() {
        assert_eq!(ClientOptions::default().check(), Ok(()));
        let broken = [
            ClientOptions {
                request_timeout: Duration::ZERO,
                ..ClientOptions::default()
            },
            ClientOptions {
                in_flight_max: 0,
                ..ClientOptions::default()
            },
            ClientOptions {
                sessions_max: SESSIONS_CEILING + 1,
                ..ClientOptions::default()
            },
            ClientOptions {
                retry_backoff_initial: Duration::from_secs(2),
                retry_backoff_max: Duration::from_secs(1),
                ..ClientOptions::default()
            },
            ClientOptions {
                reconnect_backoff_initial: Duration::ZERO,
                ..ClientOptions::default()
            },
        ];
        for options in broken {
            assert!(options.check().is_err(), "{options:?}");
        }
    }

    // Backoff doubles from the initial pause and stops at the cap, even after many
    // failures.
    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let initial = Duration::from_millis(10);
        let max = Duration::from_millis(100);
        let pauses: Vec<u128> = (1..=6)
            .map(|failures| backoff(initial, max, failures).as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 100, 100]);
        assert_eq!(backoff(initial, max, u32::MAX), max);
    }
}
