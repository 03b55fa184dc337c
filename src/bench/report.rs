//! What a run reports: the [`Report`] (written as JSON with `--json`, read back by the
//! scripts' tables) and its text summary.
//! The etcd load generator (`tools/etcd-load/`) writes the same report, so one table
//! can put both systems side by side.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::cpu::CpuUse;
use super::latency::quantiles_of;
use super::recorder::Snapshot;

/// The quantiles reported per operation kind.
pub const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

/// Latency of one operation kind, microseconds (the upper end of each quantile's
/// histogram bucket, ~1% error; `max` is exact).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// One operation kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationReport {
    pub op: String,
    /// Operations that completed correctly.
    pub ops: u64,
    pub ops_per_second: f64,
    pub errors: u64,
    /// Read-modify-writes that lost their compare to another writer (correct answers).
    pub conflicts: u64,
    /// Reads that found no key where none need be (see `recorder::Outcome::NotFound`).
    pub not_found: u64,
    pub latency_us: LatencyReport,
}

/// CPU of a set of processes during the measured time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    pub pids: Vec<u32>,
    /// Cores busy on average.
    pub cores: f64,
    /// CPU microseconds per correct operation.
    pub us_per_op: Option<f64>,
}

impl CpuReport {
    pub fn new(pids: Vec<u32>, used: CpuUse, ops: u64) -> CpuReport {
        CpuReport {
            pids,
            cores: used.cores,
            us_per_op: used.micros_per_op(ops),
        }
    }
}

/// One progress interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalReport {
    /// Seconds from the start of the measured time to the end of the interval.
    pub end_seconds: f64,
    pub ops: u64,
    pub ops_per_second: f64,
    /// p99 of the operations that completed in the interval, microseconds.
    pub p99_us: u64,
    pub errors: u64,
}

/// The fill before the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FillReport {
    pub keys: u64,
    pub seconds: f64,
    pub errors: u64,
}

/// The whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What was run; its fields sit at the top level of the JSON.
    #[serde(flatten)]
    pub run: RunDescription,
    pub fill: Option<FillReport>,
    /// Seconds measured: from the end of the warm-up to the last completion.
    pub elapsed_seconds: f64,
    /// Correct operations of every kind.
    pub ops: u64,
    pub ops_per_second: f64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// A few messages per kind of error.
    pub error_samples: BTreeMap<String, Vec<String>>,
    /// Open loop: operations that started over a millisecond past their scheduled time,
    /// because every in-flight slot was busy or the load thread woke late (their latency
    /// counts from the schedule all the same).
    pub late_starts: u64,
    pub operations: Vec<OperationReport>,
    pub server_cpu: Option<CpuReport>,
    /// This load generator's own CPU.
    pub generator_cpu: Option<CpuReport>,
    pub intervals: Vec<IntervalReport>,
}

/// What a report says about its run, apart from the measurements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDescription {
    /// "corekv", or the system a load generator drove.
    pub system: String,
    pub workload: String,
    pub distribution: String,
    pub keys: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub in_flight: usize,
    pub connections: usize,
    pub threads: usize,
    /// Open loop: the operations per second asked for.
    pub rate_per_second: Option<f64>,
    pub serializable: bool,
}

