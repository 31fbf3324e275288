use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

fn member(node_id: NodeId, dc: &str, rack: &str, tokens: &[(Token, u16)]) -> Member {
    Member {
        node_id,
        dc: dc.into(),
        rack: rack.into(),
        tokens: tokens.to_vec(),
    }
}

#[test]
fn preference_list_is_the_first_distinct_nodes_clockwise() {
    // Ring: 10 a/0, 20 a/1, 30 b/0, 40 c/0, 50 b/1, 60 d/0
    let ring = Ring::new(
        vec![
            member(1, "dc", "r", &[(10, 0), (20, 1)]),
            member(3, "dc", "r", &[(30, 0), (50, 1)]),
            member(5, "dc", "r", &[(40, 0)]),
            member(7, "dc", "r", &[(60, 0)]),
        ],
        3,
    )
    .unwrap();
    let nodes = |t: Token| -> Vec<(NodeId, u16)> {
        ring.preference_list(t)
            .iter()
            .map(|r| (r.node_id, r.shard))
            .collect()
    };
    assert_eq!(nodes(15), vec![(1, 1), (3, 0), (5, 0)]);
    assert_eq!(nodes(10), vec![(1, 0), (3, 0), (5, 0)]);
    assert_eq!(nodes(41), vec![(3, 1), (7, 0), (1, 0)]);
    // Past the last token: wraps to the first.
    assert_eq!(nodes(61), vec![(1, 0), (3, 0), (5, 0)]);
    assert_eq!(nodes(55), vec![(7, 0), (1, 0), (3, 0)]);
}

#[test]
fn fallbacks_are_the_other_nodes_in_walk_order_with_their_owning_shard() {
    // Ring: 10 n1/0, 20 n1/1, 30 n3/0, 40 n5/0, 50 n3/1, 60 n7/0, 70 n9/0
    let ring = Ring::new(
        vec![
            member(1, "dc", "r", &[(10, 0), (20, 1)]),
            member(3, "dc", "r", &[(30, 0), (50, 1)]),
            member(5, "dc", "r", &[(40, 0)]),
            member(7, "dc", "r", &[(60, 0)]),
            member(9, "dc", "r", &[(70, 0)]),
        ],
        2,
    )
    .unwrap();
    let fallbacks = |t: Token| -> Vec<(NodeId, u16)> {
        ring.fallbacks(t)
            .iter()
            .map(|r| (r.node_id, r.shard))
            .collect()
    };
    // Token 15: preference list n1 (shard 1), n3; then n5, n7, n9 in walk order. Each
    // fallback's shard owns the token on that node (n5's only token 40).
    let preferred: Vec<NodeId> = ring.preference_list(15).iter().map(|r| r.node_id).collect();
    assert_eq!(preferred, [1, 3]);
    assert_eq!(fallbacks(15), vec![(5, 0), (7, 0), (9, 0)]);
    // Token 55: n7, n9 preferred; the walk wraps: n1 (its shard 0 owns 10), n3, n5.
    assert_eq!(fallbacks(55), vec![(1, 0), (3, 0), (5, 0)]);
    // Every member a replica: none.
    let small = Ring::new(vec![member(1, "dc", "r", &[(10, 0)])], 3).unwrap();
    assert!(small.fallbacks(5).is_empty());
}

#[test]
fn fewer_nodes_than_the_replication_factor_give_every_node() {
    let ring = Ring::new(
        vec![
            member(1, "dc", "r", &[(10, 0)]),
            member(3, "dc", "r", &[(20, 0)]),
        ],
        3,
    )
    .unwrap();
    assert_eq!(ring.preference_list(0).len(), 2);
    let total: f64 = ring.effective_ownership().iter().map(|(_, s)| s).sum();
    assert!((total - 2.0).abs() < 1e-9);
}

#[test]
fn replicas_spread_over_racks_before_doubling_up() {
    // Clockwise: 1 (r1), 3 (r1), 5 (r1), 7 (r2), 9 (r3)
    let ring = Ring::new(
        vec![
            member(1, "dc", "r1", &[(10, 0)]),
            member(3, "dc", "r1", &[(20, 0)]),
            member(5, "dc", "r1", &[(30, 0)]),
            member(7, "dc", "r2", &[(40, 0)]),
            member(9, "dc", "r3", &[(50, 0)]),
        ],
        3,
    )
    .unwrap();
    let ids: Vec<NodeId> = ring.preference_list(5).iter().map(|r| r.node_id).collect();
    assert_eq!(ids, vec![1, 7, 9]);
    // Two racks only: one replica on each, then the next node clockwise.
    let ring = Ring::new(
        vec![
            member(1, "dc", "r1", &[(10, 0)]),
            member(3, "dc", "r1", &[(20, 0)]),
            member(5, "dc", "r2", &[(30, 0)]),
        ],
        3,
    )
    .unwrap();
    let ids: Vec<NodeId> = ring.preference_list(5).iter().map(|r| r.node_id).collect();
    assert_eq!(ids, vec![1, 5, 3]);
}

