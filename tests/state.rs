//! Incidents kept in the cluster (`salve::state`), through the real `kube::Client` against the
//! fake API server: concurrent appends conflict and are retried, never overwritten; a retried
//! entry is not added twice; an older leader's term is fenced; the first answer to an approval
//! counts; incidents over are deleted after the retention. Then replicas (executors with their
//! journals mirrored) taking over from one another, and the engine loop losing and taking back
//! the lead.
//!
//! # Against a real cluster
//!
//! With `SALVE_TEST_KUBECONFIG=/path/to/kubeconfig` the `IncidentStore` tests run against that
//! cluster, in a fresh namespace `salve-test-…` (deleted at the end); the CRDs must be installed
//! (`salve crds | kubectl apply -f -`). There the concurrent-appends test cannot count the
//! conflicts it caused (it still checks that every entry landed once). The replica tests run on
//! the fake either way (they read its request log); `tests/failover.rs` runs the failover
//! itself against a real cluster.
//!
//! ```text
//! SALVE_TEST_KUBECONFIG=~/.kube/kind cargo test --test tests -- state::
//! ```

use salve::kube_fake::{FakeApiServer, ResourceType};
use salve::state::{Error, IncidentStore, KIND, PLURAL, StateEntry};
use serde_json::json;

use crate::TestCluster;

/// The store of a test's namespace, on the fake or a real cluster.
async fn store() -> (TestCluster, IncidentStore) {
    let cluster = TestCluster::start("salve-system").await;
    let store = IncidentStore::new(cluster.client.clone(), &cluster.namespace);
    (cluster, store)
}

fn entry(writer: &str, seq: usize, kind: &str) -> StateEntry {
    StateEntry {
        id: format!("{writer}/{seq}"),
        at: "2026-11-26T08:00:00Z".into(),
        kind: kind.into(),
        detail: json!({"step": format!("s{seq}")}),
    }
}

/// Twelve writers append at once to one incident (created by whichever comes first): every
/// entry lands exactly once — each conflict was read again and retried. Rounds repeat (on new
/// incidents) until one shows a conflict, so the retry path is known to have run.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_are_retried_never_overwritten() {
    let (cluster, store) = store().await;
    let mut raced = false;
    for round in 0..20 {
        let incident = format!("inc-{round}");
        let puts_before = cluster.fake.as_ref().map(puts);
        let writes = (0..12).map(|n| {
            let (store, incident) = (store.clone(), incident.clone());
            tokio::spawn(async move {
                store
                    .append(&incident, "heal", &entry("a", n, "step_started"), 1)
                    .await
            })
        });
        for write in futures_util::future::join_all(writes).await {
            write.expect("task").expect("appended");
        }
        let state = store.read(&incident).await.expect("read").expect("stored");
        let mut ids: Vec<String> = state.entries.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        let mut wanted: Vec<String> = (0..12).map(|n| format!("a/{n}")).collect();
        wanted.sort();
        assert_eq!(ids, wanted, "every entry exactly once");
        let Some(fake) = &cluster.fake else {
            // A real cluster's conflicts cannot be counted here: one round checks the outcome.
            return;
        };
        if puts(fake) - puts_before.unwrap_or_default() > 12 {
            raced = true;
            break;
        }
    }
    assert!(raced, "no round had a conflict: the retry path never ran");
}

/// The status replaces the fake has seen.
fn puts(fake: &FakeApiServer) -> usize {
    fake.requests().iter().filter(|r| r.method == "PUT").count()
}

/// An entry already stored (a retry after an answer was lost) is not added again.
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_entry_is_stored_once() {
    let (_fake, store) = store().await;
    let planned = entry("a", 1, "planned");
    store
        .append("inc-1", "heal", &planned, 1)
        .await
        .expect("first");
    store
        .append("inc-1", "heal", &planned, 1)
        .await
        .expect("again");
    let state = store.read("inc-1").await.expect("read").expect("stored");
    assert_eq!(state.entries, vec![planned]);
    assert_eq!(state.term, 1);
}

