//! Client connections of one shard: accept them, read and check frames, hand decoded
//! requests to the shard's loop, and write replies back, with back-pressure on a client
//! that sends faster than it reads. Moves bytes only: where a request runs is the shard
//! core's decision.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use super::shard::Event;
use crate::api::{self, ApiError, ApiRequest, ApiResponse, ErrorCode};
use crate::frame;
use crate::shard::{ClientReply, ConnectionId};

/// Requests one connection may have in flight; its reader waits beyond that.
pub const CONNECTION_REQUESTS_IN_FLIGHT_MAX: u64 = 1024;
/// Encoded replies waiting for one connection's socket; a client that does not read is
/// disconnected rather than buffered without end.
pub const CONNECTION_FRAMES_QUEUED_MAX: usize = 2048;
/// Bytes of those replies past which the connection's next requests wait: a frame may
/// carry megabytes, so the frame count alone would let one client that reads slowly or
/// not at all hold gigabytes of the node's memory. (Requests already taken still add
/// their answers, at most `CONNECTION_REQUESTS_IN_FLIGHT_MAX` of them.)
pub const CONNECTION_QUEUED_BYTES_MAX: usize = 64 << 20;
/// Bytes of queued replies at which the connection is dropped outright: requests taken
/// while the queue was still under [`CONNECTION_QUEUED_BYTES_MAX`] may each answer up to
/// the response budget, and a thousand of them must not add up to gigabytes. A client
/// that pipelines many large scans reads its answers, and the writer drains them long
/// before this.
pub const CONNECTION_QUEUED_BYTES_HARD_MAX: usize = 2 * CONNECTION_QUEUED_BYTES_MAX;
/// A reply write that makes no progress for this long closes the connection: the client
/// stopped reading.
pub const CONNECTION_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Client connections one shard holds.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Bytes of queued reply frames gathered into one socket write (a frame larger than this
/// goes alone).
pub const REPLY_WRITE_BYTES_MAX: usize = 256 << 10;
/// Bytes read from a socket at a time.
pub const READ_CHUNK_BYTES: usize = 64 << 10;

/// A decoded request from a connection of this shard.
#[derive(Debug)]
pub struct ClientRequest {
    pub connection: ConnectionId,
    pub request: ApiRequest,
}

#[derive(Debug)]
struct Connection {
    frames: LocalSender<Vec<u8>>,
    permits: Rc<Semaphore>,
    /// Bytes in `frames` not yet written to the socket (the writer task subtracts).
    queued_bytes: Rc<Cell<usize>>,
    /// Never sent on: dropping the connection closes these channels, which stops its
    /// reader and writer tasks, so the socket is closed and its buffers freed.
    _stop_reader: LocalSender<()>,
    _stop_writer: LocalSender<()>,
}

/// One connection's ends, made when it is accepted.
#[derive(Debug)]
struct ConnectionEnds {
    outgoing: LocalReceiver<Vec<u8>>,
    permits: Rc<Semaphore>,
    queued_bytes: Rc<Cell<usize>>,
    /// The writer tells the reader it wrote a frame (one pending signal is enough).
    written_sender: LocalSender<()>,
    written: LocalReceiver<()>,
    stop_reader: LocalReceiver<()>,
    stop_writer: LocalReceiver<()>,
}

/// The client connections of one shard.
pub struct Connections {
    table: BTreeMap<ConnectionId, Connection>,
    next_id: ConnectionId,
    accepting: bool,
    builder: FlatBufferBuilder<'static>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Connections")
            .field("open", &self.table.len())
            .field("accepting", &self.accepting)
            .finish_non_exhaustive()
    }
}

impl Default for Connections {
    fn default() -> Connections {
        Connections {
            table: BTreeMap::new(),
            next_id: 0,
            accepting: true,
            builder: FlatBufferBuilder::new(),
        }
    }
}

impl Connections {
    /// Encodes and queues an answer or stream item for its connection (gone already:
    /// dropped). An answer too large for a frame is replaced by an error that says so,
    /// since dropping it would leave the client waiting.
    pub fn reply(&mut self, reply: &ClientReply) {
        if !self.table.contains_key(&reply.connection) {
            return;
        }
        let answer_bytes = api::encode_response(&mut self.builder, &reply.response).len();
        if answer_bytes > frame::FRAME_BYTES_MAX {
            let error = ApiError::new(
                ErrorCode::RequestTooLarge,
                format!("the answer of {answer_bytes} bytes exceeds the frame maximum"),
            );
            let refusal = ApiResponse {
                request_id: reply.response.request_id,
                result: Err(error),
            };
            api::encode_response(&mut self.builder, &refusal);
        }
        queue_frame(
            &mut self.table,
            reply.connection,
            self.builder.finished_data(),
            reply.finished,
        );
    }

