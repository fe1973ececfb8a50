//! Salve's built-in actions through the real `kube::Client`: what each changes, that a second
//! run changes nothing, and that a dry run changes nothing. Every test runs in an [`Env`]: the
//! in-process fake API server, or a real cluster.
//!
//! # Against a real cluster
//!
//! With `SALVE_TEST_KUBECONFIG=/path/to/kubeconfig`, every test runs against that cluster
//! instead of the fake: each in a fresh namespace `salve-test-…` labelled
//! `salve.dev/test=true`, created by the test and deleted when it ends, even on failure (after a
//! killed run: `kubectl delete namespace -l salve.dev/test=true`). Their pods run
//! `registry.k8s.io/pause`, so the cluster must be able to pull it. What only the fake can do —
//! seeded logs and pod status, reading the requests sent (`dryRun=All`) — is skipped there, and
//! so is what would change the cluster's Nodes (cordoning, draining): the tests that need it
//! print a note and pass.
//!
//! ```text
//! SALVE_TEST_KUBECONFIG=~/.kube/kind cargo test --test tests -- actions::
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use salve::action::Action;
use salve::actions::{Cluster, Outcome};
use salve::kube_fake::FakeApiServer;
use salve::plan::{Decision, ObjectRef, PlannedStep};
use salve::risk::Risk;
use serde_json::{Value, json};

use crate::{KUBECONFIG, real_config};

/// The images the tests' pods run, and that the rollout tests switch between (real ones, for
/// real-cluster mode).
const OLD_IMAGE: &str = "registry.k8s.io/pause:3.9";
const NEW_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// A test's cluster: the in-process fake, or a real cluster (`SALVE_TEST_KUBECONFIG`) with a
/// fresh namespace that is deleted when the `Env` is dropped.
struct Env {
    fake: Option<FakeApiServer>,
    client: kube::Client,
    namespace: String,
    cluster: Cluster,
    /// The kubeconfig of a real cluster (to delete the namespace at the end).
    kubeconfig: Option<String>,
}

impl Env {
    async fn start() -> Env {
        let Some(path) = std::env::var(KUBECONFIG).ok().filter(|p| !p.is_empty()) else {
            let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
            return Env {
                fake: Some(fake),
                cluster: Cluster::new(client.clone()),
                client,
                namespace: "shop".into(),
                kubeconfig: None,
            };
        };
        let config = real_config(&path).await;
        let client = kube::Client::try_from(config.clone()).expect("a client");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let namespace = format!("salve-test-{}-{nanos:x}", std::process::id());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": namespace, "labels": {"salve.dev/test": "true"}},
        }))
        .expect("a namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the test namespace");
        let env = Env {
            fake: None,
            cluster: Cluster::from_config(config).expect("a client"),
            client,
            namespace,
            kubeconfig: Some(path),
        };
        // A pod created before the namespace's `default` service account exists is refused.
        env.wait_for("v1", "ServiceAccount", "default", "created", |sa| {
            sa.is_some()
        })
        .await;
        env
    }

    /// The fake, or `None` with a printed note in real-cluster mode.
    fn fake_only(&self, what: &str) -> Option<&FakeApiServer> {
        if self.fake.is_none() {
            eprintln!("skipped against a real cluster: {what} needs the fake");
        }
        self.fake.as_ref()
    }

    fn target(&self, kind: &str, name: &str) -> ObjectRef {
        target(kind, Some(&self.namespace), name)
    }

    fn api(&self, api_version: &str, kind: &str) -> Api<DynamicObject> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let plural = match kind {
            "PodDisruptionBudget" => "poddisruptionbudgets".to_owned(),
            other => format!("{}s", other.to_lowercase()),
        };
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }

    /// Seeds a namespaced object (its namespace is set to the test's). The fake keeps a
    /// seeded `status`; a real cluster makes its own.
    async fn seed(&self, mut obj: Value) -> Value {
        obj["metadata"]["namespace"] = json!(self.namespace);
        if let Some(fake) = &self.fake {
            return fake.insert(obj).expect("seeded");
        }
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let object: DynamicObject = serde_json::from_value(obj).expect("an object");
        let created = self
            .api(&api_version, &kind)
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
        serde_json::to_value(created).expect("JSON")
    }

    async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        let found = self
            .api(api_version, kind)
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("get {kind} {name}: {e}"));
        found.map(|o| serde_json::to_value(o).expect("JSON"))
    }

    /// Waits (a real cluster's controllers take a moment; the fake's are done at once) until
    /// `kind/name` satisfies `ok` — `None` standing for "gone" — and returns what it saw.
    async fn wait_for(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        what: &str,
        ok: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let found = self.get(api_version, kind, name).await;
            if ok(found.as_ref()) {
                return found;
            }
            assert!(
                self.fake.is_some() || tokio::time::Instant::now() < deadline,
                "{kind} {name}: timed out waiting for {what}: {found:#?}"
            );
            assert!(self.fake.is_none(), "{kind} {name}: not {what}: {found:#?}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn run(&self, step: &PlannedStep, target: &ObjectRef, key: &str, dry: bool) -> Outcome {
        self.cluster
            .run(step, target, key, dry)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some(path) = self.kubeconfig.take() else {
            return;
        };
        let namespace = self.namespace.clone();
        crate::clean_up(
            path,
            &format!("the test namespace {namespace}"),
            move |client| async move {
                Api::<Namespace>::all(client)
                    .delete(&namespace, &DeleteParams::background())
                    .await?;
                Ok(())
            },
        );
    }
}

