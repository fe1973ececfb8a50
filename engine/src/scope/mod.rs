//! Where one Salve may act: everywhere (the default), in some namespaces (sidecar mode,
//! `salve run --namespace`), or on its own node and the pods running there (DaemonSet mode,
//! `salve run --node-local`).
//!
//! A [`Scope`] is one value, enforced wherever Salve reaches out, each place failing safe —
//! denied or inconclusive, never acting outside:
//!
//! - **The gate** ([`crate::gate`]) denies a step whose target is outside the scope
//!   ([`Scope::admits`]), journaled like every verdict. A Pod's node comes from diagnosis;
//!   unknown means denied.
//! - **PromQL**: every query Salve sends (triggers, `verify`, `wait_for`, WASM steps) gets the
//!   scope's [`matchers`](Scope::matchers) in each selector (`namespace=~"a|b"`,
//!   `node="<node>"`), through [`crate::signal::evaluate::Evaluator::restricted`].
//! - **Kubernetes watches** for `event` triggers list only the scope's namespaces, or only the
//!   node's own pods (`spec.nodeName`) and Node (`metadata.name`)
//!   ([`crate::signal::kube_event::WatchScope::within`]); the LLM advisor's context gathering
//!   reads nothing outside either.
//! - **Cordons** (node-local): at most `max_cordoned` nodes cordoned by Salve across the
//!   cluster, counted in one Lease every node's Salve updates with compare-and-swap
//!   ([`cordon::Cordons`]).
//!
//! Rollback needs no check of its own: it only undoes steps this Salve ran on the plan's
//! target, which the gate admitted. The executor still checks the target before undoing
//! anything, so a plan journaled under another scope (a restart with other flags) is left
//! to a human rather than rolled back outside.

pub mod cordon;

use std::collections::BTreeSet;
use std::fmt;

use promql_parser::label::Matcher;

use crate::plan::{ObjectRef, TargetFacts};

/// The label that carries the node's name on the metrics, by default (kube-prometheus's
/// cAdvisor and kubelet series).
pub const DEFAULT_NODE_LABEL: &str = "node";

/// Where this Salve may act. The default acts everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only targets in these namespaces (cluster-scoped ones, such as Nodes, are out);
    /// `None`: every namespace.
    pub namespaces: Option<BTreeSet<String>>,
    /// Only this node and the pods running on it.
    pub node: Option<NodeScope>,
}

/// A node-local Salve's node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeScope {
    /// The node's name (from the downward API's `spec.nodeName`).
    pub name: String,
    /// The label that carries the node's name on the metrics (`node`).
    pub label: String,
    /// How many nodes Salve may have cordoned across the cluster at once.
    pub max_cordoned: u32,
    /// The namespace of the Lease counting the cordoned nodes (Salve's own).
    pub lease_namespace: String,
}

/// Where a step's target is, as the scope judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<'a> {
    /// Its kind (`Pod`, `Node`, `Deployment`).
    pub kind: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its namespace; `None` for a cluster-scoped kind.
    pub namespace: Option<&'a str>,
    /// The node it runs on (a Pod), when diagnosis could read it.
    pub node: Option<&'a str>,
}

impl<'a> Placement<'a> {
    /// `target`, on the node `facts` read for it.
    pub fn of(target: &'a ObjectRef, facts: &'a TargetFacts) -> Self {
        Placement {
            kind: &target.kind,
            name: &target.name,
            namespace: target.namespace.as_deref(),
            node: facts.node.as_deref(),
        }
    }
}

impl fmt::Display for Placement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl Scope {
    /// Everywhere: what a cluster-wide Salve may reach.
    pub fn cluster() -> Self {
        Scope::default()
    }

    /// Only `namespaces`.
    pub fn namespaces<S: Into<String>>(namespaces: impl IntoIterator<Item = S>) -> Self {
        Scope {
            namespaces: Some(namespaces.into_iter().map(Into::into).collect()),
            node: None,
        }
    }

