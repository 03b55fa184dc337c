//! Key choice: how the bench names keys and shapes values, and the seeded distributions
//! (uniform, zipfian, latest) that pick which key an operation touches.
//!
//! Keys are `PREFIX` + the key's index in 12 decimal digits, padded with `.` up to
//! `--key-bytes`: zero-padded digits sort like the numbers, so the keys of indexes `a..b`
//! are exactly the keys of the range `[key(a), key(b))`, which is what lets a scan's answer
//! be checked. A value is the key's index, a 16-digit hex stamp (which write made it) and
//! a fixed filler, cut to `--value-bytes`: a read can check that the value has the right
//! length and belongs to the key it read, whichever write (fill, update, read-modify-write)
//! produced it.

use crate::raft::rng::SeededRng;

/// Digits of a key's index; [`KEYS_MAX`] indexes fit.
pub const KEY_INDEX_DIGITS: usize = 12;
/// Most keys a run may name, fills and inserts included: every index has 12 digits.
pub const KEYS_MAX: u64 = 1_000_000_000_000;
/// Bytes of a value's header: index digits, `:`, 16 hex digits of stamp, `:`.
pub const VALUE_HEADER_BYTES: usize = KEY_INDEX_DIGITS + 1 + 16 + 1;
/// Where the stamp sits in a value: any hex digits are accepted there.
const STAMP_BYTES: std::ops::Range<usize> = KEY_INDEX_DIGITS + 1..KEY_INDEX_DIGITS + 17;
/// The skew of YCSB's zipfian generator (its `zipfian.constant`).
pub const ZIPFIAN_THETA: f64 = 0.99;
/// Terms of the zeta sum computed one by one; past them the sum's tail is integrated
/// (Euler-Maclaurin), so a billion-key zipfian costs milliseconds, not seconds.
const ZETA_EXACT_TERMS_MAX: u64 = 1 << 20;
/// Recently inserted keys one thread remembers for the "latest" distribution (YCSB D).
pub const RECENT_INSERTS_MAX: usize = 4096;

const _: () = assert!(VALUE_HEADER_BYTES == STAMP_BYTES.end + 1);
const _: () = assert!(KEYS_MAX == 1_000_000_000_000, "12 digits hold every index");

/// Names keys: `prefix` + 12-digit index, padded to `key_bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: Vec<u8>,
    key_bytes: usize,
}

impl KeyFormat {
    /// Keys start with `prefix` and are at least `key_bytes` long (shorter when 0 or
    /// below the natural length).
    pub fn new(prefix: &[u8], key_bytes: usize) -> KeyFormat {
        KeyFormat {
            prefix: prefix.to_vec(),
            key_bytes,
        }
    }

    /// The same format with `more` appended to the prefix: a separate namespace of keys.
    pub fn namespace(&self, more: &[u8]) -> KeyFormat {
        let mut prefix = self.prefix.clone();
        prefix.extend_from_slice(more);
        KeyFormat {
            prefix,
            key_bytes: self.key_bytes,
        }
    }

    /// The key of `index`.
    pub fn key(&self, index: u64) -> Vec<u8> {
        assert!(
            index < KEYS_MAX,
            "key index {index} has more than 12 digits"
        );
        let mut key = Vec::with_capacity(self.key_bytes.max(self.prefix.len() + 12));
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(format!("{index:012}").as_bytes());
        if key.len() < self.key_bytes {
            key.resize(self.key_bytes, b'.');
        }
        key
    }

    /// The index a key of this format names, or `None` for a key of another shape.
    pub fn index_of(&self, key: &[u8]) -> Option<u64> {
        let rest = key.strip_prefix(self.prefix.as_slice())?;
        let (digits, padding) = rest.split_at_checked(KEY_INDEX_DIGITS)?;
        if !digits.iter().all(u8::is_ascii_digit) || padding.iter().any(|&byte| byte != b'.') {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

/// Shapes values: index, stamp, filler, cut to `value_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueFormat {
    pub value_bytes: usize,
}

/// Why a value read back does not fit the key it was read at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueMismatch {
    #[error("{got} bytes instead of {want}")]
    Length { got: usize, want: usize },
    #[error("byte {position} differs from what a write of key {index} holds")]
    Content { index: u64, position: usize },
}

impl ValueFormat {
    /// The value a write of key `index` stores, made by the write numbered `stamp`.
    pub fn value(&self, index: u64, stamp: u64) -> Vec<u8> {
        let mut value = Vec::with_capacity(self.value_bytes.max(VALUE_HEADER_BYTES));
        value.extend_from_slice(format!("{index:012}:{stamp:016x}:").as_bytes());
        debug_assert_eq!(value.len(), VALUE_HEADER_BYTES);
        while value.len() < self.value_bytes {
            value.push(b'a' + (value.len() % 26) as u8);
        }
        value.truncate(self.value_bytes);
        value
    }

