//! Write-ahead log throughput per shard against the raw device, measured in the same run.
//!
//! One glommio executor (one shard) appends through `Wal` from 1, 8 and 64 concurrent
//! groups with records of 64 B, 256 B, 4 KiB and 64 KiB, each group keeping a window of
//! appends in flight, and reports records/s, MB/s, fsyncs/s, records per fsync and the
//! commit latency (submit to durable) with the `histogram` crate. Closed-loop runs (one
//! append in flight per group) give the commit latency without self-made queueing. The raw
//! device is measured first through glommio `DmaFile` (sequential O_DIRECT writes, and a
//! 4 KiB write + fdatasync loop), and the ratios against it are printed at the end.
//!
//! `cargo bench --bench wal`; `COREKV_WAL_BENCH_SECONDS` sets the length of each phase
//! (default 2), `COREKV_WAL_BENCH_BATCH_BYTES` the batch bound; `cargo bench --bench wal --
//! 64x65536` runs only the WAL configurations whose label (`<groups>x<bytes>`,
//! `closed-<groups>`) contains the argument.

#[path = "support/latency.rs"]
mod latency;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv::wal::{Entry, Record, RecordKind, Ticket, Wal, WalConfig};
use glommio::io::OpenOptions;
use glommio::LocalExecutorBuilder;
use histogram::Histogram;
use latency::{new_histogram, quantiles};

const GROUP_COUNTS: [u64; 3] = [1, 8, 64];
const RECORD_SIZES: [usize; 4] = [64, 256, 4096, 64 * 1024];
/// Appends in flight across all groups of a saturation run, by count and by bytes.
const INFLIGHT_RECORDS_MAX: usize = 16 * 1024;
const INFLIGHT_BYTES_MAX: usize = 32 * 1024 * 1024;
/// The raw-device file: pre-zeroed like a WAL segment, written around in circles.
const RAW_FILE_BYTES: u64 = 256 * 1024 * 1024;
const RAW_BLOCK_BYTES: usize = 4096;
const SEQUENTIAL_WRITE_BYTES: [usize; 2] = [64 * 1024, 1024 * 1024];