/// Once a newer leader (term 2) wrote an incident, the older one (term 1) can write nothing
/// more to it: its append is refused and the state is as the newer leader left it.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_term_is_fenced() {
    let (_fake, store) = store().await;
    store
        .append("inc-1", "heal", &entry("old", 1, "step_started"), 1)
        .await
        .expect("the old leader writes");
    store
        .append("inc-1", "heal", &entry("new", 1, "rollback_started"), 2)
        .await
        .expect("the new leader writes");
    let refused = store
        .append("inc-1", "heal", &entry("old", 2, "step_succeeded"), 1)
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Fenced {
                recorded: 2,
                ours: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    let state = store.read("inc-1").await.expect("read").expect("stored");
    let kinds: Vec<&str> = state.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["step_started", "rollback_started"]);
    assert_eq!(state.term, 2);
}

/// A status that does not read as Salve's (edited by hand) is never written over: the append
/// fails and the status is as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_status_salve_cannot_read_is_left_alone() {
    let (cluster, store) = store().await;
    if cluster.fake.is_none() {
        eprintln!("skipped against a real cluster: the CRD's schema refuses such an edit there");
        return;
    }
    store
        .append("inc-1", "heal", &entry("a", 1, "remediation_planned"), 1)
        .await
        .expect("created");
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("salve.dev", "v1", KIND),
        PLURAL,
    );
    let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        cluster.client.clone(),
        &cluster.namespace,
        &resource,
    );
    let mut object = api.get("inc-1").await.expect("read");
    let edited = json!({"term": 1, "entries": "moved to a ticket"});
    object.data["status"] = edited.clone();
    api.replace_status("inc-1", &Default::default(), &object)
        .await
        .expect("edited by hand");
    let refused = store
        .append("inc-1", "heal", &entry("a", 2, "step_started"), 1)
        .await;
    assert!(
        matches!(refused, Err(Error::Unreadable { .. })),
        "{refused:?}"
    );
    let object = api.get("inc-1").await.expect("read");
    assert_eq!(object.data["status"], edited, "left as it was");
}

/// An entry `id` of `kind` at `at`, with `detail`.
fn entry_at(id: &str, kind: &str, at: &str, detail: serde_json::Value) -> StateEntry {
    StateEntry {
        id: id.into(),
        at: at.into(),
        kind: kind.into(),
        detail,
    }
}

/// An approval's answer is taken from any replica — not fenced, the leader's term left as it
/// is — and the first one the cluster holds counts: another answer to the same approval is
/// refused, while the same answer sent again (a retry) is not.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_answer_counts_whichever_replica_took_it() {
    let (_fake, store) = store().await;
    let at = "2026-11-26T08:00:00Z";
    let asked = |n: usize, approval: &str| {
        entry_at(
            &format!("leader/{n}"),
            "approval_requested",
            at,
            json!({"approval": approval}),
        )
    };
    store
        .append("inc-1", "heal", &asked(1, "apr-1"), 3)
        .await
        .expect("the leader asks");
    let granted = entry_at(
        "follower/9",
        "approval_granted",
        at,
        json!({"approval": "apr-1", "by": "ana"}),
    );
    store
        .answer("inc-1", "heal", &granted)
        .await
        .expect("a follower's API takes the answer");
    store
        .answer("inc-1", "heal", &granted)
        .await
        .expect("the same answer again");
    let rejected = entry_at(
        "leader/2",
        "approval_rejected",
        at,
        json!({"approval": "apr-1", "by": "bob"}),
    );
    let refused = store.answer("inc-1", "heal", &rejected).await;
    assert!(
        matches!(&refused, Err(Error::Answered { approval, answer })
            if approval == "apr-1" && answer == "approval_granted"),
        "{refused:?}"
    );
    store
        .append("inc-1", "heal", &asked(3, "apr-2"), 3)
        .await
        .expect("the leader asks again");
    let expired = entry_at(
        "leader/4",
        "approval_expired",
        at,
        json!({"approval": "apr-2"}),
    );
    store
        .answer("inc-1", "heal", &expired)
        .await
        .expect("another approval's answer");
    let state = store.read("inc-1").await.expect("read").expect("stored");
    let ids: Vec<&str> = state.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["leader/1", "follower/9", "leader/3", "leader/4"]);
    assert_eq!(state.term, 3, "answers leave the term alone");
}

