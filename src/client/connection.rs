//! One pipelined TCP connection to one node: many requests in flight at once, each
//! matched to its response by request id.
//!
//! Callers queue whole frames in an outbox ([`Connection::send`]) and get a [`Call`] with
//! its own one-answer mailbox; a reader thread decodes response frames and hands each to
//! the call of its request id (and pushes the call's tag to its completion queue, when it
//! has one). A call is waited on at once (a blocking call) or later, and may be asked
//! whether its answer is in without waiting, so one thread can have many calls out. At
//! most `in_flight_max` requests are out at once; a caller past the bound waits for a
//! slot. When the connection breaks, every waiting call learns it at once and the
//! connection stays closed (the [`Node`](super::node::Node) opens a new one).
//!
//! The outbox combines writes: the caller that finds nobody writing becomes the writer
//! and sends everything queued, again and again until the outbox is empty, while other
//! callers only append their frame and wait. Under load one system call carries many
//! requests instead of one each. A caller that starts several requests at once may also
//! queue them without writing ([`WriteWhen::Deferred`]) and [`Connection::flush`] them
//! together. The outbox holds at most one frame per request in flight, so
//! `in_flight_max` bounds it too.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;

use super::attempt::CallError;
use super::completions::Notify;
use crate::api::{self, ApiRequest, ApiResponse};
use crate::frame::{self, FRAME_BYTES_MAX};

/// Bytes asked of the socket per read. Responses larger than this arrive over several
/// reads; the buffer never holds more than one frame plus one read (the frame decoder
/// refuses a length over [`FRAME_BYTES_MAX`] before anything waits for it).
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes of outbox buffer a connection keeps for its next frames once written.
const OUTBOX_KEPT_BYTES_MAX: usize = 1 << 20;

/// Bytes of encoding buffer a thread keeps between requests; a larger request gets a
/// buffer of its own that is dropped after it.
const ENCODER_KEPT_BYTES_MAX: usize = 64 * 1024;

thread_local! {
    /// Each thread's request encoder, reused so that a request costs no allocation of
    /// its own buffer.
    static ENCODER: std::cell::RefCell<FlatBufferBuilder<'static>> =
        std::cell::RefCell::new(FlatBufferBuilder::with_capacity(1024));
}

/// What the reader hands to a waiting caller.
type Delivery = Result<ApiResponse, CallError>;

/// When a request queued by [`Connection::send`] is written to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteWhen {
    /// At once, by this caller unless another caller is writing already.
    Now,
    /// By the next [`Connection::flush`], or by a caller that writes before that.
    Deferred,
}

/// The place where the reader leaves one call's answer. It holds at most one: the reader
/// hands an answer only to a waiter it removed from `State::pending`, which happens once.
#[derive(Debug, Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    /// Signalled when the answer is left while the call waits for it.
    filled: Condvar,
}

#[derive(Debug, Default)]
struct MailboxState {
    delivery: Option<Delivery>,
    /// The call is blocked in [`Mailbox::wait_until`]; nobody is woken otherwise.
    waiting: bool,
}

impl Mailbox {
    fn put(&self, delivery: Delivery) {
        let wake = {
            let mut state = lock(&self.state);
            assert!(state.delivery.is_none(), "a call gets one answer");
            state.delivery = Some(delivery);
            state.waiting
        };
        if wake {
            self.filled.notify_one();
        }
    }

    fn take(&self) -> Option<Delivery> {
        lock(&self.state).delivery.take()
    }

