//! Scoping a Salve (`salve run --namespace`, `--node-local`) through the real `kube::Client`
//! against the in-process fake API server, and a real Prometheus for the queries: a step
//! outside the scope is denied and journaled, and nothing is written outside; node-local Salves
//! racing to cordon their nodes never exceed the cluster-wide limit; every query and watch sees
//! only the scope's series and objects. Every Kubernetes test runs in an [`Env`]: the fake, or
//! a real cluster.
//!
//! # Against a real cluster
//!
//! With `SALVE_TEST_KUBECONFIG=/path/to/kubeconfig`, the Kubernetes tests run against that cluster
//! instead of the fake, and touch none of its Nodes or workloads. Each test creates what it needs
//! under names `salve-test-<pid>-<nanos>-…`, labelled `salve.dev/test=true`: namespaces (the Lease
//! counting cordoned nodes lives in one), phantom Nodes — no kubelet behind them and no capacity,
//! so nothing is scheduled onto them; the cordon and drain tests act on these only — and pods bound
//! to them by `spec.nodeName`, whose status the test writes itself. (A DaemonSet tolerating every
//! taint may still get a Pending pod for such a Node; it goes with the Node.) All of it is deleted
//! when the test ends, even on failure (after a killed run: `kubectl delete namespaces,nodes -l
//! salve.dev/test=true`). The kubeconfig's user must be allowed to create Nodes, and the cluster
//! must leave a Node without a machine alone for a few minutes (kind does; a cloud provider's node
//! controller may delete it).
//!
//! What the fake's request log shows ("nothing was written") is read back from the objects instead:
//! no node cordoned, no cordon slot taken, every pod still there, no workload restarted. Only the
//! field selector a node-local Salve lists its pods with is checked on the fake alone: a real API
//! server does not tell what it was asked. The PromQL test uses the local Prometheus in both modes.
//!
//! ```text
//! SALVE_TEST_KUBECONFIG=~/.kube/kind cargo test --test tests -- scope::
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use salve::action::TargetKind;
use salve::executor::{Executor, Finish, Settings};
use salve::gate::Gate;
use salve::journal::{Journal, Kind};
use salve::kube_fake::FakeApiServer;
use salve::playbook::Playbook;
use salve::prometheus::{self, Scenario};
use salve::scope::Scope;
use salve::scope::cordon::{ANNOTATION, LEASE};
use salve::signal::evaluate::Evaluator;
use salve::signal::evaluation::{Alerts, Sources, Tracked};
use salve::signal::kube_event::{EventStore, WatchScope};
use salve::signal::state::{Observation, Transition};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::remediation::{POLICY, load, opened, policy};
use crate::{KUBECONFIG, real_config};

/// Salve's own namespace, where the Lease counting cordoned nodes lives.
const SALVE_NS: &str = "salve-system";

/// What every name a real-cluster run creates starts with.
const TEST_PREFIX: &str = "salve-test-";

/// The label on everything a real-cluster run creates.
const TEST_LABEL: &str = "salve.dev/test";

/// The image of the tests' pods and workloads (a real one, for real-cluster mode; the pods on
/// phantom Nodes never run it).
const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// A test's Kubernetes: the in-process fake, or a real cluster (`SALVE_TEST_KUBECONFIG`) where
/// the test's namespaces and phantom Nodes are created, and deleted when the `Env` is dropped.
///
/// Tests name namespaces and Nodes as on the fake (`shop`, `n1`); [`Env::ns`] and
/// [`Env::node`] give their names here.
struct Env {
    fake: Option<FakeApiServer>,
    client: kube::Client,
    /// `salve-test-<pid>-<nanos>` on a real cluster, before every name the test creates; `None`
    /// on the fake, where names are used as written.
    prefix: Option<String>,
    /// The kubeconfig of a real cluster (to delete what the test created).
    kubeconfig: Option<String>,
    /// The namespaces created on a real cluster.
    namespaces: Vec<String>,
    /// The phantom Nodes created on a real cluster.
    nodes: Mutex<Vec<String>>,
}

