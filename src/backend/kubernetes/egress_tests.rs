//! The runner policies each served namespace gets, from the operator's, without a cluster.

use serde_json::json;

use super::*;

fn policy(value: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(value).expect("NetworkPolicy")
}

/// The operator's policies as k8s/base/networkpolicy.yaml ships them (the runner's two), plus one of the
/// service's own that must not be copied.
fn sources() -> Vec<NetworkPolicy> {
    vec![
        policy(json!({
            "metadata": {"name": "lm-eval-aas-runner", "namespace": "lm-eval-aas", "resourceVersion": "7", "uid": "u1",
                         "labels": {"app.kubernetes.io/name": "lm-eval-aas", "app.kubernetes.io/component": "runner"}},
            "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "lm-eval-aas"}},
                     "policyTypes": ["Ingress", "Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 6443}]}]}
        })),
        policy(json!({
            "metadata": {"name": "lm-eval-aas-runner-model-endpoints", "namespace": "lm-eval-aas",
                         "labels": {"app.kubernetes.io/component": "runner"}},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"protocol": "TCP", "port": 443}]}]}
        })),
        policy(json!({
            "metadata": {"name": ISOLATION_POLICY, "namespace": "lm-eval-aas",
                         "labels": {"app.kubernetes.io/component": "runner", "app.kubernetes.io/managed-by": "lm-eval-aas"}},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]}
        })),
    ]
}

fn names(policies: &[NetworkPolicy]) -> Vec<&str> {
    policies.iter().filter_map(|p| p.metadata.name.as_deref()).collect()
}

#[test]
fn another_served_namespace_gets_the_isolation_policy_and_a_copy_of_each_operator_policy() {
    let wanted = desired("lm-eval-aas", &sources(), "team-a");
    assert_eq!(names(&wanted), [ISOLATION_POLICY, "lm-eval-aas-runner", "lm-eval-aas-runner-model-endpoints"]);
    let runner = serde_json::to_value(&wanted[1]).expect("json");
    assert_eq!(
        runner,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "lm-eval-aas-runner", "namespace": "team-a",
                         "labels": {"app.kubernetes.io/name": "lm-eval-aas", "app.kubernetes.io/component": "runner",
                                    "app.kubernetes.io/managed-by": "lm-eval-aas"},
                         "annotations": {COPIED_FROM_ANNOTATION: "lm-eval-aas/lm-eval-aas-runner"}},
            "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "lm-eval-aas"}},
                     "policyTypes": ["Ingress", "Egress"], "ingress": [],
                     "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 6443}]}]}
        }),
        "the rules as they are, nothing of the source's identity (uid, resourceVersion)"
    );
    let endpoints = wanted[2].spec.as_ref().expect("spec");
    assert_eq!(
        endpoints.pod_selector.as_ref().and_then(|s| s.match_labels.clone()),
        Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())])),
        "a copy confines the runner pods, whatever the source selects"
    );
}

#[test]
fn without_the_operators_policies_runner_pods_are_isolated_everywhere() {
    for namespace in ["lm-eval-aas", "team-a"] {
        let wanted = desired("lm-eval-aas", &[], namespace);
        assert_eq!(names(&wanted), [ISOLATION_POLICY]);
        let spec = serde_json::to_value(wanted[0].spec.as_ref().expect("spec")).expect("json");
        assert_eq!(
            spec,
            json!({"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "lm-eval-aas"}},
                   "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}),
            "nothing in, nothing out"
        );
    }
}

#[test]
fn the_services_own_namespace_keeps_the_sources_and_gets_only_the_isolation_policy() {
    assert_eq!(names(&desired("lm-eval-aas", &sources(), "lm-eval-aas")), [ISOLATION_POLICY]);
}

#[test]
fn a_copy_whose_source_is_gone_is_stale_and_nothing_else_is() {
    let before = desired("lm-eval-aas", &sources(), "team-a");
    let after = desired("lm-eval-aas", &sources()[..1], "team-a");
    let tenants_own =
        policy(json!({"metadata": {"name": "team-a-allow-web", "labels": {"app.kubernetes.io/component": "runner"}}}));
    let mut existing = before.clone();
    existing.push(tenants_own);
    assert_eq!(stale(&existing, &after), ["lm-eval-aas-runner-model-endpoints"]);
    assert!(stale(&before, &before).is_empty());
}