/// The leader deletes the incidents over (nothing planned, or the remediation's end recorded)
/// and quiet for longer than the retention; one in flight (waiting for an approval) or over
/// but recent is kept.
#[tokio::test(flavor = "multi_thread")]
async fn incidents_over_are_deleted_after_the_retention_in_flight_ones_kept() {
    let (cluster, store) = store().await;
    let now = chrono::Utc::now();
    let ago = |minutes: i64| (now - chrono::TimeDelta::minutes(minutes)).to_rfc3339();
    let incidents = [
        (
            "inc-over",
            vec![("remediation_planned", 130), ("remediation_finished", 120)],
        ),
        (
            "inc-waiting",
            vec![("remediation_planned", 130), ("approval_requested", 120)],
        ),
        (
            "inc-recent",
            vec![("remediation_planned", 20), ("remediation_finished", 10)],
        ),
        (
            "inc-detected",
            vec![("incident_opened", 130), ("incident_resolved", 120)],
        ),
        (
            "inc-again",
            vec![
                ("remediation_planned", 140),
                ("remediation_finished", 135),
                ("remediation_planned", 120),
            ],
        ),
    ];
    for (incident, entries) in &incidents {
        for (n, (kind, minutes)) in entries.iter().enumerate() {
            let entry = entry_at(&format!("a/{n}"), kind, &ago(*minutes), json!({}));
            store
                .append(incident, "heal", &entry, 1)
                .await
                .expect("appended");
        }
    }
    let importer = salve::state::Importer::new(store.clone(), "a")
        .retaining(std::time::Duration::from_secs(3600));
    assert_eq!(importer.collect(now).await.expect("collected"), 2);
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("salve.dev", "v1", KIND),
        PLURAL,
    );
    let mut left: Vec<String> = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        cluster.client.clone(),
        &cluster.namespace,
        &resource,
    )
    .list(&Default::default())
    .await
    .expect("list")
    .items
    .into_iter()
    .filter_map(|o| o.metadata.name)
    .collect();
    left.sort();
    assert_eq!(left, ["inc-again", "inc-recent", "inc-waiting"]);
}

/// One replica: its journal mirrored to the cluster, its executor acting under `leadership`
/// (none: a single replica).
struct Replica {
    journal: std::sync::Arc<salve::journal::Journal>,
    executor: salve::executor::Executor,
    metrics: salve::metrics::Metrics,
    _dir: tempfile::TempDir,
}

fn replica(
    client: kube::Client,
    url: &str,
    name: &str,
    leadership: Option<tokio::sync::watch::Receiver<salve::lease::Leadership>>,
) -> Replica {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = std::sync::Arc::new(
        salve::journal::Journal::open(&dir.path().join("journal.db")).expect("journal"),
    );
    let store = IncidentStore::new(client.clone(), "salve-system");
    let mut config = kube::Config::new(url.parse().expect("a URL"));
    config.default_retry = false;
    let mirror =
        salve::state::ClusterMirror::start(config, "salve-system", name, leadership.clone())
            .expect("a mirror");
    journal.set_mirror(std::sync::Arc::new(mirror));
    let policy = crate::remediation::POLICY.replace("timeout: 1s", "timeout: 60s");
    let metrics = salve::metrics::Metrics::default();
    let executor = salve::executor::Executor::new(
        client,
        std::sync::Arc::clone(&journal),
        salve::gate::Gate::new(crate::remediation::policy(&policy)),
        None,
        salve::executor::Settings {
            poll: std::time::Duration::from_millis(50),
            leadership,
            cluster: Some(salve::state::Importer::new(store, name)),
            metrics: metrics.clone(),
            ..salve::executor::Settings::default()
        },
    );
    Replica {
        journal,
        executor,
        metrics,
        _dir: dir,
    }
}

/// A lead of `term`, valid for a minute.
fn leading(term: u64) -> salve::lease::Leadership {
    crate::lease::lead(term, std::time::Duration::from_secs(60))
}