impl Env {
    /// The fake, or the cluster of [`KUBECONFIG`] with `namespaces` (as named on the fake)
    /// created.
    async fn start(namespaces: &[&str]) -> Env {
        let Some(path) = std::env::var(KUBECONFIG).ok().filter(|p| !p.is_empty()) else {
            let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
            return Env {
                fake: Some(fake),
                client,
                prefix: None,
                kubeconfig: None,
                namespaces: Vec::new(),
                nodes: Mutex::new(Vec::new()),
            };
        };
        let client = kube::Client::try_from(real_config(&path).await).expect("a client");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut env = Env {
            fake: None,
            client,
            prefix: Some(format!("{TEST_PREFIX}{}-{nanos:x}", std::process::id())),
            kubeconfig: Some(path),
            namespaces: Vec::new(),
            nodes: Mutex::new(Vec::new()),
        };
        for namespace in namespaces {
            let name = env.ns(namespace);
            let object: Namespace = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {TEST_LABEL: "true"}},
            }))
            .expect("a namespace");
            Api::<Namespace>::all(env.client.clone())
                .create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
            env.namespaces.push(name);
        }
        // A pod created before its namespace's `default` service account exists is refused.
        for namespace in &env.namespaces {
            let accounts = Api::<ServiceAccount>::namespaced(env.client.clone(), namespace);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while accounts
                .get_opt("default")
                .await
                .unwrap_or_else(|e| panic!("read {namespace}/default: {e}"))
                .is_none()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no service account {namespace}/default"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        env
    }

    /// The name of namespace `name` (as on the fake) here.
    fn ns(&self, name: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}-{name}"),
            None => name.to_string(),
        }
    }

    /// The name of Node `name` (as on the fake) here: on a real cluster, a phantom one.
    fn node(&self, name: &str) -> String {
        self.ns(name)
    }

    /// The namespace of the Lease counting cordoned nodes (one of the test's own on a real
    /// cluster: list [`SALVE_NS`] among the namespaces it starts with).
    fn lease_namespace(&self) -> String {
        self.ns(SALVE_NS)
    }

    /// How long something the test waits for may take (a real cluster's watches start slower).
    fn patience(&self) -> Duration {
        if self.fake.is_some() {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(60)
        }
    }

    fn api(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let plural = format!("{}s", kind.to_lowercase());
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        match namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Creates `object` as written (its names already those of [`Env::ns`] and [`Env::node`]).
    /// The fake keeps a seeded `status`; on a real cluster a Pod's is written through its
    /// `status` subresource (no kubelet on a phantom Node overwrites it), and a Node is deleted
    /// at the end.
    async fn seed(&self, object: Value) {
        if let Some(fake) = &self.fake {
            fake.insert(object).expect("seeded");
            return;
        }
        let text = |field: &Value| field.as_str().unwrap_or_default().to_owned();
        let (api_version, kind) = (text(&object["apiVersion"]), text(&object["kind"]));
        let name = text(&object["metadata"]["name"]);
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
        let ours = match namespace.as_deref() {
            Some(namespace) => self.namespaces.iter().any(|n| n == namespace),
            None => self.prefix.as_ref().is_some_and(|p| name.starts_with(p)),
        };
        assert!(
            ours,
            "{kind} {name}: only in the test's own namespaces, or named after the test"
        );
        let api = self.api(&api_version, &kind, namespace.as_deref());
        let dynamic: DynamicObject = serde_json::from_value(object.clone()).expect("an object");
        api.create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|e| panic!("create {kind} {name}: {e}"));
        if kind == "Node" {
            self.nodes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(name.clone());
        }
        if kind == "Pod"
            && let Some(status) = object.get("status")
        {
            let patch = Patch::Merge(json!({"status": status}));
            api.patch_status(&name, &PatchParams::default(), &patch)
                .await
                .unwrap_or_else(|e| panic!("write the status of pod {name}: {e}"));
        }
    }

    /// Merge-patches one of the test's own objects.
    async fn patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) {
        self.api(api_version, kind, namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("patch {kind} {name}: {e}"));
    }

    /// Whether Node `name` is cordoned.
    async fn cordoned(&self, name: &str) -> bool {
        let node = Api::<Node>::all(self.client.clone())
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("read node {name}: {e}"));
        node.spec.and_then(|s| s.unschedulable).unwrap_or(false)
    }

    /// Whether pod `namespace/name` exists and is not being deleted (a real pod may take a
    /// moment to go).
    async fn present(&self, namespace: &str, name: &str) -> bool {
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("read pod {namespace}/{name}: {e}"))
            .is_some_and(|pod| pod.metadata.deletion_timestamp.is_none())
    }

    /// Whether Deployment `namespace/api` was restarted (its template stamped by Salve).
    async fn restarted(&self, namespace: &str) -> bool {
        let deployment = self
            .api("apps/v1", "Deployment", Some(namespace))
            .get("api")
            .await
            .unwrap_or_else(|e| panic!("read deployment {namespace}/api: {e}"));
        deployment.data["spec"]["template"]["metadata"]["annotations"]["salve.dev/restarted-for"]
            .is_string()
    }

    /// The nodes the Lease counts as cordoned by Salve.
    async fn slots(&self) -> BTreeSet<String> {
        let namespace = self.lease_namespace();
        let lease = Api::<Lease>::namespaced(self.client.clone(), &namespace)
            .get_opt(LEASE)
            .await
            .unwrap_or_else(|e| panic!("read Lease {namespace}/{LEASE}: {e}"));
        let text = lease
            .and_then(|l| l.metadata.annotations)
            .and_then(|mut a| a.remove(ANNOTATION))
            .unwrap_or_else(|| "{}".into());
        let slots: serde_json::Map<String, Value> = serde_json::from_str(&text).expect("JSON");
        slots.keys().cloned().collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some(path) = self.kubeconfig.take() else {
            return;
        };
        let namespaces = std::mem::take(&mut self.namespaces);
        let nodes = std::mem::take(self.nodes.get_mut().unwrap_or_else(PoisonError::into_inner));
        crate::clean_up(
            path,
            "the test's namespaces and nodes",
            move |client| async move {
                let mut left = Vec::new();
                // The namespaces first: their pods, bound to the phantom Nodes, go with them.
                for namespace in namespaces {
                    let api = Api::<Namespace>::all(client.clone());
                    match api.delete(&namespace, &DeleteParams::background()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => left.push(format!("namespace {namespace}: {e}")),
                    }
                }
                // Only the test's own phantom Nodes, whatever else the list held.
                for node in nodes.into_iter().filter(|n| n.starts_with(TEST_PREFIX)) {
                    let api = Api::<Node>::all(client.clone());
                    match api.delete(&node, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => left.push(format!("node {node}: {e}")),
                    }
                }
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(left.join("; ")))
                }
            },
        );
    }
}

