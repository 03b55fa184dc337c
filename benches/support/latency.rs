//! Latency histograms shared by the benches: the layout and quantiles of
//! `corekv::bench::latency`, which `corekv bench` and the etcd load generator report
//! with too. A bench includes it with `#[path = "support/latency.rs"] mod latency;`.

pub use corekv::bench::latency::{new_histogram, quantiles};