fn step(action: Action, params: Value) -> PlannedStep {
    let params: BTreeMap<String, Value> = serde_json::from_value(params).expect("a map");
    PlannedStep {
        name: action.as_str().to_string(),
        action: Some(action),
        wasm: None,
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

fn expect_error(result: salve::actions::Result<Outcome>, what: &str) -> String {
    match result {
        Ok(outcome) => panic!("{what}: expected an error, got {outcome:?}"),
        Err(e) => e.to_string(),
    }
}

/// The `api` Deployment the workload tests act on: 3 replicas, an `app` container with memory
/// and CPU limits and a memory request, and a `proxy` container with no resources at all.
fn api_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                         "spec": {"containers": [
                             {"name": "app", "image": OLD_IMAGE,
                              "resources": {"limits": {"memory": "512Mi", "cpu": "500m"},
                                            "requests": {"memory": "256Mi"}}},
                             {"name": "proxy", "image": OLD_IMAGE},
                         ]}},
        },
    })
}

/// Seeds [`api_deployment`] in the test's namespace and returns the step target naming it.
async fn seed_api(env: &Env) -> ObjectRef {
    env.seed(api_deployment()).await;
    env.target("Deployment", "api")
}

/// The `api` Deployment as the cluster has it now.
async fn stored_api(env: &Env) -> Value {
    env.get("apps/v1", "Deployment", "api")
        .await
        .expect("the deployment")
}

/// A workload's pod template containers.
fn containers(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"]
}