/// A playbook acting on `target` (a YAML flow mapping) with `steps`.
fn playbook(name: &str, target: &str, steps: &str) -> Arc<Playbook> {
    let text = format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  trigger:\n    promql: {{expr: 'vector(1)'}}\n  target: {target}\n  cooldown: 0s\n  steps:\n{steps}"
    );
    Arc::clone(&load(&text).playbooks[0])
}

fn step(action: &str) -> String {
    let name = action.replace('_', "-");
    // The least risk the loader accepts for each (POLICY's ceiling is `medium`).
    let risk = match action {
        "evict" | "delete_pod" => "medium",
        _ => "low",
    };
    format!("    - {{name: {name}, action: {action}, risk: {risk}}}\n")
}

/// A live executor (no dry run) scoped to `scope`, journaling in `dir`.
fn executor(client: kube::Client, dir: &Path, scope: Scope) -> (Executor, Arc<Journal>) {
    let journal = Arc::new(Journal::open(&dir.join("journal.db")).expect("journal"));
    let executor = Executor::new(
        client,
        Arc::clone(&journal),
        Gate::new(policy(POLICY)).scoped(scope),
        None,
        Settings {
            poll: Duration::from_millis(50),
            ..Settings::default()
        },
    );
    (executor, journal)
}

async fn remediate(executor: &Executor, playbook: &Playbook) -> (String, Finish) {
    let (incident, signal) = opened(playbook, "x");
    let finish = executor
        .remediate(playbook, &incident, &signal)
        .await
        .expect("every decision journaled");
    (incident.id, finish)
}