    /// Only node `name` and its pods; the node's name is in the metrics' `node` label and at
    /// most `max_cordoned` nodes may be cordoned at once, counted in a Lease in
    /// `lease_namespace`.
    pub fn node_local(name: &str, max_cordoned: u32, lease_namespace: &str) -> Self {
        Scope {
            namespaces: None,
            node: Some(NodeScope {
                name: name.to_string(),
                label: DEFAULT_NODE_LABEL.to_string(),
                max_cordoned,
                lease_namespace: lease_namespace.to_string(),
            }),
        }
    }

    /// Whether this Salve may act anywhere.
    pub fn is_cluster_wide(&self) -> bool {
        self.namespaces.is_none() && self.node.is_none()
    }

    /// `Ok` when a step may act on `target`; otherwise why not, for the journal.
    pub fn admits(&self, target: &Placement<'_>) -> Result<(), String> {
        if let Some(namespaces) = &self.namespaces {
            match target.namespace {
                Some(namespace) if namespaces.contains(namespace) => {}
                Some(namespace) => {
                    return Err(format!(
                        "{target} is in namespace `{namespace}`, outside this Salve's scope \
                         (namespaces {})",
                        list(namespaces)
                    ));
                }
                None => {
                    return Err(format!(
                        "{target} is cluster-scoped, outside this Salve's scope (namespaces {})",
                        list(namespaces)
                    ));
                }
            }
        }
        if let Some(node) = &self.node {
            let own = &node.name;
            match target.kind {
                "Node" if target.name == own => {}
                "Node" => {
                    return Err(format!(
                        "{target} is another node: this node-local Salve acts on node `{own}` only"
                    ));
                }
                "Pod" => match target.node {
                    Some(on) if on == own => {}
                    Some(on) => {
                        return Err(format!(
                            "{target} runs on node `{on}`: this node-local Salve acts on the \
                             pods of node `{own}` only"
                        ));
                    }
                    None => {
                        return Err(format!(
                            "{target}: the node it runs on is unknown, so this node-local Salve \
                             (node `{own}`) does not act on it"
                        ));
                    }
                },
                kind => {
                    return Err(format!(
                        "{target}: a {kind} spans nodes; this node-local Salve acts on node \
                         `{own}` and its pods only"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a namespaced object in `namespace` may be read or watched (for a node-local
    /// Salve: any namespace, its pods then narrowed to the node).
    pub fn covers_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|namespaces| namespaces.contains(namespace))
    }

    /// The matchers every PromQL selector gets: `namespace=~"a|b"` (each name regex-quoted)
    /// for a namespace scope, `<label>="<node>"` for a node-local one. None for a cluster-wide
    /// Salve. An empty namespace set matches nothing (`namespace=~""` would match series
    /// *without* the label, so it is refused).
    pub fn matchers(&self) -> Result<Vec<Matcher>, String> {
        let mut matchers = Vec::new();
        if let Some(namespaces) = &self.namespaces {
            let names: Vec<&str> = namespaces.iter().map(String::as_str).collect();
            matchers.push(crate::signal::scope::one_of("namespace", &names)?);
        }
        if let Some(node) = &self.node {
            if node.name.is_empty() || node.label.is_empty() {
                return Err("a node-local scope needs a node name and a label".into());
            }
            matchers.push(crate::signal::scope::equal(&node.label, &node.name));
        }
        Ok(matchers)
    }
}

impl fmt::Display for Scope {
    /// `cluster-wide`, `namespaces a, b`, `node n1 (metrics label node, at most 1 cordoned)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(namespaces) = &self.namespaces {
            parts.push(format!("namespaces {}", list(namespaces)));
        }
        if let Some(node) = &self.node {
            parts.push(format!(
                "node {} (metrics label `{}`, at most {} cordoned, counted in Lease {}/{})",
                node.name,
                node.label,
                node.max_cordoned,
                node.lease_namespace,
                cordon::LEASE
            ));
        }
        if parts.is_empty() {
            f.write_str("cluster-wide")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

fn list(namespaces: &BTreeSet<String>) -> String {
    let names: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    match names.as_slice() {
        [] => "(none)".into(),
        names => names.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<'a>(
        kind: &'a str,
        name: &'a str,
        ns: Option<&'a str>,
        node: Option<&'a str>,
    ) -> Placement<'a> {
        Placement {
            kind,
            name,
            namespace: ns,
            node,
        }
    }

    #[test]
    fn cluster_wide_admits_everything() {
        let scope = Scope::cluster();
        assert!(scope.is_cluster_wide());
        assert!(scope.admits(&at("Node", "n2", None, None)).is_ok());
        assert!(scope.admits(&at("Pod", "p", Some("x"), None)).is_ok());
        assert!(scope.matchers().expect("matchers").is_empty());
    }

    #[test]
    fn a_namespace_scope_admits_its_namespaces_only() {
        let scope = Scope::namespaces(["shop", "web"]);
        assert!(
            scope
                .admits(&at("Deployment", "api", Some("shop"), None))
                .is_ok()
        );
        assert!(
            scope
                .admits(&at("Pod", "p", Some("web"), Some("n9")))
                .is_ok()
        );
        let other = scope
            .admits(&at("Deployment", "api", Some("billing"), None))
            .expect_err("another namespace");
        assert!(other.contains("namespace `billing`"), "{other}");
        let node = scope
            .admits(&at("Node", "n1", None, None))
            .expect_err("a node is cluster-scoped");
        assert!(node.contains("cluster-scoped"), "{node}");
        assert!(scope.covers_namespace("shop") && !scope.covers_namespace("billing"));
        let matchers = scope.matchers().expect("matchers");
        assert_eq!(matchers.len(), 1);
        assert_eq!(matchers[0].to_string(), r#"namespace=~"shop|web""#);
    }

    #[test]
    fn a_node_local_scope_admits_its_node_and_its_pods_only() {
        let scope = Scope::node_local("n1", 1, "salve-system");
        assert!(scope.admits(&at("Node", "n1", None, None)).is_ok());
        assert!(
            scope
                .admits(&at("Pod", "p", Some("shop"), Some("n1")))
                .is_ok()
        );
        for (placement, expect) in [
            (at("Node", "n2", None, None), "another node"),
            (
                at("Pod", "p", Some("shop"), Some("n2")),
                "runs on node `n2`",
            ),
            (at("Pod", "p", Some("shop"), None), "unknown"),
            (
                at("Deployment", "api", Some("shop"), Some("n1")),
                "spans nodes",
            ),
            (at("StatefulSet", "db", Some("shop"), None), "spans nodes"),
        ] {
            let why = scope.admits(&placement).expect_err("outside");
            assert!(why.contains(expect), "{placement}: {why}");
        }
        assert!(scope.covers_namespace("anything"));
        let matchers = scope.matchers().expect("matchers");
        assert_eq!(matchers.len(), 1);
        assert_eq!(matchers[0].to_string(), r#"node="n1""#);
    }

    #[test]
    fn both_scopes_must_agree() {
        let mut scope = Scope::node_local("n1", 1, "salve-system");
        scope.namespaces = Some(BTreeSet::from(["shop".to_string()]));
        assert!(
            scope
                .admits(&at("Pod", "p", Some("shop"), Some("n1")))
                .is_ok()
        );
        assert!(
            scope
                .admits(&at("Pod", "p", Some("web"), Some("n1")))
                .is_err()
        );
        // The node itself is cluster-scoped: outside a namespace scope.
        assert!(scope.admits(&at("Node", "n1", None, None)).is_err());
        assert_eq!(scope.matchers().expect("matchers").len(), 2);
    }

    #[test]
    fn an_empty_namespace_set_admits_nothing_and_matches_nothing() {
        let scope = Scope::namespaces(Vec::<String>::new());
        assert!(scope.admits(&at("Pod", "p", Some("shop"), None)).is_err());
        assert!(scope.matchers().is_err());
    }
}