#[tokio::test]
async fn scale_sets_replicas_within_bounds_once() {
    let env = Env::start().await;
    let api = seed_api(&env).await;
    let up = step(Action::Scale, json!({"replicas": 20, "max": 10}));
    let done = env.run(&up, &api, "inc-1/scale", false).await;
    assert!(done.changed, "{done:?}");
    assert_eq!(done.message, "scaled from 3 to 10 replicas");
    assert_eq!(stored_api(&env).await["spec"]["replicas"], 10);
    let again = env.run(&up, &api, "inc-1/scale", false).await;
    assert!(
        !again.changed && again.message == "already at 10 replicas",
        "{again:?}"
    );
    let delta = step(Action::Scale, json!({"delta": 2}));
    env.run(&delta, &api, "inc-1/grow", false).await;
    assert_eq!(stored_api(&env).await["spec"]["replicas"], 12);
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_says_so_to_the_server() {
    let env = Env::start().await;
    let api = seed_api(&env).await;
    let five = step(Action::Scale, json!({"replicas": 5}));
    let done = env.run(&five, &api, "inc-1/scale", true).await;
    assert!(
        done.dry_run && done.message.ends_with("(dry run)"),
        "{done:?}"
    );
    assert_eq!(
        stored_api(&env).await["spec"]["replicas"],
        3,
        "nothing changed"
    );
    if let Some(fake) = &env.fake {
        let patches: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect();
        assert_eq!(patches.len(), 1);
        assert_eq!(patches[0].param("dryRun"), Some("All"));
    }
}

#[tokio::test]
async fn rollout_restart_stamps_the_template_once_per_step() {
    let env = Env::start().await;
    let api = seed_api(&env).await;
    let restart = step(Action::RolloutRestart, json!({}));
    assert!(
        env.run(&restart, &api, "inc-1/restart", false)
            .await
            .changed
    );
    let stored = stored_api(&env).await;
    let annotations = &stored["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations["kubectl.kubernetes.io/restartedAt"].is_string(),
        "{stored:#}"
    );
    assert_eq!(annotations["salve.dev/restarted-for"], "inc-1/restart");
    // A retry of the same step after a crash does not restart again.
    let retry = env.run(&restart, &api, "inc-1/restart", false).await;
    assert!(!retry.changed, "{retry:?}");
}

#[tokio::test]
async fn cordon_and_uncordon_are_idempotent() {
    let env = Env::start().await;
    let Some(fake) = env.fake_only("cordoning a node") else {
        return;
    };
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {},
    }))
    .expect("seed the node");
    let node = target("Node", None, "n1");
    let unschedulable =
        || fake.get("v1", "Node", None, "n1").expect("the node")["spec"]["unschedulable"].clone();
    let cordon = step(Action::Cordon, json!({}));
    assert!(env.run(&cordon, &node, "inc-1/cordon", false).await.changed);
    assert_eq!(unschedulable(), true);
    assert!(!env.run(&cordon, &node, "inc-1/cordon", false).await.changed);
    let uncordon = step(Action::Uncordon, json!({}));
    assert!(
        env.run(&uncordon, &node, "inc-1/uncordon", false)
            .await
            .changed
    );
    assert_eq!(unschedulable(), false);
}

#[tokio::test]
async fn annotate_adds_only_what_is_missing() {
    let env = Env::start().await;
    let api = seed_api(&env).await;
    let note = step(
        Action::Annotate,
        json!({"annotations": {"salve.dev/incident": "inc-1"}}),
    );
    assert!(env.run(&note, &api, "inc-1/note", false).await.changed);
    assert_eq!(
        stored_api(&env).await["metadata"]["annotations"]["salve.dev/incident"],
        "inc-1"
    );
    assert!(!env.run(&note, &api, "inc-1/note", false).await.changed);
}

#[tokio::test]
async fn delete_pod_deletes_and_a_gone_pod_is_nothing_to_do() {
    let env = Env::start().await;
    env.seed(pause_pod("api-1", "api")).await;
    let pod = env.target("Pod", "api-1");
    let delete = step(Action::DeletePod, json!({"gracePeriod": "10s"}));
    assert!(env.run(&delete, &pod, "inc-1/delete", false).await.changed);
    env.wait_for("v1", "Pod", "api-1", "gone", |pod| pod.is_none())
        .await;
    let again = env.run(&delete, &pod, "inc-1/delete", false).await;
    assert_eq!(
        (again.changed, again.message.as_str()),
        (false, "already gone")
    );
}

#[tokio::test]
async fn a_missing_target_is_the_api_s_404_named() {
    let env = Env::start().await;
    let gone = env.target("Deployment", "nope");
    let error = expect_error(
        env.cluster
            .run(
                &step(Action::Scale, json!({"replicas": 1})),
                &gone,
                "k",
                false,
            )
            .await,
        "no such deployment",
    );
    let named = format!("scale on Deployment {}/nope", env.namespace);
    assert!(error.contains(&named), "{error}");
    assert!(error.to_lowercase().contains("not found"), "{error}");
}

