//! Watch figures against a running cluster (start one with `corekv cluster`): latency
//! from a put's commit (its answer at the client) to its event, for a one-key watch and
//! a prefix watch over every group; events per second delivered to 1, 100 and 10,000
//! watchers of one prefix under a put load; and the serving node's memory per watcher
//! (its resident set before and after opening `--idle-watchers` watchers).
//!
//! ```text
//! corekv cluster --nodes 3 --data-dir /tmp/w &
//! cargo bench --bench watch -- --endpoint 127.0.0.1:7379 --pid "$(pgrep -f 'node-id 1 ' | head -1)"
//! ```
//!
//! Watchers share raw connections (`WATCHES_PER_CONNECTION` each), one reader thread per
//! connection; the latency watches go through the SDK's `WatchStream`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv::api::{self, ApiRequest, ApiResult, RequestKind, WatchCreate};
use corekv::client::{Client, ClientOptions, WatchItem, WatchStream};
use corekv::frame::{self, FRAME_BYTES_MAX};
use corekv::kv;

const WATCHES_PER_CONNECTION: usize = 250;
const LATENCY_PUTS: usize = 300;
const LOAD_SECONDS: u64 = 5;
const WRITERS: usize = 4;

fn argument(name: &str) -> Option<String> {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|position| arguments.get(position + 1).cloned())
}

fn put(client: &Client, key: &[u8], value: &[u8]) {
    let op = kv::Op::Put(kv::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..kv::PutRequest::default()
    });
    client.execute(op, false).expect("put");
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * fraction) as usize]
}

/// Commit-to-event latency of `LATENCY_PUTS` sequential puts seen by `stream`.
fn latency(client: &Client, stream: &mut WatchStream, key: &[u8], label: &str) {
    let mut from_commit = Vec::new();
    let mut from_start = Vec::new();
    for index in 0..LATENCY_PUTS {
        let started = Instant::now();
        put(client, key, format!("{index}").as_bytes());
        let committed = Instant::now();
        loop {
            match stream.next(Duration::from_secs(10)).expect("watch") {
                Some(WatchItem::Events { events, .. })
                    if events
                        .iter()
                        .any(|e| e.kv.value == format!("{index}").as_bytes()) =>
                {
                    break
                }
                None => panic!("no event for put {index}"),
                _ => {}
            }
        }
        let arrived = Instant::now();
        from_commit.push(arrived.saturating_duration_since(committed));
        from_start.push(arrived - started);
    }
    from_commit.sort();
    from_start.sort();
    println!(
        "{label}: commit-to-event p50 {:?} p99 {:?}; put-start-to-event p50 {:?} p99 {:?} ({LATENCY_PUTS} puts)",
        percentile(&from_commit, 0.5),
        percentile(&from_commit, 0.99),
        percentile(&from_start, 0.5),
        percentile(&from_start, 0.99)
    );
}

/// Opens `count` watches of `prefix` on `endpoint` from `start`, spread over
/// connections; each connection's reader counts the events it gets.
fn open_watchers(
    endpoint: &str,
    prefix: &[u8],
    count: usize,
    events: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut readers = Vec::new();
    let mut opened = 0;
    while opened < count {
        let here = (count - opened).min(WATCHES_PER_CONNECTION);
        let mut stream = TcpStream::connect(endpoint).expect("connect");
        stream.set_nodelay(true).unwrap();
        let mut bytes = Vec::new();
        for watch in 0..here {
            let request = ApiRequest {
                request_id: watch as u64 + 1,
                kind: RequestKind::WatchCreate {
                    create: WatchCreate::prefix(prefix),
                    seen_revision: 0,
                },
            };
            frame::encode(&mut bytes, &api::request_to_bytes(&request)).unwrap();
        }
        stream.write_all(&bytes).unwrap();
        let (events, stop) = (events.clone(), stop.clone());
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        readers.push(std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let mut chunk = vec![0u8; 256 << 10];
            while !stop.load(Ordering::Relaxed) {
                match stream.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                    Err(_) => continue,
                }
                let mut consumed = 0;
                while let Ok(Some(decoded)) = frame::decode(&buffer[consumed..], FRAME_BYTES_MAX) {
                    consumed += decoded.consumed_bytes;
                    if let Ok(api::ApiResponse {
                        result: Ok(ApiResult::Watch(watch)),
                        ..
                    }) = api::decode_response(decoded.payload)
                    {
                        assert!(!watch.canceled, "cancelled: {}", watch.cancel_reason);
                        events.fetch_add(watch.events.len() as u64, Ordering::Relaxed);
                    }
                }
                buffer.drain(..consumed);
            }
        }));
        opened += here;
    }
    readers
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    // `cargo bench` passes --bench; without an endpoint there is nothing to measure.
    let Some(endpoint) = argument("--endpoint") else {
        println!("watch bench: give --endpoint HOST:PORT of a running cluster (see the docs)");
        return;
    };
    let options = ClientOptions {
        request_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let client = Client::connect(std::slice::from_ref(&endpoint), options).expect("connect");
    let open = |create| {
        WatchStream::open(vec![endpoint.clone()], create, 0, Duration::from_secs(2)).expect("watch")
    };
    let mut one = open(WatchCreate::key("bench/latency"));
    latency(
        &client,
        &mut one,
        b"bench/latency",
        "one-key watch (one group)",
    );
    let mut prefix = open(WatchCreate::prefix("bench/"));
    latency(
        &client,
        &mut prefix,
        b"bench/latency",
        "prefix watch (every group)",
    );
    drop((one, prefix));

    for watchers in [1usize, 100, 10_000] {
        let events = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let prefix = format!("load{watchers}/");
        let readers = open_watchers(&endpoint, prefix.as_bytes(), watchers, &events, &stop);
        std::thread::sleep(Duration::from_secs(1));
        let puts = AtomicU64::new(0);
        let started = Instant::now();
        let before = events.load(Ordering::Relaxed);
        std::thread::scope(|scope| {
            for writer in 0..WRITERS {
                let (client, prefix, puts) = (&client, &prefix, &puts);
                scope.spawn(move || {
                    let mut index = 0u64;
                    while started.elapsed() < Duration::from_secs(LOAD_SECONDS) {
                        let key = format!("{prefix}{writer}/{}", index % 64);
                        put(client, key.as_bytes(), b"value");
                        puts.fetch_add(1, Ordering::Relaxed);
                        index += 1;
                    }
                });
            }
        });
        let written = puts.load(Ordering::Relaxed);
        // Let the last events arrive.
        let expected = before + written * watchers as u64;
        let drain_until = Instant::now() + Duration::from_secs(30);
        while events.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = started.elapsed();
        let delivered = events.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            let _ = reader.join();
        }
        println!(
            "{watchers} watchers of one prefix: {written} puts, {delivered} events delivered \
             (expected {}), {:.0} events/s over {elapsed:?}",
            written * watchers as u64,
            delivered as f64 / elapsed.as_secs_f64()
        );
    }

    if let (Some(pid), Some(idle)) = (argument("--pid"), argument("--idle-watchers")) {
        let count: usize = idle.parse().expect("a count");
        let before = rss_kib(&pid).expect("the server's rss");
        let events = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let readers = open_watchers(&endpoint, b"idle/", count, &events, &stop);
        std::thread::sleep(Duration::from_secs(5));
        let after = rss_kib(&pid).expect("the server's rss");
        println!(
            "{count} idle watchers: server rss {before} KiB -> {after} KiB, {:.0} bytes per watcher",
            (after.saturating_sub(before) * 1024) as f64 / count as f64
        );
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            let _ = reader.join();
        }
    }
}
