//! The RBAC rules Salve needs, generated from what its code does, so that the Roles shipped in
//! `deploy/` grant exactly that and nothing more.
//!
//! The rules are the union of:
//!
//! - every built-in action's own needs ([`crate::actions::rbac`], over [`Action::ALL`]);
//! - what Salve reads to evaluate triggers and diagnose incidents ([`READS`]): the watchers of
//!   `event` triggers (`signal::kube_event`), the diagnosis of a target (`executor::diagnose`,
//!   also what a WASM step may `get` by default) and the advisor's context (`advisor::gather`);
//! - Salve's own kinds in `salve.dev` it loads with `--playbook-resources` ([`RESOURCES`]):
//!   `Playbook` and `AutonomyPolicy` objects, and their status, which it writes
//!   (`playbook::resources`);
//! - in cluster scope, the reviews that authenticate approvers with their Kubernetes
//!   credentials ([`REVIEWS`]);
//! - what Salve keeps in its own namespace: the Leases of leader election and of the cordon
//!   count ([`LEASES`]), and the `SalveIncident`s of `--cluster-state` ([`STATE`]) — not in
//!   node-local mode, which keeps its incidents in its own journal.
//!
//! Rules are merged per (API group, resource), verbs sorted and deduplicated, so the output is
//! stable and a test can compare it exactly with the committed manifests (`tests/deploy.rs`).
//! A playbook granting a WASM step `read` of kinds beyond its target and pods (Services,
//! ConfigMaps, ...) needs those added by hand (the chart's `rbac.extraRules`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::action::Action;

/// Salve's API group.
pub const GROUP: &str = "salve.dev";

/// The resource an approver's `approve` and `reject` verbs are checked on (a
/// SubjectAccessReview in `salve.dev`; no object of that kind is stored).
pub const APPROVALS: &str = "approvals";

/// One grant as the tables spell it: (API group, resource, verbs).
pub type Grant = (&'static str, &'static str, &'static [&'static str]);

/// What Salve reads whatever the playbooks' actions: the `event` triggers' watchers (list and
/// watch of Events, Pods and Nodes), the diagnosis of a target and of a pod's owner (get, and
/// list of ReplicaSets for a Deployment's revisions), and the advisor's context (Events,
/// rollout history).
pub const READS: &[Grant] = &[
    ("", "events", &["list", "watch"]),
    ("", "pods", &["get", "list", "watch"]),
    ("", "nodes", &["get", "list", "watch"]),
    ("apps", "deployments", &["get"]),
    ("apps", "statefulsets", &["get"]),
    ("apps", "daemonsets", &["get"]),
    ("apps", "replicasets", &["get", "list"]),
    ("batch", "jobs", &["get"]),
];

/// The `Playbook` and `AutonomyPolicy` objects `--playbook-resources` loads (list and watch),
/// and their status subresource, where Salve reports what it made of each (a merge patch).
pub const RESOURCES: &[Grant] = &[
    (GROUP, "playbooks", &["get", "list", "watch"]),
    (GROUP, "playbooks/status", &["get", "patch", "update"]),
    (GROUP, "autonomypolicies", &["get", "list", "watch"]),
    (
        GROUP,
        "autonomypolicies/status",
        &["get", "patch", "update"],
    ),
];

/// Authenticating an approver by a Kubernetes token and checking they may answer
/// (cluster-scoped: a namespaced Role cannot grant them).
pub const REVIEWS: &[Grant] = &[
    ("authentication.k8s.io", "tokenreviews", &["create"]),
    ("authorization.k8s.io", "subjectaccessreviews", &["create"]),
];

/// The Leases Salve keeps in its own namespace: leader election (`--leader-elect`, which a
/// follower's webhook relay also reads) and, for a node-local Salve, the count of nodes
/// cordoned at once (`--max-cordoned`).
pub const LEASES: &[Grant] = &[(
    "coordination.k8s.io",
    "leases",
    &["create", "get", "update"],
)];

/// The `SalveIncident`s Salve keeps in its own namespace with `--cluster-state` (and under
/// leader election): one per incident (`crate::state`), created, read, listed and watched by
/// every replica, its status replaced, deleted by the leader once the incident is over.
pub const STATE: &[Grant] = &[
    (
        GROUP,
        "salveincidents",
        &["create", "delete", "get", "list", "watch"],
    ),
    (GROUP, "salveincidents/status", &["get", "update"]),
];

