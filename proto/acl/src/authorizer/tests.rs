//! The decision table, filter-driven listing and removal, and serde of the set.

use super::*;
use Operation::*;
use PatternType::{Literal, Prefixed};
use Permission::{Allow, Deny};
use ResourceType::{Cluster, Group, Topic};

const ALICE: &str = "User:alice";
const HOST: &str = "10.0.0.1";

fn acl(
    rt: ResourceType,
    name: &str,
    pt: PatternType,
    principal: &str,
    host: &str,
    op: Operation,
    perm: Permission,
) -> AclBinding {
    AclBinding {
        resource_type: rt,
        resource_name: name.to_owned(),
        pattern_type: pt,
        principal: principal.to_owned(),
        host: host.to_owned(),
        operation: op,
        permission: perm,
    }
}

/// An ACL for alice from any host on a topic.
fn topic(name: &str, pt: PatternType, op: Operation, perm: Permission) -> AclBinding {
    acl(Topic, name, pt, ALICE, "*", op, perm)
}

fn set(bindings: impl IntoIterator<Item = AclBinding>) -> Acls {
    bindings.into_iter().collect()
}

fn alice_may(acls: &Acls, op: Operation, name: &str) -> bool {
    acls.authorize(ALICE, HOST, op, Topic, name)
}

#[test]
fn no_acl_means_denied() {
    let acls = Acls::new();
    assert!(!alice_may(&acls, Read, "t"));
    let acls = set([topic("other", Literal, Read, Allow)]);
    assert!(!alice_may(&acls, Read, "t"));
}

#[test]
fn allow_literal_grants_only_that_name_and_operation() {
    let acls = set([topic("t", Literal, Read, Allow)]);
    assert!(alice_may(&acls, Read, "t"));
    assert!(!alice_may(&acls, Write, "t"));
    assert!(!alice_may(&acls, Read, "t2"));
    assert!(!alice_may(&acls, Read, "x"));
}

#[test]
fn allow_wildcard_resource_grants_every_name() {
    let acls = set([topic("*", Literal, Read, Allow)]);
    assert!(alice_may(&acls, Read, "t"));
    assert!(alice_may(&acls, Read, "*"));
    assert!(!alice_may(&acls, Write, "t"));
}

#[test]
fn allow_prefixed_grants_names_with_the_prefix() {
    let acls = set([topic("orders-", Prefixed, Write, Allow)]);
    assert!(alice_may(&acls, Write, "orders-eu"));
    assert!(alice_may(&acls, Write, "orders-"));
    assert!(!alice_may(&acls, Write, "orders"));
    assert!(!alice_may(&acls, Write, "my-orders-eu"));
    // A prefixed "*" is the literal character, not a wildcard.
    let acls = set([topic("*", Prefixed, Read, Allow)]);
    assert!(!alice_may(&acls, Read, "t"));
    assert!(alice_may(&acls, Read, "*t"));
}

#[test]
fn prefix_lookup_is_safe_on_multibyte_names() {
    let acls = set([
        topic("é", Prefixed, Read, Allow),
        topic("a", Prefixed, Read, Allow),
    ]);
    // "é" is two bytes; a one-byte prefix would split it and must simply not match.
    assert!(alice_may(&acls, Read, "éa"));
    assert!(!alice_may(&acls, Read, "ü"));
    assert!(alice_may(&acls, Read, "aé"));
}

#[test]
fn empty_or_odd_names_from_clients_do_not_panic() {
    let acls = set([
        topic("a", Prefixed, Read, Allow),
        topic("*", Literal, Write, Allow),
    ]);
    assert!(!alice_may(&acls, Read, ""));
    assert!(alice_may(&acls, Write, ""));
    assert!(!acls.authorize("", "", Read, Topic, "a"));
    let f = by_resource(Topic, Some(""), PatternType::Match);
    assert_eq!(
        names(&acls.matching(&f)),
        vec![(Topic, "*", Literal, Write)]
    );
}

#[test]
fn deny_beats_allow() {
    let acls = set([
        topic("t", Literal, Read, Allow),
        topic("t", Literal, Read, Deny),
    ]);
    assert!(!alice_may(&acls, Read, "t"));
    // A deny anywhere that applies wins: wildcard deny over literal allow, prefixed too.
    let acls = set([
        topic("t", Literal, Read, Allow),
        topic("*", Literal, Read, Deny),
    ]);
    assert!(!alice_may(&acls, Read, "t"));
    let acls = set([
        topic("t", Literal, Read, Allow),
        topic("t", Prefixed, Read, Deny),
    ]);
    assert!(!alice_may(&acls, Read, "t"));
    assert!(!alice_may(&acls, Read, "tx"));
}

