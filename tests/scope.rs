//! Scoping a Salve (`salve run --namespace`, `--node-local`) through the real `kube::Client`
//! against the in-process fake API server, and a real Prometheus for the queries: a step
//! outside the scope is denied and journaled, and nothing is written outside; node-local Salves
//! racing to cordon their nodes never exceed the cluster-wide limit; every query and watch sees
//! only the scope's series and objects.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

/// Salve's own namespace, where the Lease counting cordoned nodes lives.
const SALVE_NS: &str = "salve-system";

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

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}})
}

fn pod(namespace: &str, name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
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
                         "spec": {"containers": [{"name": "app", "image": "api:1"}]}},
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

fn cordoned(fake: &FakeApiServer, name: &str) -> bool {
    fake.get("v1", "Node", None, name).expect("the node")["spec"]["unschedulable"]
        .as_bool()
        .unwrap_or(false)
}

fn exists(fake: &FakeApiServer, namespace: &str, name: &str) -> bool {
    fake.get("v1", "Pod", Some(namespace), name).is_some()
}

/// The nodes the Lease counts as cordoned by Salve.
fn slots(fake: &FakeApiServer) -> BTreeSet<String> {
    let Some(lease) = fake.get("coordination.k8s.io/v1", "Lease", Some(SALVE_NS), LEASE) else {
        return BTreeSet::new();
    };
    let text = lease["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .unwrap_or("{}");
    let slots: serde_json::Map<String, Value> = serde_json::from_str(text).expect("JSON");
    slots.keys().cloned().collect()
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
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    for object in [
        node("n1"),
        node("n2"),
        pod("shop", "p1", "n1"),
        pod("shop", "p2", "n2"),
        pod("shop", "p3", "n1"),
        deployment("shop"),
    ] {
        fake.insert(object).expect("seeded");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (salve, journal) = executor(client, dir.path(), Scope::node_local("n1", 1, SALVE_NS));
    let drain = format!("{}{}", step("cordon"), step("evict"));

    // Another node, a pod on another node, a workload: denied, journaled, nothing written.
    for (name, target, steps) in [
        ("other-node", "{kind: Node, name: n2}", drain.clone()),
        (
            "other-pod",
            "{kind: Pod, namespace: shop, name: p2}",
            step("delete_pod"),
        ),
        (
            "other-evict",
            "{kind: Pod, namespace: shop, name: p2}",
            step("evict"),
        ),
        (
            "workload",
            "{kind: Deployment, namespace: shop, name: api}",
            step("rollout_restart"),
        ),
        (
            "missing-pod",
            "{kind: Pod, namespace: shop, name: ghost}",
            step("delete_pod"),
        ),
    ] {
        let (incident, finish) = remediate(&salve, &playbook(name, target, &steps)).await;
        match &finish {
            Finish::Halted(reason) => assert!(reason.contains("denied"), "{name}: {reason}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(denials(&journal, &incident), ["out_of_scope"], "{name}");
    }
    assert_eq!(writes(&fake), Vec::<String>::new(), "nothing written");

    // Its own pod and its own node: done.
    let (_, finish) = remediate(
        &salve,
        &playbook(
            "own-pod",
            "{kind: Pod, namespace: shop, name: p3}",
            &step("delete_pod"),
        ),
    )
    .await;
    assert_eq!(finish, Finish::Remediated);
    assert!(!exists(&fake, "shop", "p3"));
    let (_, finish) = remediate(
        &salve,
        &playbook("own-node", "{kind: Node, name: n1}", &drain),
    )
    .await;
    assert_eq!(finish, Finish::Remediated);
    assert!(cordoned(&fake, "n1"));
    assert!(!exists(&fake, "shop", "p1"), "n1's pod was evicted");
    assert_eq!(slots(&fake), BTreeSet::from(["n1".to_string()]));

    // Through all of it, nothing of n2 was written to.
    assert!(!cordoned(&fake, "n2") && exists(&fake, "shop", "p2"));
    let outside: Vec<String> = writes(&fake)
        .into_iter()
        .filter(|w| w.contains("/nodes/n2") || w.contains("/pods/p2"))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_node_local_salves_never_cordon_more_than_the_limit() {
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    fake.insert(node("r1")).expect("seeded");
    fake.insert(node("r2")).expect("seeded");
    let (d1, d2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (s1, _) = executor(
        client.clone(),
        d1.path(),
        Scope::node_local("r1", 1, SALVE_NS),
    );
    let (s2, _) = executor(client, d2.path(), Scope::node_local("r2", 1, SALVE_NS));
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
    let (c1, c2, u1, u2) = (cordon("r1"), cordon("r2"), uncordon("r1"), uncordon("r2"));
    let mut winners = BTreeSet::new();
    for round in 0..20 {
        let ((_, f1), (_, f2)) = tokio::join!(remediate(&s1, &c1), remediate(&s2, &c2));
        let won: Vec<&str> = [("r1", &f1), ("r2", &f2)]
            .into_iter()
            .filter(|(_, f)| **f == Finish::Remediated)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one cordons: {f1:?} / {f2:?}"
        );
        let (winner, loser) = if won[0] == "r1" {
            ("r1", "r2")
        } else {
            ("r2", "r1")
        };
        winners.insert(winner);
        let refused = if winner == "r1" { &f2 } else { &f1 };
        assert!(
            matches!(refused, Finish::Halted(r) if r.contains("1 node(s) may be cordoned")),
            "round {round}: {refused:?}"
        );
        assert!(
            cordoned(&fake, winner) && !cordoned(&fake, loser),
            "round {round}"
        );
        assert_eq!(slots(&fake), BTreeSet::from([winner.to_string()]));

        // Uncordoning frees the slot: the other node may cordon now.
        let (undo, other, undo_other) = if winner == "r1" {
            (&u1, (&s2, &c2), (&s2, &u2))
        } else {
            (&u2, (&s1, &c1), (&s1, &u1))
        };
        let ws = if winner == "r1" { &s1 } else { &s2 };
        assert_eq!(remediate(ws, undo).await.1, Finish::Remediated);
        assert!(slots(&fake).is_empty() && !cordoned(&fake, winner));
        assert_eq!(remediate(other.0, other.1).await.1, Finish::Remediated);
        assert!(cordoned(&fake, loser));
        assert_eq!(
            remediate(undo_other.0, undo_other.1).await.1,
            Finish::Remediated
        );
        assert!(slots(&fake).is_empty() && !cordoned(&fake, loser));
    }
    tracing::debug!(?winners, "race winners");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_scoped_salve_acts_in_its_namespaces_only() {
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    for object in [node("n1"), deployment("shop"), deployment("web")] {
        fake.insert(object).expect("seeded");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (salve, journal) = executor(client, dir.path(), Scope::namespaces(["shop"]));
    for (name, target, action) in [
        (
            "web",
            "{kind: Deployment, namespace: web, name: api}",
            "rollout_restart",
        ),
        ("node", "{kind: Node, name: n1}", "cordon"),
    ] {
        let (incident, finish) = remediate(&salve, &playbook(name, target, &step(action))).await;
        assert!(matches!(finish, Finish::Halted(_)), "{name}: {finish:?}");
        assert_eq!(denials(&journal, &incident), ["out_of_scope"], "{name}");
    }
    assert_eq!(writes(&fake), Vec::<String>::new());
    let (_, finish) = remediate(
        &salve,
        &playbook(
            "shop",
            "{kind: Deployment, namespace: shop, name: api}",
            &step("rollout_restart"),
        ),
    )
    .await;
    assert_eq!(finish, Finish::Remediated);
    let written = writes(&fake);
    assert!(
        !written.is_empty() && written.iter().all(|w| w.contains("/namespaces/shop/")),
        "{written:?}"
    );
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
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    let crash = |name: &str, node: &str| {
        let mut pod = pod("shop", name, node);
        pod["status"]["containerStatuses"] = json!([{
            "name": "app", "image": "app:1", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        }]);
        pod
    };
    fake.insert(crash("p1", "n1")).expect("seeded");
    fake.insert(crash("p2", "n2")).expect("seeded");
    fake.insert(pod("shop", "p3", "n1")).expect("seeded");
    let now = chrono::Utc::now();
    for (name, about) in [("e1", "p3"), ("e2", "p2")] {
        fake.insert(json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": about},
            "reason": "BackOff", "type": "Warning", "message": "back-off",
            "firstTimestamp": now.to_rfc3339(), "lastTimestamp": now.to_rfc3339(), "count": 1,
        }))
        .expect("seeded");
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
    let scope = WatchScope::for_playbooks([&crashing, &backing_off])
        .within(&Scope::node_local("n1", 1, SALVE_NS));
    tokio::spawn(store.watch(client, &scope, cancel.clone()));
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
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
    let pod_lists: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/pods"))
        .map(|r| r.query)
        .collect();
    assert!(!pod_lists.is_empty());
    assert!(
        pod_lists
            .iter()
            .all(|q| q.contains("spec.nodeName%3Dn1") || q.contains("spec.nodeName=n1")),
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
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    for name in ["a", "b", "c"] {
        fake.insert(node(name)).expect("seeded");
    }
    let now = chrono::Utc::now();
    let lease = |slots: Value| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": SALVE_NS,
                         "annotations": {ANNOTATION: slots.to_string()}},
            "spec": {},
        })
    };
    // `b` holds the only slot: young, so kept even though `b` is not cordoned yet (its Salve
    // may be cordoning it right now).
    fake.insert(lease(json!({"b": now.to_rfc3339()})))
        .expect("seeded");
    let a = Cordons::new(client.clone(), SALVE_NS, "a", 1);
    assert!(matches!(a.take(now).await, Err(Error::Full { .. })));
    // Ten minutes on, `b` is still schedulable: someone uncordoned it; its slot is stale.
    let later = now + chrono::TimeDelta::minutes(10);
    assert_eq!(a.take(later).await.expect("a slot"), Taken::New);
    assert_eq!(a.take(later).await.expect("held"), Taken::Held);
    assert_eq!(slots(&fake), BTreeSet::from(["a".to_string()]));
    // A cordoned node's slot is never stale.
    let c = Cordons::new(client.clone(), SALVE_NS, "c", 1);
    fake.insert(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"},
                       "spec": {"unschedulable": true}}),
    )
    .expect("a is cordoned");
    let much_later = later + chrono::TimeDelta::hours(1);
    assert!(matches!(c.take(much_later).await, Err(Error::Full { .. })));
    a.give_back().await.expect("given back");
    assert!(slots(&fake).is_empty());
    // No cordons at all, and a count it cannot read: refused.
    let none = Cordons::new(client.clone(), "elsewhere", "c", 0);
    assert!(matches!(none.take(now).await, Err(Error::Full { .. })));
    fake.insert(lease(json!("not a map"))).expect("seeded");
    assert!(matches!(c.take(now).await, Err(Error::Corrupt { .. })));
}
