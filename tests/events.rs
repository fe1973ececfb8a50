//! `event` triggers through the real `kube::Client` and `kube::runtime` watchers, against the
//! in-process fake API server: Pod and Node status and `core/v1` Events feed the same signal
//! states as every other trigger, and missing data is inconclusive, never healthy.
//!
//! Status conditions hold whatever the evaluation's time, so the tests evaluate at explicit
//! times (no sleeping for `for`); Events carry their own times, chosen around [`T0`].

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use salve::action::TargetKind;
use salve::kube_fake::FakeApiServer;
use salve::playbook::load::{Loaded, load_text};
use salve::playbook::{Playbook, TriggerKind};
use salve::signal::evaluation::{Sources, Tracked};
use salve::signal::kube_event::{EventStore, WatchScope};
use salve::signal::state::{LabelSet, Observation, Transition};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The time Events in these tests happen around.
const T0: &str = "2026-11-25T00:00:00Z";

/// How long a test waits for the watchers to see a change.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

fn at(minutes: f64) -> DateTime<Utc> {
    let t0 = DateTime::parse_from_rfc3339(T0).expect("RFC 3339").to_utc();
    t0 + chrono::Duration::milliseconds((minutes * 60_000.0) as i64)
}

/// A compiled playbook whose `trigger:` block is `trigger` (indented by 4), acting on the
/// object the event is about.
fn playbook(trigger: &str) -> Arc<Playbook> {
    let (target, step) = if trigger.contains("kind: Node") {
        (
            "{kind: Node, name: \"${labels.node}\"}",
            "cordon, risk: low",
        )
    } else {
        (
            "{kind: Pod, namespace: \"${labels.namespace}\", name: \"${labels.pod}\"}",
            "capture_logs, risk: none",
        )
    };
    let text = format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: t}}\nspec:\n  trigger:\n{trigger}  target: {target}\n  steps:\n    - {{action: {step}}}\n"
    );
    let mut loaded = Loaded::default();
    load_text(Path::new("t.yaml"), &text, &mut loaded);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    Arc::clone(&loaded.playbooks[0])
}

/// A Pod in `namespace` whose container `app` has `state` (and `lastState`, if given).
fn pod(namespace: &str, name: &str, state: Value, last_state: Option<Value>) -> Value {
    let mut status = json!({
        "name": "app", "image": "app:1", "imageID": "", "ready": false, "restartCount": 3,
        "state": state,
    });
    if let Some(last) = last_state {
        status["lastState"] = last;
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "containerStatuses": [status]},
    })
}

fn crash_looping(namespace: &str, name: &str) -> Value {
    pod(
        namespace,
        name,
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}),
        None,
    )
}

fn running(namespace: &str, name: &str) -> Value {
    pod(namespace, name, json!({"running": {"startedAt": T0}}), None)
}

fn node(name: &str, ready: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletNotReady"}]},
    })
}

/// The trigger's settings, to ask the store directly.
fn settings(playbook: &Playbook) -> (TargetKind, Vec<String>, Vec<String>) {
    match &playbook.trigger.kind {
        TriggerKind::Event {
            kind,
            reasons,
            namespaces,
        } => (*kind, reasons.clone(), namespaces.clone()),
        other => panic!("not an event trigger: {other:?}"),
    }
}

/// Watches what `playbook` needs through `client` into `store`; cancel with the token.
fn watch(store: &EventStore, client: kube::Client, playbook: &Arc<Playbook>) -> CancellationToken {
    let cancel = CancellationToken::new();
    let scope = WatchScope::for_playbooks([playbook]);
    tokio::spawn(store.watch(client, &scope, cancel.clone()));
    cancel
}

/// Waits until the store's observation for `playbook` at `when` satisfies `ok`; returns it.
async fn seen(
    store: &EventStore,
    playbook: &Playbook,
    when: DateTime<Utc>,
    ok: impl Fn(&Observation) -> bool,
) -> anyhow::Result<Observation> {
    let (kind, reasons, namespaces) = settings(playbook);
    let mut changes = store.changes();
    let deadline = tokio::time::Instant::now() + SEEN_WITHIN;
    loop {
        let observation = store.observe(kind, &reasons, &namespaces, when);
        if ok(&observation) {
            return Ok(observation);
        }
        // Changes wake the wait; the timeout covers time-based ones (a watch going stale).
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
            changes.changed(),
        )
        .await;
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not seen within {SEEN_WITHIN:?}; last: {observation:?}"
        );
    }
}