#[test]
fn deny_all_beats_allow_read() {
    let acls = set([
        topic("t", Literal, Read, Allow),
        topic("t", Literal, All, Deny),
    ]);
    assert!(!alice_may(&acls, Read, "t"));
    assert!(!alice_may(&acls, Describe, "t"));
}

#[test]
fn allow_all_grants_every_operation() {
    let acls = set([topic("t", Literal, All, Allow)]);
    for op in [
        Read,
        Write,
        Create,
        Delete,
        Alter,
        Describe,
        DescribeConfigs,
        AlterConfigs,
    ] {
        assert!(alice_may(&acls, op, "t"), "{op}");
    }
}

#[test]
fn describe_is_implied_by_read_write_delete_alter() {
    for granted in [Read, Write, Delete, Alter] {
        let acls = set([topic("t", Literal, granted, Allow)]);
        assert!(
            alice_may(&acls, Describe, "t"),
            "{granted} implies DESCRIBE"
        );
    }
    for granted in [
        Create,
        AlterConfigs,
        DescribeConfigs,
        ClusterAction,
        IdempotentWrite,
    ] {
        let acls = set([topic("t", Literal, granted, Allow)]);
        assert!(
            !alice_may(&acls, Describe, "t"),
            "{granted} does not imply DESCRIBE"
        );
    }
    // Implication runs one way only.
    let acls = set([topic("t", Literal, Describe, Allow)]);
    assert!(!alice_may(&acls, Read, "t"));
}

#[test]
fn deny_read_does_not_deny_implied_describe() {
    let acls = set([
        topic("t", Literal, Read, Allow),
        topic("t", Literal, Read, Deny),
    ]);
    assert!(!alice_may(&acls, Read, "t"));
    let acls = set([
        topic("t", Literal, Write, Allow),
        topic("t", Literal, Read, Deny),
    ]);
    assert!(alice_may(&acls, Describe, "t"));
    assert!(alice_may(&acls, Write, "t"));
    assert!(!alice_may(&acls, Read, "t"));
}

#[test]
fn describe_configs_is_implied_by_alter_configs() {
    let acls = set([topic("t", Literal, AlterConfigs, Allow)]);
    assert!(alice_may(&acls, DescribeConfigs, "t"));
    assert!(alice_may(&acls, AlterConfigs, "t"));
    assert!(!alice_may(&acls, Describe, "t"));
    let acls = set([topic("t", Literal, DescribeConfigs, Allow)]);
    assert!(!alice_may(&acls, AlterConfigs, "t"));
}

#[test]
fn wildcard_principal_matches_everyone() {
    let acls = set([acl(Topic, "t", Literal, "User:*", "*", Read, Allow)]);
    assert!(acls.authorize("User:alice", HOST, Read, Topic, "t"));
    assert!(acls.authorize("User:bob", HOST, Read, Topic, "t"));
    let acls = set([
        acl(Topic, "t", Literal, "User:*", "*", Read, Allow),
        acl(Topic, "t", Literal, "User:bob", "*", Read, Deny),
    ]);
    assert!(acls.authorize("User:alice", HOST, Read, Topic, "t"));
    assert!(!acls.authorize("User:bob", HOST, Read, Topic, "t"));
    // Other principals do not match each other.
    let acls = set([topic("t", Literal, Read, Allow)]);
    assert!(!acls.authorize("User:bob", HOST, Read, Topic, "t"));
    assert!(!acls.authorize("User:alice2", HOST, Read, Topic, "t"));
}

#[test]
fn host_matches_exactly_or_wildcard() {
    let acls = set([acl(Topic, "t", Literal, ALICE, "*", Read, Allow)]);
    assert!(acls.authorize(ALICE, "192.168.1.9", Read, Topic, "t"));
    let acls = set([acl(Topic, "t", Literal, ALICE, HOST, Read, Allow)]);
    assert!(acls.authorize(ALICE, HOST, Read, Topic, "t"));
    assert!(!acls.authorize(ALICE, "10.0.0.2", Read, Topic, "t"));
    // A deny from one host does not affect another.
    let acls = set([
        acl(Topic, "t", Literal, ALICE, "*", Read, Allow),
        acl(Topic, "t", Literal, ALICE, "10.0.0.2", Read, Deny),
    ]);
    assert!(acls.authorize(ALICE, HOST, Read, Topic, "t"));
    assert!(!acls.authorize(ALICE, "10.0.0.2", Read, Topic, "t"));
}