#[tokio::test]
async fn patch_resources_raises_one_container_s_limit_once_per_step() {
    let env = Env::start().await;
    let api = seed_api(&env).await;
    let raise = step(
        Action::PatchResources,
        json!({"container": "app", "memoryLimitFactor": "1.5"}),
    );
    let done = env.run(&raise, &api, "inc-1/raise", false).await;
    assert!(done.changed, "{done:?}");
    assert_eq!(done.before["limits"]["memory"], "512Mi");
    let stored = stored_api(&env).await;
    let app = &containers(&stored)[0]["resources"];
    assert_eq!(app["limits"]["memory"], "768Mi");
    // The rest of the container and the other container are as they were.
    assert_eq!(app["limits"]["cpu"], "500m");
    assert_eq!(app["requests"]["memory"], "256Mi");
    assert_eq!(containers(&stored)[1]["name"], "proxy");
    // A retry of the same step does not raise it again.
    assert!(!env.run(&raise, &api, "inc-1/raise", false).await.changed);
    assert_eq!(
        containers(&stored_api(&env).await)[0]["resources"]["limits"]["memory"],
        "768Mi"
    );
    // A container without a memory limit cannot have it raised.
    let proxy = step(
        Action::PatchResources,
        json!({"container": "proxy", "memoryLimitFactor": "2"}),
    );
    let error = expect_error(
        env.cluster.run(&proxy, &api, "inc-2/raise", false).await,
        "no limit to raise",
    );
    assert!(error.contains("has no memory limit"), "{error}");
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
    let env = Env::start().await;
    let api = env.target("Deployment", "api");
    let (url, got) = webhook(200).await;
    let tell = step(
        Action::Notify,
        json!({"url": url, "message": "Rolled back shop/api"}),
    );
    assert!(env.run(&tell, &api, "inc-1/tell", false).await.changed);
    env.run(&tell, &api, "inc-1/tell", true).await;
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
    let error = expect_error(
        env.cluster
            .run(
                &step(Action::Notify, json!({"url": refusing})),
                &api,
                "k",
                false,
            )
            .await,
        "refused",
    );
    assert!(error.contains("the webhook answered 500"), "{error}");
}

fn web(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": image}]}},
        },
    })
}

fn image_of(deployment: &Value) -> Value {
    deployment["spec"]["template"]["spec"]["containers"][0]["image"].clone()
}

