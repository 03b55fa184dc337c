//! The SDK's errors: one variant per reason an operation did not produce a result.

use std::time::Duration;

use thiserror::Error;

use crate::api::ErrorCode;

/// Why an operation of the [`Client`](super::Client) failed.
///
/// For a write, only [`ClientError::OutcomeUnknown`] leaves the outcome open: every
/// other variant means the write was not applied (or, for `Rejected`, that the server
/// answered with a refusal).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ClientError {
    /// The call itself is wrong (no endpoints, options that cannot work).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No node could serve the operation within the retry bound (every node down, no
    /// leader elected, overloaded). A write was never delivered, so it was not applied.
    #[error("unavailable: {last_error} (attempts: {attempts})")]
    Unavailable { attempts: u32, last_error: String },
    /// The deadline passed first. A write was never delivered, so it was not applied.
    #[error("timed out after {timeout:?}: {last_error} (attempts: {attempts})")]
    Timeout {
        timeout: Duration,
        attempts: u32,
        last_error: String,
    },
    /// A write reached a server but no definitive answer came back before the retry bound
    /// or the deadline: it may or may not have been applied. Read the key to find out.
    #[error(
        "outcome unknown after {attempts} attempts, the write may have been applied: {last_error}"
    )]
    OutcomeUnknown { attempts: u32, last_error: String },
    /// The server refused the operation; retrying the same operation would fail again.
    #[error("refused by the server: {code}: {message}")]
    Rejected { code: ErrorCode, message: String },
    /// The encoded request does not fit in a frame; it was not sent.
    #[error("request of {bytes} bytes exceeds the frame maximum of {max} bytes")]
    RequestTooLarge { bytes: usize, max: usize },
    /// A server answered something this client cannot read or did not ask for.
    #[error("protocol error: {0}")]
    Protocol(String),
}