/// What a person needs to answer approvals (the answer itself, and seeing what waits) and to
/// rehearse a playbook on demand (`trigger` on `playbooks`: every step a dry run).
pub const APPROVER: &[Grant] = &[
    (GROUP, APPROVALS, &["approve", "get", "list", "reject"]),
    (GROUP, "playbooks", &["get", "list", "trigger", "watch"]),
];

/// Read-only access to what Salve did and runs.
pub const VIEWER: &[Grant] = &[
    (GROUP, APPROVALS, &["get", "list"]),
    (GROUP, "playbooks", &["get", "list", "watch"]),
    (GROUP, "autonomypolicies", &["get", "list", "watch"]),
];

/// Resources that exist only cluster-wide: a namespaced Role cannot grant them.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "nodes"),
    ("authentication.k8s.io", "tokenreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
];

/// Where Salve acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole cluster (a Deployment or DaemonSet): a ClusterRole, plus a Role for the Lease
    /// in Salve's namespace.
    Cluster,
    /// One namespace (`--namespace`, the sidecar): one Role, without what only a cluster-wide
    /// role can grant (Nodes, token and access reviews), the Lease included.
    Namespace,
}

/// Every grant Salve's own work needs in `scope` (the Lease aside in cluster scope), before
/// merging.
pub fn grants(scope: Scope) -> Vec<Grant> {
    let actions = Action::ALL
        .iter()
        .flat_map(|action| crate::actions::rbac(*action).iter().copied());
    let all: Vec<Grant> = actions
        .chain(READS.iter().copied())
        .chain(RESOURCES.iter().copied())
        .collect();
    match scope {
        Scope::Cluster => all.into_iter().chain(REVIEWS.iter().copied()).collect(),
        Scope::Namespace => all
            .into_iter()
            .chain(LEASES.iter().copied())
            .chain(STATE.iter().copied())
            .filter(|(group, resource, _)| !CLUSTER_SCOPED.contains(&(*group, *resource)))
            .collect(),
    }
}

/// Merges grants into rules: one per (API group, resource), sorted by both, its verbs sorted
/// and deduplicated.
pub fn merge<'a>(
    grants: impl IntoIterator<Item = (&'a str, &'a str, &'a [&'a str])>,
) -> Vec<PolicyRule> {
    let mut merged: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for (group, resource, verbs) in grants {
        merged
            .entry((group, resource))
            .or_default()
            .extend(verbs.iter().copied());
    }
    merged
        .into_iter()
        .map(|((group, resource), verbs)| PolicyRule {
            api_groups: Some(vec![group.to_string()]),
            resources: Some(vec![resource.to_string()]),
            verbs: verbs.into_iter().map(str::to_string).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

/// The rules of Salve's role in `scope`: the ClusterRole's in cluster scope, the Role's in a
/// namespace.
pub fn rules(scope: Scope) -> Vec<PolicyRule> {
    merge(grants(scope))
}

/// The rules of the leader-election Role beside the ClusterRole (cluster scope): the Lease and
/// the `SalveIncident`s.
pub fn lease_rules() -> Vec<PolicyRule> {
    merge(LEASES.iter().chain(STATE).copied())
}

/// The rules of a node-local Salve's Role beside the ClusterRole: the Lease counting cordoned
/// nodes, and no `SalveIncident`s.
pub fn cordon_rules() -> Vec<PolicyRule> {
    merge(LEASES.iter().copied())
}

/// The rules of the ClusterRole to give people who answer approvals.
pub fn approver_rules() -> Vec<PolicyRule> {
    merge(APPROVER.iter().copied())
}

/// The rules of the read-only ClusterRole.
pub fn viewer_rules() -> Vec<PolicyRule> {
    merge(VIEWER.iter().copied())
}

/// A rule in a canonical form for comparing rule sets whatever their order: each list sorted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CanonicalRule {
    /// API groups, sorted.
    pub api_groups: Vec<String>,
    /// Resources, sorted.
    pub resources: Vec<String>,
    /// Resource names, sorted (empty: all).
    pub resource_names: Vec<String>,
    /// Non-resource URLs, sorted.
    pub non_resource_urls: Vec<String>,
    /// Verbs, sorted.
    pub verbs: Vec<String>,
}

/// `rules` in canonical form, sorted: two rule sets grant the same exactly when these are
/// equal (as written; a wildcard is not expanded).
pub fn canonical(rules: &[PolicyRule]) -> Vec<CanonicalRule> {
    let sorted = |list: &Option<Vec<String>>| {
        let mut list = list.clone().unwrap_or_default();
        list.sort();
        list.dedup();
        list
    };
    let mut canonical: Vec<CanonicalRule> = rules
        .iter()
        .map(|rule| CanonicalRule {
            api_groups: sorted(&rule.api_groups),
            resources: sorted(&rule.resources),
            resource_names: sorted(&rule.resource_names),
            non_resource_urls: sorted(&rule.non_resource_urls),
            verbs: sorted(&Some(rule.verbs.clone())),
        })
        .collect();
    canonical.sort();
    canonical
}

/// How `actual` differs from `expected`, one line per rule missing or unexpected; empty when
/// they grant exactly the same (order aside).
pub fn diff(expected: &[PolicyRule], actual: &[PolicyRule]) -> Vec<String> {
    let (expected, actual) = (canonical(expected), canonical(actual));
    let describe = |rule: &CanonicalRule| {
        format!(
            "apiGroups {:?} resources {:?} verbs {:?}{}{}",
            rule.api_groups,
            rule.resources,
            rule.verbs,
            if rule.resource_names.is_empty() {
                String::new()
            } else {
                format!(" resourceNames {:?}", rule.resource_names)
            },
            if rule.non_resource_urls.is_empty() {
                String::new()
            } else {
                format!(" nonResourceURLs {:?}", rule.non_resource_urls)
            },
        )
    };
    let missing = expected
        .iter()
        .filter(|rule| !actual.contains(rule))
        .map(|rule| format!("missing: {}", describe(rule)));
    let extra = actual
        .iter()
        .filter(|rule| !expected.contains(rule))
        .map(|rule| format!("not generated: {}", describe(rule)));
    missing.chain(extra).collect()
}

/// A ClusterRole named `name` with `rules`.
pub fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: metadata(name, None),
        rules: Some(rules),
        ..ClusterRole::default()
    }
}