/// The writes to the Deployment's scale that were not dry runs.
fn scalings(fake: &FakeApiServer) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            r.method != "GET"
                && r.path.ends_with("/deployments/api/scale")
                && r.param("dryRun").is_none()
        })
        .count()
}

/// The playbook the takeover tests run: a step that runs, then one that waits for a human.
fn two_steps() -> std::sync::Arc<salve::playbook::Playbook> {
    std::sync::Arc::clone(&two_steps_set().playbooks[0])
}

/// [`two_steps`], loaded.
fn two_steps_set() -> salve::playbook::load::Loaded {
    crate::remediation::load(&crate::remediation::playbook_text(
        "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n    - {name: drain, action: scale, risk: high, params: {replicas: 2}}\n",
        "  onInterrupt: resume\n",
    ))
}

/// The approval `journal` shows waiting, once there is one (10 s at most).
pub(crate) async fn waiting(
    journal: &std::sync::Arc<salve::journal::Journal>,
) -> salve::approval::Approval {
    let approvals = salve::approval::Approvals::new(std::sync::Arc::clone(journal));
    let began = std::time::Instant::now();
    loop {
        if let Some(approval) = approvals.pending().expect("pending").pop() {
            return approval;
        }
        assert!(
            began.elapsed() < std::time::Duration::from_secs(10),
            "no approval waiting"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Remediates [`two_steps`] on `replica` until its second step waits for a human, then kills
/// the remediation there (the pod dies); the incident.
async fn die_waiting(replica: &Replica, fake: &FakeApiServer) -> salve::incident::Incident {
    let playbook = two_steps();
    let (incident, signal) = crate::remediation::opened(&playbook, "api-1");
    let running = {
        let (executor, incident) = (replica.executor.clone(), incident.clone());
        tokio::spawn(async move { executor.remediate(&playbook, &incident, &signal).await })
    };
    waiting(&replica.journal).await;
    assert_eq!(crate::remediation::replicas(fake), 5, "the first step ran");
    running.abort();
    incident
}

/// Recovers on `replica` (taking over what the cluster keeps first), answering the approval
/// it finds waiting: how the remediation ends.
async fn take_over_and_approve(replica: &Replica) -> Vec<(String, salve::executor::Finish)> {
    let recovery = {
        let executor = replica.executor.clone();
        tokio::spawn(async move { executor.take_over().await.recover(|_| true).await })
    };
    approve_waiting(&replica.journal).await;
    recovery.await.expect("task").expect("journaled")
}

/// Approves, as ana, the approval `journal` shows waiting, once there is one.
async fn approve_waiting(journal: &std::sync::Arc<salve::journal::Journal>) {
    let approval = waiting(journal).await;
    salve::approval::Approvals::new(std::sync::Arc::clone(journal))
        .answer(
            &approval.id,
            salve::approval::Answer::Approve,
            "ana",
            chrono::Utc::now(),
        )
        .expect("answered");
}

/// The fake API server with the remediation tests' Deployment and the `SalveIncident` kind.
async fn cluster() -> crate::remediation::Setup {
    let s = crate::remediation::setup(crate::remediation::POLICY, None).await;
    s.fake
        .register(ResourceType::custom("salve.dev/v1", KIND, PLURAL, true));
    s
}

/// Failover mid-remediation: the leader scales up, then waits for a human on its second step
/// and dies there. The replica that takes the lead reads the incident from the cluster,
/// resumes from the recorded step — the waiting approval, which it then gets — and runs only
/// what was left: each step ran exactly once. The dead leader's journal, were it to come back,
/// can record nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_resumes_the_old_ones_remediation_exactly_once() {
    let s = cluster().await;
    let (client, url) = (s.fake.client().expect("a client"), s.fake.url().to_string());
    let (to_a, lead_a) = tokio::sync::watch::channel(leading(1));
    let (to_b, lead_b) = tokio::sync::watch::channel(salve::lease::Leadership::default());
    let a = replica(client.clone(), &url, "a", Some(lead_a));
    let b = replica(client, &url, "b", Some(lead_b));
    let incident = die_waiting(&a, &s.fake).await;

    // The other replica leads, with a greater term, and takes over.
    to_a.send(salve::lease::Leadership::default())
        .expect("send");
    to_b.send(leading(2)).expect("send");
    let recovered = take_over_and_approve(&b).await;
    assert_eq!(
        recovered,
        vec![(incident.id.clone(), salve::executor::Finish::Remediated)]
    );
    assert_eq!(crate::remediation::replicas(&s.fake), 2, "drain ran");
    assert_eq!(
        scalings(&s.fake),
        2,
        "scale-up once (old leader), drain once (new leader)"
    );
    let timeline = b.journal.timeline(&incident.id).expect("timeline");
    assert!(
        timeline.iter().any(|e| e.record.detail["stateId"]
            .as_str()
            .is_some_and(|id| id.starts_with("a/"))),
        "the old leader's entries were imported"
    );
    // The old leader's journal can record nothing more for it: it is fenced.
    let late = a.journal.append(&salve::journal::Record {
        at: chrono::Utc::now(),
        kind: salve::journal::Kind::StepStarted,
        playbook: "heal".into(),
        incident: Some(incident.id.clone()),
        detail: json!({"step": "drain", "index": 1}),
    });
    assert!(
        matches!(late, Err(salve::journal::Error::Mirror { .. })),
        "{late:?}"
    );
}

/// A single replica (no election) keeps its incidents in the cluster too (`--cluster-state`):
/// its pod rescheduled with an empty journal reads them back at start and resumes the
/// remediation from the recorded step — the step that ran before is not run again.
#[tokio::test(flavor = "multi_thread")]
async fn a_rescheduled_pod_resumes_from_the_cluster() {
    let s = cluster().await;
    let (client, url) = (s.fake.client().expect("a client"), s.fake.url().to_string());
    let before = replica(client.clone(), &url, "pod-1", None);
    let incident = die_waiting(&before, &s.fake).await;
    // The pod is deleted; its journal (an emptyDir) with it.
    drop(before);
    let after = replica(client, &url, "pod-2", None);
    let recovered = take_over_and_approve(&after).await;
    assert_eq!(
        recovered,
        vec![(incident.id.clone(), salve::executor::Finish::Remediated)]
    );
    assert_eq!(crate::remediation::replicas(&s.fake), 2);
    assert_eq!(scalings(&s.fake), 2, "scale-up once, drain once");
}

/// Waits (10 s at most) until `journal` shows `incident`'s remediation finished.
async fn until_finished(journal: &salve::journal::Journal, incident: &str, what: &str) {
    let began = std::time::Instant::now();
    while !journal
        .timeline(incident)
        .expect("timeline")
        .iter()
        .any(|e| e.record.kind == salve::journal::Kind::RemediationFinished)
    {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(10),
            "{what}: not finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// How many approvals `replica`'s engine waits for (`salve_approvals_pending`).
fn waiting_for(replica: &Replica) -> f64 {
    let text = replica.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix("salve_approvals_pending ")?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (10 s at most) until `replica`'s engine waits for `want` approvals.
async fn until_waiting_for(replica: &Replica, want: f64) {
    let began = std::time::Instant::now();
    while waiting_for(replica) != want {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(10),
            "waiting for {} approvals, not {want}",
            waiting_for(replica)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The engine loop under leader election: taking the lead, it recovers the remediation its
/// journal shows in flight (waiting for an approval); losing the lead, it stops it where it
/// stands (as if the replica had died: nothing waits any more); taking the lead back, it
/// recovers it again — once: when the approval comes, the step runs exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn losing_the_lead_stops_what_runs_and_taking_it_back_recovers_it_once() {
    let s = cluster().await;
    let (client, url) = (s.fake.client().expect("a client"), s.fake.url().to_string());
    let (to_a, lead_a) = tokio::sync::watch::channel(leading(1));
    let a = replica(client, &url, "a", Some(lead_a));
    let incident = die_waiting(&a, &s.fake).await;
    let set = salve::playbook::PlaybookSet::from_loaded(two_steps_set()).expect("a valid set");
    let cancel = tokio_util::sync::CancellationToken::new();
    let engine = tokio::spawn(salve::app::run(
        std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(set)),
        salve::signal::evaluation::Sources::default(),
        std::sync::Arc::clone(&a.journal),
        Some(a.executor.clone()),
        salve::app::Options::default(),
        cancel.clone(),
    ));
    until_waiting_for(&a, 1.0).await;
    to_a.send(salve::lease::Leadership::default())
        .expect("send");
    until_waiting_for(&a, 0.0).await;
    assert_eq!(
        a.executor.gate().active_incidents(),
        0,
        "the stopped remediation no longer counts against concurrentIncidents"
    );
    to_a.send(leading(2)).expect("send");
    until_waiting_for(&a, 1.0).await;
    assert_eq!(
        a.executor.gate().actions_in_last_hour(chrono::Utc::now()),
        1,
        "scale-up counted once in the hourly budget, however many times the lead was taken"
    );
    approve_waiting(&a.journal).await;
    until_finished(&a.journal, &incident.id, "the recovered remediation").await;
    cancel.cancel();
    engine.await.expect("the engine stops");
    assert_eq!(crate::remediation::replicas(&s.fake), 2, "drain ran");
    assert_eq!(scalings(&s.fake), 2, "scale-up once, drain once");
}

/// An incident that opened while this replica followed (no leader then, so nobody began to
/// remediate it) is remediated when it takes the lead — not left open until it resolves and
/// opens again.
#[tokio::test(flavor = "multi_thread")]
async fn an_incident_no_leader_began_is_remediated_on_taking_the_lead() {
    let s = cluster().await;
    let (client, url) = (s.fake.client().expect("a client"), s.fake.url().to_string());
    let (to_a, lead_a) = tokio::sync::watch::channel(salve::lease::Leadership::default());
    let a = replica(client, &url, "a", Some(lead_a));
    let text = "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: heal}\nspec:\n  trigger:\n    alert: {alertname: ApiDown}\n  target: {kind: Deployment, namespace: shop, name: api}\n  steps:\n    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n";
    let set = salve::playbook::PlaybookSet::from_loaded(crate::remediation::load(text))
        .expect("a valid set");
    let alerts = salve::alertmanager::AlertStore::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    let engine = tokio::spawn(salve::app::run(
        std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(set)),
        salve::signal::evaluation::Sources {
            alerts: salve::signal::evaluation::Alerts::Webhook(alerts.clone()),
            ..Default::default()
        },
        std::sync::Arc::clone(&a.journal),
        Some(a.executor.clone()),
        salve::app::Options {
            live: salve::signal::live::LiveOptions {
                tick: std::time::Duration::from_millis(50),
                ..Default::default()
            },
            ..Default::default()
        },
        cancel.clone(),
    ));
    let payload = json!({
        "version": "4", "status": "firing", "receiver": "salve",
        "alerts": [{
            "status": "firing", "labels": {"alertname": "ApiDown"},
            "startsAt": chrono::Utc::now().to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "0123456789abcdef",
        }],
    });
    let webhook =
        salve::alertmanager::Webhook::parse(payload.to_string().as_bytes()).expect("a payload");
    alerts.apply(&webhook, chrono::Utc::now());
    let opened = async || {
        a.journal
            .by_kind(salve::journal::Kind::IncidentOpened)
            .expect("read")
            .pop()
    };
    let began = std::time::Instant::now();
    let incident = loop {
        if let Some(entry) = opened().await {
            break entry.record.incident.expect("an incident");
        }
        assert!(
            began.elapsed() < std::time::Duration::from_secs(10),
            "no incident"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(scalings(&s.fake), 0, "a follower does not remediate");

    to_a.send(leading(1)).expect("send");
    until_finished(&a.journal, &incident, "the remediation on taking the lead").await;
    cancel.cancel();
    engine.await.expect("the engine stops");
    assert_eq!(crate::remediation::replicas(&s.fake), 5, "scale-up ran");
    assert_eq!(scalings(&s.fake), 1, "once");
}
