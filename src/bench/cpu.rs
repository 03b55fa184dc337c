//! CPU time of processes from `/proc/<pid>/stat`: what the servers (and the load
//! generator itself) spent per operation. On a machine whose few cores the servers and
//! the generator share, CPU per operation says more than operations per second.

use std::process::Command;
use std::time::Instant;

/// Clock ticks per second when `getconf CLK_TCK` cannot say (Linux's usual value).
const CLOCK_TICKS_PER_SECOND_DEFAULT: f64 = 100.0;

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks: &f64| ticks > 0.0)
        .unwrap_or(CLOCK_TICKS_PER_SECOND_DEFAULT)
}

/// User plus system CPU seconds the process `pid` ("self" for this one) has used, or
/// `None` when it cannot be read (no such process).
pub fn cpu_seconds(pid: &str, ticks_per_second: f64) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|ticks| ticks / ticks_per_second)
}

/// utime + stime, in ticks, from the text of a `/proc/<pid>/stat`.
fn parse_stat(text: &str) -> Option<f64> {
    // The command name may contain spaces and parentheses; the fields after its last
    // ')' do not. After it, field 3 (state) comes first, so utime (field 14) and stime
    // (field 15) are at 11 and 12.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// True when the process `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = text
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("X");
    state != "Z" && state != "X"
}

/// CPU used by a set of processes over a stretch of time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuUse {
    /// CPU seconds used.
    pub seconds: f64,
    /// Cores busy on average: CPU seconds over wall seconds.
    pub cores: f64,
}

impl CpuUse {
    /// CPU microseconds per operation.
    pub fn micros_per_op(&self, ops: u64) -> Option<f64> {
        (ops > 0).then(|| self.seconds * 1e6 / ops as f64)
    }
}

/// Measures the CPU of processes from its start to [`CpuMeter::stop`].
#[derive(Clone, Debug)]
pub struct CpuMeter {
    pids: Vec<String>,
    ticks_per_second: f64,
    started: Instant,
    start_seconds: f64,
}

impl CpuMeter {
    /// Starts measuring `pids` ("self" names this process).
    pub fn start(pids: Vec<String>, ticks_per_second: f64) -> CpuMeter {
        let start_seconds = total(&pids, ticks_per_second);
        CpuMeter {
            pids,
            ticks_per_second,
            started: Instant::now(),
            start_seconds,
        }
    }

    /// The CPU used since the start. A process that exited meanwhile counts for what it
    /// had used when last read (nothing after its exit can be read).
    pub fn stop(&self) -> CpuUse {
        let seconds = (total(&self.pids, self.ticks_per_second) - self.start_seconds).max(0.0);
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        CpuUse {
            seconds,
            cores: seconds / wall,
        }
    }
}

fn total(pids: &[String], ticks_per_second: f64) -> f64 {
    pids.iter()
        .filter_map(|pid| cpu_seconds(pid, ticks_per_second))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    // utime and stime are read after the command name, even one with spaces and
    // parentheses in it.
    #[test]
    fn stat_fields_after_the_name() {
        let text = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(parse_stat(text), Some(10.0));
        assert_eq!(parse_stat("garbage"), None);
    }

    // This process is alive and uses CPU; a busy loop shows up in the meter.
    #[test]
    fn this_process_is_measured() {
        let ticks = clock_ticks_per_second();
        assert!(is_alive(std::process::id()));
        let meter = CpuMeter::start(vec!["self".to_string()], ticks);
        let until = Instant::now() + std::time::Duration::from_millis(50);
        let mut spin = 0u64;
        while Instant::now() < until {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        let used = meter.stop();
        assert!(used.seconds >= 0.0 && used.cores <= 64.0);
    }
}
