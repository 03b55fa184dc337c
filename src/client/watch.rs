//! A watch as a stream of event batches that resumes by itself: after a disconnect, a
//! node failure or a node shutting down it opens the watch again on another node from the
//! revision after the last one delivered, so the caller sees every change once, in
//! revision order. A compacted start revision ends it with [`WatchError::Compacted`].
//!
//! Each stream has a connection of its own (a watch is many answers to one request; the
//! shared connections of [`super::Client`] hold one answer per request). Every response
//! of a watch carries the revision through which every event has been sent, so resuming
//! from that revision plus one loses and repeats nothing, whichever replica serves the
//! resumed watch: a replica behind the others only makes it wait.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::Client;
use crate::api::{
    self, ApiRequest, ApiResponse, ApiResult, ErrorCode, RequestKind, WatchCreate, WatchEvent,
};
use crate::frame::{self, FRAME_BYTES_MAX};

/// Silence on a watch's connection after which it is taken for dead and the watch resumes
/// elsewhere. The stream asks for progress notifications, which a live node sends at
/// least every second or so (`shard::watch::WATCH_PROGRESS_INTERVAL_TICKS` ticks).
pub const WATCH_SILENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stream keeps trying to resume before it gives up.
pub const WATCH_RESUME_DEADLINE: Duration = Duration::from_secs(30);
/// First pause between two tries to resume; doubled up to [`WATCH_RESUME_BACKOFF_MAX`].
pub const WATCH_RESUME_BACKOFF_INITIAL: Duration = Duration::from_millis(20);
pub const WATCH_RESUME_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The request id (and so the watch id) a stream's watch has on its own connection.
const WATCH_REQUEST_ID: u64 = 1;

/// Why a watch stream ended.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WatchError {
    /// The revision to resume from is at or below this compaction revision.
    #[error(
        "the watch's revision {revision} is compacted (compaction revision {compact_revision})"
    )]
    Compacted {
        revision: u64,
        compact_revision: u64,
    },
    /// The server cancelled the watch (a watcher too slow for its buffer, say); resume
    /// with a new watch from `resume_revision`.
    #[error("the server cancelled the watch: {reason} (resume from {resume_revision})")]
    Cancelled {
        reason: String,
        resume_revision: u64,
    },
    #[error("refused by the server: {code}: {message}")]
    Rejected { code: ErrorCode, message: String },
    #[error("no node could serve the watch within {WATCH_RESUME_DEADLINE:?}: {last_error}")]
    Unavailable { last_error: String },
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What a stream delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// Changes, in revision order, every change of one revision in one item; every change
    /// through `revision` has now been delivered.
    Events {
        revision: u64,
        events: Vec<WatchEvent>,
    },
    /// Every change through `revision` has been delivered (only when the watch asked for
    /// progress notifications).
    Progress { revision: u64 },
}

/// One watch, resumed across connections and nodes.
#[derive(Debug)]
pub struct WatchStream {
    addresses: Vec<String>,
    /// The watch as asked; its `start_revision` moves on as events are delivered.
    create: WatchCreate,
    progress_wanted: bool,
    /// The revision the next opening starts at; 0 until the first opening said where
    /// "now" was.
    next: u64,
    seen_revision: u64,
    connection: Option<TcpStream>,
    buffer: Vec<u8>,
    address_index: usize,
    connect_timeout: Duration,
    /// Openings so far (1 for a stream that never resumed).
    openings: u64,
    /// When the serving node last sent anything.
    last_heard: Instant,
}

impl Client {
    /// Opens a watch stream over this client's nodes.
    pub fn watch(&self, create: WatchCreate) -> Result<WatchStream, WatchError> {
        WatchStream::open(
            self.node_addresses(),
            create,
            self.seen_revision(),
            self.options().connect_timeout,
        )
    }
}

