//! Salve's built-in actions through the real `kube::Client` against the in-process fake API
//! server: what each changes, that a second run changes nothing, and that a dry run sends
//! `dryRun=All` and changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use salve::action::Action;
use salve::actions::{Cluster, Outcome};
use salve::kube_fake::FakeApiServer;
use salve::plan::{Decision, ObjectRef, PlannedStep};
use salve::risk::Risk;
use serde_json::{Value, json};

async fn cluster() -> (FakeApiServer, Cluster) {
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    fake.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                         "spec": {"containers": [
                             {"name": "app", "image": "api:1",
                              "resources": {"limits": {"memory": "512Mi", "cpu": "500m"},
                                            "requests": {"memory": "256Mi"}}},
                             {"name": "proxy", "image": "proxy:1"},
                         ]}},
        },
    }))
    .expect("seed the deployment");
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {},
    }))
    .expect("seed the node");
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-1", "namespace": "shop", "labels": {"app": "api"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "api:1"}]},
    }))
    .expect("seed the pod");
    (fake, Cluster::new(client))
}

fn step(action: Action, params: Value) -> PlannedStep {
    let params: BTreeMap<String, Value> = serde_json::from_value(params).expect("a map");
    PlannedStep {
        name: action.as_str().to_string(),
        action: Some(action),
        risk: Risk::Low,
        params,
        timeout: Duration::from_secs(60),
        decision: Decision::Run,
    }
}

fn target(kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        kind: kind.into(),
        name: name.into(),
        namespace: namespace.map(str::to_string),
    }
}

async fn run(cluster: &Cluster, step: &PlannedStep, target: &ObjectRef, dry: bool) -> Outcome {
    cluster
        .run(step, target, "inc-1/step", dry)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn replicas(fake: &FakeApiServer) -> Value {
    fake.get("apps/v1", "Deployment", Some("shop"), "api")
        .expect("the deployment")["spec"]["replicas"]
        .clone()
}

#[tokio::test]
async fn scale_sets_replicas_within_bounds_once() {
    let (fake, cluster) = cluster().await;
    let api = target("Deployment", Some("shop"), "api");
    let up = step(Action::Scale, json!({"replicas": 20, "max": 10}));
    let done = run(&cluster, &up, &api, false).await;
    assert!(done.changed, "{done:?}");
    assert_eq!(done.message, "scaled from 3 to 10 replicas");
    assert_eq!(replicas(&fake), 10);
    let again = run(&cluster, &up, &api, false).await;
    assert!(
        !again.changed && again.message == "already at 10 replicas",
        "{again:?}"
    );
    let delta = step(Action::Scale, json!({"delta": 2}));
    run(&cluster, &delta, &api, false).await;
    assert_eq!(replicas(&fake), 12);
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_says_so_to_the_server() {
    let (fake, cluster) = cluster().await;
    let api = target("Deployment", Some("shop"), "api");
    let done = run(
        &cluster,
        &step(Action::Scale, json!({"replicas": 5})),
        &api,
        true,
    )
    .await;
    assert!(
        done.dry_run && done.message.ends_with("(dry run)"),
        "{done:?}"
    );
    assert_eq!(replicas(&fake), 3, "nothing changed");
    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].param("dryRun"), Some("All"));
}

#[tokio::test]
async fn rollout_restart_stamps_the_template_once_per_step() {
    let (fake, cluster) = cluster().await;
    let api = target("Deployment", Some("shop"), "api");
    let restart = step(Action::RolloutRestart, json!({}));
    assert!(run(&cluster, &restart, &api, false).await.changed);
    let stored = fake
        .get("apps/v1", "Deployment", Some("shop"), "api")
        .expect("the deployment");
    let annotations = &stored["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations["kubectl.kubernetes.io/restartedAt"].is_string(),
        "{stored:#}"
    );
    assert_eq!(annotations["salve.dev/restarted-for"], "inc-1/step");
    // A retry of the same step after a crash does not restart again.
    let retry = run(&cluster, &restart, &api, false).await;
    assert!(!retry.changed, "{retry:?}");
}

#[tokio::test]
async fn cordon_and_uncordon_are_idempotent() {
    let (fake, cluster) = cluster().await;
    let node = target("Node", None, "n1");
    let unschedulable =
        || fake.get("v1", "Node", None, "n1").expect("the node")["spec"]["unschedulable"].clone();
    assert!(
        run(&cluster, &step(Action::Cordon, json!({})), &node, false)
            .await
            .changed
    );
    assert_eq!(unschedulable(), true);
    assert!(
        !run(&cluster, &step(Action::Cordon, json!({})), &node, false)
            .await
            .changed
    );
    assert!(
        run(&cluster, &step(Action::Uncordon, json!({})), &node, false)
            .await
            .changed
    );
    assert_eq!(unschedulable(), false);
}

