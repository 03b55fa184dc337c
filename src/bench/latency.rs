//! Latency histograms: one bucket layout for every bench and load generator, and the
//! quantiles they report, so that numbers from different tools compare.

use histogram::Histogram;

/// Latency histogram buckets (see the `histogram` crate): ~1% relative error up to 2^64.
pub const HISTOGRAM_GROUPING_POWER: u8 = 7;
pub const HISTOGRAM_MAX_VALUE_POWER: u8 = 64;

/// An empty histogram with the shared bucket layout.
pub fn new_histogram() -> Histogram {
    Histogram::new(HISTOGRAM_GROUPING_POWER, HISTOGRAM_MAX_VALUE_POWER).expect("valid histogram")
}

/// The upper end of the bucket of each quantile (0.0-1.0), in the histogram's unit; all
/// zero for an empty histogram.
pub fn quantiles_of(histogram: &Histogram, wanted: &[f64]) -> Vec<u64> {
    match histogram.quantiles(wanted) {
        Ok(Some(result)) => result
            .entries()
            .values()
            .map(|bucket| bucket.end())
            .collect(),
        _ => vec![0; wanted.len()],
    }
}

/// (p50, p99, p999) of a histogram, in its unit.
pub fn quantiles(histogram: &Histogram) -> (u64, u64, u64) {
    let ends = quantiles_of(histogram, &[0.5, 0.99, 0.999]);
    (ends[0], ends[1], ends[2])
}

/// How many values the histogram holds.
pub fn count(histogram: &Histogram) -> u64 {
    histogram.iter().map(|bucket| bucket.count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Quantiles come out in the order asked, within the layout's 1% error; an empty
    // histogram gives zeros.
    #[test]
    fn quantiles_follow_the_values() {
        let mut histogram = new_histogram();
        assert_eq!(quantiles(&histogram), (0, 0, 0));
        for value in 1..=1000 {
            histogram.increment(value).unwrap();
        }
        let (p50, p99, p999) = quantiles(&histogram);
        assert!((500..=510).contains(&p50), "{p50}");
        assert!((990..=1000).contains(&p99), "{p99}");
        assert!(p999 >= p99);
        assert_eq!(count(&histogram), 1000);
    }
}