    /// The answer, waiting for it until `until`; `None` when none came by then.
    fn wait_until(&self, until: Instant) -> Option<Delivery> {
        let mut state = lock(&self.state);
        loop {
            if let Some(delivery) = state.delivery.take() {
                return Some(delivery);
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            state.waiting = true;
            state = self
                .filled
                .wait_timeout(state, until - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            state.waiting = false;
        }
    }
}

/// Where a request's answer goes: the call's mailbox, and the completion queue to tell.
#[derive(Debug)]
struct Waiter {
    mailbox: Arc<Mailbox>,
    notify: Option<Notify>,
}

impl Waiter {
    /// Leaves the call its answer (which nobody reads if the call was given up) and tells
    /// its completion queue.
    fn hand(self, delivery: Delivery) {
        self.mailbox.put(delivery);
        if let Some(notify) = &self.notify {
            notify.push();
        }
    }
}

/// The callers waiting for responses and the frames queued for the socket, shared with
/// the reader thread and the calls.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a request leaves `pending` or the connection closes.
    slot_freed: Condvar,
    /// A handle on the socket to shut it down from any side when the connection closes.
    socket: TcpStream,
    /// The socket's write side; only the caller that set `Outbox::writing` writes.
    writer: TcpStream,
    outbox: Mutex<Outbox>,
}

#[derive(Debug, Default)]
struct State {
    /// Request id -> where its answer goes.
    pending: HashMap<u64, Waiter>,
    /// Why the connection closed; once set, it stays set.
    closed: Option<String>,
    /// Responses read so far: a connection that never answered is no proof of health.
    responses: u64,
    /// Callers waiting for a free slot; nobody is woken when there are none.
    slot_waiters: usize,
}

/// Frames queued for the socket, and whether a caller is writing them.
#[derive(Debug, Default)]
struct Outbox {
    /// Whole frames, in the order they were queued.
    bytes: Vec<u8>,
    /// Each queued frame's request id and the offset in `bytes` where it ends.
    frames: Vec<(u64, usize)>,
    /// A caller is writing (and will keep writing until the outbox is empty).
    writing: bool,
}

/// Locks a mutex even when a thread panicked while holding it: the state behind these
/// mutexes stays consistent at every unlock, so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Closes the connection: fails every waiting caller with `Lost` and shuts the socket
    /// down so the reader thread and the server see the end. Only the first reason is kept.
    fn close(&self, reason: String) {
        let mut state = lock(&self.state);
        if state.closed.is_some() {
            return;
        }
        for (_, waiter) in state.pending.drain() {
            waiter.hand(Err(CallError::Lost(reason.clone())));
        }
        state.closed = Some(reason);
        drop(state);
        self.slot_freed.notify_all();
        // The socket may already be shut down by the peer; nothing more to do then.
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    /// Removes a waiting caller (it gave up, or its request was never sent).
    fn forget(&self, request_id: u64) {
        self.take_waiter(request_id, false);
    }

    /// Removes the caller waiting for `request_id` and frees its slot (waking a caller
    /// that waits for one); `answered` counts a response read from the server.
    fn take_waiter(&self, request_id: u64, answered: bool) -> Option<Waiter> {
        let (waiter, wake) = {
            let mut state = lock(&self.state);
            if answered {
                state.responses += 1;
            }
            let waiter = state.pending.remove(&request_id);
            let wake = waiter.is_some() && state.slot_waiters > 0;
            (waiter, wake)
        };
        if wake {
            self.slot_freed.notify_one();
        }
        waiter
    }

    /// Hands a decoded response to its caller. A response nobody waits for (the caller
    /// timed out) is dropped.
    fn deliver(&self, request_id: u64, delivery: Delivery) {
        if let Some(waiter) = self.take_waiter(request_id, true) {
            waiter.hand(delivery);
        }
    }

    /// Ends a request that never fully left this process with `NotSent`.
    fn fail_unsent(&self, request_id: u64, reason: &str) {
        if let Some(waiter) = self.take_waiter(request_id, false) {
            waiter.hand(Err(CallError::NotSent(reason.to_string())));
        }
    }
}

/// A pipelined connection to one node.
#[derive(Debug)]
pub(crate) struct Connection {
    address: String,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    next_request_id: AtomicU64,
    in_flight_max: usize,
}

/// Resolves `address` ("host:port") and connects to the first of its addresses that
/// answers within `timeout`.
fn connect_stream(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let candidates: Vec<SocketAddr> = address.to_socket_addrs()?.collect();
    let mut last_error = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{address} resolves to no address"),
    );
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

impl Connection {
    /// Connects to `address` and starts the reader thread. Writes that block longer than
    /// `write_timeout` (a server that stopped reading), and data left unacknowledged by
    /// the server's kernel that long (a cut path), fail and close the connection.
    pub(crate) fn open(
        address: &str,
        connect_timeout: Duration,
        write_timeout: Duration,
        in_flight_max: usize,
    ) -> io::Result<Connection> {
        assert!(
            in_flight_max > 0,
            "a connection carries at least one request"
        );
        let stream = connect_stream(address, connect_timeout)?;
        // Requests are whole frames written at once; Nagle would only delay them.
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(write_timeout))?;
        // A request unacknowledged by the node's kernel that long means the path is cut:
        // the kernel aborts the connection, so that after a heal the next request opens a
        // new one instead of queueing behind retransmissions that back off for seconds.
        crate::tcp::set_unacknowledged_timeout(&stream, write_timeout)?;
        let reader_stream = stream.try_clone()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            slot_freed: Condvar::new(),
            socket: stream.try_clone()?,
            writer: stream,
            outbox: Mutex::new(Outbox::default()),
        });
        let reader_shared = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name(format!("corekv-client-reader {address}"))
            .spawn(move || read_loop(reader_stream, &reader_shared))?;
        Ok(Connection {
            address: address.to_string(),
            shared,
            reader: Some(reader),
            next_request_id: AtomicU64::new(1),
            in_flight_max,
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Why the connection closed, or `None` while it is open.
    pub(crate) fn closed_reason(&self) -> Option<String> {
        lock(&self.shared.state).closed.clone()
    }

    /// True once the server has answered at least one request on this connection.
    pub(crate) fn has_answered(&self) -> bool {
        lock(&self.shared.state).responses > 0
    }

    /// Sends `request` under a fresh request id (written into it) and waits for its
    /// response until `wait_until`.
    pub(crate) fn call(
        &self,
        request: &mut ApiRequest,
        wait_until: Instant,
    ) -> Result<ApiResponse, CallError> {
        self.send(request, wait_until, None, WriteWhen::Now)?
            .wait(wait_until)
    }

    /// Sends `request` under a fresh request id (written into it) and returns the call
    /// that its answer will reach, without waiting for it. Waits only for a free slot
    /// among the requests in flight, until `wait_until`. `notify` is told when the call
    /// ends (answered, lost, or not sent after all). `write` says whether this caller
    /// writes the request now or leaves it for a flush.
    pub(crate) fn send(
        &self,
        request: &mut ApiRequest,
        wait_until: Instant,
        notify: Option<&Notify>,
        write: WriteWhen,
    ) -> Result<Call, CallError> {
        let mailbox = Arc::new(Mailbox::default());
        {
            let mut state = lock(&self.shared.state);
            let mut flushed = false;
            loop {
                if let Some(reason) = &state.closed {
                    return Err(CallError::NotSent(format!("connection closed: {reason}")));
                }
                if state.pending.len() < self.in_flight_max {
                    break;
                }
                let now = Instant::now();
                if now >= wait_until {
                    return Err(CallError::InFlightFull(self.in_flight_max));
                }
                if !flushed {
                    // Slots free up only as answers come, and deferred requests get no
                    // answer before they are written.
                    drop(state);
                    self.flush();
                    flushed = true;
                    state = lock(&self.shared.state);
                    continue;
                }
                state.slot_waiters += 1;
                state = self
                    .shared
                    .slot_freed
                    .wait_timeout(state, wait_until - now)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
                state.slot_waiters -= 1;
            }
            request.request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
            let waiter = Waiter {
                mailbox: Arc::clone(&mailbox),
                notify: notify.cloned(),
            };
            let previous = state.pending.insert(request.request_id, waiter);
            assert!(previous.is_none(), "request ids are unique per connection");
        }
        let call = Call {
            shared: Arc::clone(&self.shared),
            request_id: request.request_id,
            mailbox,
            arrived: None,
            open: true,
            deferred: write == WriteWhen::Deferred,
        };

        ENCODER.with_borrow_mut(|builder| self.queue(request, builder, call, write))
    }

    /// Encodes `request` with `builder` and queues its frame; see [`Connection::send`].
    fn queue(
        &self,
        request: &ApiRequest,
        builder: &mut FlatBufferBuilder<'static>,
        call: Call,
        write: WriteWhen,
    ) -> Result<Call, CallError> {
        let payload = api::encode_request(builder, request);
        let payload_bytes = payload.len();
        if payload_bytes > FRAME_BYTES_MAX {
            *builder = FlatBufferBuilder::with_capacity(ENCODER_KEPT_BYTES_MAX);
            // Dropping the call forgets its request id.
            return Err(CallError::TooLarge {
                bytes: payload_bytes,
            });
        }
        let mut outbox = lock(&self.shared.outbox);
        // A writer that failed closed the connection while holding the outbox, so a frame
        // queued after this check is written or failed as `NotSent` by a writer. (Only
        // when the reader closes the connection in between does a frame that never left
        // end as `Lost`, which is the cautious answer.)
        if let Some(reason) = self.closed_reason() {
            drop(outbox);
            return Err(CallError::NotSent(format!("connection closed: {reason}")));
        }
        frame::encode(&mut outbox.bytes, payload).expect("the length was checked above");
        let end = outbox.bytes.len();
        outbox.frames.push((call.request_id, end));
        if write == WriteWhen::Now && !outbox.writing {
            outbox.writing = true;
            self.shared.write_outbox(outbox);
        } else {
            drop(outbox);
        }
        if payload_bytes > ENCODER_KEPT_BYTES_MAX {
            // A large request would otherwise pin its buffer to the thread for good.
            *builder = FlatBufferBuilder::with_capacity(ENCODER_KEPT_BYTES_MAX);
        }
        Ok(call)
    }

    /// Writes the requests queued with [`WriteWhen::Deferred`], unless a caller is writing
    /// already (it writes them too).
    pub(crate) fn flush(&self) {
        self.shared.flush();
    }
}

/// A request sent on a connection, whose answer is awaited. Dropping it before the answer
/// frees its slot; an answer that arrives later is dropped.
#[derive(Debug)]
pub(crate) struct Call {
    shared: Arc<Shared>,
    request_id: u64,
    mailbox: Arc<Mailbox>,
    /// The answer, once [`Call::poll`] found it.
    arrived: Option<Delivery>,
    /// The request still holds its slot: no answer was taken and it was not forgotten.
    open: bool,
    /// The request was queued without being written: waiting for its answer flushes it
    /// first.
    deferred: bool,
}

impl Call {
    /// Takes the answer if it has arrived, without waiting. True when it has, so that
    /// [`Call::wait`] returns at once.
    pub(crate) fn poll(&mut self) -> bool {
        if self.arrived.is_some() {
            return true;
        }
        match self.mailbox.take() {
            Some(delivery) => {
                self.open = false;
                self.arrived = Some(delivery);
                true
            }
            None => false,
        }
    }

    /// The answer, waiting for it until `wait_until` (not at all once that has passed).
    pub(crate) fn wait(mut self, wait_until: Instant) -> Result<ApiResponse, CallError> {
        if let Some(delivery) = self.arrived.take() {
            return delivery;
        }
        if self.deferred {
            // An answer cannot come to a request that never left.
            self.shared.flush();
        }
        let delivery = match self.mailbox.wait_until(wait_until) {
            Some(delivery) => delivery,
            None => {
                self.shared.forget(self.request_id);
                // The response may have been handed over between the timeout and the
                // removal.
                self.mailbox.take().unwrap_or(Err(CallError::TimedOut))
            }
        };
        self.open = false;
        delivery
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.open {
            self.shared.forget(self.request_id);
        }
    }
}

impl Shared {
    /// Writes the queued frames, unless a caller is writing already (it writes them too).
    fn flush(&self) {
        let mut outbox = lock(&self.outbox);
        if outbox.writing || outbox.bytes.is_empty() {
            return;
        }
        outbox.writing = true;
        self.write_outbox(outbox);
    }

    /// Writes the outbox until it is empty; the caller has set `writing`. When a write
    /// fails, the frames that were not wholly written cannot have been decoded by the
    /// server: their callers learn `NotSent`; the frames before them may have arrived, and
    /// their callers learn `Lost` when the connection closes.
    fn write_outbox<'a>(&'a self, mut outbox: MutexGuard<'a, Outbox>) {
        let mut bytes = Vec::new();
        let mut frames = Vec::new();
        loop {
            if outbox.bytes.is_empty() {
                // The buffers just written go back, so the next frames need no
                // allocation (unless a burst made them larger than worth keeping).
                debug_assert!(outbox.frames.is_empty() && frames.is_empty());
                if bytes.capacity() <= OUTBOX_KEPT_BYTES_MAX {
                    std::mem::swap(&mut bytes, &mut outbox.bytes);
                    std::mem::swap(&mut frames, &mut outbox.frames);
                }
                outbox.writing = false;
                return;
            }
            std::mem::swap(&mut bytes, &mut outbox.bytes);
            std::mem::swap(&mut frames, &mut outbox.frames);
            drop(outbox);
            let (written, result) = write_counted(&self.writer, &bytes);
            if let Err(error) = result {
                let reason = format!("write failed: {error}");
                for &(request_id, end) in &frames {
                    if end > written {
                        self.fail_unsent(request_id, &reason);
                    }
                }
                let mut outbox = lock(&self.outbox);
                for (request_id, _) in outbox.frames.drain(..) {
                    self.fail_unsent(request_id, &reason);
                }
                outbox.bytes.clear();
                // Part of a frame may be out: nothing after it could be parsed, so the
                // connection is over. It closes before the outbox is released, so no
                // caller queues a frame behind the broken one.
                self.close(reason);
                outbox.writing = false;
                return;
            }
            bytes.clear();
            frames.clear();
            outbox = lock(&self.outbox);
        }
    }
}