#[test]
fn other_resource_type_does_not_match() {
    let acls = set([acl(Group, "t", Literal, ALICE, "*", Read, Allow)]);
    assert!(!alice_may(&acls, Read, "t"));
    assert!(acls.authorize(ALICE, HOST, Read, Group, "t"));
    let acls = set([acl(
        Cluster,
        "kafka-cluster",
        Literal,
        ALICE,
        "*",
        All,
        Allow,
    )]);
    assert!(acls.authorize(ALICE, HOST, ClusterAction, Cluster, "kafka-cluster"));
    assert!(!alice_may(&acls, Read, "kafka-cluster"));
}

#[test]
fn filter_only_values_are_denied() {
    let acls = set([topic("*", Literal, All, Allow)]);
    assert!(!alice_may(&acls, Any, "t"));
    assert!(!alice_may(&acls, Unknown, "t"));
    assert!(!acls.authorize(ALICE, HOST, Read, ResourceType::Any, "t"));
}

#[test]
fn many_unrelated_bindings_still_answer_correctly() {
    let mut acls = Acls::new();
    for i in 0..100_000 {
        acls.add(topic(&format!("topic-{i}"), Literal, Read, Allow));
    }
    acls.add(topic("target", Literal, Write, Allow));
    acls.add(topic("tar", Prefixed, Read, Deny));
    assert_eq!(acls.len(), 100_002);
    assert!(alice_may(&acls, Write, "target"));
    assert!(!alice_may(&acls, Read, "target"));
    assert!(alice_may(&acls, Read, "topic-99999"));
    assert!(!alice_may(&acls, Read, "topic-100000"));
    assert!(!alice_may(&acls, Write, "topic-5"));
    let f = AclFilter {
        resource_type: Topic,
        resource_name: Some("target".to_owned()),
        pattern_type: PatternType::Match,
        ..AclFilter::any()
    };
    assert_eq!(acls.matching(&f).len(), 2);
}

#[test]
fn add_is_idempotent_and_remove_reverses_it() {
    let mut acls = Acls::new();
    let b = topic("t", Prefixed, Read, Allow);
    assert!(acls.add(b.clone()));
    assert!(!acls.add(b.clone()));
    assert_eq!(acls.len(), 1);
    assert!(alice_may(&acls, Read, "tx"));
    assert!(acls.remove(&b));
    assert!(!acls.remove(&b));
    assert!(acls.is_empty());
    assert!(!alice_may(&acls, Read, "tx"));
    assert_eq!(acls, Acls::new(), "no empty index entries are left behind");
}

fn sample() -> Acls {
    set([
        topic("orders", Literal, Read, Allow),
        topic("orders", Literal, Write, Deny),
        topic("*", Literal, Describe, Allow),
        topic("ord", Prefixed, Read, Allow),
        topic("orders-eu", Prefixed, Read, Allow),
        topic("other", Literal, Read, Allow),
        acl(Group, "orders", Literal, ALICE, "*", Read, Allow),
        acl(Topic, "orders", Literal, "User:bob", HOST, Read, Allow),
    ])
}

fn names(v: &[AclBinding]) -> Vec<(ResourceType, &str, PatternType, Operation)> {
    v.iter()
        .map(|b| {
            (
                b.resource_type,
                b.resource_name.as_str(),
                b.pattern_type,
                b.operation,
            )
        })
        .collect()
}

fn by_resource(rt: ResourceType, name: Option<&str>, pt: PatternType) -> AclFilter {
    AclFilter {
        resource_type: rt,
        resource_name: name.map(str::to_owned),
        pattern_type: pt,
        ..AclFilter::any()
    }
}