/// A Node (on a real cluster, a phantom one: no status, so no capacity, and a taint of its
/// own besides, so nothing is scheduled onto it).
fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {TEST_LABEL: "true"}},
        "spec": {"taints": [{"key": TEST_LABEL, "value": "true", "effect": "NoSchedule"}]},
    })
}

/// A running pod bound to `node` (deleted at once: no kubelet on a phantom Node would finish
/// a graceful deletion).
fn pod(namespace: &str, name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "app", "image": IMAGE}]},
        "status": {"phase": "Running"},
    })
}

fn deployment(namespace: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                         "spec": {"containers": [{"name": "app", "image": IMAGE}]}},
        },
    })
}

/// The writes (anything but GET) the fake received.
fn writes(fake: &FakeApiServer) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// The denials the journal recorded for `incident`, by kind of denial.
fn denials(journal: &Journal, incident: &str) -> Vec<String> {
    journal
        .timeline(incident)
        .expect("timeline")
        .into_iter()
        .filter(|e| e.record.kind == Kind::GateVerdict && e.record.detail["verdict"] == "deny")
        .map(|e| {
            e.record.detail["denial"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_local_salve_never_touches_another_node() {
    let env = Env::start(&["shop", SALVE_NS]).await;
    let (shop, n1, n2) = (env.ns("shop"), env.node("n1"), env.node("n2"));
    for object in [
        node(&n1),
        node(&n2),
        pod(&shop, "p1", &n1),
        pod(&shop, "p2", &n2),
        pod(&shop, "p3", &n1),
        deployment(&shop),
    ] {
        env.seed(object).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scope = Scope::node_local(&n1, 1, &env.lease_namespace());
    let (salve, journal) = executor(env.client.clone(), dir.path(), scope);
    let drain = format!("{}{}", step("cordon"), step("evict"));

    // Another node, a pod on another node, a workload: denied, journaled, nothing written.
    for (name, target, steps) in [
        (
            "other-node",
            format!("{{kind: Node, name: {n2}}}"),
            drain.clone(),
        ),
        (
            "other-pod",
            format!("{{kind: Pod, namespace: {shop}, name: p2}}"),
            step("delete_pod"),
        ),
        (
            "other-evict",
            format!("{{kind: Pod, namespace: {shop}, name: p2}}"),
            step("evict"),
        ),
        (
            "workload",
            format!("{{kind: Deployment, namespace: {shop}, name: api}}"),
            step("rollout_restart"),
        ),
        (
            "missing-pod",
            format!("{{kind: Pod, namespace: {shop}, name: ghost}}"),
            step("delete_pod"),
        ),
    ] {
        let (incident, finish) = remediate(&salve, &playbook(name, &target, &steps)).await;
        match &finish {
            Finish::Halted(reason) => assert!(reason.contains("denied"), "{name}: {reason}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(denials(&journal, &incident), ["out_of_scope"], "{name}");
    }
    if let Some(fake) = &env.fake {
        assert_eq!(writes(fake), Vec::<String>::new(), "nothing written");
    }
    // What a real cluster shows of "nothing written": no node cordoned, no cordon slot taken,
    // every pod still there, the workload not restarted.
    assert!(!env.cordoned(&n1).await && !env.cordoned(&n2).await);
    assert_eq!(env.slots().await, BTreeSet::new());
    for p in ["p1", "p2", "p3"] {
        assert!(env.present(&shop, p).await, "{p} is still there");
    }
    assert!(
        !env.restarted(&shop).await,
        "the workload was not restarted"
    );

    // Its own pod and its own node: done.
    let (_, finish) = remediate(
        &salve,
        &playbook(
            "own-pod",
            &format!("{{kind: Pod, namespace: {shop}, name: p3}}"),
            &step("delete_pod"),
        ),
    )
    .await;
    assert_eq!(finish, Finish::Remediated);
    assert!(!env.present(&shop, "p3").await);
    let (_, finish) = remediate(
        &salve,
        &playbook("own-node", &format!("{{kind: Node, name: {n1}}}"), &drain),
    )
    .await;
    assert_eq!(finish, Finish::Remediated);
    assert!(env.cordoned(&n1).await);
    assert!(!env.present(&shop, "p1").await, "n1's pod was evicted");
    assert_eq!(env.slots().await, BTreeSet::from([n1.clone()]));

    // Through all of it, nothing of n2 was written to (a real cluster: it reads so).
    assert!(!env.cordoned(&n2).await && env.present(&shop, "p2").await);
    if let Some(fake) = &env.fake {
        let outside: Vec<String> = writes(fake)
            .into_iter()
            .filter(|w| w.contains(&format!("/nodes/{n2}")) || w.contains("/pods/p2"))
            .collect();
        assert!(outside.is_empty(), "{outside:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_node_local_salves_never_cordon_more_than_the_limit() {
    let env = Env::start(&[SALVE_NS]).await;
    let (r1, r2) = (env.node("r1"), env.node("r2"));
    env.seed(node(&r1)).await;
    env.seed(node(&r2)).await;
    let (d1, d2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let lease_namespace = env.lease_namespace();
    let (s1, _) = executor(
        env.client.clone(),
        d1.path(),
        Scope::node_local(&r1, 1, &lease_namespace),
    );
    let (s2, _) = executor(
        env.client.clone(),
        d2.path(),
        Scope::node_local(&r2, 1, &lease_namespace),
    );
    let cordon = |n: &str| {
        playbook(
            "cordon",
            &format!("{{kind: Node, name: {n}}}"),
            &step("cordon"),
        )
    };
    let uncordon = |n: &str| {
        playbook(
            "uncordon",
            &format!("{{kind: Node, name: {n}}}"),
            &step("uncordon"),
        )
    };
    let (c1, c2, u1, u2) = (cordon(&r1), cordon(&r2), uncordon(&r1), uncordon(&r2));
    let mut winners = BTreeSet::new();
    for round in 0..20 {
        let ((_, f1), (_, f2)) = tokio::join!(remediate(&s1, &c1), remediate(&s2, &c2));
        let won: Vec<&str> = [(r1.as_str(), &f1), (r2.as_str(), &f2)]
            .into_iter()
            .filter(|(_, f)| **f == Finish::Remediated)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one cordons: {f1:?} / {f2:?}"
        );
        let r1_won = won[0] == r1;
        let (winner, loser) = if r1_won { (&r1, &r2) } else { (&r2, &r1) };
        winners.insert(winner.clone());
        let refused = if r1_won { &f2 } else { &f1 };
        assert!(
            matches!(refused, Finish::Halted(r) if r.contains("1 node(s) may be cordoned")),
            "round {round}: {refused:?}"
        );
        assert!(
            env.cordoned(winner).await && !env.cordoned(loser).await,
            "round {round}"
        );
        assert_eq!(env.slots().await, BTreeSet::from([winner.clone()]));

        // Uncordoning frees the slot: the other node may cordon now.
        let (undo, other, undo_other) = if r1_won {
            (&u1, (&s2, &c2), (&s2, &u2))
        } else {
            (&u2, (&s1, &c1), (&s1, &u1))
        };
        let ws = if r1_won { &s1 } else { &s2 };
        assert_eq!(remediate(ws, undo).await.1, Finish::Remediated);
        assert!(env.slots().await.is_empty() && !env.cordoned(winner).await);
        assert_eq!(remediate(other.0, other.1).await.1, Finish::Remediated);
        assert!(env.cordoned(loser).await);
        assert_eq!(
            remediate(undo_other.0, undo_other.1).await.1,
            Finish::Remediated
        );
        assert!(env.slots().await.is_empty() && !env.cordoned(loser).await);
    }
    tracing::debug!(?winners, "race winners");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_scoped_salve_acts_in_its_namespaces_only() {
    let env = Env::start(&["shop", "web"]).await;
    let (shop, web, n1) = (env.ns("shop"), env.ns("web"), env.node("n1"));
    for object in [node(&n1), deployment(&shop), deployment(&web)] {
        env.seed(object).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (salve, journal) = executor(
        env.client.clone(),
        dir.path(),
        Scope::namespaces([shop.clone()]),
    );
    for (name, target, action) in [
        (
            "web",
            format!("{{kind: Deployment, namespace: {web}, name: api}}"),
            "rollout_restart",
        ),
        ("node", format!("{{kind: Node, name: {n1}}}"), "cordon"),
    ] {
        let (incident, finish) = remediate(&salve, &playbook(name, &target, &step(action))).await;
        assert!(matches!(finish, Finish::Halted(_)), "{name}: {finish:?}");
        assert_eq!(denials(&journal, &incident), ["out_of_scope"], "{name}");
    }
    if let Some(fake) = &env.fake {
        assert_eq!(writes(fake), Vec::<String>::new());
    }
    // What a real cluster shows of it: nothing restarted, the node not cordoned.
    assert!(!env.restarted(&web).await && !env.restarted(&shop).await);
    assert!(!env.cordoned(&n1).await);
    let (_, finish) = remediate(
        &salve,
        &playbook(
            "shop",
            &format!("{{kind: Deployment, namespace: {shop}, name: api}}"),
            &step("rollout_restart"),
        ),
    )
    .await;
    assert_eq!(finish, Finish::Remediated);
    if let Some(fake) = &env.fake {
        let written = writes(fake);
        let inside = format!("/namespaces/{shop}/");
        assert!(
            !written.is_empty() && written.iter().all(|w| w.contains(&inside)),
            "{written:?}"
        );
    }
    // Written in `shop` only, as a real cluster shows it.
    assert!(env.restarted(&shop).await, "shop's workload was restarted");
    assert!(!env.restarted(&web).await && !env.cordoned(&n1).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_query_asks_only_for_the_scopes_series() {
    let scenario = Scenario::new(Duration::from_secs(60))
        .and_then(|s| s.series(r#"errors{namespace="shop",node="n1",pod="a"}"#, "10x10"))
        .and_then(|s| s.series(r#"errors{namespace="web",node="n2",pod="b"}"#, "10x10"))
        // A namespace whose name starts with another's: the matcher is anchored.
        .and_then(|s| {
            s.series(
                r#"errors{namespace="shop-canary",node="n2",pod="c"}"#,
                "10x10",
            )
        })
        .expect("scenario");
    let prometheus = prometheus::start(&scenario).expect("prometheus starts");
    let at = chrono::DateTime::from_timestamp(prometheus.time_at(5), 0).expect("a time");
    let trigger = {
        let text = "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: t}\nspec:\n  trigger:\n    promql: {expr: 'errors > 5'}\n  target: {kind: Pod, namespace: \"${labels.namespace}\", name: \"${labels.pod}\"}\n  steps:\n    - {action: capture_logs, risk: none}\n";
        Arc::clone(&load(text).playbooks[0])
    };
    let evaluator = |scope: &Scope| {
        Evaluator::new(prometheus.url(), Duration::from_secs(5))
            .expect("evaluator")
            .restricted(scope.matchers().expect("matchers"))
    };
    for (scope, expect) in [
        (Scope::cluster(), vec!["a", "b", "c"]),
        (Scope::namespaces(["shop"]), vec!["a"]),
        (Scope::namespaces(["shop", "web"]), vec!["a", "b"]),
        (Scope::node_local("n2", 1, SALVE_NS), vec!["b", "c"]),
    ] {
        // A trigger, through the engine's own evaluation path.
        let sources = Sources {
            prometheus: Some(evaluator(&scope)),
            alerts: Alerts::None,
            ..Sources::default()
        };
        let tracked = Tracked::new(Arc::clone(&trigger)).expect("a PromQL trigger");
        let fired: BTreeSet<String> = tracked
            .evaluate(&sources, at)
            .await
            .into_iter()
            .filter(|e| e.event.transition == Transition::Firing)
            .filter_map(|e| e.event.labels.get("pod").cloned())
            .collect();
        let expect: BTreeSet<String> = expect.iter().map(|p| p.to_string()).collect();
        assert_eq!(fired, expect, "{scope}");
        // The query `verify` and `wait_for` send: another namespace's series is not there.
        let verify = evaluator(&scope)
            .instant(r#"errors{namespace="web"}"#, at)
            .await
            .expect("a query");
        assert_eq!(verify.len(), usize::from(expect.contains("b")), "{scope}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_local_salve_watches_its_own_pods_only() {
    let env = Env::start(&["shop"]).await;
    let (shop, n1, n2) = (env.ns("shop"), env.node("n1"), env.node("n2"));
    let crash = |name: &str, node: &str| {
        let mut pod = pod(&shop, name, node);
        pod["status"]["containerStatuses"] = json!([{
            "name": "app", "image": IMAGE, "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        }]);
        pod
    };
    for object in [
        node(&n1),
        node(&n2),
        crash("p1", &n1),
        crash("p2", &n2),
        pod(&shop, "p3", &n1),
    ] {
        env.seed(object).await;
    }
    let now = chrono::Utc::now();
    for (name, about) in [("e1", "p3"), ("e2", "p2")] {
        env.seed(json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": shop},
            "involvedObject": {"kind": "Pod", "namespace": shop, "name": about},
            "reason": "BackOff", "type": "Warning", "message": "back-off",
            "firstTimestamp": now.to_rfc3339(), "lastTimestamp": now.to_rfc3339(), "count": 1,
        }))
        .await;
    }
    let trigger = |reason: &str| {
        let text = format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {}}}\nspec:\n  trigger:\n    event: {{kind: Pod, reason: [{reason}]}}\n  target: {{kind: Pod, namespace: \"${{labels.namespace}}\", name: \"${{labels.pod}}\"}}\n  steps:\n    - {{action: capture_logs, risk: none}}\n",
            reason.to_lowercase()
        );
        Arc::clone(&load(&text).playbooks[0])
    };
    let (crashing, backing_off) = (trigger("CrashLoopBackOff"), trigger("BackOff"));
    let store = EventStore::new();
    let cancel = CancellationToken::new();
    let scope = WatchScope::for_playbooks([&crashing, &backing_off]).within(&Scope::node_local(
        &n1,
        1,
        &env.lease_namespace(),
    ));
    tokio::spawn(store.watch(env.client.clone(), &scope, cancel.clone()));
    let observe = |reason: &str| {
        store.observe(
            TargetKind::Pod,
            &[reason.to_string()],
            &[],
            chrono::Utc::now(),
        )
    };
    let pods = |observation: &Observation| match observation {
        Observation::Holds(samples) => Some(
            samples
                .iter()
                .filter_map(|s| s.labels.get("pod").cloned())
                .collect::<Vec<_>>(),
        ),
        _ => None,
    };
    let deadline = tokio::time::Instant::now() + env.patience();
    loop {
        let (crash, backoff) = (observe("CrashLoopBackOff"), observe("BackOff"));
        if pods(&crash).is_some_and(|p| !p.is_empty())
            && pods(&backoff).is_some_and(|p| !p.is_empty())
        {
            // Only n1's pods: its own crash loop, and the Event about its own pod.
            assert_eq!(pods(&crash), Some(vec!["p1".to_string()]));
            assert_eq!(pods(&backoff), Some(vec!["p3".to_string()]));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not seen: {crash:?} {backoff:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    // The pods are listed and watched with the node's field selector; Nodes are not watched.
    // Only the fake tells what it was asked: on a real cluster, seeing only n1's pods above
    // is what is checked.
    let Some(fake) = &env.fake else {
        eprintln!("skipped against a real cluster: reading the requests sent needs the fake");
        return;
    };
    let pod_lists: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/pods"))
        .map(|r| r.query)
        .collect();
    assert!(!pod_lists.is_empty());
    let (escaped, plain) = (
        format!("spec.nodeName%3D{n1}"),
        format!("spec.nodeName={n1}"),
    );
    assert!(
        pod_lists
            .iter()
            .all(|q| q.contains(&escaped) || q.contains(&plain)),
        "{pod_lists:?}"
    );
}

#[test]
fn node_local_without_a_node_name_refuses_to_start() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, expect) in [
        (
            vec!["--node-local"],
            "--node-local needs the name of the node this Salve runs on",
        ),
        (
            vec!["--namespace", "Not_A_Namespace"],
            "is not a namespace name",
        ),
    ] {
        let (code, _, stderr) = crate::run(
            std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
                .current_dir(&root)
                .args(["run", "--playbooks", "playbooks", "--journal"])
                .arg(dir.path().join("journal.db"))
                .args(&args)
                .env_remove("SALVE_NODE_NAME")
                .env_remove("SALVE_NAMESPACES")
                .env("POD_NAMESPACE", SALVE_NS)
                .env("KUBECONFIG", dir.path().join("none")),
        );
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cordon_count_drops_stale_slots_and_refuses_what_it_cannot_read() {
    use salve::scope::cordon::{Cordons, Error, Taken};
    let env = Env::start(&[SALVE_NS]).await;
    let (a, b, c) = (env.node("a"), env.node("b"), env.node("c"));
    for name in [&a, &b, &c] {
        env.seed(node(name)).await;
    }
    let lease_namespace = env.lease_namespace();
    let now = chrono::Utc::now();
    // `b` holds the only slot: young, so kept even though `b` is not cordoned yet (its Salve
    // may be cordoning it right now).
    let slots = json!({ b.clone(): now.to_rfc3339() });
    env.seed(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": lease_namespace,
                     "annotations": {ANNOTATION: slots.to_string()}},
        "spec": {},
    }))
    .await;
    let cordons = |node: &str| Cordons::new(env.client.clone(), &lease_namespace, node, 1);
    let on_a = cordons(&a);
    assert!(matches!(on_a.take(now).await, Err(Error::Full { .. })));
    // Ten minutes on, `b` is still schedulable: someone uncordoned it; its slot is stale.
    let later = now + chrono::TimeDelta::minutes(10);
    assert_eq!(on_a.take(later).await.expect("a slot"), Taken::New);
    assert_eq!(on_a.take(later).await.expect("held"), Taken::Held);
    assert_eq!(env.slots().await, BTreeSet::from([a.clone()]));
    // A cordoned node's slot is never stale.
    let on_c = cordons(&c);
    env.patch(
        "v1",
        "Node",
        None,
        &a,
        json!({"spec": {"unschedulable": true}}),
    )
    .await;
    let much_later = later + chrono::TimeDelta::hours(1);
    assert!(matches!(
        on_c.take(much_later).await,
        Err(Error::Full { .. })
    ));
    on_a.give_back().await.expect("given back");
    assert!(env.slots().await.is_empty());
    // No cordons at all (in a namespace with no Lease), and a count it cannot read: refused.
    let none = Cordons::new(env.client.clone(), &env.ns("elsewhere"), &c, 0);
    assert!(matches!(none.take(now).await, Err(Error::Full { .. })));
    let corrupt =
        json!({"metadata": {"annotations": {ANNOTATION: json!("not a map").to_string()}}});
    env.patch(
        "coordination.k8s.io/v1",
        "Lease",
        Some(&lease_namespace),
        LEASE,
        corrupt,
    )
    .await;
    assert!(matches!(on_c.take(now).await, Err(Error::Corrupt { .. })));
}