#[tokio::test]
async fn annotate_adds_only_what_is_missing() {
    let (fake, cluster) = cluster().await;
    let api = target("Deployment", Some("shop"), "api");
    let note = step(
        Action::Annotate,
        json!({"annotations": {"salve.dev/incident": "inc-1"}}),
    );
    assert!(run(&cluster, &note, &api, false).await.changed);
    let stored = fake
        .get("apps/v1", "Deployment", Some("shop"), "api")
        .expect("the deployment");
    assert_eq!(
        stored["metadata"]["annotations"]["salve.dev/incident"],
        "inc-1"
    );
    assert!(!run(&cluster, &note, &api, false).await.changed);
}

#[tokio::test]
async fn delete_pod_deletes_and_a_gone_pod_is_nothing_to_do() {
    let (fake, cluster) = cluster().await;
    let pod = target("Pod", Some("shop"), "api-1");
    let delete = step(Action::DeletePod, json!({"gracePeriod": "10s"}));
    assert!(run(&cluster, &delete, &pod, false).await.changed);
    assert!(fake.get("v1", "Pod", Some("shop"), "api-1").is_none());
    let again = run(&cluster, &delete, &pod, false).await;
    assert_eq!(
        (again.changed, again.message.as_str()),
        (false, "already gone")
    );
}

#[tokio::test]
async fn a_missing_target_is_the_api_s_404_named() {
    let (_fake, cluster) = cluster().await;
    let gone = target("Deployment", Some("shop"), "nope");
    let error = cluster
        .run(
            &step(Action::Scale, json!({"replicas": 1})),
            &gone,
            "k",
            false,
        )
        .await
        .expect_err("no such deployment");
    let text = error.to_string();
    assert!(text.contains("scale on Deployment shop/nope"), "{text}");
    assert!(text.to_lowercase().contains("not found"), "{text}");
}

#[tokio::test]
async fn patch_resources_raises_one_container_s_limit_once_per_step() {
    let (fake, cluster) = cluster().await;
    let api = target("Deployment", Some("shop"), "api");
    let raise = step(
        Action::PatchResources,
        json!({"container": "app", "memoryLimitFactor": "1.5"}),
    );
    let done = run(&cluster, &raise, &api, false).await;
    assert!(done.changed, "{done:?}");
    assert_eq!(done.before["limits"]["memory"], "512Mi");
    let stored = fake
        .get("apps/v1", "Deployment", Some("shop"), "api")
        .expect("the deployment");
    let containers = &stored["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["resources"]["limits"]["memory"], "768Mi");
    // The rest of the container and the other container are as they were.
    assert_eq!(containers[0]["resources"]["limits"]["cpu"], "500m");
    assert_eq!(containers[0]["resources"]["requests"]["memory"], "256Mi");
    assert_eq!(containers[1]["name"], "proxy");
    // A retry of the same step does not raise it again.
    assert!(!run(&cluster, &raise, &api, false).await.changed);
    assert_eq!(
        fake.get("apps/v1", "Deployment", Some("shop"), "api")
            .expect("the deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            ["memory"],
        "768Mi"
    );
    // A container without a memory limit cannot have it raised.
    let proxy = step(
        Action::PatchResources,
        json!({"container": "proxy", "memoryLimitFactor": "2"}),
    );
    let error = cluster
        .run(&proxy, &api, "inc-2/raise", false)
        .await
        .expect_err("no limit to raise");
    assert!(error.to_string().contains("has no memory limit"), "{error}");
}

/// A webhook receiver on a free loopback port that answers `status` and keeps what it got.
async fn webhook(status: u16) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::http::StatusCode;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let keep = std::sync::Arc::clone(&keep);
            async move {
                keep.lock().expect("not poisoned").push(body);
                StatusCode::from_u16(status).expect("a status")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn notify_posts_the_message_in_slack_s_format_and_marks_dry_runs() {
    let (_fake, cluster) = cluster().await;
    let api = target("Deployment", Some("shop"), "api");
    let (url, got) = webhook(200).await;
    let tell = step(
        Action::Notify,
        json!({"url": url, "message": "Rolled back shop/api"}),
    );
    assert!(run(&cluster, &tell, &api, false).await.changed);
    run(&cluster, &tell, &api, true).await;
    let bodies = got.lock().expect("not poisoned").clone();
    assert_eq!(
        bodies,
        [
            json!({"text": "Rolled back shop/api"}),
            json!({"text": "[dry run] Rolled back shop/api"}),
        ]
    );
    // A webhook that refuses is the step's failure, with what it said.
    let (refusing, _) = webhook(500).await;
    let error = cluster
        .run(
            &step(Action::Notify, json!({"url": refusing})),
            &api,
            "k",
            false,
        )
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("the webhook answered 500"),
        "{error}"
    );
}
