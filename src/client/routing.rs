//! Where the SDK sends a request, as plain data: the nodes it knows, the leader it
//! believes each group has, the rotating start for "any node" choices, the order in which
//! nodes are tried, and which node a leader hint names. No connections and no clock: the
//! blocking [`Client`](super::Client) keeps a [`Router`] behind a lock and tries the nodes
//! of a [`NodeOrder`] over its sockets; the simulator owns one per simulated client and
//! sends where it says.
//!
//! A node is named by its index in the router, which stays the same for the router's
//! life: nodes are only ever appended (at most [`NODES_MAX`]).
//!
//! # Which nodes a client sends to
//!
//! Only the endpoints it was given ([`nodes_to_route`]), and a node that a live node
//! named as a group's leader (a `NotLeader` answer's hint, [`Router::node_for_hint`]).
//! The members a status lists are used to learn the given endpoints' node ids, not as
//! places to send: a user who names nodes 2 and 3 because node 1 is down must not wait
//! for node 1. A hint comes from a node that just answered, and a follower forgets its
//! leader when its election timer fires, so a hint names a dead node for at most about
//! one election timeout. [`crate::client::ClientOptions::route_to_all_members`] opts in
//! to sending to every member the status lists.

use std::collections::HashMap;

use crate::api::LeaderHint;
use crate::keyspace::group_of;
use crate::kv;
use crate::multiraft::GroupId;
use crate::raft::NodeId;

/// Most nodes one router knows: the members it started with, plus nodes first named by
/// leader hints.
pub const NODES_MAX: usize = 1024;

/// The group whose leader should see `op`: the group of its key, or of a transaction's
/// first key. `None` for a read across groups, which any node serves.
pub fn route_group(op: &kv::Op, group_count: u64) -> Option<GroupId> {
    let first = op.keys().next()?;
    let read_across_groups = first.range_start && matches!(op, kv::Op::Range(_));
    (!read_across_groups).then(|| group_of(first.key, group_count))
}

/// The nodes a client routes to, from the endpoints it was given (in order, duplicates
/// dropped) and the members a status listed ((client address, node id)): each endpoint,
/// with its node id when a member has its address; with `all_members`, the members not
/// among the endpoints too. With no endpoint at all, the members.
pub fn nodes_to_route(
    endpoints: &[String],
    members: &[(String, NodeId)],
    all_members: bool,
) -> Vec<(String, NodeId)> {
    let id_of = |address: &str| {
        members
            .iter()
            .find(|(member, _)| member == address)
            .map_or(crate::raft::NO_NODE, |&(_, id)| id)
    };
    let mut nodes: Vec<(String, NodeId)> = Vec::new();
    for endpoint in endpoints {
        if !nodes.iter().any(|(address, _)| address == endpoint) {
            nodes.push((endpoint.clone(), id_of(endpoint)));
        }
    }
    if all_members || nodes.is_empty() {
        for (address, id) in members {
            if !nodes.iter().any(|(known, _)| known == address) {
                nodes.push((address.clone(), *id));
            }
        }
    }
    nodes
}

/// One node as the router knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteNode {
    /// The node's client address ("host:port" for the blocking client).
    address: String,
    /// [`crate::raft::NO_NODE`] until the cluster names the node.
    node_id: NodeId,
}

/// The SDK's routing state: nodes, the leader cache, and the rotation over nodes.
#[derive(Clone, Debug)]
pub struct Router {
    nodes: Vec<RouteNode>,
    /// The node believed to lead each group.
    leaders: HashMap<GroupId, usize>,
    /// Where the next [`NodeOrder`] starts its rotation, so that "any node" choices
    /// spread over the nodes.
    next_node: usize,
    /// The node the client connected through, when it is among `nodes`.
    endpoint_node: Option<usize>,
}

impl Router {
    /// A router over `nodes` ((address, node id), duplicates by address dropped, at most
    /// [`NODES_MAX`] kept); `endpoint` is the address of the node the client connected
    /// through, if any.
    pub fn new(
        nodes: impl IntoIterator<Item = (String, NodeId)>,
        endpoint: Option<&str>,
    ) -> Router {
        let mut known: Vec<RouteNode> = Vec::new();
        for (address, node_id) in nodes {
            if known.len() >= NODES_MAX {
                break;
            }
            if known.iter().any(|node| node.address == address) {
                continue;
            }
            known.push(RouteNode { address, node_id });
        }
        let endpoint_node =
            endpoint.and_then(|address| known.iter().position(|node| node.address == address));
        Router {
            nodes: known,
            leaders: HashMap::new(),
            next_node: 0,
            endpoint_node,
        }
    }

    /// How many nodes the router knows.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The client address of node `node`.
    pub fn address(&self, node: usize) -> &str {
        &self.nodes[node].address
    }