impl Report {
    /// The report of a run whose measured totals are `snapshot`, over `elapsed_seconds`.
    pub fn new(
        description: RunDescription,
        snapshot: &Snapshot,
        elapsed_seconds: f64,
        intervals: Vec<IntervalReport>,
    ) -> Report {
        let per_second = |count: u64| count as f64 / elapsed_seconds.max(1e-9);
        let operations = snapshot
            .kinds
            .iter()
            .filter(|kind| kind.ops() + kind.errors > 0)
            .map(|kind| {
                // A bucket's upper end can pass the exact maximum: never report more.
                let ends: Vec<u64> = quantiles_of(&kind.latency_us, &QUANTILES)
                    .into_iter()
                    .map(|end| end.min(kind.max_us))
                    .collect();
                OperationReport {
                    op: kind.kind.name().to_string(),
                    ops: kind.ops(),
                    ops_per_second: per_second(kind.ops()),
                    errors: kind.errors,
                    conflicts: kind.conflicts,
                    not_found: kind.not_found,
                    latency_us: LatencyReport {
                        p50: ends[0],
                        p90: ends[1],
                        p99: ends[2],
                        p999: ends[3],
                        max: kind.max_us,
                    },
                }
            })
            .collect();
        Report {
            run: description,
            fill: None,
            elapsed_seconds,
            ops: snapshot.ops(),
            ops_per_second: per_second(snapshot.ops()),
            errors: snapshot.error_count(),
            errors_by_kind: snapshot
                .errors
                .iter()
                .map(|(kind, tally)| (kind.clone(), tally.count))
                .collect(),
            error_samples: snapshot
                .errors
                .iter()
                .map(|(kind, tally)| (kind.clone(), tally.samples.clone()))
                .collect(),
            late_starts: snapshot.late_starts,
            operations,
            server_cpu: None,
            generator_cpu: None,
            intervals,
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// A report read back from [`Report::to_json`]'s output.
    pub fn from_json(text: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The operation kind named `op`, if the run had it.
    pub fn operation(&self, op: &str) -> Option<&OperationReport> {
        self.operations.iter().find(|operation| operation.op == op)
    }

    /// The latency of the kind with the highest p99 (the report keeps no histogram of
    /// every kind together): for a one-kind workload, that kind's.
    pub fn worst_latency(&self) -> Option<&LatencyReport> {
        self.operations
            .iter()
            .filter(|operation| operation.ops > 0)
            .map(|operation| &operation.latency_us)
            .max_by_key(|latency| latency.p99)
    }

    /// The text summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let rate = match self.run.rate_per_second {
            Some(rate) => format!("open loop at {rate:.0} ops/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            out,
            "{} {}: {} keys {}, {}-byte values, {} in flight over {} connection(s) and {} \
             thread(s), {rate}{}",
            self.run.system,
            self.run.workload,
            self.run.keys,
            self.run.distribution,
            self.run.value_bytes,
            self.run.in_flight,
            self.run.connections,
            self.run.threads,
            if self.run.serializable {
                ", serializable reads"
            } else {
                ""
            }
        );
        if let Some(fill) = &self.fill {
            let _ = writeln!(
                out,
                "fill: {} keys in {:.1} s ({:.0} puts/s), {} errors",
                fill.keys,
                fill.seconds,
                fill.keys as f64 / fill.seconds.max(1e-9),
                fill.errors
            );
        }
        let _ = writeln!(
            out,
            "throughput: {:.0} ops/s ({} ops in {:.2} s), {} errors",
            self.ops_per_second, self.ops, self.elapsed_seconds, self.errors
        );
        let _ = writeln!(
            out,
            "{:<7} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}",
            "op",
            "ops",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p999 ms",
            "max ms",
            "errors",
            "conflicts"
        );
        for operation in &self.operations {
            let latency = &operation.latency_us;
            let _ = writeln!(
                out,
                "{:<7} {:>10} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}",
                operation.op,
                operation.ops,
                operation.ops_per_second,
                milliseconds(latency.p50),
                milliseconds(latency.p90),
                milliseconds(latency.p99),
                milliseconds(latency.p999),
                milliseconds(latency.max),
                operation.errors,
                operation.conflicts
            );
            if operation.not_found > 0 {
                let _ = writeln!(
                    out,
                    "        {} reads found no key (never written, or a stale serializable read)",
                    operation.not_found
                );
            }
        }
        if self.errors_by_kind.is_empty() {
            let _ = writeln!(out, "errors by kind: none");
        } else {
            let _ = writeln!(out, "errors by kind:");
            for (kind, count) in &self.errors_by_kind {
                let _ = writeln!(out, "  {count:>10}  {kind}");
                for sample in self.error_samples.get(kind).into_iter().flatten() {
                    let _ = writeln!(out, "              e.g. {sample}");
                }
            }
        }
        if self.run.rate_per_second.is_some() {
            let _ = writeln!(
                out,
                "late starts: {} (over 1 ms past their scheduled time: every slot busy, or \
                 the load thread woke late; their latency counts from the schedule)",
                self.late_starts
            );
        }
        for (name, cpu) in [
            ("servers", &self.server_cpu),
            ("this generator", &self.generator_cpu),
        ] {
            if let Some(cpu) = cpu {
                let per_op = cpu
                    .us_per_op
                    .map_or_else(|| "-".to_string(), |micros| format!("{micros:.1}"));
                let _ = writeln!(
                    out,
                    "CPU of {name}: {:.2} cores, {per_op} us per op (pids {:?})",
                    cpu.cores, cpu.pids
                );
            }
        }
        out
    }
}

/// Microseconds as milliseconds with two decimals.
pub fn milliseconds(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::recorder::{Outcome, Recorder};
    use crate::bench::workload::OpKind;
    use std::time::Duration;

    fn description() -> RunDescription {
        RunDescription {
            system: "corekv".to_string(),
            workload: "mixed".to_string(),
            distribution: "uniform".to_string(),
            keys: 10,
            key_bytes: 0,
            value_bytes: 8,
            in_flight: 4,
            connections: 1,
            threads: 1,
            rate_per_second: None,
            serializable: false,
        }
    }

    // A report counts ops and errors per kind, survives a JSON round trip, and its text
    // names every kind of error.
    #[test]
    fn report_round_trips_and_names_errors() {
        let recorder = Recorder::new();
        for micros in [100, 200, 300] {
            recorder.success(OpKind::Get, Duration::from_micros(micros), Outcome::Ok);
        }
        recorder.error(OpKind::Put, "unavailable", || "no node".to_string());
        let report = Report::new(description(), &recorder.snapshot(), 2.0, Vec::new());
        assert_eq!((report.ops, report.errors), (3, 1));
        assert_eq!(report.ops_per_second, 1.5);
        let get = report.operation("get").expect("gets ran");
        assert_eq!(get.latency_us.max, 300);
        assert!(get.latency_us.p50 >= 200 && get.latency_us.p50 <= 203);
        assert_eq!(report.operation("put").map(|put| put.errors), Some(1));
        assert_eq!(Report::from_json(&report.to_json()).unwrap(), report);
        let text = report.text();
        assert!(
            text.contains("unavailable") && text.contains("no node"),
            "{text}"
        );
    }
}
