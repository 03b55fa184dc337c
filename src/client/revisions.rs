//! The SDK's calls for revisions and history: reads at a revision, a paged list pinned to
//! its first page's revision (Kubernetes' list), the optimistic compare-and-put (etcd's
//! "compare mod revision, then put, else get"), and compaction of every group.

use std::time::Instant;

use super::attempt::CallError;
use super::options;
use super::{lock, Client, ClientError, KeyValue, RangeRequest};
use crate::api::{ApiRequest, ApiResponse, ApiResult, ErrorCode, RequestKind};
use crate::kv::{self, Compare, CompareResult, CompareTarget, OpResponse, TxnOp, TxnRequest};
use crate::multiraft::GroupId;

/// Keys a page of [`Client::list`] asks for by default.
pub const LIST_PAGE_KEYS_DEFAULT: u64 = 500;

/// One page of a paged list: its keys, and whether more follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// The revision every page of the list reads at (the first page's).
    pub revision: u64,
    pub kvs: Vec<KeyValue>,
    /// Keys matching the whole range, counted at the list's revision.
    pub count: u64,
    pub more: bool,
}

/// What an optimistic compare-and-put found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareAndPut {
    /// The key's mod revision was the expected one: the put applied at `revision`.
    Written { revision: u64 },
    /// It was not: the key as it is now (`None`: absent), read in the same transaction.
    Conflict { current: Option<KeyValue> },
}

/// A paged list over a range, every page at the revision of the first (see
/// [`Client::list`]). An iterator of pages; an error ends it.
#[derive(Debug)]
pub struct List<'client> {
    client: &'client Client,
    request: RangeRequest,
    page_keys: u64,
    revision: u64,
    done: bool,
}

impl Iterator for List<'_> {
    type Item = Result<ListPage, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let request = RangeRequest {
            limit: self.page_keys,
            revision: self.revision,
            ..self.request.clone()
        };
        // The first page is linearizable; the later ones read history at its revision,
        // which any replica serves.
        let serializable = self.revision != 0;
        let response = match self.client.execute(kv::Op::Range(request), serializable) {
            Ok(response) => response,
            Err(error) => {
                self.done = true;
                return Some(Err(error));
            }
        };
        let OpResponse::Range(range) = response.op else {
            self.done = true;
            return Some(Err(super::unexpected_result("range", &response.op)));
        };
        self.revision = response.revision;
        match range.kvs.last() {
            Some(last) if range.more => {
                // The next page starts right after this one's last key.
                let mut next = last.key.clone();
                next.push(0);
                self.request.key = next;
            }
            _ => self.done = true,
        }
        Some(Ok(ListPage {
            revision: response.revision,
            kvs: range.kvs,
            count: range.count,
            more: range.more,
        }))
    }
}

impl Client {
    /// The pair at `key` as it was at `revision`, from any replica (history at a closed
    /// revision is the same everywhere). A compacted revision is refused with
    /// [`ErrorCode::Compacted`].
    pub fn get_at(
        &self,
        key: impl AsRef<[u8]>,
        revision: u64,
    ) -> Result<Option<KeyValue>, ClientError> {
        let request = RangeRequest {
            revision,
            ..RangeRequest::get(key.as_ref())
        };
        Ok(self.range_serializable(request)?.kvs.into_iter().next())
    }