    /// Node `node` for messages: its address, and its id when known ("host:port (node
    /// 3)"), so that an error names the node that failed.
    pub fn describe(&self, node: usize) -> String {
        let RouteNode { address, node_id } = &self.nodes[node];
        if *node_id == crate::raft::NO_NODE {
            address.clone()
        } else {
            format!("{address} (node {node_id})")
        }
    }

    /// The id of node `node`, or [`crate::raft::NO_NODE`] when not known yet.
    pub fn node_id(&self, node: usize) -> NodeId {
        self.nodes[node].node_id
    }

    /// The node with id `node_id`.
    pub fn index_of(&self, node_id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|node| node.node_id == node_id)
    }

    /// Records node `node`'s id once the cluster names it.
    pub fn learn_node_id(&mut self, node: usize, node_id: NodeId) {
        if node_id != crate::raft::NO_NODE {
            self.nodes[node].node_id = node_id;
        }
    }

    /// The node the client connected through, when the router knows it.
    pub fn endpoint_node(&self) -> Option<usize> {
        self.endpoint_node
    }

    /// The node believed to lead `group`.
    pub fn leader_of(&self, group: GroupId) -> Option<usize> {
        self.leaders.get(&group).copied()
    }

    pub fn set_leader(&mut self, group: GroupId, node: usize) {
        debug_assert!(node < self.nodes.len());
        self.leaders.insert(group, node);
    }

    /// Forgets `node` as `group`'s leader (and nothing else: another operation may have
    /// learned a newer leader meanwhile).
    pub fn forget_leader(&mut self, group: GroupId, node: usize) {
        if self.leaders.get(&group) == Some(&node) {
            self.leaders.remove(&group);
        }
    }

    /// The node a leader hint names: by id, else by address (learning its id), else a new
    /// node at the hinted address (while under [`NODES_MAX`]).
    pub fn node_for_hint(&mut self, hint: &LeaderHint) -> Option<usize> {
        if let Some(index) = self.index_of(hint.node_id) {
            return Some(index);
        }
        if hint.client_address.is_empty() {
            return None;
        }
        if let Some(index) = self
            .nodes
            .iter()
            .position(|node| node.address == hint.client_address)
        {
            self.learn_node_id(index, hint.node_id);
            return Some(index);
        }
        if self.nodes.len() >= NODES_MAX {
            return None;
        }
        self.nodes.push(RouteNode {
            address: hint.client_address.clone(),
            node_id: hint.node_id,
        });
        Some(self.nodes.len() - 1)
    }

    /// The order in which to try the nodes for one attempt: `preferred` first, then every
    /// node in turn from a rotating start, with `avoid` (the node the last attempt failed
    /// on: hung, cut off or without a leader) last. Each call moves the start on by one.
    pub fn order(&mut self, preferred: Option<usize>, avoid: Option<usize>) -> NodeOrder {
        let count = self.nodes.len();
        debug_assert!(preferred.is_none_or(|node| node < count));
        let start = self.next_node;
        self.next_node = self.next_node.wrapping_add(1);
        NodeOrder {
            preferred,
            avoid,
            start,
            count,
            position: 0,
        }
    }
}

/// The nodes to try for one attempt, in order (see [`Router::order`]); each node at most
/// once, so at most [`Router::len`] of them. It borrows nothing, so the driver can try
/// them after letting go of the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeOrder {
    preferred: Option<usize>,
    avoid: Option<usize>,
    start: usize,
    count: usize,
    /// 0: the preferred node; 1..=count: the rotation; count + 1: the avoided node; past
    /// that, nothing.
    position: usize,
}