fn phase() -> Duration {
    let seconds: f64 = std::env::var("COREKV_WAL_BENCH_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(seconds)
}

/// The WAL's batch bound for this run (`COREKV_WAL_BENCH_BATCH_BYTES`, default: the
/// configuration default).
fn batch_bytes() -> usize {
    std::env::var("COREKV_WAL_BENCH_BATCH_BYTES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(WalConfig::default().batch_bytes_max)
}

struct RawDevice {
    /// Sequential O_DIRECT write bandwidth in bytes/s: (write size, fdatasync after each
    /// write, bandwidth).
    sequential: Vec<(usize, bool, f64)>,
    /// 4 KiB write + fdatasync latency in microseconds.
    sync_latency: (u64, u64, u64),
    syncs_per_second: f64,
}

async fn measure_raw_device(directory: &Path) -> RawDevice {
    let path = directory.join("raw-device");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&path)
        .await
        .expect("raw file");
    file.pre_allocate(RAW_FILE_BYTES, false)
        .await
        .expect("preallocate");
    let mut zeros = file.alloc_dma_buffer(SEQUENTIAL_WRITE_BYTES[1]);
    zeros.as_bytes_mut().fill(0);
    let zeros = Rc::new(zeros);
    let mut position = 0;
    while position < RAW_FILE_BYTES {
        file.write_rc_at(zeros.clone(), position)
            .await
            .expect("zero");
        position += zeros.len() as u64;
    }
    file.fdatasync().await.expect("sync");

    let mut sequential = Vec::new();
    let plain = SEQUENTIAL_WRITE_BYTES
        .iter()
        .map(|&write_bytes| (write_bytes, false));
    // A durable log can do no better than one full batch written and synced at a time.
    for (write_bytes, sync_each) in plain.chain([(batch_bytes(), true)]) {
        let mut buffer = file.alloc_dma_buffer(write_bytes);
        buffer
            .as_bytes_mut()
            .iter_mut()
            .enumerate()
            .for_each(|(position, byte)| *byte = position as u8);
        let buffer = Rc::new(buffer);
        let started = Instant::now();
        let deadline = started + phase();
        let (mut position, mut written) = (0, 0u64);
        while Instant::now() < deadline {
            file.write_rc_at(buffer.clone(), position)
                .await
                .expect("write");
            if sync_each {
                file.fdatasync().await.expect("sync");
            }
            written += write_bytes as u64;
            position = (position + write_bytes as u64) % RAW_FILE_BYTES;
        }
        file.fdatasync().await.expect("sync");
        let bandwidth = written as f64 / started.elapsed().as_secs_f64();
        sequential.push((write_bytes, sync_each, bandwidth));
    }

    let mut histogram = new_histogram();
    let mut block = file.alloc_dma_buffer(RAW_BLOCK_BYTES);
    block.as_bytes_mut().fill(0x5a);
    let block = Rc::new(block);
    let started = Instant::now();
    let deadline = started + phase();
    let (mut position, mut syncs) = (0, 0u64);
    while Instant::now() < deadline {
        let begin = Instant::now();
        file.write_rc_at(block.clone(), position)
            .await
            .expect("write");
        file.fdatasync().await.expect("sync");
        histogram
            .increment(begin.elapsed().as_micros() as u64)
            .expect("in range");
        syncs += 1;
        position = (position + RAW_BLOCK_BYTES as u64) % RAW_FILE_BYTES;
    }
    let syncs_per_second = syncs as f64 / started.elapsed().as_secs_f64();
    file.close().await.expect("close");
    let _ = fs::remove_file(&path);
    RawDevice {
        sequential,
        sync_latency: quantiles(&histogram),
        syncs_per_second,
    }
}

struct WalRun {
    groups: u64,
    record_bytes: usize,
    window: usize,
    records: u64,
    seconds: f64,
    fsyncs: u64,
    bytes_written: u64,
    segments_created: u64,
    latency: (u64, u64, u64),
}

impl WalRun {
    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    fn payload_bytes_per_second(&self) -> f64 {
        (self.records * self.record_bytes as u64) as f64 / self.seconds
    }
}

/// One group appending single-entry records of `record_bytes` with up to `window` in
/// flight until `deadline`. Returns how many became durable.
async fn append_group(
    wal: Wal,
    group: u64,
    record_bytes: usize,
    window: usize,
    deadline: Instant,
    histogram: Rc<RefCell<Histogram>>,
) -> u64 {
    let payload = vec![group as u8; record_bytes];
    let mut outstanding: VecDeque<(Ticket, Instant)> = VecDeque::with_capacity(window);
    let mut next_index = 1;
    let mut durable = 0;
    loop {
        let now = Instant::now();
        if now < deadline && outstanding.len() < window {
            let record = Record {
                group_id: group,
                kind: RecordKind::Entries {
                    entries: vec![Entry {
                        index: next_index,
                        term: 1,
                        kind: 0,
                        payload: Arc::from(&payload[..]),
                    }],
                },
            };
            // Returns at once when the filling batch has room; waits for room otherwise.
            let ticket = wal.submit(vec![record]).await.expect("submit");
            outstanding.push_back((ticket, now));
            next_index += 1;
            continue;
        }
        let Some(&(ticket, _)) = outstanding.front() else {
            break;
        };
        wal.wait(ticket).await.expect("durable");
        let done = Instant::now();
        let mut histogram = histogram.borrow_mut();
        while let Some(&(ticket, submitted)) = outstanding.front() {
            if !wal.is_durable(ticket) {
                break;
            }
            let micros = done.duration_since(submitted).as_micros() as u64;
            histogram.increment(micros).expect("in range");
            outstanding.pop_front();
            durable += 1;
        }
    }
    durable
}

async fn run_wal(base: &Path, groups: u64, record_bytes: usize, window: usize) -> WalRun {
    let directory = base.join(format!("wal-{groups}-{record_bytes}-{window}"));
    let _ = fs::remove_dir_all(&directory);
    fs::create_dir_all(&directory).expect("bench folder");
    let config = WalConfig {
        segments_ready_ahead: 2,
        batch_bytes_max: batch_bytes(),
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open(&directory, config).await.expect("open");
    let before = wal.stats();
    let histogram = Rc::new(RefCell::new(new_histogram()));
    let started = Instant::now();
    let deadline = started + phase();
    let tasks: Vec<_> = (1..=groups)
        .map(|group| {
            glommio::spawn_local(append_group(
                wal.clone(),
                group,
                record_bytes,
                window,
                deadline,
                histogram.clone(),
            ))
        })
        .collect();
    let mut records = 0;
    for task in tasks {
        records += task.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = wal.stats();
    wal.close().await.expect("close");
    let _ = fs::remove_dir_all(&directory);
    let latency = quantiles(&histogram.borrow());
    WalRun {
        groups,
        record_bytes,
        window,
        records,
        seconds,
        fsyncs: after.fsyncs - before.fsyncs,
        bytes_written: after.bytes_written - before.bytes_written,
        segments_created: after.segments_created - before.segments_created,
        latency,
    }
}

fn saturation_window(groups: u64, record_bytes: usize) -> usize {
    let by_count = INFLIGHT_RECORDS_MAX / groups as usize;
    let by_bytes = INFLIGHT_BYTES_MAX / record_bytes / groups as usize;
    by_count.min(by_bytes).max(1)
}

fn print_run(run: &WalRun) {
    println!(
        "{:>6} {:>7} {:>6} {:>12.0} {:>9.1} {:>9.1} {:>9.0} {:>9.1} {:>8} {:>8} {:>8} {:>5}",
        run.groups,
        run.record_bytes,
        run.window,
        run.records_per_second(),
        run.payload_bytes_per_second() / 1e6,
        run.bytes_written as f64 / run.seconds / 1e6,
        run.fsyncs as f64 / run.seconds,
        run.records as f64 / run.fsyncs.max(1) as f64,
        run.latency.0,
        run.latency.1,
        run.latency.2,
        run.segments_created,
    );
}

fn print_header() {
    println!(
        "{:>6} {:>7} {:>6} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>5}",
        "groups",
        "bytes",
        "window",
        "records/s",
        "data MB/s",
        "disk MB/s",
        "fsyncs/s",
        "rec/fsync",
        "p50 us",
        "p99 us",
        "p999 us",
        "segs"
    );
}

async fn run(base: PathBuf) {
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).expect("bench folder");
    // The first DMA file of this thread must hold data (see wal::segment::prime_direct_io).
    let sentinel_folder = base.join("sentinel");
    fs::create_dir_all(&sentinel_folder).expect("folder");
    corekv::wal::segment::prime_direct_io(&sentinel_folder)
        .await
        .expect("direct I/O works");

    println!(
        "wal bench: one executor, phases of {:.1} s, in {}",
        phase().as_secs_f64(),
        base.display()
    );
    let raw = measure_raw_device(&base).await;
    for (write_bytes, sync_each, bandwidth) in &raw.sequential {
        let what = if *sync_each {
            ", each followed by fdatasync"
        } else {
            ""
        };
        println!(
            "raw device: sequential O_DIRECT {} KiB writes (one in flight{what}): {:.0} MB/s",
            write_bytes / 1024,
            bandwidth / 1e6
        );
    }
    println!(
        "raw device: 4 KiB write + fdatasync: {:.0}/s, p50 {} us, p99 {} us, p999 {} us",
        raw.syncs_per_second, raw.sync_latency.0, raw.sync_latency.1, raw.sync_latency.2
    );
    let best = |synced: bool| {
        raw.sequential
            .iter()
            .filter(|(_, sync_each, _)| *sync_each == synced)
            .map(|(_, _, bandwidth)| *bandwidth)
            .fold(0.0, f64::max)
    };
    let (raw_bandwidth, raw_synced_bandwidth) = (best(false), best(true));

    println!(
        "\nsaturation: every group keeps a window of single-entry appends in flight \
         (batches of at most {} KiB)",
        batch_bytes() / 1024
    );
    print_header();
    let mut saturation = Vec::new();
    for &record_bytes in &RECORD_SIZES {
        for &groups in &GROUP_COUNTS {
            if !selected(&format!("{groups}x{record_bytes}")) {
                continue;
            }
            let window = saturation_window(groups, record_bytes);
            let run = run_wal(&base, groups, record_bytes, window).await;
            print_run(&run);
            saturation.push(run);
        }
    }
    let small = if selected("64x128") {
        let run = run_wal(&base, 64, 128, saturation_window(64, 128)).await;
        print_run(&run);
        Some(run)
    } else {
        None
    };

    println!("\nclosed loop: one append in flight per group (commit latency without queueing)");
    print_header();
    let mut closed = Vec::new();
    for &groups in &GROUP_COUNTS {
        if !selected(&format!("closed-{groups}")) {
            continue;
        }
        let run = run_wal(&base, groups, 256, 1).await;
        print_run(&run);
        closed.push(run);
    }

    println!("\nratios against the raw device measured above:");
    if let Some(small) = &small {
        println!(
            "  128 B records, 64 groups: {:.0} records/s (goal >= 1,000,000/s)",
            small.records_per_second()
        );
    }
    for run in saturation
        .iter()
        .filter(|run| run.record_bytes == 64 * 1024)
    {
        let data = run.payload_bytes_per_second();
        println!(
            "  64 KiB records, {:>2} groups: {:.0} MB/s of data = {:.0}% of raw sequential \
             {:.0} MB/s (goal >= 80%), {:.0}% of raw batch-write+fdatasync {:.0} MB/s",
            run.groups,
            data / 1e6,
            100.0 * data / raw_bandwidth,
            raw_bandwidth / 1e6,
            100.0 * data / raw_synced_bandwidth,
            raw_synced_bandwidth / 1e6
        );
    }
    for run in &closed {
        println!(
            "  closed loop, {:>2} groups: p99 commit {} us = {:.2}x the raw fdatasync p99 {} us \
             (goal <= 2x)",
            run.groups,
            run.latency.1,
            run.latency.1 as f64 / raw.sync_latency.1.max(1) as f64,
            raw.sync_latency.1
        );
    }
    let _ = fs::remove_dir_all(&base);
}

/// The argument that selects configurations, if any (cargo passes `--bench` too).
fn filter() -> Option<String> {
    std::env::args()
        .skip(1)
        .find(|argument| !argument.starts_with('-'))
}

fn selected(label: &str) -> bool {
    filter().is_none_or(|filter| label.contains(&filter))
}

fn main() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wal-bench");
    LocalExecutorBuilder::default()
        .name("wal-bench")
        .spawn(move || run(base))
        .expect("executor starts")
        .join()
        .expect("bench runs");
}