fn revision_is(n: u64) -> impl Fn(Option<&Value>) -> bool {
    move |d| {
        d.and_then(|d| d["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str())
            == Some(n.to_string().as_str())
    }
}

#[tokio::test]
async fn rollout_undo_brings_back_the_previous_revision_s_image_once() {
    let env = Env::start().await;
    env.seed(web("web", OLD_IMAGE)).await;
    let web_ref = env.target("Deployment", "web");
    env.wait_for("apps/v1", "Deployment", "web", "revision 1", revision_is(1))
        .await;
    let undo = step(Action::RolloutUndo, json!({}));

    // One revision: nothing to go back to.
    let error = expect_error(
        env.cluster.run(&undo, &web_ref, "inc-0/undo", false).await,
        "one revision",
    );
    assert!(
        error.contains("no previous revision to roll back to (revisions: 1)"),
        "{error}"
    );

    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let new_image = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": NEW_IMAGE},
    ]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(new_image))
        .await
        .expect("roll out the new image");
    env.wait_for("apps/v1", "Deployment", "web", "revision 2", revision_is(2))
        .await;

    // A dry run changes nothing.
    let dry = env.run(&undo, &web_ref, "inc-1/undo", true).await;
    assert!(dry.changed && dry.dry_run, "{dry:?}");
    let stored = env.get("apps/v1", "Deployment", "web").await.expect("web");
    assert_eq!(image_of(&stored), NEW_IMAGE, "a dry run changes nothing");
    if let Some(fake) = &env.fake {
        let patch = fake
            .requests()
            .into_iter()
            .rfind(|r| r.method == "PATCH")
            .expect("a patch");
        assert_eq!(patch.param("dryRun"), Some("All"));
        assert_eq!(
            patch.content_type.as_deref(),
            Some("application/json-patch+json")
        );
    }

    // The undo puts revision 1's image back; the controller makes it revision 3.
    let done = env.run(&undo, &web_ref, "inc-1/undo", false).await;
    assert!(done.changed, "{done:?}");
    assert_eq!(done.message, "rolled back from revision 2 to revision 1");
    assert_eq!(done.before["revision"], 2);
    assert_eq!(done.after["revision"], 1);
    assert_eq!(done.after["images"]["app"], OLD_IMAGE);
    let stored = env
        .wait_for("apps/v1", "Deployment", "web", "revision 3", revision_is(3))
        .await
        .expect("web");
    assert_eq!(image_of(&stored), OLD_IMAGE);
    assert_eq!(
        stored["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"}),
        "the pod-template-hash label is not put back"
    );

    // A retry of the same step does not flip back to revision 2.
    let retry = env.run(&undo, &web_ref, "inc-1/undo", false).await;
    assert!(!retry.changed, "{retry:?}");

    // Undoing the undo (what the executor does on rollback) goes to the revision it left.
    let back = step(
        Action::RolloutUndo,
        json!({"toRevision": done.before["revision"]}),
    );
    let undone = env.run(&back, &web_ref, "inc-1/undo-undo", false).await;
    assert!(undone.changed, "{undone:?}");
    let stored = env
        .wait_for("apps/v1", "Deployment", "web", "revision 4", revision_is(4))
        .await
        .expect("web");
    assert_eq!(image_of(&stored), NEW_IMAGE);
    // Already there: nothing to do (revision 2 is now numbered 4, as the controller keeps it).
    let again = env.run(&back, &web_ref, "inc-2/undo", false).await;
    assert!(!again.changed, "{again:?}");

    let missing = step(Action::RolloutUndo, json!({"toRevision": 9}));
    let error = expect_error(
        env.cluster.run(&missing, &web_ref, "k", false).await,
        "revision 9",
    );
    assert!(
        error.contains("revision 9 is not in the rollout history (revisions: 3, 4)"),
        "{error}"
    );
    let sts = env.target("StatefulSet", "db");
    let error = expect_error(
        env.cluster.run(&undo, &sts, "k", false).await,
        "a StatefulSet",
    );
    assert!(error.contains("not supported yet"), "{error}");
}

/// A pod running `pause` (Ready in the fake; a real cluster makes it Ready).
fn pause_pod(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": NEW_IMAGE}],
                 "terminationGracePeriodSeconds": 0},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

fn is_ready(pod: Option<&Value>) -> bool {
    pod.and_then(|p| p["status"]["conditions"].as_array())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Gone, or on its way (a real pod terminates for a moment).
fn is_going(pod: Option<&Value>) -> bool {
    pod.is_none_or(|p| p["metadata"].get("deletionTimestamp").is_some())
}

#[tokio::test]
async fn evict_respects_the_disruption_budget_and_a_gone_pod_is_nothing_to_do() {
    let env = Env::start().await;
    env.seed(pause_pod("web-1", "web")).await;
    env.wait_for("v1", "Pod", "web-1", "Ready", is_ready).await;
    env.seed(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }))
    .await;
    let pod = env.target("Pod", "web-1");
    let evict = step(Action::Evict, json!({}));

    let error = expect_error(
        env.cluster.run(&evict, &pod, "inc-1/evict", false).await,
        "the budget",
    );
    assert!(error.contains("pod "), "{error}");
    assert!(error.contains("cannot be evicted now"), "{error}");
    assert!(error.contains("disruption budget"), "{error}");
    assert!(
        env.get("v1", "Pod", "web-1").await.is_some(),
        "the pod stays"
    );

    env.api("policy/v1", "PodDisruptionBudget")
        .delete("web", &DeleteParams::default())
        .await
        .expect("drop the budget");
    let dry = env.run(&evict, &pod, "inc-1/evict", true).await;
    assert!(dry.changed && dry.dry_run, "{dry:?}");
    let still = env.get("v1", "Pod", "web-1").await;
    assert!(!is_going(still.as_ref()), "a dry run evicts nothing");
    if let Some(fake) = &env.fake {
        let post = fake
            .requests()
            .into_iter()
            .rfind(|r| r.method == "POST")
            .expect("a post");
        assert!(post.path.ends_with("/pods/web-1/eviction"), "{post:?}");
        assert_eq!(post.param("dryRun"), Some("All"));
    }

    let done = env.run(&evict, &pod, "inc-1/evict", false).await;
    assert!(done.changed, "{done:?}");
    assert_eq!(
        done.after["evicted"],
        json!([format!("{}/web-1", env.namespace)])
    );
    env.wait_for("v1", "Pod", "web-1", "gone", is_going).await;
    let again = env.run(&evict, &pod, "inc-1/evict", false).await;
    assert!(!again.changed, "{again:?}");
}