/// A Role named `name` in `namespace` with `rules`.
pub fn role(name: &str, namespace: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: metadata(name, Some(namespace)),
        rules: Some(rules),
    }
}

fn metadata(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_string(),
            "salve".to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (group, resource) pairs and verbs of `rules`, for asserting on.
    fn table(rules: &[PolicyRule]) -> BTreeMap<(String, String), Vec<String>> {
        rules
            .iter()
            .map(|rule| {
                let group = rule.api_groups.as_ref().expect("groups")[0].clone();
                let resource = rule.resources.as_ref().expect("resources")[0].clone();
                ((group, resource), rule.verbs.clone())
            })
            .collect()
    }

    fn verbs(rules: &[PolicyRule], group: &str, resource: &str) -> Option<Vec<String>> {
        table(rules)
            .get(&(group.to_string(), resource.to_string()))
            .cloned()
    }

    #[test]
    fn every_actions_verbs_are_granted_in_cluster_scope() {
        let rules = rules(Scope::Cluster);
        for action in Action::ALL {
            for (group, resource, needed) in crate::actions::rbac(action) {
                let granted = verbs(&rules, group, resource)
                    .unwrap_or_else(|| panic!("{action}: no rule for {group}/{resource}"));
                for verb in *needed {
                    assert!(
                        granted.iter().any(|g| g == verb),
                        "{action}: {verb} on {group}/{resource} is not granted"
                    );
                }
            }
        }
    }

    #[test]
    fn rules_are_merged_per_group_and_resource_with_sorted_unique_verbs() {
        let rules = rules(Scope::Cluster);
        let pairs: Vec<(String, String)> = table(&rules).into_keys().collect();
        assert_eq!(pairs.len(), rules.len(), "one rule per (group, resource)");
        for rule in &rules {
            assert_eq!(rule.api_groups.as_ref().map(Vec::len), Some(1));
            assert_eq!(rule.resources.as_ref().map(Vec::len), Some(1));
            let mut sorted = rule.verbs.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(rule.verbs, sorted);
        }
        // Several actions patch Deployments; diagnosis gets them: one rule, both verbs.
        assert_eq!(
            verbs(&rules, "apps", "deployments"),
            Some(vec!["get".to_string(), "patch".to_string()])
        );
        assert_eq!(
            verbs(&rules, "", "pods"),
            Some(
                ["delete", "get", "list", "patch", "watch"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(
            verbs(&rules, "", "pods/eviction"),
            Some(vec!["create".to_string()])
        );
    }

    #[test]
    fn the_cluster_role_reads_what_triggers_and_diagnosis_need_and_reviews_approvers() {
        let rules = rules(Scope::Cluster);
        assert_eq!(
            verbs(&rules, "", "events"),
            Some(vec!["list".to_string(), "watch".to_string()])
        );
        assert!(verbs(&rules, "", "nodes").is_some_and(|v| v.contains(&"watch".to_string())));
        assert_eq!(
            verbs(&rules, "authentication.k8s.io", "tokenreviews"),
            Some(vec!["create".to_string()])
        );
        assert_eq!(
            verbs(&rules, "authorization.k8s.io", "subjectaccessreviews"),
            Some(vec!["create".to_string()])
        );
        // Its own kinds: read the objects, write only their status; no incidents.
        let read = ["get", "list", "watch"].map(String::from).to_vec();
        let status = ["get", "patch", "update"].map(String::from).to_vec();
        for (resource, expected) in [
            ("playbooks", &read),
            ("playbooks/status", &status),
            ("autonomypolicies", &read),
            ("autonomypolicies/status", &status),
        ] {
            assert_eq!(
                verbs(&rules, GROUP, resource).as_ref(),
                Some(expected),
                "{resource}"
            );
        }
        let own = rules.iter().filter(|r| {
            r.api_groups
                .as_ref()
                .is_some_and(|g| g.contains(&GROUP.to_string()))
        });
        assert_eq!(own.count(), 4);
        // The Lease is in a Role of Salve's namespace, not cluster-wide.
        assert_eq!(verbs(&rules, "coordination.k8s.io", "leases"), None);
        assert_eq!(
            verbs(&lease_rules(), "coordination.k8s.io", "leases"),
            Some(["create", "get", "update"].map(String::from).to_vec())
        );
    }

    #[test]
    fn nothing_is_granted_beyond_what_is_listed() {
        let rules = rules(Scope::Cluster);
        for rule in &rules {
            for verb in &rule.verbs {
                assert_ne!(verb, "*", "no wildcard verbs");
            }
            let resource = &rule.resources.as_ref().expect("resources")[0];
            assert_ne!(resource, "*");
            assert_ne!(resource, "secrets", "Salve never reads Secrets");
        }
    }

    #[test]
    fn the_namespaced_role_keeps_what_a_role_can_grant_and_the_lease() {
        let cluster = table(&rules(Scope::Cluster));
        let namespaced = table(&rules(Scope::Namespace));
        for (group, resource) in CLUSTER_SCOPED {
            assert!(
                !namespaced.contains_key(&(group.to_string(), resource.to_string())),
                "{group}/{resource}"
            );
        }
        for (key, verbs) in &cluster {
            if !CLUSTER_SCOPED.contains(&(key.0.as_str(), key.1.as_str())) {
                assert_eq!(namespaced.get(key), Some(verbs), "{key:?}");
            }
        }
        assert!(namespaced.contains_key(&("coordination.k8s.io".into(), "leases".into())));
    }

    #[test]
    fn the_comparison_is_exact_and_order_insensitive() {
        let expected = rules(Scope::Cluster);
        let mut shuffled = expected.clone();
        shuffled.reverse();
        for rule in &mut shuffled {
            rule.verbs.reverse();
        }
        assert!(diff(&expected, &shuffled).is_empty());

        let mut missing_verb = expected.clone();
        missing_verb[0].verbs.pop();
        assert_eq!(diff(&expected, &missing_verb).len(), 2, "changed rule");

        let mut extra = expected.clone();
        extra.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        });
        assert_eq!(
            diff(&expected, &extra),
            vec![r#"not generated: apiGroups [""] resources ["secrets"] verbs ["get"]"#]
        );
    }

    #[test]
    fn approvers_may_answer_and_viewers_only_read() {
        assert_eq!(
            verbs(&approver_rules(), GROUP, APPROVALS),
            Some(
                ["approve", "get", "list", "reject"]
                    .map(String::from)
                    .to_vec()
            )
        );
        for rule in viewer_rules() {
            for verb in &rule.verbs {
                assert!(["get", "list", "watch"].contains(&verb.as_str()), "{verb}");
            }
        }
    }
}