    /// Bytes and frames of replies queued for `connection` and not yet written to its
    /// socket; `None` once the connection is gone.
    pub fn queued(&self, connection: ConnectionId) -> Option<(usize, usize)> {
        self.table
            .get(&connection)
            .map(|state| (state.queued_bytes.get(), state.frames.len()))
    }

    /// New connections are refused from now on (the shard is stopping).
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    fn register(&mut self) -> Option<(ConnectionId, ConnectionEnds)> {
        if !self.accepting || self.table.len() >= CONNECTIONS_MAX {
            return None;
        }
        let (frames, outgoing) = local_channel::new_bounded(CONNECTION_FRAMES_QUEUED_MAX);
        let (stop_reader_sender, stop_reader) = local_channel::new_bounded(1);
        let (stop_writer_sender, stop_writer) = local_channel::new_bounded(1);
        let (written_sender, written) = local_channel::new_bounded(1);
        let permits = Rc::new(Semaphore::new(CONNECTION_REQUESTS_IN_FLIGHT_MAX));
        let queued_bytes = Rc::new(Cell::new(0));
        self.next_id += 1;
        let id = self.next_id;
        let connection = Connection {
            frames,
            permits: permits.clone(),
            queued_bytes: queued_bytes.clone(),
            _stop_reader: stop_reader_sender,
            _stop_writer: stop_writer_sender,
        };
        self.table.insert(id, connection);
        let ends = ConnectionEnds {
            outgoing,
            permits,
            queued_bytes,
            written_sender,
            written,
            stop_reader,
            stop_writer,
        };
        Some((id, ends))
    }

    fn unregister(&mut self, connection: ConnectionId) {
        self.table.remove(&connection);
    }

    /// Answers a request the reader could not decode but that names its id.
    fn refuse(&mut self, connection: ConnectionId, request_id: u64, error: ApiError) {
        let response = ApiResponse {
            request_id,
            result: Err(error),
        };
        let bytes = api::encode_response(&mut self.builder, &response);
        // No permit was taken for it.
        queue_frame(&mut self.table, connection, bytes, false);
    }
}

/// Frames an encoded response straight from the encoder's buffer and queues it for a
/// connection; `releases` gives back the request's in-flight permit. A free function over
/// the connection table so that the payload can stay borrowed from the builder.
fn queue_frame(
    table: &mut BTreeMap<ConnectionId, Connection>,
    connection: ConnectionId,
    payload: &[u8],
    releases: bool,
) {
    let Some(state) = table.get(&connection) else {
        return;
    };
    if releases {
        state.permits.signal(1);
    }
    let mut frame_bytes = Vec::with_capacity(payload.len() + frame::FRAME_HEADER_BYTES);
    if frame::encode(&mut frame_bytes, payload).is_err() {
        return;
    }
    let queued_bytes = state.queued_bytes.get() + frame_bytes.len();
    if queued_bytes > CONNECTION_QUEUED_BYTES_HARD_MAX
        || state.frames.try_send(frame_bytes).is_err()
    {
        // A client that does not read its replies loses its connection: dropping it
        // stops its tasks, which close the socket.
        table.remove(&connection);
        return;
    }
    state.queued_bytes.set(queued_bytes);
}

/// Binds this shard's client listener (SO_REUSEPORT: every shard binds the same address
/// and the kernel spreads connections) and accepts until it is dropped.
pub fn start_listener(
    address: SocketAddr,
    connections: Rc<RefCell<Connections>>,
    events: Rc<LocalSender<Event>>,
) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(address)?;
    let task = glommio::spawn_local(async move {
        loop {
            let Ok(stream) = listener.accept().await else {
                continue;
            };
            let Some((connection, ends)) = connections.borrow_mut().register() else {
                continue;
            };
            let ConnectionEnds {
                outgoing,
                permits,
                queued_bytes,
                written_sender,
                written,
                stop_reader,
                stop_writer,
            } = ends;
            let _ = stream.set_nodelay(true);
            if stream
                .set_write_timeout(Some(CONNECTION_WRITE_TIMEOUT))
                .is_err()
            {
                connections.borrow_mut().unregister(connection);
                continue;
            }
            let (mut reader, mut writer) = futures_lite::io::split(stream);
            // Each task ends when its connection is dropped (the client closed, broke the
            // protocol, or stopped reading), wherever it is waiting; the socket closes once
            // both halves are gone.
            let writer_connections = connections.clone();
            let writer_queued_bytes = queued_bytes.clone();
            glommio::spawn_local(async move {
                let progress = WriteProgress {
                    queued_bytes: &writer_queued_bytes,
                    written: &written_sender,
                };
                let write = write_replies(&outgoing, &mut writer, &progress);
                futures_lite::future::or(stopped(&stop_writer), write).await;
                // A failed or stalled write ends the connection, reader included.
                writer_connections.borrow_mut().unregister(connection);
            })
            .detach();
            let events = events.clone();
            let connections = connections.clone();
            glommio::spawn_local(async move {
                let room = ReplyRoom {
                    queued_bytes: &queued_bytes,
                    written: &written,
                };
                let reading = Reading {
                    connection,
                    events: &events,
                    permits: &permits,
                    room: &room,
                    connections: &connections,
                };
                let read = reading.run(&mut reader);
                futures_lite::future::or(stopped(&stop_reader), read).await;
                connections.borrow_mut().unregister(connection);
            })
            .detach();
        }
    })
    .detach();
    Ok(task)
}