#[tokio::test]
async fn evict_drains_a_node_but_leaves_daemon_set_mirror_and_critical_pods() {
    let env = Env::start().await;
    let Some(fake) = env.fake_only("draining a node") else {
        return;
    };
    let on_n1 = |name: &str, extra: Value| {
        let mut pod = pause_pod(name, "any");
        pod["metadata"]["namespace"] = json!("shop");
        pod["spec"]["nodeName"] = json!("n1");
        if let (Some(pod), Some(extra)) = (pod["metadata"].as_object_mut(), extra.get("metadata")) {
            pod.extend(extra.as_object().cloned().unwrap_or_default());
        }
        if let Some(class) = extra.get("priorityClassName") {
            pod["spec"]["priorityClassName"] = class.clone();
        }
        fake.insert(pod).expect("seeded");
    };
    on_n1("api-1", json!({}));
    on_n1("api-2", json!({}));
    on_n1(
        "logs-x",
        json!({"metadata": {"ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "logs", "uid": "u1", "controller": true,
        }]}}),
    );
    on_n1(
        "etcd-n1",
        json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}}),
    );
    on_n1(
        "dns-1",
        json!({"priorityClassName": "system-cluster-critical"}),
    );
    let mut elsewhere = pause_pod("api-9", "any");
    elsewhere["metadata"]["namespace"] = json!("shop");
    elsewhere["spec"]["nodeName"] = json!("n2");
    fake.insert(elsewhere).expect("seeded");

    let node = target("Node", None, "n1");
    let drain = step(Action::Evict, json!({"skipCritical": true, "maxPods": 1}));
    let first = env.run(&drain, &node, "inc-1/drain", false).await;
    assert!(first.changed, "{first:?}");
    assert_eq!(first.after["evicted"], json!(["shop/api-1"]));
    let skipped: Vec<(String, String)> = first.after["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| {
            (
                s["pod"].as_str().unwrap_or_default().into(),
                s["why"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    let skipped: Vec<(&str, &str)> = skipped
        .iter()
        .map(|(p, w)| (p.as_str(), w.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("shop/etcd-n1", "mirror pod"),
            ("shop/logs-x", "managed by a DaemonSet"),
            ("shop/api-2", "over maxPods"),
            ("shop/dns-1", "critical priority class"),
        ]
    );
    // The next run takes the next pod; then there is nothing left to evict.
    let second = env.run(&drain, &node, "inc-1/drain", false).await;
    assert_eq!(second.after["evicted"], json!(["shop/api-2"]));
    let third = env.run(&drain, &node, "inc-1/drain", false).await;
    assert!(!third.changed, "{third:?}");
    assert!(
        fake.get("v1", "Pod", Some("shop"), "api-9").is_some(),
        "another node's pod stays"
    );
    assert!(fake.get("v1", "Pod", Some("shop"), "logs-x").is_some());
}

#[tokio::test]
async fn capture_logs_reads_each_container_and_the_crashed_instance_of_a_restarted_one() {
    let env = Env::start().await;
    let Some(fake) = env.fake_only("seeded logs") else {
        return;
    };
    let mut deployment = web("web", OLD_IMAGE);
    deployment["metadata"]["namespace"] = json!("shop");
    fake.insert(deployment).expect("seeded");
    for i in 1..=4 {
        let mut pod = pause_pod(&format!("web-{i}"), "web");
        pod["metadata"]["namespace"] = json!("shop");
        pod["spec"]["containers"] =
            json!([{"name": "app", "image": "a"}, {"name": "proxy", "image": "p"}]);
        pod["status"]["containerStatuses"] = json!([
            {"name": "app", "restartCount": if i == 1 { 2 } else { 0 }, "ready": true, "image": "a", "imageID": ""},
            {"name": "proxy", "restartCount": 0, "ready": true, "image": "p", "imageID": ""},
        ]);
        fake.insert(pod).expect("seeded");
    }
    let numbered: String = (1..=300).map(|n| format!("line {n}\n")).collect();
    fake.set_logs("shop", "web-1", "app", false, numbered);
    fake.set_logs("shop", "web-1", "app", true, "panic: out of memory\n");
    fake.set_logs("shop", "web-1", "proxy", false, "ok\n");
    fake.set_logs("shop", "web-2", "app", false, "x".repeat(100 * 1024));

    let web_ref = env.target("Deployment", "web");
    let capture = step(Action::CaptureLogs, json!({"tailLines": 100}));
    let done = env.run(&capture, &web_ref, "inc-1/logs", false).await;
    assert!(!done.changed, "reading logs changes nothing");
    let logs = done.after["logs"].as_array().expect("logs");
    let entry = |pod: &str, container: &str, previous: bool| {
        logs.iter()
            .find(|e| e["pod"] == pod && e["container"] == container && e["previous"] == previous)
            .unwrap_or_else(|| panic!("{pod}/{container} previous={previous} in {logs:#?}"))
    };
    let crashed = entry("web-1", "app", true);
    assert_eq!(crashed["lines"], json!(["panic: out of memory"]));
    let current = entry("web-1", "app", false)["lines"]
        .as_array()
        .expect("lines");
    assert_eq!(
        (current.len(), current[99].as_str()),
        (100, Some("line 300"))
    );
    assert_eq!(entry("web-1", "proxy", false)["lines"], json!(["ok"]));
    // No previous instance is asked for a container that never restarted.
    assert!(
        !logs
            .iter()
            .any(|e| e["pod"] == "web-2" && e["previous"] == true)
    );
    // At most 3 pods by default; a huge log is cut to its newest 64 KiB, and it says so.
    assert!(!logs.iter().any(|e| e["pod"] == "web-4"), "{logs:#?}");
    let huge = entry("web-2", "app", false);
    assert_eq!(huge["truncated"], true);
    assert_eq!(huge["lines"][0].as_str().map(str::len), Some(64 * 1024));
    assert!(
        done.message.contains("cut to their last 64 KiB"),
        "{}",
        done.message
    );
    // 100 + the crashed instance's line + the proxy's + the huge one; empty logs add none.
    assert_eq!(done.after["lines"], 100 + 1 + 1 + 1);

    // A dry run reads the same; one container of one pod on request.
    let dry = env.run(&capture, &web_ref, "inc-1/logs", true).await;
    assert_eq!(dry.after, done.after);
    let one = step(
        Action::CaptureLogs,
        json!({"container": "proxy", "maxPods": 1, "previous": false}),
    );
    let pod = env.target("Pod", "web-1");
    let only = env.run(&one, &pod, "inc-1/logs", false).await;
    assert_eq!(
        only.after["logs"],
        json!([{"pod": "web-1", "container": "proxy", "previous": false, "lines": ["ok"], "truncated": false}])
    );
}