    /// Checks that `value` is what some write of key `index` stores: the right length,
    /// the key's index, any stamp, the filler.
    pub fn check(&self, index: u64, value: &[u8]) -> Result<(), ValueMismatch> {
        self.check_length(index, value, self.value_bytes)
    }

    /// Like [`ValueFormat::check`] for a value that must be `length` bytes long (an
    /// appended value checks its first append this way).
    pub fn check_length(
        &self,
        index: u64,
        value: &[u8],
        length: usize,
    ) -> Result<(), ValueMismatch> {
        if value.len() != length {
            return Err(ValueMismatch::Length {
                got: value.len(),
                want: length,
            });
        }
        let expected = ValueFormat {
            value_bytes: length,
        }
        .value(index, 0);
        let differs = value
            .iter()
            .zip(&expected)
            .enumerate()
            .find(|&(position, (&got, &want))| {
                if STAMP_BYTES.contains(&position) {
                    !got.is_ascii_hexdigit()
                } else {
                    got != want
                }
            });
        match differs {
            Some((position, _)) => Err(ValueMismatch::Content { index, position }),
            None => Ok(()),
        }
    }
}

/// The bench's seeded generator: the crate's one generator ([`SeededRng`]) with the
/// draws key choice needs.
#[derive(Clone, Debug)]
pub struct Rng {
    inner: SeededRng,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng {
            inner: SeededRng::new(seed),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        // Multiply-shift instead of modulo: no bias worth the name, no division.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `sum(1 / i^theta)` for `i` in `1..=items`.
fn zeta(items: u64, theta: f64) -> f64 {
    let exact = items.min(ZETA_EXACT_TERMS_MAX);
    let mut sum: f64 = (1..=exact).map(|i| (i as f64).powf(-theta)).sum();
    if items > exact {
        // Euler-Maclaurin: the integral of x^-theta over (exact, items] plus the end
        // correction; the next term is below 1e-12 of the sum at these sizes.
        let (a, b) = (exact as f64, items as f64);
        sum += (b.powf(1.0 - theta) - a.powf(1.0 - theta)) / (1.0 - theta);
        sum += (b.powf(-theta) - a.powf(-theta)) / 2.0;
    }
    sum
}

/// YCSB's zipfian generator (Gray et al., "Quickly generating billion-record synthetic
/// databases"): rank 0 is the most popular item.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    zetan: f64,
    alpha: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Zipfian {
        assert!(items > 0 && theta > 0.0 && theta < 1.0);
        let zetan = zeta(items, theta);
        let zeta2 = zeta(2.min(items), theta);
        let eta = if items > 1 {
            (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        } else {
            1.0
        };
        Zipfian {
            items,
            theta,
            zetan,
            alpha: 1.0 / (1.0 - theta),
            eta,
        }
    }

    /// A rank in `0..items`, small ranks far likelier.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

/// How keys are picked among `0..keys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key alike.
    Uniform,
    /// YCSB's scrambled zipfian (theta 0.99): a few keys take most operations, spread
    /// over the keyspace by a hash so the hot keys are not neighbours.
    Zipfian,
}

/// FNV-1a of a rank: YCSB's scramble of zipfian ranks over the keyspace.
fn scramble(rank: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rank.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Picks key indexes in `0..keys` by a [`Distribution`].
#[derive(Clone, Debug)]
pub struct KeyChooser {
    keys: u64,
    zipfian: Option<Zipfian>,
}

impl KeyChooser {
    pub fn new(keys: u64, distribution: Distribution) -> KeyChooser {
        assert!(keys > 0 && keys <= KEYS_MAX);
        let zipfian = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipfian => Some(Zipfian::new(keys, ZIPFIAN_THETA)),
        };
        KeyChooser { keys, zipfian }
    }

    pub fn keys(&self) -> u64 {
        self.keys
    }

    pub fn next(&self, rng: &mut Rng) -> u64 {
        match &self.zipfian {
            None => rng.below(self.keys),
            Some(zipfian) => scramble(zipfian.sample(rng)) % self.keys,
        }
    }
}

/// The keys one thread inserted most recently, for YCSB D's "read latest": the newest
/// is the likeliest to be read (zipfian over age).
#[derive(Clone, Debug)]
pub struct RecentInserts {
    /// A ring of at most [`RECENT_INSERTS_MAX`] indexes; `next` is where the next goes.
    ring: Vec<u64>,
    next: usize,
    age: Zipfian,
}

impl Default for RecentInserts {
    fn default() -> RecentInserts {
        RecentInserts {
            ring: Vec::with_capacity(RECENT_INSERTS_MAX),
            next: 0,
            age: Zipfian::new(RECENT_INSERTS_MAX as u64, ZIPFIAN_THETA),
        }
    }
}

impl RecentInserts {
    /// Remembers an insert whose success the thread has seen.
    pub fn push(&mut self, index: u64) {
        if self.ring.len() < RECENT_INSERTS_MAX {
            self.ring.push(index);
        } else {
            self.ring[self.next] = index;
        }
        self.next = (self.next + 1) % RECENT_INSERTS_MAX;
    }

    /// A recently inserted index, the newest likeliest; `None` before the first insert.
    pub fn pick(&self, rng: &mut Rng) -> Option<u64> {
        if self.ring.is_empty() {
            return None;
        }
        let length = self.ring.len();
        let age = self.age.sample(rng) as usize % length;
        // Before the ring wraps, `next` is its length and the newest is last; after, the
        // newest is just before `next`: both are `next - 1` modulo the length.
        let newest = (self.next + length - 1) % length;
        let position = (newest + length - age) % length;
        Some(self.ring[position])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys sort like their indexes, carry their padding, and parse back; other shapes
    // do not parse.
    #[test]
    fn keys_sort_and_parse_back() {
        let format = KeyFormat::new(b"bench-", 24);
        let (a, b) = (format.key(9), format.key(10));
        assert!(a < b);
        assert_eq!(a.len(), 24);
        assert_eq!(format.index_of(&a), Some(9));
        assert_eq!(format.index_of(b"bench-00000000001x......"), None);
        assert_eq!(format.index_of(b"other-000000000010"), None);
        let appends = format.namespace(b"append-");
        assert_eq!(appends.index_of(&appends.key(7)), Some(7));
        assert_eq!(format.index_of(&appends.key(7)), None);
    }

    // A value fits its own key whatever its stamp, and is refused for another key, for
    // another length, and with a changed filler byte; short values still check.
    #[test]
    fn values_check_their_key_and_shape() {
        for value_bytes in [0, 5, 12, 20, 30, 256] {
            let format = ValueFormat { value_bytes };
            let value = format.value(42, 0xfeed);
            assert_eq!(value.len(), value_bytes);
            assert_eq!(format.check(42, &value), Ok(()));
            if value_bytes >= 12 {
                assert!(format.check(43, &value).is_err());
            }
            assert!(format.check(42, &format.value(42, 1)[..]).is_ok());
            let mut longer = value.clone();
            longer.push(b'x');
            assert!(format.check(42, &longer).is_err());
            if value_bytes > VALUE_HEADER_BYTES {
                let mut changed = value.clone();
                changed[value_bytes - 1] ^= 1;
                assert!(format.check(42, &changed).is_err());
            }
        }
    }

    // The zipfian's most popular rank takes about 1/zeta(n) of the draws, every draw
    // stays in range, and the tail approximation of zeta matches the exact sum.
    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let items = 1000;
        let zipfian = Zipfian::new(items, ZIPFIAN_THETA);
        let mut rng = Rng::new(7);
        let draws = 200_000;
        let mut first = 0;
        for _ in 0..draws {
            let rank = zipfian.sample(&mut rng);
            assert!(rank < items);
            first += u64::from(rank == 0);
        }
        let expected = draws as f64 / zeta(items, ZIPFIAN_THETA);
        assert!(
            (first as f64 - expected).abs() < expected * 0.05,
            "{first} vs {expected}"
        );
        let exact: f64 = (1..=3 * ZETA_EXACT_TERMS_MAX)
            .map(|i| (i as f64).powf(-ZIPFIAN_THETA))
            .sum();
        let approximated = zeta(3 * ZETA_EXACT_TERMS_MAX, ZIPFIAN_THETA);
        assert!((exact - approximated).abs() / exact < 1e-9);
    }

    // Both distributions stay in the keyspace, and uniform reaches all of a small one.
    #[test]
    fn choosers_stay_in_the_keyspace() {
        let mut rng = Rng::new(3);
        for distribution in [Distribution::Uniform, Distribution::Zipfian] {
            let chooser = KeyChooser::new(10, distribution);
            let mut seen = [false; 10];
            for _ in 0..10_000 {
                seen[chooser.next(&mut rng) as usize] = true;
            }
            if distribution == Distribution::Uniform {
                assert!(seen.iter().all(|&seen| seen));
            }
        }
    }

    // The latest distribution picks only inserted keys, the newest most often, before
    // and after its ring wraps.
    #[test]
    fn latest_prefers_the_newest_insert() {
        let mut rng = Rng::new(5);
        let mut recent = RecentInserts::default();
        assert_eq!(recent.pick(&mut rng), None);
        for inserted in [10u64, 3 * RECENT_INSERTS_MAX as u64] {
            for index in 0..inserted {
                recent.push(index);
            }
            let mut newest = 0;
            for _ in 0..10_000 {
                let picked = recent.pick(&mut rng).expect("inserted");
                assert!(picked < inserted);
                newest += u32::from(picked == inserted - 1);
            }
            assert!(newest > 1000, "the newest key was picked {newest} times");
            recent = RecentInserts::default();
        }
    }
}
