//! The HTTP API over real HTTP on a loopback port: health and readiness, metrics, incidents and
//! their timelines as the executor journaled them, approvals answered only with a valid token
//! (and recorded with its name), the playbook set with the last reload's errors, and the CLI's
//! `--server` mode against a served API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::Utc;
use reqwest::StatusCode;
use salve::api::{self, ApiState, Approvers, OPENMETRICS, PlaybookStatus, Tokens};
use salve::approval::{Approvals, Ask};
use salve::executor::Finish;
use salve::incident::{Incident, Incidents};
use salve::journal::{Journal, Record};
use salve::playbook::watch::Reloader;
use salve::playbook::{Playbook, PlaybookSet};
use salve::risk::Risk;
use salve::signal::state::SignalEvent;
use serde_json::{Value, json};

use crate::remediation::{POLICY, load, opened_since, playbook, replicas, setup, writes};

/// Who may answer, in the API's token-file format.
const TOKEN_FILE: &str = "# approvers\nana-0123456789abcdef ana\nbob-0123456789abcdef bob\n";
const ANA: &str = "ana-0123456789abcdef";

/// A step above the ceiling (`medium`).
const RISKY: &str = "    - {name: drain, action: scale, risk: high, params: {replicas: 0}}\n";

/// Serves the API with `state` on a free loopback port until the test's runtime ends; its URL.
pub(crate) async fn serve_state(state: ApiState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let address = listener.local_addr().expect("a bound address");
    api::serve(
        listener,
        api::router(state, None),
        tokio_util::sync::CancellationToken::new(),
    );
    format!("http://{address}")
}

/// Serves the API over `journal`; its URL.
async fn serve(journal: &Arc<Journal>, playbooks: PlaybookStatus, approvers: Approvers) -> String {
    let metrics = salve::metrics::Metrics::default();
    serve_state(ApiState::new(
        Arc::clone(journal),
        playbooks,
        metrics,
        approvers,
    ))
    .await
}

/// [`serve`], with `executor` rehearsing the playbooks the `trigger` endpoint names.
async fn serve_rehearsals(
    journal: &Arc<Journal>,
    playbooks: PlaybookStatus,
    executor: salve::executor::Executor,
) -> String {
    let metrics = salve::metrics::Metrics::default();
    let state = ApiState::new(Arc::clone(journal), playbooks, metrics, tokens());
    serve_state(state.rehearsing(executor)).await
}

fn tokens() -> Approvers {
    Approvers::Tokens(Tokens::parse(TOKEN_FILE).expect("a valid token file"))
}

/// A loaded set holding `playbook`.
fn loaded(playbook: &str) -> PlaybookStatus {
    let set = PlaybookSet::from_loaded(load(playbook)).expect("a valid set");
    PlaybookStatus::of(Arc::new(ArcSwap::from_pointee(set)))
}

