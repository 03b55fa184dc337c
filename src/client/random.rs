//! The randomness the SDK's decisions draw on (retry jitter, fresh client ids), passed in
//! as a [`Random`] so that the same decisions can run on the operating system's
//! randomness in the blocking client and on a seeded generator in the simulator.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::raft::rng::SeededRng;

/// A source of random 64-bit numbers.
pub trait Random {
    fn next_u64(&mut self) -> u64;

    /// A number in `[0, 1)` with 53 random bits.
    fn fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A fresh client id: random and never 0 (0 means "no session").
    fn client_id(&mut self) -> u64 {
        loop {
            let id = self.next_u64();
            if id != 0 {
                return id;
            }
        }
    }
}

/// The operating system's randomness: what the blocking client uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    /// The standard library's `RandomState` keys its hasher from the operating system's
    /// randomness; hashing a process-wide counter, the time and the process id with it
    /// gives distinct, unpredictable values without another crate.
    fn next_u64(&mut self) -> u64 {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        hasher.write_u128(since_epoch.as_nanos());
        hasher.write_u32(std::process::id());
        hasher.finish()
    }
}

impl Random for SeededRng {
    fn next_u64(&mut self) -> u64 {
        SeededRng::next_u64(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Client ids are nonzero and do not repeat over many draws.
    #[test]
    fn client_ids_are_distinct() {
        let ids: std::collections::HashSet<u64> =
            (0..10_000).map(|_| OsRandom.client_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&0));
    }

    // Fractions stay in [0, 1), and a seeded source repeats itself.
    #[test]
    fn fractions_are_in_range_and_seeds_repeat() {
        let mut first = SeededRng::new(5);
        let mut second = SeededRng::new(5);
        for _ in 0..1_000 {
            let fraction = first.fraction();
            assert!((0.0..1.0).contains(&fraction));
            assert_eq!(fraction, second.fraction());
        }
    }
}
