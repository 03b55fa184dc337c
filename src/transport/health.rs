//! The health of one outbound link (Healthy, Probing, Down) and the delay before its next
//! connection attempt: a pure state machine, so that the rules are tested without
//! sockets and the writer task only reports what happened.

use std::time::Duration;

/// What the transport knows about its link to one peer shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Connected, and the last write (if any) succeeded. Messages are queued and sent.
    Healthy,
    /// Not connected: connecting for the first time, or reconnecting after an error.
    /// Messages are still queued (within the bounds) and go out once a connection
    /// succeeds.
    Probing,
    /// `failures_before_down` connection attempts in a row failed. The queue was
    /// cleared and new messages are dropped (and counted) until a connection succeeds;
    /// attempts continue at the backoff's maximum delay.
    Down,
}

/// The health state machine of one link.
///
/// ```text
///            connected                      connection lost
///  Probing ────────────▶ Healthy ─────────────────────────────▶ Probing
///  Probing ── failures_before_down-th failed attempt ─▶ Down ── connected ─▶ Healthy
/// ```
///
/// A failure is a connection attempt that failed (refused, unreachable, timed out). A
/// lost connection is not itself a failure: the peer may just have restarted, so the
/// link reconnects at once and counts from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthTracker {
    health: Health,
    consecutive_failures: u32,
    failures_before_down: u32,
}

impl HealthTracker {
    /// A link that has not connected yet: Probing, no failure so far.
    pub fn new(failures_before_down: u32) -> HealthTracker {
        assert!(
            failures_before_down > 0,
            "failures_before_down must be at least 1"
        );
        HealthTracker {
            health: Health::Probing,
            consecutive_failures: 0,
            failures_before_down,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Failed connection attempts since the last success or lost connection.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// A connection attempt succeeded.
    pub fn on_connected(&mut self) {
        self.health = Health::Healthy;
        self.consecutive_failures = 0;
    }

    /// A connection attempt failed. Returns true when this failure moved the link to
    /// Down (and only then): the caller clears the queue exactly once.
    pub fn on_connect_failed(&mut self) -> bool {
        debug_assert_ne!(
            self.health,
            Health::Healthy,
            "a connected link does not connect"
        );
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let was_down = self.health == Health::Down;
        if self.consecutive_failures >= self.failures_before_down {
            self.health = Health::Down;
        } else {
            self.health = Health::Probing;
        }
        !was_down && self.health == Health::Down
    }

    /// The connection failed (a write error or timeout, or the peer closed it).
    pub fn on_connection_lost(&mut self) {
        debug_assert_eq!(
            self.health,
            Health::Healthy,
            "only a connection can be lost"
        );
        self.health = Health::Probing;
        self.consecutive_failures = 0;
    }
}

/// The delay before the next connection attempt after `consecutive_failures` failed
/// attempts in a row: none after zero failures (a lost connection is retried at once),
/// then `minimum`, doubling with each further failure, never more than `maximum`.
pub fn backoff_delay(consecutive_failures: u32, minimum: Duration, maximum: Duration) -> Duration {
    debug_assert!(minimum <= maximum);
    if consecutive_failures == 0 {
        return Duration::ZERO;
    }
    // 2^31 times any useful minimum is beyond any useful maximum: the shift is capped so
    // that it can never overflow.
    let doublings = (consecutive_failures - 1).min(31);
    minimum.saturating_mul(1u32 << doublings).min(maximum)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A new link probes; the failure that reaches the threshold, and only that one,
    // moves it to Down; a success from Down makes it Healthy with the count reset.
    #[test]
    fn failures_lead_to_down_and_a_connection_back_to_healthy() {
        let mut tracker = HealthTracker::new(3);
        assert_eq!(tracker.health(), Health::Probing);
        assert!(!tracker.on_connect_failed());
        assert!(!tracker.on_connect_failed());
        assert_eq!(tracker.health(), Health::Probing);
        assert!(tracker.on_connect_failed());
        assert_eq!(tracker.health(), Health::Down);
        assert!(
            !tracker.on_connect_failed(),
            "already down: no second transition"
        );
        assert_eq!(tracker.health(), Health::Down);
        assert_eq!(tracker.consecutive_failures(), 4);
        tracker.on_connected();
        assert_eq!(tracker.health(), Health::Healthy);
        assert_eq!(tracker.consecutive_failures(), 0);
    }

    // A lost connection probes again with the count at zero, so a peer that restarts
    // is reconnected at once and needs the full number of failures to be declared Down.
    #[test]
    fn a_lost_connection_probes_from_zero() {
        let mut tracker = HealthTracker::new(2);
        assert!(!tracker.on_connect_failed());
        tracker.on_connected();
        tracker.on_connection_lost();
        assert_eq!(tracker.health(), Health::Probing);
        assert_eq!(tracker.consecutive_failures(), 0);
        assert!(!tracker.on_connect_failed());
        assert!(tracker.on_connect_failed());
    }

    // With a threshold of one, the first failed attempt is enough.
    #[test]
    fn threshold_of_one_goes_down_at_the_first_failure() {
        let mut tracker = HealthTracker::new(1);
        assert!(tracker.on_connect_failed());
        assert_eq!(tracker.health(), Health::Down);
    }

    // The delay is zero before any failure, starts at the minimum, doubles, and is
    // capped at the maximum, even after a huge number of failures.
    #[test]
    fn backoff_doubles_from_minimum_to_maximum() {
        let minimum = Duration::from_millis(10);
        let maximum = Duration::from_millis(75);
        let delays: Vec<_> = (0..6)
            .map(|failures| backoff_delay(failures, minimum, maximum).as_millis())
            .collect();
        assert_eq!(delays, [0, 10, 20, 40, 75, 75]);
        assert_eq!(backoff_delay(u32::MAX, minimum, maximum), maximum);
        let huge = Duration::from_secs(u64::MAX / 4);
        assert_eq!(backoff_delay(40, huge, Duration::MAX), Duration::MAX);
    }
}