/// The samples' values of `label`, when the observation holds.
fn holding(observation: &Observation, label: &str) -> Option<Vec<String>> {
    match observation {
        Observation::Holds(samples) => Some(
            samples
                .iter()
                .map(|s| s.labels.get(label).cloned().unwrap_or_default())
                .collect(),
        ),
        _ => None,
    }
}

/// Evaluates `tracked` at `when`; its transitions with their labels.
/// The playbook's trigger, and sources in which it reads `store`.
fn tracked(playbook: &Arc<Playbook>, store: &EventStore) -> anyhow::Result<(Tracked, Sources)> {
    let tracked = Tracked::new(Arc::clone(playbook)).context("an event trigger")?;
    let sources = Sources {
        events: Some(store.clone()),
        ..Sources::default()
    };
    Ok((tracked, sources))
}

async fn step(
    tracked: &Tracked,
    sources: &Sources,
    when: DateTime<Utc>,
) -> Vec<(&'static str, LabelSet)> {
    tracked
        .evaluate(sources, when)
        .await
        .into_iter()
        .map(|e| (e.event.transition.event(), e.event.labels))
        .collect()
}

fn names(events: &[(&'static str, LabelSet)]) -> Vec<&'static str> {
    events.iter().map(|(name, _)| *name).collect()
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn a_crash_looping_pod_fires_after_for_and_resolves_when_it_runs_again() -> anyhow::Result<()>
{
    let (fake, client) = FakeApiServer::start().await?;
    fake.insert(crash_looping("prod", "api-1"))?;
    fake.insert(running("prod", "web-1"))?;
    let playbook = playbook("    event: {kind: Pod, reason: [CrashLoopBackOff]}\n    for: 2m\n");
    let store = EventStore::new();
    let _cancel = watch(&store, client.clone(), &playbook);
    seen(&store, &playbook, at(0.0), |o| {
        holding(o, "pod").is_some_and(|p| p == ["api-1"])
    })
    .await?;

    let (tracked, sources) = tracked(&playbook, &store)?;
    assert_eq!(
        names(&step(&tracked, &sources, at(0.0)).await),
        ["signal_pending"]
    );
    assert!(step(&tracked, &sources, at(1.0)).await.is_empty());
    let fired = step(&tracked, &sources, at(2.0)).await;
    assert_eq!(names(&fired), ["signal_firing"]);
    assert_eq!(
        fired[0].1,
        labels(&[
            ("namespace", "prod"),
            ("pod", "api-1"),
            ("kind", "Pod"),
            ("name", "api-1"),
            ("reason", "CrashLoopBackOff"),
            ("container", "app"),
        ])
    );

    // The container runs again: a status update through the client.
    let pods: Api<Pod> = Api::namespaced(client, "prod");
    let status = json!({"status": running("prod", "api-1")["status"].clone()});
    pods.patch_status("api-1", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    seen(&store, &playbook, at(3.0), |o| {
        holding(o, "pod").is_some_and(|p| p.is_empty())
    })
    .await?;
    assert_eq!(
        names(&step(&tracked, &sources, at(3.0)).await),
        ["signal_resolved"]
    );
    Ok(())
}

#[tokio::test]
async fn an_oom_killed_last_state_fires_for_the_window_after_it_finished() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    let oom = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                     "startedAt": T0, "finishedAt": T0}});
    fake.insert(pod(
        "prod",
        "api-1",
        json!({"running": {"startedAt": T0}}),
        Some(oom),
    ))?;
    let playbook = playbook("    event: {kind: Pod, reason: [OOMKilled]}\n");
    let store = EventStore::new();
    let _cancel = watch(&store, client, &playbook);
    seen(&store, &playbook, at(1.0), |o| {
        holding(o, "container").is_some_and(|c| c == ["app"])
    })
    .await?;
    let (tracked, sources) = tracked(&playbook, &store)?;
    assert_eq!(
        names(&step(&tracked, &sources, at(1.0)).await),
        ["signal_firing"]
    );
    assert!(step(&tracked, &sources, at(5.0)).await.is_empty());
    assert_eq!(
        names(&step(&tracked, &sources, at(5.5)).await),
        ["signal_resolved"]
    );
    Ok(())
}

#[tokio::test]
async fn a_back_off_event_fires_and_stops_holding_after_the_window() -> anyhow::Result<()> {
    let (_fake, client) = FakeApiServer::start().await?;
    let playbook = playbook("    event: {kind: Pod, reason: [BackOff]}\n");
    let store = EventStore::new();
    let _cancel = watch(&store, client.clone(), &playbook);
    seen(
        &store,
        &playbook,
        at(0.0),
        |o| matches!(o, Observation::Holds(s) if s.is_empty()),
    )
    .await?;

    let event: Event = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "api-1.181a", "namespace": "prod"},
        "involvedObject": {"kind": "Pod", "namespace": "prod", "name": "api-1",
                           "fieldPath": "spec.containers{app}"},
        "reason": "BackOff", "type": "Warning",
        "message": "Back-off restarting failed container app",
        "firstTimestamp": T0, "lastTimestamp": T0, "count": 1,
    }))?;
    let events: Api<Event> = Api::namespaced(client, "prod");
    events.create(&PostParams::default(), &event).await?;
    seen(&store, &playbook, at(1.0), |o| {
        holding(o, "reason").is_some_and(|r| r == ["BackOff"])
    })
    .await?;

    let (tracked, sources) = tracked(&playbook, &store)?;
    let fired = step(&tracked, &sources, at(1.0)).await;
    assert_eq!(names(&fired), ["signal_firing"]);
    assert_eq!(fired[0].1.get("container").map(String::as_str), Some("app"));
    assert!(step(&tracked, &sources, at(5.0)).await.is_empty());
    assert_eq!(
        names(&step(&tracked, &sources, at(5.5)).await),
        ["signal_resolved"]
    );

    // The kubelet reports it again: the same Event, counted up, holds again.
    let again = json!({"lastTimestamp": at(7.0).to_rfc3339(), "count": 2});
    events
        .patch("api-1.181a", &PatchParams::default(), &Patch::Merge(&again))
        .await?;
    seen(&store, &playbook, at(7.5), |o| {
        holding(o, "pod").is_some_and(|p| p == ["api-1"])
    })
    .await?;
    assert_eq!(
        names(&step(&tracked, &sources, at(7.5)).await),
        ["signal_firing"]
    );
    Ok(())
}

