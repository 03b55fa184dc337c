//! Latency histograms shared by the benches: one bucket layout, and the p50/p99/p999
//! every bench reports. A bench includes it with
//! `#[path = "support/latency.rs"] mod latency;`.

use histogram::Histogram;

/// Latency histogram buckets (see the `histogram` crate): ~1% relative error up to 2^64.
const HISTOGRAM_GROUPING_POWER: u8 = 7;
const HISTOGRAM_MAX_VALUE_POWER: u8 = 64;

/// An empty histogram with the benches' bucket layout.
pub fn new_histogram() -> Histogram {
    Histogram::new(HISTOGRAM_GROUPING_POWER, HISTOGRAM_MAX_VALUE_POWER).expect("valid histogram")
}

/// (p50, p99, p999) of a histogram, the upper end of each bucket, in its unit.
pub fn quantiles(histogram: &Histogram) -> (u64, u64, u64) {
    match histogram.quantiles(&[0.5, 0.99, 0.999]) {
        Ok(Some(result)) => {
            let ends: Vec<u64> = result
                .entries()
                .values()
                .map(|bucket| bucket.end())
                .collect();
            (ends[0], ends[1], ends[2])
        }
        _ => (0, 0, 0),
    }
}