#[test]
fn matching_any_pattern() {
    // Sorted by resource, then pattern, then principal (alice before bob), then operation.
    let acls = sample();
    let all = acls.matching(&AclFilter::any());
    assert_eq!(all.len(), 8);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert_eq!(all, acls.iter().cloned().collect::<Vec<_>>());
    let got = acls.matching(&by_resource(Topic, Some("orders"), PatternType::Any));
    assert_eq!(
        names(&got),
        vec![
            (Topic, "orders", Literal, Read),
            (Topic, "orders", Literal, Write),
            (Topic, "orders", Literal, Read),
        ]
    );
    let got = acls.matching(&by_resource(
        ResourceType::Any,
        Some("orders"),
        PatternType::Any,
    ));
    assert_eq!(got.len(), 4);
}

#[test]
fn matching_literal_and_prefixed() {
    let acls = sample();
    let got = acls.matching(&by_resource(Topic, Some("ord"), Literal));
    assert!(got.is_empty());
    let got = acls.matching(&by_resource(Topic, Some("ord"), Prefixed));
    assert_eq!(names(&got), vec![(Topic, "ord", Prefixed, Read)]);
    let got = acls.matching(&by_resource(Topic, None, Prefixed));
    assert_eq!(
        names(&got),
        vec![
            (Topic, "ord", Prefixed, Read),
            (Topic, "orders-eu", Prefixed, Read)
        ]
    );
}

#[test]
fn matching_match_includes_wildcard_and_prefixes() {
    let acls = sample();
    let got = acls.matching(&by_resource(Topic, Some("orders-eu-1"), PatternType::Match));
    assert_eq!(
        names(&got),
        vec![
            (Topic, "*", Literal, Describe),
            (Topic, "ord", Prefixed, Read),
            (Topic, "orders-eu", Prefixed, Read),
        ]
    );
    let got = acls.matching(&by_resource(Topic, Some("orders"), PatternType::Match));
    assert_eq!(
        names(&got),
        vec![
            (Topic, "*", Literal, Describe),
            (Topic, "ord", Prefixed, Read),
            (Topic, "orders", Literal, Read),
            (Topic, "orders", Literal, Write),
            (Topic, "orders", Literal, Read),
        ]
    );
    let got = acls.matching(&by_resource(Topic, Some("*"), PatternType::Match));
    assert_eq!(names(&got), vec![(Topic, "*", Literal, Describe)]);
    let got = acls.matching(&by_resource(ResourceType::Any, None, PatternType::Match));
    assert_eq!(got.len(), 8);
    // Match composes with the entry part of the filter.
    let mut f = by_resource(Topic, Some("orders"), PatternType::Match);
    f.principal = Some("User:bob".to_owned());
    assert_eq!(acls.matching(&f).len(), 1);
}

#[test]
fn remove_matching_returns_exactly_what_it_removed() {
    let mut acls = sample();
    let before: Vec<AclBinding> = acls.iter().cloned().collect();
    let f = by_resource(Topic, Some("orders-eu-1"), PatternType::Match);
    let removed = acls.remove_matching(&f);
    assert_eq!(removed.len(), 3);
    assert_eq!(acls.len(), 5);
    for b in &removed {
        assert!(before.contains(b));
        assert!(!acls.iter().any(|k| k == b));
    }
    let mut rebuilt: Vec<AclBinding> = acls.iter().cloned().chain(removed).collect();
    rebuilt.sort();
    assert_eq!(rebuilt, before);
    assert!(acls.remove_matching(&f).is_empty());
    // The removed prefix no longer grants.
    assert!(!alice_may(&acls, Read, "orders-eu-1"));
    assert!(alice_may(&acls, Read, "orders"));
}

#[test]
fn serde_json_round_trip() {
    let acls = sample();
    let json = serde_json::to_string(&acls).unwrap();
    assert!(json.starts_with("[{\"resource_type\":\"TOPIC\""), "{json}");
    let back: Acls = serde_json::from_str(&json).unwrap();
    assert_eq!(back, acls);
    assert_eq!(back.len(), 8);
    assert!(alice_may(&back, Read, "orders-eu-1"));
}

#[test]
fn deserializing_refuses_invalid_bindings() {
    let bad = vec![topic("", Prefixed, Read, Allow)];
    let json = serde_json::to_string(&bad).unwrap();
    let err = serde_json::from_str::<Acls>(&json).unwrap_err();
    assert!(
        err.to_string().contains("Invalid empty resource name"),
        "{err}"
    );
    let bad = vec![topic("t", PatternType::Match, Read, Allow)];
    let json = serde_json::to_string(&bad).unwrap();
    assert!(serde_json::from_str::<Acls>(&json).is_err());
}