    /// Every page of `request`'s range, `page_keys` keys at a time (0: the default), all
    /// at one revision: the first page's, which is one snapshot of every group. Pages
    /// after the first read history at that revision, so a compaction past it while the
    /// list runs ends it with [`ErrorCode::Compacted`].
    pub fn list(&self, request: RangeRequest, page_keys: u64) -> List<'_> {
        List {
            client: self,
            page_keys: if page_keys == 0 {
                LIST_PAGE_KEYS_DEFAULT
            } else {
                page_keys
            },
            revision: request.revision,
            request,
            done: false,
        }
    }

    /// Writes `value` at `key` if the key's mod revision is `expected_mod_revision` (0:
    /// the key must be absent), all in one transaction; else reads the key as it is now.
    /// The optimistic update of etcd's clients and of Kubernetes.
    pub fn compare_and_put(
        &self,
        key: impl AsRef<[u8]>,
        expected_mod_revision: u64,
        value: impl AsRef<[u8]>,
    ) -> Result<CompareAndPut, ClientError> {
        let key = key.as_ref().to_vec();
        let request = TxnRequest {
            compares: vec![Compare {
                key: key.clone(),
                target: CompareTarget::ModRevision(expected_mod_revision),
                result: CompareResult::Equal,
            }],
            success: vec![TxnOp::Put(kv::PutRequest {
                key: key.clone(),
                value: value.as_ref().to_vec(),
                ..kv::PutRequest::default()
            })],
            failure: vec![TxnOp::Range(RangeRequest::get(&key))],
        };
        let response = self.execute(kv::Op::Txn(request), false)?;
        let OpResponse::Txn(txn) = response.op else {
            return Err(super::unexpected_result("transaction", &response.op));
        };
        if txn.succeeded {
            return Ok(CompareAndPut::Written {
                revision: response.revision,
            });
        }
        let current = match txn.responses.into_iter().next() {
            Some(kv::TxnOpResponse::Range(range)) => range.kvs.into_iter().next(),
            _ => None,
        };
        Ok(CompareAndPut::Conflict { current })
    }

    /// Drops every group's history before `revision`: reads below it are refused from
    /// then on. Each group's part goes to that group's leader. Returns the lowest
    /// compaction revision among the groups afterwards (a group compacts no further than
    /// it has closed).
    pub fn compact(&self, revision: u64) -> Result<u64, ClientError> {
        let mut lowest = u64::MAX;
        for group in 0..self.group_count {
            lowest = lowest.min(self.compact_group(group, revision)?);
        }
        Ok(lowest)
    }

    /// Compacts one group through its leader, following leader hints and retrying what
    /// may be retried (a compaction applied twice compacts alike).
    fn compact_group(&self, group: GroupId, revision: u64) -> Result<u64, ClientError> {
        let started = Instant::now();
        let deadline = started + self.options.request_timeout;
        let mut preferred = self.router().leader_of(group);
        let mut avoid = None;
        let mut last_error = String::from("no attempt was made");
        for attempt in 0..=self.options.retries_max {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wait_until = (now + self.options.attempt_timeout).min(deadline);
            let order = self.router().order(preferred.take(), avoid);
            let (node, connection) = match self.pick_node(order, wait_until) {
                Ok(picked) => picked,
                Err(reason) => {
                    last_error = reason;
                    self.pause(attempt, deadline);
                    continue;
                }
            };
            let mut request = ApiRequest {
                request_id: 0,
                kind: RequestKind::Compact {
                    revision,
                    seen_revision: self.seen_revision(),
                    group: Some(group),
                },
            };
            let address = connection.address().to_string();
            match connection.call(&mut request, wait_until) {
                Ok(ApiResponse {
                    result: Ok(ApiResult::Kv(response)),
                    ..
                }) => {
                    self.observe_revision(response.revision);
                    let mut router = self.router();
                    router.set_leader(group, node);
                    return match response.op {
                        OpResponse::Compact(compact) => Ok(compact.compact_revision),
                        other => Err(super::unexpected_result("compaction", &other)),
                    };
                }
                Ok(ApiResponse {
                    result: Ok(ApiResult::Status(_) | ApiResult::Watch(_)),
                    ..
                }) => {
                    return Err(ClientError::Protocol(format!(
                        "{address}: asked for a compaction, got a status"
                    )))
                }
                Ok(ApiResponse {
                    result: Err(error), ..
                }) => {
                    last_error = format!("{address}: {error}");
                    match error.code {
                        ErrorCode::NotLeader => {
                            let mut router = self.router();
                            router.forget_leader(group, node);
                            preferred = error
                                .leader
                                .as_ref()
                                .and_then(|hint| router.node_for_hint(hint));
                            self.add_new_nodes(&router);
                        }
                        ErrorCode::NoLeader
                        | ErrorCode::Overloaded
                        | ErrorCode::Timeout
                        | ErrorCode::ShuttingDown => {
                            avoid = Some(node);
                            self.pause(attempt, deadline);
                        }
                        code => {
                            return Err(ClientError::Rejected {
                                code,
                                message: error.message,
                            })
                        }
                    }
                }
                Err(CallError::Protocol(message)) => {
                    return Err(ClientError::Protocol(format!("{address}: {message}")))
                }
                Err(error) => {
                    last_error = format!("{address}: {error}");
                    lock(&self.router).forget_leader(group, node);
                    avoid = Some(node);
                    self.pause(attempt, deadline);
                }
            }
        }
        Err(ClientError::Unavailable {
            attempts: self.options.retries_max + 1,
            last_error,
        })
    }

    /// The backoff before attempt `attempt + 1` (never past `deadline`).
    fn pause(&self, attempt: u32, deadline: Instant) {
        let pause = options::backoff(
            self.options.retry_backoff_initial,
            self.options.retry_backoff_max,
            attempt + 1,
        );
        let until = (Instant::now() + pause).min(deadline);
        if let Some(left) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
    }
}