#[test]
fn replicas_spread_over_dcs_first() {
    let ring = Ring::new(
        vec![
            member(1, "east", "r1", &[(10, 0)]),
            member(3, "east", "r2", &[(20, 0)]),
            member(5, "west", "r1", &[(30, 0)]),
            member(7, "west", "r2", &[(40, 0)]),
        ],
        2,
    )
    .unwrap();
    let ids: Vec<NodeId> = ring.preference_list(5).iter().map(|r| r.node_id).collect();
    assert_eq!(
        ids,
        vec![1, 5],
        "one replica per DC before a second rack in one DC"
    );
}

#[test]
fn broken_member_tables_are_refused() {
    let dup_token = Ring::new(
        vec![
            member(1, "d", "r", &[(10, 0)]),
            member(3, "d", "r", &[(10, 0)]),
        ],
        3,
    );
    assert!(dup_token
        .unwrap_err()
        .contains("token 0x000000000000000a is held by"));
    let dup_node = Ring::new(
        vec![
            member(1, "d", "r", &[(10, 0)]),
            member(1, "d", "r", &[(20, 0)]),
        ],
        3,
    );
    assert!(dup_node.unwrap_err().contains("listed twice"));
    assert!(Ring::new(vec![member(1, "d", "r", &[])], 3).is_err());
    assert!(Ring::new(vec![], 3).is_err());
    assert!(Ring::new(vec![member(1, "d", "r", &[(1, 0)])], 0).is_err());
}

fn arb_members() -> impl Strategy<Value = Vec<Member>> {
    (1usize..8, 1u16..3).prop_flat_map(|(nodes, shards)| {
        (
            proptest::collection::btree_set(any::<u64>(), nodes * 4..nodes * 4 + 1),
            proptest::collection::vec((0u8..3, 0u8..3), nodes),
        )
            .prop_map(move |(tokens, topology)| {
                let tokens: Vec<u64> = tokens.into_iter().collect();
                topology
                    .iter()
                    .enumerate()
                    .map(|(i, &(dc, rack))| Member {
                        node_id: 1 + 2 * i as u64,
                        dc: format!("dc{dc}"),
                        rack: format!("rack{rack}"),
                        tokens: tokens[i * 4..i * 4 + 4]
                            .iter()
                            .enumerate()
                            .map(|(k, &t)| (t, k as u16 % shards))
                            .collect(),
                    })
                    .collect()
            })
    })
}

proptest! {
    #[test]
    fn every_preference_list_is_distinct_spread_and_starts_at_the_primary(
        members in arb_members(),
        rf in 1usize..5,
        probes in proptest::collection::vec(any::<u64>(), 20),
    ) {
        let ring = Ring::new(members.clone(), rf).unwrap();
        let dcs: HashSet<&str> = members.iter().map(|m| m.dc.as_str()).collect();
        let racks: HashSet<(&str, &str)> =
            members.iter().map(|m| (m.dc.as_str(), m.rack.as_str())).collect();
        let all: Vec<(Token, NodeId)> = members
            .iter()
            .flat_map(|m| m.tokens.iter().map(move |&(t, _)| (t, m.node_id)))
            .collect();
        let owners = TokenMap::new(all);
        for token in probes {
            let list = ring.preference_list(token);
            let want = rf.min(members.len());
            prop_assert_eq!(list.len(), want);
            let ids: HashSet<NodeId> = list.iter().map(|r| r.node_id).collect();
            prop_assert_eq!(ids.len(), want, "distinct nodes");
            prop_assert_eq!(list[0].node_id, *owners.owner(token), "primary first");
            let member = |id| members.iter().find(|m| m.node_id == id).unwrap();
            let list_dcs: HashSet<&str> = list.iter().map(|r| member(r.node_id).dc.as_str()).collect();
            prop_assert_eq!(list_dcs.len(), want.min(dcs.len()), "DCs spread");
            let list_racks: HashSet<(&str, &str)> = list
                .iter()
                .map(|r| { let m = member(r.node_id); (m.dc.as_str(), m.rack.as_str()) })
                .collect();
            prop_assert_eq!(list_racks.len(), want.min(racks.len()), "racks spread");
            for replica in list {
                // The owning shard is the node's own shard map's answer.
                let own = TokenMap::new(member(replica.node_id).tokens.clone());
                prop_assert_eq!(replica.shard, *own.owner(token));
            }
        }
        let total: f64 = ring.effective_ownership().iter().map(|(_, s)| s).sum();
        prop_assert!((total - rf.min(members.len()) as f64).abs() < 1e-6);
    }
}