/// `GET url`: status and JSON body.
async fn get(url: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.expect("an answer");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// `POST url` with `body`, as `token` when given: status and JSON body.
pub(crate) async fn post(url: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// Journals the opening of an incident of `playbook` on pod `pod` (its signal holding for 90 s),
/// as the engine does before remediating.
fn journal_opened(journal: &Journal, playbook: &Playbook, pod: &str) -> (Incident, SignalEvent) {
    let since = Utc::now() - chrono::Duration::seconds(90);
    let (_, signal) = opened_since(playbook, pod, since);
    let change = Incidents::new()
        .apply(playbook, &signal)
        .expect("the firing signal opens an incident");
    journal
        .append(&Record::incident(&change))
        .expect("journaled");
    (change.incident, signal)
}

/// Polls the API until one approval is pending; it.
async fn pending(api: &str) -> Value {
    let began = Instant::now();
    loop {
        let (status, body) = get(&format!("{api}/api/v1/approvals")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(approval) = body["approvals"].as_array().and_then(|a| a.first()) {
            return approval.clone();
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "no approval asked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_metrics_and_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Arc::new(Journal::open(&dir.path().join("j.db")).expect("journal"));
    let status = PlaybookStatus::new();
    let api = serve(&journal, status.clone(), Approvers::Unconfigured).await;

    let (code, _) = get(&format!("{api}/healthz")).await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) = get(&format!("{api}/readyz")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not loaded"),
        "{body}"
    );

    let set = PlaybookSet::from_loaded(load(&playbook_text("heal"))).expect("valid");
    status.loaded(Arc::new(ArcSwap::from_pointee(set)));
    let (code, body) = get(&format!("{api}/readyz")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["playbooks"], 1);

    let metrics = reqwest::get(format!("{api}/metrics"))
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    assert_eq!(metrics.headers()["content-type"], OPENMETRICS);

    // Alertmanager's webhook on the same listener, with its own token.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let hooked = format!("http://{}", listener.local_addr().expect("an address"));
    let state = ApiState::new(
        Arc::clone(&journal),
        status.clone(),
        salve::metrics::Metrics::default(),
        Approvers::Unconfigured,
    );
    let webhook = api::Webhook {
        store: salve::alertmanager::AlertStore::new(),
        token: Some("hook-token".into()),
        relay: None,
    };
    api::serve(
        listener,
        api::router(state, Some(webhook)),
        tokio_util::sync::CancellationToken::new(),
    );
    let hook = format!("{hooked}{}", salve::alertmanager::WEBHOOK_PATH);
    let (code, body) = post(&hook, None, "{}").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    let (code, body) = post(&hook, Some("hook-token"), "{}").await;
    assert_eq!(
        code,
        StatusCode::BAD_REQUEST,
        "past the token, not a payload: {body}"
    );
    let (code, _) = get(&format!("{hooked}/readyz")).await;
    assert_eq!(
        code,
        StatusCode::OK,
        "the webhook's token guards only the webhook"
    );

    let (code, body) = get(&format!("{api}/api/v1/nothing-here")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().is_some(), "{body}");
    let (code, body) = post(&format!("{api}/api/v1/incidents"), None, "").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].as_str().is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_needs_a_valid_token_records_its_name_and_lets_the_step_run() {
    let s = setup(&POLICY.replace("timeout: 1s", "timeout: 30s"), None).await;
    let risky = playbook(RISKY, "");
    let api = serve(&s.journal, loaded(&playbook_text("heal")), tokens()).await;
    let unconfigured = serve(
        &s.journal,
        loaded(&playbook_text("heal")),
        Approvers::Unconfigured,
    )
    .await;

    let (incident, signal) = journal_opened(&s.journal, &risky, "api-1");
    let remediation = {
        let (executor, risky, incident) =
            (s.executor.clone(), Arc::clone(&risky), incident.clone());
        tokio::spawn(async move { executor.remediate(&risky, &incident, &signal).await })
    };
    let approval = pending(&api).await;
    assert_eq!(approval["incident"], json!(incident.id));
    assert_eq!(approval["step"], "drain");
    assert_eq!(approval["risk"], "high");
    assert_eq!(approval["state"], "pending");
    let id = approval["id"].as_str().expect("an id");
    let approve = |base: &str| format!("{base}/api/v1/approvals/{id}/approve");

    let (code, body) = post(&approve(&api), None, "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    let (code, body) = post(&approve(&api), Some("ana-0123456789abcdeX"), "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    let (code, body) = post(&approve(&unconfigured), Some(ANA), "").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--api-token-file"),
        "says how to configure it: {body}"
    );
    let unknown = format!("{api}/api/v1/approvals/apr-0000/approve");
    let (code, body) = post(&unknown, Some(ANA), "").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(replicas(&s.fake), 3, "nothing ran on a refused answer");

    let (code, body) = post(&approve(&api), Some(ANA), "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "approved");
    assert_eq!(body["by"], "ana", "the token's name is recorded");
    let reject = format!("{api}/api/v1/approvals/{id}/reject");
    let (code, body) = post(&reject, Some("bob-0123456789abcdef"), "").await;
    assert_eq!(code, StatusCode::CONFLICT, "a second answer: {body}");

    let finish = remediation
        .await
        .expect("the remediation task")
        .expect("every decision journaled");
    assert_eq!(finish, Finish::Remediated);
    assert_eq!(replicas(&s.fake), 0, "the approved step ran");

    // The incident, as the journal tells it.
    let (code, body) = get(&format!("{api}/api/v1/incidents")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let listed = &body["incidents"][0];
    assert_eq!(listed["id"], json!(incident.id));
    assert_eq!(listed["playbook"], "heal");
    assert_eq!(listed["target"], "Deployment shop/api");
    let mttd = listed["mttdSeconds"].as_f64().expect("a time to detect");
    assert!((89.0..=91.0).contains(&mttd), "{listed}");
    assert!(listed.get("advice").is_some(), "{listed}");

    let (code, body) = get(&format!("{api}/api/v1/incidents/{}", incident.id)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["incident"]["id"], json!(incident.id));
    let kinds: Vec<&str> = body["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for kind in [
        "incident_opened",
        "approval_requested",
        "approval_granted",
        "step_succeeded",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let granted = body["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "approval_granted")
        .expect("granted");
    assert_eq!(granted["detail"]["by"], "ana");

    let (code, body) = get(&format!("{api}/api/v1/incidents/inc-unknown")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("inc-unknown")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_keeps_its_reason_and_the_step_never_runs() {
    let s = setup(&POLICY.replace("timeout: 1s", "timeout: 30s"), None).await;
    let risky = playbook(RISKY, "");
    let api = serve(&s.journal, loaded(&playbook_text("heal")), tokens()).await;
    let (incident, signal) = journal_opened(&s.journal, &risky, "api-1");
    let remediation = {
        let (executor, risky) = (s.executor.clone(), Arc::clone(&risky));
        tokio::spawn(async move { executor.remediate(&risky, &incident, &signal).await })
    };
    let id = pending(&api).await["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let reject = format!("{api}/api/v1/approvals/{id}/reject");

    let (code, body) = post(&reject, Some(ANA), r#"{"why": "typo"}"#).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = post(&reject, Some(ANA), r#"{"reason": "not now"}"#).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "rejected");
    assert_eq!(body["by"], "ana");
    assert_eq!(body["rejection"], "not now");
    let approve = format!("{api}/api/v1/approvals/{id}/approve");
    let (code, body) = post(&approve, Some(ANA), "").await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");

    let finish = remediation
        .await
        .expect("the remediation task")
        .expect("every decision journaled");
    assert!(
        matches!(&finish, Finish::Halted(reason) if reason.contains("rejected by ana: not now")),
        "{finish:?}"
    );
    assert_eq!(replicas(&s.fake), 3, "the rejected step never ran");
}

/// A playbook document named `name`.
fn playbook_text(name: &str) -> String {
    format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  description: Scale the API up.\n  trigger:\n    promql: {{expr: 'vector(1)'}}\n  target: {{kind: Deployment, namespace: shop, name: api}}\n  steps:\n    - {{name: scale-up, action: scale, risk: low, params: {{replicas: 5}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_playbook_set_shows_digests_and_a_rejected_reload_with_its_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("heal.yaml");
    std::fs::write(&file, playbook_text("heal")).expect("write");
    let (reloader, _) = Reloader::from_paths(vec![dir.path().to_path_buf()]).expect("valid");
    let status = PlaybookStatus::of(Arc::clone(reloader.active()));
    let journal = Arc::new(Journal::open(&dir.path().join("j.db")).expect("journal"));
    let api = serve(&journal, status.clone(), Approvers::Unconfigured).await;

    let (code, body) = get(&format!("{api}/api/v1/playbooks")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let heal = &body["playbooks"][0];
    assert_eq!(heal["name"], "heal");
    assert_eq!(heal["description"], "Scale the API up.");
    assert_eq!(heal["steps"], json!(["scale-up"]));
    assert!(
        heal["file"]
            .as_str()
            .unwrap_or_default()
            .ends_with("heal.yaml"),
        "{heal}"
    );
    let digest = heal["digest"].as_str().expect("a digest").to_string();
    assert_eq!(digest.len(), 64, "SHA-256 in hex: {digest}");
    assert_eq!(body["lastReload"], Value::Null, "no reload yet");

    std::fs::write(&file, playbook_text("heal").replace("steps:", "stpes:")).expect("write");
    status.record(&reloader.reload(), Utc::now());
    let (code, body) = get(&format!("{api}/api/v1/playbooks")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let last = &body["lastReload"];
    assert_eq!(last["result"], "rejected", "{body}");
    let errors = last["errors"].as_array().expect("errors");
    assert!(
        errors.iter().any(|e| {
            let e = e.as_str().unwrap_or_default();
            e.contains("heal.yaml:") && e.contains("stpes")
        }),
        "{errors:?}"
    );
    assert!(last["at"].as_str().is_some(), "{last}");
    assert_eq!(
        body["playbooks"][0]["digest"],
        json!(digest),
        "the previous set stays active"
    );

    std::fs::write(
        &file,
        playbook_text("heal").replace("replicas: 5", "replicas: 6"),
    )
    .expect("write");
    status.record(&reloader.reload(), Utc::now());
    let (_, body) = get(&format!("{api}/api/v1/playbooks")).await;
    assert_eq!(body["lastReload"]["result"], "applied", "{body}");
    assert_eq!(body["lastReload"]["errors"], json!([]));
    assert_ne!(body["playbooks"][0]["digest"], json!(digest));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reads_incidents_and_answers_approvals_through_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Arc::new(Journal::open(&dir.path().join("j.db")).expect("journal"));
    let risky = playbook(RISKY, "");
    let (incident, _) = journal_opened(&journal, &risky, "api-1");
    let approval = Approvals::new(Arc::clone(&journal))
        .request(
            Ask {
                incident: incident.id.clone(),
                playbook: "heal".into(),
                step: "drain".into(),
                risk: Risk::High,
                reason: "risk high is above the policy's ceiling medium".into(),
                situation: "What broke: the API.".into(),
                plan: json!({}),
                evidence: json!({}),
            },
            Utc::now(),
            Duration::from_secs(60),
        )
        .expect("requested");
    let api = serve(&journal, loaded(&playbook_text("heal")), tokens()).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{ANA} ana\n")).expect("write");

    let salve = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            crate::run(
                std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
                    .args(args)
                    .env_remove("SALVE_JOURNAL")
                    .env_remove("SALVE_SERVER")
                    .env_remove("USER"),
            )
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (code, out, err) = salve(args(&["incidents", "--server", &api]))
        .await
        .expect("ran");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&incident.id) && out.contains("Deployment shop/api"),
        "{out}"
    );
    assert!(out.contains("1 incident(s), 1 open"), "{out}");

    let (code, out, err) = salve(args(&["incidents", "--server", &api, &incident.id]))
        .await
        .expect("ran");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("incident {} of playbook heal", incident.id)),
        "{out}"
    );
    assert!(out.contains("DETECT") && out.contains("ASK"), "{out}");

    let (code, _, err) = salve(args(&["incidents", "--server", &api, "inc-unknown"]))
        .await
        .expect("ran");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no incident `inc-unknown`") && err.contains("404"),
        "{err}"
    );

    let (code, out, err) = salve(args(&["approvals", "--server", &api]))
        .await
        .expect("ran");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&approval.id) && out.contains("1 waiting"),
        "{out}"
    );

    let (code, _, err) = salve(args(&["approve", &approval.id, "--server", &api]))
        .await
        .expect("ran");
    assert_eq!(code, Some(1), "no token");
    assert!(err.contains("401"), "{err}");

    let token = token_file.display().to_string();
    let approve = args(&[
        "approve",
        &approval.id,
        "--server",
        &api,
        "--token-file",
        &token,
    ]);
    let (code, out, err) = salve(approve.clone()).await.expect("ran");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("approved by ana: step `drain`"), "{out}");
    let (code, _, err) = salve(approve).await.expect("ran");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no longer pending") && err.contains("409"),
        "{err}"
    );

    let (code, _, err) = salve(args(&["incidents", "--server", &api, "--journal", "j.db"]))
        .await
        .expect("ran");
    assert_eq!(
        code,
        Some(2),
        "exactly one of --server and --journal: {err}"
    );
}

/// Polls `GET url` until `done` holds for its answer (10 s at most); that answer.
pub(crate) async fn until(
    url: &str,
    what: &str,
    done: impl Fn(StatusCode, &Value) -> bool,
) -> Value {
    let began = Instant::now();
    loop {
        if let Ok(response) = reqwest::get(url).await {
            let status = response.status();
            let body = response.json().await.unwrap_or(Value::Null);
            if done(status, &body) {
                return body;
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "not after 10 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn salve_run_serves_the_api_on_its_listen_address() {
    let (fake, _) = salve::kube_fake::FakeApiServer::start()
        .await
        .expect("the fake starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig)
        .expect("write the kubeconfig");
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir(&playbooks).expect("mkdir");
    let alert =
        playbook_text("heal").replace("promql: {expr: 'vector(1)'}", "alert: {alertname: ApiDown}");
    std::fs::write(playbooks.join("heal.yaml"), &alert).expect("playbook");
    std::fs::write(dir.path().join("tokens"), TOKEN_FILE).expect("tokens");
    let port = crate::free_port();
    let mut engine = crate::Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
            .arg("run")
            .arg("--playbooks")
            .arg(&playbooks)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--journal")
            .arg(dir.path().join("journal.db"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--api-token-file")
            .arg(dir.path().join("tokens"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start salve run"),
    );
    let api = format!("http://127.0.0.1:{port}");

    until(&format!("{api}/readyz"), "ready", |s, _| {
        s == StatusCode::OK
    })
    .await;
    let (_, body) = get(&format!("{api}/api/v1/playbooks")).await;
    assert_eq!(body["playbooks"][0]["name"], "heal", "{body}");
    let approve = format!("{api}/api/v1/approvals/apr-none/approve");
    let (code, _) = post(&approve, None, "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, body) = post(&approve, Some(ANA), "").await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "authenticated, then unknown: {body}"
    );

    // The watcher's outcome reaches the API.
    std::fs::write(
        playbooks.join("heal.yaml"),
        alert.replace("steps:", "stpes:"),
    )
    .expect("break the playbook");
    let body = until(
        &format!("{api}/api/v1/playbooks"),
        "the rejected reload",
        |_, b| b["lastReload"]["result"] == "rejected",
    )
    .await;
    assert_eq!(body["playbooks"][0]["name"], "heal", "still active: {body}");

    // SIGTERM stops the engine and the listener with it.
    let status = crate::terminate(&mut engine.0).await;
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    assert!(
        reqwest::get(format!("{api}/healthz")).await.is_err(),
        "the listener is closed"
    );
}

/// A playbook whose target is named by the signal's labels, with a step the policy lets run
/// (`scale-up`, low) and one above its ceiling (`drain`, high), and an hour's cooldown.
const REHEARSED: &str = "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: heal}\nspec:\n  trigger:\n    promql: {expr: 'vector(1)'}\n  cooldown: 1h\n  target: {kind: Deployment, namespace: '${labels.namespace}', name: '${labels.deployment}'}\n  steps:\n    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n    - {name: drain, action: scale, risk: high, params: {replicas: 0}}\n";

/// `POST /api/v1/playbooks/{name}/trigger` rehearses the playbook: the real diagnosis, plan and
/// gate verdicts, every step a server-side dry run, the rehearsal ending where a real run
/// would wait for a human — and it takes nothing from real remediations: no hourly budget
/// (the policy allows one action an hour), no cooldown, no claim on the target.
#[tokio::test(flavor = "multi_thread")]
async fn a_triggered_rehearsal_dry_runs_the_plan_and_leaves_real_remediations_alone() {
    let s = setup(
        &POLICY.replace("actionsPerHour: 100", "actionsPerHour: 1"),
        None,
    )
    .await;
    let playbooks = loaded(REHEARSED);
    let heal = Arc::clone(
        playbooks
            .active()
            .expect("loaded")
            .load()
            .playbook("heal")
            .expect("heal"),
    );
    let api = serve_rehearsals(&s.journal, playbooks, s.executor.clone()).await;
    let trigger = |name: &str| format!("{api}/api/v1/playbooks/{name}/trigger");
    let labels = r#"{"labels": {"namespace": "shop", "deployment": "api"}}"#;

    let (code, body) = post(&trigger("heal"), None, labels).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    let (code, body) = post(&trigger("nope"), Some(ANA), labels).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (code, body) = post(
        &trigger("heal"),
        Some(ANA),
        r#"{"labels": {"namespace": "shop"}}"#,
    )
    .await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the target is not named: {body}"
    );
    let (code, body) = post(&trigger("heal"), Some(ANA), r#"{"lables": {}}"#).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(writes(&s.fake), 0, "nothing acted on a refused trigger");

    let (code, body) = post(&trigger("heal"), Some(ANA), labels).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let id = body["incident"]
        .as_str()
        .expect("an incident id")
        .to_string();
    assert!(id.starts_with("reh-"), "{id}");
    let done = until(
        &format!("{api}/api/v1/incidents/{id}"),
        "the rehearsal to end",
        |code, body| code == StatusCode::OK && !body["incident"]["resolvedAt"].is_null(),
    )
    .await;
    assert_eq!(done["incident"]["rehearsal"], true, "{done}");
    assert!(
        done["incident"]["mttrSeconds"].is_null(),
        "a rehearsal recovers nothing: {done}"
    );
    let timeline = done["timeline"].as_array().expect("a timeline");
    let opened = &timeline[0];
    assert_eq!(opened["kind"], "incident_opened");
    assert_eq!(opened["detail"]["by"], "ana", "who asked is recorded");
    let started: Vec<&Value> = timeline
        .iter()
        .filter(|e| e["kind"] == "step_started")
        .collect();
    assert_eq!(started.len(), 1, "only scale-up runs: {timeline:#?}");
    assert_eq!(started[0]["detail"]["dryRun"], true);
    let finished = timeline
        .iter()
        .find(|e| e["kind"] == "remediation_finished")
        .expect("finished");
    assert_eq!(finished["detail"]["outcome"], "halted", "{finished}");
    assert!(
        finished["detail"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("wait here for a human approval of drain"),
        "{finished}"
    );
    assert!(
        timeline.iter().all(|e| e["kind"] != "approval_requested"),
        "a rehearsal asks nobody"
    );
    let (_, approvals) = get(&format!("{api}/api/v1/approvals")).await;
    assert_eq!(approvals["approvals"], json!([]));
    assert_eq!(replicas(&s.fake), 3, "a dry run changed nothing");
    let sent: Vec<_> = s
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(!sent.is_empty(), "the dry run was sent to the API server");
    assert!(
        sent.iter().all(|r| r.param("dryRun") == Some("All")),
        "every write was a server-side dry run: {sent:#?}"
    );

    // The same through `salve trigger --wait`: the rehearsal's id, then its timeline; refused
    // without a token.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tokens"), TOKEN_FILE).expect("tokens");
    let cli = |token: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_salve"));
        command.args(["trigger", "heal", "--label", "namespace=shop", "--label"]);
        command.args(["deployment=api", "--server", &api, "--wait"]);
        if token {
            command.arg("--token-file").arg(dir.path().join("tokens"));
        }
        command
    };
    let mut with_token = cli(true);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || crate::run(&mut with_token))
        .await
        .expect("ran");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("rehearsing heal as incident reh-"),
        "{stdout}"
    );
    assert!(stdout.contains("scale-up"), "the timeline: {stdout}");
    let mut without = cli(false);
    let (code, _, stderr) = tokio::task::spawn_blocking(move || crate::run(&mut without))
        .await
        .expect("ran");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert_eq!(replicas(&s.fake), 3, "still nothing changed");

    // A real incident of the same target right after: its step runs (the hour's one action
    // is still there, the target is neither cooling down nor claimed).
    let signal = SignalEvent {
        at: Utc::now(),
        labels: [("namespace", "shop"), ("deployment", "api")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        transition: salve::signal::state::Transition::Firing,
        value: Some(1.0),
        values: Default::default(),
        active_at: Some(Utc::now()),
    };
    let change = Incidents::new().apply(&heal, &signal).expect("opens");
    s.journal
        .append(&Record::incident(&change))
        .expect("journaled");
    let finish = s
        .executor
        .remediate(&heal, &change.incident, &signal)
        .await
        .expect("journaled");
    assert!(
        matches!(finish, Finish::Halted(_)),
        "drain waits, then expires: {finish:?}"
    );
    assert_eq!(replicas(&s.fake), 5, "the real scale-up ran");
}