impl WatchStream {
    /// Opens `create` on the first of `addresses` that serves it.
    pub fn open(
        addresses: Vec<String>,
        create: WatchCreate,
        seen_revision: u64,
        connect_timeout: Duration,
    ) -> Result<WatchStream, WatchError> {
        if addresses.is_empty() {
            return Err(WatchError::Unavailable {
                last_error: "no node addresses".into(),
            });
        }
        let mut stream = WatchStream {
            addresses,
            next: create.start_revision,
            progress_wanted: create.progress_notify,
            create,
            seen_revision,
            connection: None,
            buffer: Vec::new(),
            address_index: 0,
            connect_timeout,
            openings: 0,
            last_heard: Instant::now(),
        };
        stream.resume()?;
        Ok(stream)
    }

    /// The revision the stream would resume from: every change before it was delivered.
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    /// How many times the watch was opened (1 + the resumptions).
    pub fn openings(&self) -> u64 {
        self.openings
    }

    /// The address of the node serving the watch now.
    pub fn serving_address(&self) -> &str {
        &self.addresses[self.address_index % self.addresses.len()]
    }

    /// The next item, waiting for it until `timeout` has passed (`Ok(None)` then).
    /// Resumes on another node when the serving one fails.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<WatchItem>, WatchError> {
        let until = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            let silent_until = self.last_heard + WATCH_SILENCE_TIMEOUT;
            let wait = until.min(silent_until).saturating_duration_since(now);
            let read = if wait.is_zero() {
                Ok(None)
            } else {
                self.read_response(wait)
            };
            match read {
                Ok(Some(response)) => {
                    self.last_heard = Instant::now();
                    if let Some(item) = self.take(response)? {
                        return Ok(Some(item));
                    }
                }
                Ok(None) if Instant::now() < silent_until => {
                    if Instant::now() >= until {
                        return Ok(None);
                    }
                }
                // Silent for too long, or broken: resume elsewhere.
                Ok(None) | Err(_) => {
                    self.connection = None;
                    self.address_index += 1;
                    self.resume()?;
                }
            }
        }
    }

    /// Takes in one response; an item for the caller, or nothing (a creation).
    fn take(&mut self, response: ApiResponse) -> Result<Option<WatchItem>, WatchError> {
        let watch = match response.result {
            Ok(ApiResult::Watch(watch)) => watch,
            Ok(other) => {
                return Err(WatchError::Protocol(format!(
                    "a watch got a non-watch answer: {other:?}"
                )))
            }
            Err(error) => {
                return Err(WatchError::Rejected {
                    code: error.code,
                    message: error.message,
                })
            }
        };
        self.seen_revision = self.seen_revision.max(watch.revision);
        if watch.canceled {
            self.connection = None;
            if watch.compact_revision > 0 {
                return Err(WatchError::Compacted {
                    revision: self.next,
                    compact_revision: watch.compact_revision,
                });
            }
            if watch.cancel_reason.contains("shutting down") {
                // Another node serves it from where this one stopped.
                self.address_index += 1;
                self.resume()?;
                return Ok(None);
            }
            return Err(WatchError::Cancelled {
                reason: watch.cancel_reason,
                resume_revision: self.next,
            });
        }
        if watch.created {
            if self.next == 0 {
                self.next = watch.revision + 1;
            }
            return Ok(None);
        }
        if self.next == 0 {
            return Err(WatchError::Protocol("events before the creation".into()));
        }
        // Everything before `next` was delivered already (a server never sends it twice;
        // a resumed watch starts at `next`).
        let events: Vec<WatchEvent> = watch
            .events
            .into_iter()
            .filter(|event| event.revision() >= self.next)
            .collect();
        let revision = watch.revision;
        if revision + 1 < self.next {
            return Ok(None);
        }
        self.next = revision + 1;
        if !events.is_empty() {
            return Ok(Some(WatchItem::Events { revision, events }));
        }
        if self.progress_wanted {
            return Ok(Some(WatchItem::Progress { revision }));
        }
        Ok(None)
    }

    /// Opens the watch again from `next` on the next node that takes it.
    fn resume(&mut self) -> Result<(), WatchError> {
        let deadline = Instant::now() + WATCH_RESUME_DEADLINE;
        let mut backoff = WATCH_RESUME_BACKOFF_INITIAL;
        let mut last_error: String;
        loop {
            let address = self.serving_address().to_string();
            match self.open_on(&address) {
                Ok(()) => {
                    self.openings += 1;
                    self.last_heard = Instant::now();
                    return Ok(());
                }
                Err(OpenError::Fatal(error)) => return Err(error),
                Err(OpenError::Retry(error)) => last_error = format!("{address}: {error}"),
            }
            self.connection = None;
            self.address_index += 1;
            if Instant::now() + backoff >= deadline {
                return Err(WatchError::Unavailable { last_error });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(WATCH_RESUME_BACKOFF_MAX);
        }
    }

    /// Connects to `address` and creates the watch there, waiting for its creation.
    fn open_on(&mut self, address: &str) -> Result<(), OpenError> {
        let retry = |error: io::Error| OpenError::Retry(error.to_string());
        let socket: SocketAddr = address
            .to_socket_addrs()
            .map_err(retry)?
            .next()
            .ok_or_else(|| OpenError::Retry("resolves to no address".into()))?;
        let mut connection =
            TcpStream::connect_timeout(&socket, self.connect_timeout).map_err(retry)?;
        connection.set_nodelay(true).map_err(retry)?;
        connection
            .set_write_timeout(Some(WATCH_SILENCE_TIMEOUT))
            .map_err(retry)?;
        let request = ApiRequest {
            request_id: WATCH_REQUEST_ID,
            kind: RequestKind::WatchCreate {
                create: WatchCreate {
                    start_revision: self.next,
                    progress_notify: true,
                    ..self.create.clone()
                },
                seen_revision: self.seen_revision,
            },
        };
        let mut bytes = Vec::new();
        frame::encode(&mut bytes, &api::request_to_bytes(&request))
            .map_err(|error| OpenError::Fatal(WatchError::Protocol(error.to_string())))?;
        connection.write_all(&bytes).map_err(retry)?;
        self.connection = Some(connection);
        self.buffer.clear();
        let response = match self.read_response(self.connect_timeout.max(WATCH_SILENCE_TIMEOUT)) {
            Ok(Some(response)) => response,
            Ok(None) => return Err(OpenError::Retry("no answer to the watch".into())),
            Err(error) => return Err(OpenError::Retry(error.to_string())),
        };
        match &response.result {
            Ok(ApiResult::Watch(watch)) if watch.created => {
                self.take(response).map_err(OpenError::Fatal)?;
                Ok(())
            }
            // A node without every watched group, or one that stops: another may serve.
            Err(error)
                if matches!(
                    error.code,
                    ErrorCode::NotLeader
                        | ErrorCode::NoLeader
                        | ErrorCode::ShuttingDown
                        | ErrorCode::Overloaded
                ) =>
            {
                Err(OpenError::Retry(error.to_string()))
            }
            _ => match self.take(response) {
                Err(error) => Err(OpenError::Fatal(error)),
                Ok(_) => Err(OpenError::Fatal(WatchError::Protocol(
                    "the watch's first answer is not its creation".into(),
                ))),
            },
        }
    }

    /// Reads the next response of the watch's connection within `wait`; `Ok(None)` when
    /// none came in time.
    fn read_response(&mut self, wait: Duration) -> io::Result<Option<ApiResponse>> {
        let until = Instant::now() + wait;
        loop {
            match frame::decode(&self.buffer, FRAME_BYTES_MAX) {
                Ok(Some(decoded)) => {
                    let consumed = decoded.consumed_bytes;
                    let response = api::decode_response(decoded.payload);
                    self.buffer.drain(..consumed);
                    return match response {
                        Ok(response) => Ok(Some(response)),
                        Err(error) => Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            error.to_string(),
                        )),
                    };
                }
                Ok(None) => {}
                Err(error) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        error.to_string(),
                    ))
                }
            }
            let Some(connection) = self.connection.as_mut() else {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "no connection"));
            };
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            connection.set_read_timeout(Some((until - now).max(Duration::from_millis(1))))?;
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            match connection.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the node closed the watch's connection",
                    ))
                }
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[derive(Debug)]
enum OpenError {
    Retry(String),
    Fatal(WatchError),
}