#[tokio::test]
async fn only_the_triggers_namespaces_are_watched_and_seen() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    fake.insert(crash_looping("prod", "api-1"))?;
    fake.insert(crash_looping("dev", "api-1"))?;
    let playbook =
        playbook("    event: {kind: Pod, reason: [CrashLoopBackOff], namespaces: [prod]}\n");
    let store = EventStore::new();
    let _cancel = watch(&store, client, &playbook);
    let observation = seen(&store, &playbook, at(0.0), |o| {
        matches!(o, Observation::Holds(_))
    })
    .await?;
    assert_eq!(
        holding(&observation, "namespace"),
        Some(vec!["prod".into()])
    );
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/api/v1/namespaces/prod/")),
        "only prod is asked: {paths:?}"
    );
    // A trigger over every namespace is not served by a watch of one.
    let everywhere = store.observe(
        TargetKind::Pod,
        &["CrashLoopBackOff".to_string()],
        &[],
        at(0.0),
    );
    assert!(
        matches!(&everywhere, Observation::Inconclusive(r) if r.starts_with("Pods are not watched")),
        "{everywhere:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_pod_resolves() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    fake.insert(crash_looping("prod", "api-1"))?;
    let playbook = playbook("    event: {kind: Pod, reason: [CrashLoopBackOff]}\n");
    let store = EventStore::new();
    let _cancel = watch(&store, client.clone(), &playbook);
    seen(&store, &playbook, at(0.0), |o| {
        holding(o, "pod").is_some_and(|p| p == ["api-1"])
    })
    .await?;
    let (tracked, sources) = tracked(&playbook, &store)?;
    assert_eq!(
        names(&step(&tracked, &sources, at(0.0)).await),
        ["signal_firing"]
    );
    let pods: Api<Pod> = Api::namespaced(client, "prod");
    pods.delete("api-1", &DeleteParams::default()).await?;
    seen(&store, &playbook, at(1.0), |o| {
        holding(o, "pod").is_some_and(|p| p.is_empty())
    })
    .await?;
    assert_eq!(
        names(&step(&tracked, &sources, at(1.0)).await),
        ["signal_resolved"]
    );
    Ok(())
}