/// Writes a connection's reply frames until it closes. The frames queued by the time the
/// socket is free go out in one write (up to [`REPLY_WRITE_BYTES_MAX`]): a turn answers
/// many requests of one connection at once, and a send per reply would cost a system call
/// each.
async fn write_replies(
    outgoing: &LocalReceiver<Vec<u8>>,
    writer: &mut (impl futures_lite::AsyncWrite + Unpin),
    progress: &WriteProgress<'_>,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(REPLY_WRITE_BYTES_MAX);
    while let Some(frame) = outgoing.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < REPLY_WRITE_BYTES_MAX {
            match futures_lite::future::poll_once(outgoing.recv()).await {
                Some(Some(frame)) => batch.extend_from_slice(&frame),
                // Nothing more queued now, or the connection is over: write what there is.
                _ => break,
            }
        }
        if writer.write_all(&batch).await.is_err() {
            return;
        }
        progress.wrote(batch.len());
    }
}

/// The writer's side of a connection's reply accounting.
#[derive(Debug)]
struct WriteProgress<'a> {
    queued_bytes: &'a Cell<usize>,
    written: &'a LocalSender<()>,
}

impl WriteProgress<'_> {
    /// Frames of `bytes` left for the socket: room for the reader (one pending signal is
    /// enough to wake it, so a full signal channel loses nothing).
    fn wrote(&self, bytes: usize) {
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(bytes));
        if self.written.is_full() {
            return;
        }
        self.written
            .try_send(())
            .expect("a signal channel with room takes a signal");
    }
}

/// What a connection's reader checks before it takes another request: room among the
/// replies waiting for the socket.
#[derive(Debug)]
struct ReplyRoom<'a> {
    queued_bytes: &'a Cell<usize>,
    written: &'a LocalReceiver<()>,
}

impl ReplyRoom<'_> {
    /// Waits until the queued replies are within [`CONNECTION_QUEUED_BYTES_MAX`]; false
    /// when the writer is gone.
    async fn wait(&self) -> bool {
        while self.queued_bytes.get() > CONNECTION_QUEUED_BYTES_MAX {
            if self.written.recv().await.is_none() {
                return false;
            }
        }
        true
    }
}

/// Resolves once the connection that holds the other end of `stop` is dropped.
async fn stopped(stop: &LocalReceiver<()>) {
    while stop.recv().await.is_some() {}
}

/// One connection's reader and what it needs.
struct Reading<'a> {
    connection: ConnectionId,
    events: &'a Rc<LocalSender<Event>>,
    permits: &'a Rc<Semaphore>,
    room: &'a ReplyRoom<'a>,
    connections: &'a Rc<RefCell<Connections>>,
}

impl Reading<'_> {
    /// Reads frames until the connection closes or misbehaves.
    async fn run(&self, reader: &mut (impl futures_lite::AsyncRead + Unpin)) {
        let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        loop {
            loop {
                let (payload_range, consumed) = match frame::decode(&buffer, frame::FRAME_BYTES_MAX)
                {
                    Ok(Some(decoded)) => (decoded.payload_range(), decoded.consumed_bytes),
                    Ok(None) => break,
                    // Framing is lost: nothing after this point can be trusted.
                    Err(_) => return,
                };
                let decoded = api::decode_request(&buffer[payload_range]);
                buffer.drain(..consumed);
                match decoded {
                    Ok(request) => {
                        if !self.room.wait().await || self.permits.acquire(1).await.is_err() {
                            return;
                        }
                        let event = Event::Client(ClientRequest {
                            connection: self.connection,
                            request,
                        });
                        if self.events.send(event).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => match error.request_id {
                        // A well-formed request this server cannot serve: answer it, keep
                        // going.
                        Some(request_id) => self.connections.borrow_mut().refuse(
                            self.connection,
                            request_id,
                            ApiError::new(error.code, &error.message),
                        ),
                        // Not even a request: close.
                        None => return,
                    },
                }
            }
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
    }
}