/// Writes all of `bytes`; returns how many were written before an error, if one came.
fn write_counted(mut stream: &TcpStream, bytes: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => {
                let error = io::Error::new(io::ErrorKind::WriteZero, "the socket took no byte");
                return (written, Err(error));
            }
            Ok(count) => written += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return (written, Err(error)),
        }
    }
    (written, Ok(()))
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared
            .close("the client closed the connection".to_string());
        if let Some(reader) = self.reader.take() {
            // The socket is shut down, so the reader's next read returns at once. A
            // panic in the reader has already failed every caller; nothing to add.
            let _ = reader.join();
        }
    }
}

/// The reader thread: decodes frames until the connection ends, then closes it.
fn read_loop(mut stream: TcpStream, shared: &Shared) {
    let reason = match read_frames(&mut stream, shared) {
        Ok(()) => "closed by the server".to_string(),
        Err(reason) => reason,
    };
    shared.close(reason);
}

/// Reads and dispatches frames; returns when the server closes the connection, or with
/// the reason the stream cannot go on.
fn read_frames(stream: &mut TcpStream, shared: &Shared) -> Result<(), String> {
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let mut consumed = 0;
        loop {
            match frame::decode(&buffer[consumed..], FRAME_BYTES_MAX) {
                Ok(Some(decoded)) => {
                    dispatch(decoded.payload, shared)?;
                    consumed += decoded.consumed_bytes;
                }
                Ok(None) => break,
                Err(error) => return Err(format!("bad frame: {error}")),
            }
        }
        buffer.drain(..consumed);
        debug_assert!(buffer.len() < frame::frame_bytes(FRAME_BYTES_MAX));
        let read = match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(format!("read failed: {error}")),
        };
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Decodes one response and hands it to its caller. A response whose request id cannot
/// be read ends the connection: it cannot be matched, and the stream is not trusted.
fn dispatch(payload: &[u8], shared: &Shared) -> Result<(), String> {
    match api::decode_response(payload) {
        Ok(response) => {
            shared.deliver(response.request_id, Ok(response));
            Ok(())
        }
        Err(error) => match error.request_id() {
            Some(request_id) => {
                shared.deliver(request_id, Err(CallError::Protocol(error.to_string())));
                Ok(())
            }
            None => Err(format!("unreadable response: {error}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiResult, RequestKind, StatusInfo};
    use std::net::TcpListener;

    /// Reads request frames from `stream` until `count` are in.
    fn read_requests(stream: &mut TcpStream, count: usize) -> Vec<ApiRequest> {
        let mut buffer = Vec::new();
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let mut requests = Vec::new();
        while requests.len() < count {
            let read = stream.read(&mut chunk).expect("the client's requests");
            assert!(read > 0, "the client closed the connection");
            buffer.extend_from_slice(&chunk[..read]);
            let mut consumed = 0;
            while let Some(decoded) = frame::decode(&buffer[consumed..], FRAME_BYTES_MAX).unwrap() {
                consumed += decoded.consumed_bytes;
                requests.push(api::decode_request(decoded.payload).expect("a valid request"));
            }
            buffer.drain(..consumed);
        }
        requests
    }

    // Deferred requests stay in this process until the flush, then all of them go out,
    // and each call gets its own answer.
    #[test]
    fn deferred_requests_leave_at_the_flush() {
        const REQUESTS: usize = 3;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let timeout = Duration::from_secs(30);
        let connection = Connection::open(&address, timeout, timeout, 8).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.set_read_timeout(Some(timeout)).unwrap();
        let wait_until = Instant::now() + timeout;
        let mut calls: Vec<Call> = (0..REQUESTS)
            .map(|_| {
                let mut request = ApiRequest {
                    request_id: 0,
                    kind: RequestKind::Status,
                };
                connection
                    .send(&mut request, wait_until, None, WriteWhen::Deferred)
                    .unwrap()
            })
            .collect();
        // On loopback, bytes a send wrote are readable when it returns.
        server.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        let error = server.read(&mut probe).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        server.set_nonblocking(false).unwrap();

        connection.flush();
        let requests = read_requests(&mut server, REQUESTS);
        let mut answers = Vec::new();
        for request in &requests {
            let response = ApiResponse {
                request_id: request.request_id,
                result: Ok(ApiResult::Status(StatusInfo {
                    node_id: request.request_id,
                    ..StatusInfo::default()
                })),
            };
            frame::encode(&mut answers, &api::response_to_bytes(&response)).unwrap();
        }
        assert!(
            calls.iter_mut().all(|call| !call.poll()),
            "nothing answered yet"
        );
        server.write_all(&answers).unwrap();
        for call in calls {
            let request_id = call.request_id;
            match call.wait(wait_until).unwrap().result {
                Ok(ApiResult::Status(status)) => assert_eq!(status.node_id, request_id),
                other => panic!("{other:?}"),
            }
        }
    }
}
