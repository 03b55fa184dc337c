//! The shard's hybrid logical clock: revisions are its values. The high 48 bits are Unix
//! milliseconds, the low 16 a counter, so a revision orders like the physical time it was
//! taken at, and events that happen within one millisecond (or while the physical clock
//! lags a value seen from elsewhere) still get distinct, increasing values.
//!
//! The physical clock reaches the clock as a value (the `now_ms` of each tick), never
//! read here. Every value seen from elsewhere (a revision a client has seen, one applied
//! from the log) moves the clock past it: the receive rule of hybrid logical clocks.

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hlc {
    /// The last value handed out or seen.
    last: u64,
    /// The physical clock as last told, in milliseconds.
    physical_ms: u64,
}

/// The revision of physical time `ms` with logical counter 0.
pub fn revision_of_millis(ms: u64) -> u64 {
    ms << LOGICAL_BITS
}

/// The milliseconds part of a revision.
pub fn millis_of_revision(revision: u64) -> u64 {
    revision >> LOGICAL_BITS
}

impl Hlc {
    /// The physical clock moved on (it never moves the clock back).
    pub fn set_physical(&mut self, now_ms: u64) {
        self.physical_ms = self.physical_ms.max(now_ms);
    }

    /// A new value: above every value before it and at least the physical time.
    pub fn now(&mut self) -> u64 {
        self.last = (self.last + 1).max(revision_of_millis(self.physical_ms));
        self.last
    }

    /// The clock's value without moving it.
    pub fn peek(&self) -> u64 {
        self.last.max(revision_of_millis(self.physical_ms))
    }

    /// A value seen from elsewhere: later values are above it.
    pub fn observe(&mut self, revision: u64) {
        self.last = self.last.max(revision);
    }

    pub fn physical_ms(&self) -> u64 {
        self.physical_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values increase within a millisecond, follow the physical clock, and jump past what
    // was seen elsewhere.
    #[test]
    fn values_increase_and_follow_time_and_messages() {
        let mut clock = Hlc::default();
        clock.set_physical(1_000);
        let first = clock.now();
        assert_eq!(first, revision_of_millis(1_000));
        assert_eq!(clock.now(), first + 1);
        clock.set_physical(1_001);
        assert_eq!(clock.now(), revision_of_millis(1_001));
        clock.observe(revision_of_millis(5_000) + 7);
        assert_eq!(clock.now(), revision_of_millis(5_000) + 8);
        clock.set_physical(900);
        assert!(clock.now() > revision_of_millis(5_000) + 8, "never back");
        assert_eq!(millis_of_revision(clock.peek()), 5_000);
    }
}