#[tokio::test]
async fn a_node_not_ready_fires_from_its_status() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    fake.insert(node("node-1", "Unknown"))?;
    fake.insert(node("node-2", "True"))?;
    let playbook = playbook("    event: {kind: Node, reason: [NodeNotReady]}\n    for: 5m\n");
    let store = EventStore::new();
    let _cancel = watch(&store, client, &playbook);
    seen(&store, &playbook, at(0.0), |o| {
        holding(o, "node").is_some_and(|n| n == ["node-1"])
    })
    .await?;
    let (tracked, sources) = tracked(&playbook, &store)?;
    assert_eq!(
        names(&step(&tracked, &sources, at(0.0)).await),
        ["signal_pending"]
    );
    let fired = step(&tracked, &sources, at(5.0)).await;
    assert_eq!(names(&fired), ["signal_firing"]);
    assert_eq!(fired[0].1.get("node").map(String::as_str), Some("node-1"));
    assert!(!fired[0].1.contains_key("namespace"));
    fake.insert(node("node-1", "True"))?;
    seen(&store, &playbook, at(6.0), |o| {
        holding(o, "node").is_some_and(|n| n.is_empty())
    })
    .await?;
    assert_eq!(
        names(&step(&tracked, &sources, at(6.0)).await),
        ["signal_resolved"]
    );
    Ok(())
}

#[tokio::test]
async fn before_the_first_list_the_trigger_is_inconclusive() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    fake.insert(crash_looping("prod", "api-1"))?;
    let playbook = playbook("    event: {kind: Pod, reason: [CrashLoopBackOff]}\n");
    let store = EventStore::new();
    let (tracked, sources) = tracked(&playbook, &store)?;
    // The watches are registered, not yet run.
    let cancel = CancellationToken::new();
    let watching = store.watch(
        client,
        &WatchScope::for_playbooks([&playbook]),
        cancel.clone(),
    );
    let found = tracked.evaluate(&sources, at(0.0)).await;
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].event.transition,
        Transition::Inconclusive {
            reason: "waiting for the first list of Pods from the Kubernetes API".into()
        }
    );
    tokio::spawn(watching);
    seen(
        &store,
        &playbook,
        at(1.0),
        |o| matches!(o, Observation::Holds(s) if !s.is_empty()),
    )
    .await?;
    assert_eq!(
        names(&step(&tracked, &sources, at(1.0)).await),
        ["signal_firing"]
    );
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn an_unreachable_api_is_inconclusive_never_resolved() -> anyhow::Result<()> {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse()?);
    let client = kube::Client::try_from(config)?;
    let playbook = playbook("    event: {kind: Pod, reason: [CrashLoopBackOff]}\n");
    let store = EventStore::new();
    let _cancel = watch(&store, client, &playbook);
    let observation = seen(
        &store,
        &playbook,
        at(0.0),
        |o| matches!(o, Observation::Inconclusive(r) if r.contains("last error")),
    )
    .await?;
    let Observation::Inconclusive(reason) = observation else {
        unreachable!()
    };
    assert!(
        reason.starts_with(
            "waiting for the first list of Pods from the Kubernetes API (last error: "
        ),
        "{reason}"
    );
    let (tracked, sources) = tracked(&playbook, &store)?;
    for minute in 0..5 {
        for (event, _) in step(&tracked, &sources, at(f64::from(minute))).await {
            assert_eq!(event, "signal_inconclusive");
        }
    }
    assert_eq!(tracked.counts().inconclusive, 5);
    Ok(())
}

#[tokio::test]
async fn an_api_gone_after_the_list_keeps_firing_then_goes_inconclusive() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    fake.insert(crash_looping("prod", "api-1"))?;
    let playbook = playbook("    event: {kind: Pod, reason: [CrashLoopBackOff]}\n");
    let store = EventStore::with_stale_after(Duration::from_secs(1));
    let _cancel = watch(&store, client, &playbook);
    seen(&store, &playbook, at(0.0), |o| {
        holding(o, "pod").is_some_and(|p| p == ["api-1"])
    })
    .await?;
    let (tracked, sources) = tracked(&playbook, &store)?;
    assert_eq!(
        names(&step(&tracked, &sources, at(0.0)).await),
        ["signal_firing"]
    );

    drop(fake);
    let observation = seen(&store, &playbook, at(1.0), |o| {
        matches!(o, Observation::Inconclusive(_))
    })
    .await?;
    assert!(
        matches!(&observation, Observation::Inconclusive(r)
            if r.starts_with("the watch of Pods has been failing for over 1s: ")),
        "{observation:?}"
    );
    assert_eq!(
        names(&step(&tracked, &sources, at(1.0)).await),
        ["signal_inconclusive"]
    );
    assert_eq!(
        tracked.tracker().firing().count(),
        1,
        "missing data never resolves a firing signal"
    );
    Ok(())
}