impl Iterator for NodeOrder {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        // Each turn moves `position` on, so this loop ends within count + 2 turns.
        while self.position <= self.count + 1 {
            let position = self.position;
            self.position += 1;
            if position == 0 {
                if self.preferred.is_some() {
                    return self.preferred;
                }
            } else if position <= self.count {
                let index = (self.start.wrapping_add(position - 1)) % self.count;
                if Some(index) != self.preferred && Some(index) != self.avoid {
                    return Some(index);
                }
            } else if let Some(avoid) = self.avoid {
                if Some(avoid) != self.preferred && avoid < self.count {
                    return Some(avoid);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Compare, CompareResult, CompareTarget, RangeRequest, TxnRequest};
    use crate::raft::NO_NODE;

    fn router(count: usize) -> Router {
        Router::new(
            (1..=count as NodeId).map(|id| (format!("n{id}"), id)),
            Some("n1"),
        )
    }

    fn put(key: &[u8]) -> kv::TxnOp {
        kv::TxnOp::Put(kv::PutRequest {
            key: key.to_vec(),
            ..kv::PutRequest::default()
        })
    }

    // Single-key ops route by their key, a transaction by its first key (compares
    // first), and reads across groups route nowhere.
    #[test]
    fn operations_route_by_their_key() {
        let groups = 64;
        let by_key = |key: &[u8]| Some(group_of(key, groups));
        let range = kv::Op::Range(RangeRequest::get(b"a"));
        assert_eq!(route_group(&range, groups), by_key(b"a"));
        let scan = kv::Op::Range(RangeRequest::prefix(b"a"));
        assert_eq!(route_group(&scan, groups), None);
        let delete = kv::Op::Delete(kv::DeleteRequest {
            key: b"d".to_vec(),
            range_end: b"e".to_vec(),
            prev_kv: false,
        });
        assert_eq!(route_group(&delete, groups), by_key(b"d"));
        let txn = kv::Op::Txn(TxnRequest {
            compares: vec![Compare {
                key: b"c".to_vec(),
                target: CompareTarget::Version(0),
                result: CompareResult::Equal,
            }],
            success: vec![put(b"s")],
            failure: vec![],
        });
        assert_eq!(route_group(&txn, groups), by_key(b"c"));
        let txn = kv::Op::Txn(TxnRequest {
            compares: vec![],
            success: vec![],
            failure: vec![put(b"f")],
        });
        assert_eq!(route_group(&txn, groups), by_key(b"f"));
        assert_eq!(
            route_group(&kv::Op::Txn(TxnRequest::default()), groups),
            None
        );
    }

    // The preferred node comes first and the avoided one last; the rest rotate, starting
    // one further on each time, and no node comes twice.
    #[test]
    fn orders_prefer_rotate_and_avoid() {
        let mut router = router(4);
        let orders: Vec<Vec<usize>> = (0..3).map(|_| router.order(None, None).collect()).collect();
        assert_eq!(orders, [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1]]);
        let order: Vec<usize> = router.order(Some(2), Some(0)).collect();
        assert_eq!(order, [2, 3, 1, 0]);
        // Avoiding the preferred node does not try it twice.
        let order: Vec<usize> = router.order(Some(1), Some(1)).collect();
        assert_eq!(order, [1, 0, 2, 3]);
        assert_eq!(Router::new(Vec::new(), None).order(None, None).count(), 0);
    }

    // A client routes to the endpoints it was given, with their ids from the members'
    // list, not to members it was not given (unless asked to).
    #[test]
    fn only_given_endpoints_are_routed() {
        let members: Vec<(String, NodeId)> =
            (1..=3).map(|id| (format!("n{id}"), id as NodeId)).collect();
        let given = ["n3".to_string(), "n2".to_string(), "n3".to_string()];
        assert_eq!(
            nodes_to_route(&given, &members, false),
            [("n3".to_string(), 3), ("n2".to_string(), 2)]
        );
        let all = nodes_to_route(&given, &members, true);
        assert_eq!(all.iter().map(|(_, id)| *id).collect::<Vec<_>>(), [3, 2, 1]);
        let elsewhere = nodes_to_route(&["lb:1".to_string()], &members, false);
        assert_eq!(elsewhere, [("lb:1".to_string(), NO_NODE)]);
        assert_eq!(nodes_to_route(&[], &members, false).len(), 3);
        let router = Router::new(nodes_to_route(&given, &members, false), None);
        assert_eq!(router.describe(0), "n3 (node 3)");
        assert_eq!(Router::new(elsewhere, None).describe(0), "lb:1");
    }

    // Only the node believed to lead is forgotten: a newer leader learned meanwhile stays.
    #[test]
    fn forgetting_a_leader_keeps_a_newer_one() {
        let mut router = router(3);
        router.set_leader(7, 1);
        router.forget_leader(7, 2);
        assert_eq!(router.leader_of(7), Some(1));
        router.forget_leader(7, 1);
        assert_eq!(router.leader_of(7), None);
    }

    // A hint names a node by id, else by address (teaching its id), else adds the node;
    // no address and no known id names nothing, and the node bound holds.
    #[test]
    fn hints_name_known_or_new_nodes() {
        let mut router = Router::new(
            [("a".to_string(), 1), ("b".to_string(), NO_NODE)],
            Some("b"),
        );
        assert_eq!(router.endpoint_node(), Some(1));
        let hint = |node_id, address: &str| LeaderHint {
            node_id,
            client_address: address.to_string(),
        };
        assert_eq!(router.node_for_hint(&hint(1, "")), Some(0));
        assert_eq!(router.node_for_hint(&hint(2, "b")), Some(1));
        assert_eq!(router.node_id(1), 2);
        assert_eq!(router.node_for_hint(&hint(3, "")), None);
        assert_eq!(router.node_for_hint(&hint(3, "c")), Some(2));
        assert_eq!((router.len(), router.address(2)), (3, "c"));
        assert_eq!(router.index_of(3), Some(2));

        let mut full = Router::new((0..NODES_MAX + 5).map(|i| (format!("{i}"), NO_NODE)), None);
        assert_eq!(full.len(), NODES_MAX);
        assert_eq!(full.node_for_hint(&hint(9, "new")), None);
    }
}
