//! Playbooks and policies kept as `Playbook` and `AutonomyPolicy` custom resources
//! (`salve::playbook::resources`), through the real `kube::Client` and its watcher: they join
//! the set, reload on an edit, leave it on a delete, are refused with their errors written in
//! their status (the last good set staying active), and a policy object is followed like a
//! policy file. Each test runs the real reload loop ([`watch::watch`]) over a playbook
//! directory of its own, with the watchers started as `salve run --playbook-resources` starts
//! them ([`resources::start`]).
//!
//! # Against a real cluster
//!
//! With `SALVE_TEST_KUBECONFIG=/path/to/kubeconfig` the tests run against that cluster, in the
//! kubeconfig's namespace (`default` if none), on objects named `salve-test-…` deleted when each
//! test ends. The CRDs must be installed (`salve crds | kubectl apply -f -`). The API server
//! prunes unknown fields and refuses bad enum values itself there, so the invalid object holds
//! an error only Salve sees (a duration that is not one) instead of a typo'd field and a wrong
//! risk. The test counting requests in a quiet second reads the fake's log, so against a
//! cluster it counts reloads only.
//!
//! ```text
//! SALVE_TEST_KUBECONFIG=~/.kube/kind cargo test --test tests -- resources::
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use salve::app::PolicyChoice;
use salve::crd::ResourceStatus;
use salve::kube_fake::{FakeApiServer, ResourceType};
use salve::playbook::PlaybookSet;
use salve::playbook::load::load_paths;
use salve::playbook::resources::{self, ResourceKey, api_resource};
use salve::playbook::watch::{self, ReloadOutcome, Reloader, WatchOptions};
use salve::schema::DocumentKind;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{KUBECONFIG, real_config};

/// How long anything expected may take to show up.
const PATIENCE: Duration = Duration::from_secs(5);

/// A playbook's spec whose trigger must hold `for_minutes` minutes.
fn playbook_spec(for_minutes: u32) -> Value {
    json!({
        "trigger": {
            "promql": {"expr": "sum by (namespace, deployment) (rate(x[5m])) > 1"},
            "for": format!("{for_minutes}m"),
        },
        "target": {"kind": "Deployment", "namespace": "${labels.namespace}", "name": "${labels.deployment}"},
        "steps": [{"action": "rollout_restart", "risk": "low"}],
    })
}

/// The same playbook as a file.
fn playbook_file(name: &str, for_minutes: u32) -> String {
    format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec: {}\n",
        playbook_spec(for_minutes)
    )
}

/// A test's API server, playbook directory, and the reload loop over both.
struct Env {
    fake: Option<FakeApiServer>,
    client: kube::Client,
    namespace: String,
    prefix: String,
    dir: tempfile::TempDir,
    reloader: Arc<Reloader>,
    outcomes: mpsc::Receiver<ReloadOutcome>,
    cancel: CancellationToken,
    created: Vec<(DocumentKind, String)>,
}

impl Env {
    /// Starts the API server (the fake, or the cluster of [`KUBECONFIG`]), loads `files`
    /// (name, text) from a fresh directory, and starts the watchers and the reload loop.
    async fn start(test: &str, files: &[(&str, String)]) -> Env {
        let (fake, client, namespace, prefix) =
            match std::env::var(KUBECONFIG).ok().filter(|p| !p.is_empty()) {
                None => {
                    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
                    fake.register(ResourceType::custom(
                        "salve.dev/v1",
                        "Playbook",
                        "playbooks",
                        true,
                    ));
                    fake.register(ResourceType::custom(
                        "salve.dev/v1",
                        "AutonomyPolicy",
                        "autonomypolicies",
                        true,
                    ));
                    (Some(fake), client, "salve".to_string(), String::new())
                }
                Some(path) => {
                    let config = real_config(&path).await;
                    let namespace = config.default_namespace.clone();
                    let client = kube::Client::try_from(config).expect("a client");
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos());
                    let prefix = format!("salve-test-{test}-{nanos:x}-");
                    (None, client, namespace, prefix)
                }
            };
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write a file");
        }
        let (reloader, _) =
            Reloader::from_paths(vec![dir.path().to_path_buf()]).expect("the files are valid");
        let cancel = CancellationToken::new();
        let (reloader, _task) = resources::start(
            reloader,
            client.clone(),
            Some(vec![namespace.clone()]),
            cancel.clone(),
        )
        .await;
        let reloader = Arc::new(reloader);
        let (sender, outcomes) = mpsc::channel(256);
        let options = WatchOptions {
            resync: Duration::from_secs(3600),
            ..WatchOptions::default()
        };
        tokio::spawn(watch::watch(
            Arc::clone(&reloader),
            options,
            cancel.clone(),
            sender,
        ));
        Env {
            fake,
            client,
            namespace,
            prefix,
            dir,
            reloader,
            outcomes,
            cancel,
            created: Vec::new(),
        }
    }

    fn api(&self, kind: DocumentKind) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &api_resource(kind))
    }

    /// The object's name in this test's namespace.
    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The name the object is loaded under.
    fn document(&self, kind: DocumentKind, name: &str) -> PathBuf {
        ResourceKey {
            kind,
            namespace: self.namespace.clone(),
            name: self.name(name),
        }
        .document_name()
    }

    async fn create(&mut self, kind: DocumentKind, name: &str, spec: Value) {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "salve.dev/v1",
            "kind": kind.as_str(),
            "metadata": {"name": self.name(name), "namespace": self.namespace},
            "spec": spec,
        }))
        .expect("an object");
        self.api(kind)
            .create(&PostParams::default(), &object)
            .await
            .expect("created");
        self.created.push((kind, self.name(name)));
    }

    /// Replaces the object's spec (a new generation).
    async fn edit(&self, kind: DocumentKind, name: &str, spec: Value) {
        let api = self.api(kind);
        let mut object = api.get(&self.name(name)).await.expect("the object");
        object.data["spec"] = spec;
        api.replace(&self.name(name), &PostParams::default(), &object)
            .await
            .expect("replaced");
    }

    async fn delete(&self, kind: DocumentKind, name: &str) {
        self.api(kind)
            .delete(&self.name(name), &DeleteParams::default())
            .await
            .expect("deleted");
    }

    fn set(&self) -> Arc<PlaybookSet> {
        self.reloader.active().load_full()
    }

    /// Waits until the active set satisfies `ok`.
    async fn set_until(
        &mut self,
        what: &str,
        ok: impl Fn(&PlaybookSet) -> bool,
    ) -> Arc<PlaybookSet> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let set = self.set();
            if ok(&set) {
                return set;
            }
            assert!(Instant::now() < deadline, "never: {what}");
            while self.outcomes.try_recv().is_ok() {}
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a rejected reload, and returns its diagnostics.
    async fn rejected(&mut self) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.outcomes.recv()).await {
                Ok(Some(ReloadOutcome::Rejected { diagnostics, .. })) => {
                    return diagnostics.iter().map(ToString::to_string).collect();
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("no reload was rejected"),
            }
        }
    }

    /// The object's status, as Salve wrote it.
    async fn status(&self, kind: DocumentKind, name: &str) -> Option<ResourceStatus> {
        let object = self
            .api(kind)
            .get(&self.name(name))
            .await
            .expect("the object");
        serde_json::from_value(object.data.get("status")?.clone()).ok()
    }

    /// Waits until the object's status satisfies `ok`.
    async fn status_until(
        &self,
        kind: DocumentKind,
        name: &str,
        what: &str,
        ok: impl Fn(&ResourceStatus) -> bool,
    ) -> ResourceStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.status(kind, name).await;
            if let Some(status) = status.as_ref().filter(|s| ok(s)) {
                return status.clone();
            }
            assert!(
                Instant::now() < deadline,
                "never: {what}; the status is {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cancel.cancel();
        if self.fake.is_some() || self.created.is_empty() {
            return;
        }
        // A real cluster: delete what the test created, on a runtime of its own.
        let (client, namespace, created) = (
            self.client.clone(),
            self.namespace.clone(),
            std::mem::take(&mut self.created),
        );
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async {
                for (kind, name) in created {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), &namespace, &api_resource(kind));
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                }
            });
        })
        .join();
    }
}

/// The status of condition `type_`: (status, reason, message).
fn condition(status: &ResourceStatus, type_: &str) -> (String, String, String) {
    let found = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#?}"));
    (
        found.status.clone(),
        found.reason.clone(),
        found.message.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_playbook_resource_joins_the_set_reports_its_digest_and_reloads_on_an_edit() {
    let mut env = Env::start("valid", &[("file.yaml", playbook_file("from-file", 1))]).await;
    env.create(DocumentKind::Playbook, "restart", playbook_spec(5))
        .await;
    let name = env.name("restart");
    let set = env
        .set_until("the object joins the set", |s| s.playbook(&name).is_some())
        .await;
    let playbook = set.playbook(&name).expect("loaded");
    assert_eq!(
        playbook.source.file,
        env.document(DocumentKind::Playbook, "restart")
    );
    assert_eq!(playbook.trigger.for_, Duration::from_secs(300));
    assert!(set.playbook("from-file").is_some(), "the files stay loaded");
    // The digest `salve validate -v` prints for the same playbook written as a file.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let file = elsewhere.path().join("restart.yaml");
    std::fs::write(&file, playbook_file(&name, 5)).expect("write");
    let as_file = load_paths(&[file]);
    assert_eq!(as_file.playbooks[0].digest, playbook.digest);

    let status = env
        .status_until(DocumentKind::Playbook, "restart", "a status", |s| {
            s.observed_generation == Some(1)
        })
        .await;
    assert_eq!(condition(&status, "Valid").0, "True", "{status:#?}");
    assert_eq!(condition(&status, "Active").0, "True", "{status:#?}");
    assert_eq!(status.digest.as_deref(), Some(playbook.digest.as_str()));
    assert!(status.errors.is_empty(), "{status:#?}");

    env.edit(DocumentKind::Playbook, "restart", playbook_spec(7))
        .await;
    let set = env
        .set_until("the edit reloads the playbook", |s| {
            s.playbook(&name)
                .is_some_and(|p| p.trigger.for_ == Duration::from_secs(420))
        })
        .await;
    let digest = set.playbook(&name).expect("loaded").digest.clone();
    let status = env
        .status_until(
            DocumentKind::Playbook,
            "restart",
            "the new generation",
            |s| s.observed_generation == Some(2),
        )
        .await;
    assert_eq!(status.digest, Some(digest));
    assert_eq!(condition(&status, "Active").0, "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_resource_is_refused_with_its_errors_in_its_status_until_fixed() {
    let mut env = Env::start("invalid", &[]).await;
    env.create(DocumentKind::Playbook, "restart", playbook_spec(5))
        .await;
    let name = env.name("restart");
    env.set_until("the object joins the set", |s| s.playbook(&name).is_some())
        .await;
    let before = env.set().playbook(&name).expect("loaded").digest.clone();

    let mut invalid = playbook_spec(9);
    let fake = env.fake.is_some();
    if fake {
        // A real API server's schema would prune the one and refuse the other.
        invalid["coolDown"] = json!("5m");
        invalid["steps"][0]["risk"] = json!("hgih");
    } else {
        invalid["trigger"]["for"] = json!("9 minutes");
    }
    env.edit(DocumentKind::Playbook, "restart", invalid).await;
    let diagnostics = env.rejected().await;
    let document = env.document(DocumentKind::Playbook, "restart");
    assert!(
        diagnostics
            .iter()
            .all(|d| d.starts_with(&format!("{}:", document.display()))),
        "{diagnostics:#?}"
    );
    let status = env
        .status_until(DocumentKind::Playbook, "restart", "the errors", |s| {
            s.observed_generation == Some(2)
        })
        .await;
    let (valid, reason, message) = condition(&status, "Valid");
    assert_eq!((valid.as_str(), reason.as_str()), ("False", "Invalid"));
    assert!(!message.is_empty());
    let (active, reason, message) = condition(&status, "Active");
    assert_eq!((active.as_str(), reason.as_str()), ("False", "SetRejected"));
    assert!(
        message.contains("the last good set still runs, with an earlier version"),
        "{message}"
    );
    let errors: Vec<(&str, &str)> = status
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    let expected: &[(&str, &str)] = if fake {
        &[
            // An unknown field is reported on the object holding it, as `salve validate` does.
            ("/spec", "unknown field `coolDown`"),
            ("/spec/steps/0/risk", "hgih"),
        ]
    } else {
        &[("/spec/trigger/for", "`9 minutes` is not a duration")]
    };
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (path, words) in expected {
        assert!(
            errors.iter().any(|(p, m)| p == path && m.contains(words)),
            "no error at {path} saying {words}: {errors:#?}"
        );
    }
    assert_eq!(status.digest, None, "nothing compiled");
    // The last good version still runs.
    assert_eq!(
        env.set().playbook(&name).expect("still loaded").digest,
        before
    );

    env.edit(DocumentKind::Playbook, "restart", playbook_spec(9))
        .await;
    env.set_until("the fix is applied", |s| {
        s.playbook(&name)
            .is_some_and(|p| p.trigger.for_ == Duration::from_secs(540))
    })
    .await;
    let status = env
        .status_until(
            DocumentKind::Playbook,
            "restart",
            "the errors cleared",
            |s| s.observed_generation == Some(3),
        )
        .await;
    assert!(status.errors.is_empty(), "{status:#?}");
    assert_eq!(condition(&status, "Valid").0, "True");
    assert_eq!(condition(&status, "Active").0, "True");

    env.delete(DocumentKind::Playbook, "restart").await;
    env.set_until("the deleted object leaves the set", |s| {
        s.playbook(&name).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_resource_is_inactive_while_another_breaks_the_set_and_files_are_refused() {
    let mut env = Env::start("others", &[]).await;
    env.create(DocumentKind::Playbook, "good", playbook_spec(5))
        .await;
    let good = env.name("good");
    env.set_until("the object joins the set", |s| s.playbook(&good).is_some())
        .await;
    // A runbook would be read from Salve's own file system: refused, nothing read.
    let mut with_runbook = playbook_spec(5);
    with_runbook["runbook"] = json!("/etc/hostname");
    env.create(DocumentKind::Playbook, "reads", with_runbook)
        .await;
    env.rejected().await;
    let status = env
        .status_until(DocumentKind::Playbook, "reads", "the refusal", |s| {
            !s.errors.is_empty()
        })
        .await;
    assert_eq!(status.errors.len(), 1, "{status:#?}");
    assert_eq!(status.errors[0].path, "/spec/runbook");
    assert!(
        status.errors[0]
            .message
            .contains("a playbook kept as a custom resource cannot name a runbook"),
        "{status:#?}"
    );
    let (active, _, message) = condition(&status, "Active");
    assert_eq!(active, "False");
    assert!(message.contains("without this playbook"), "{message}");
    // The valid object is untouched: same version, still active.
    let good_status = env
        .status_until(DocumentKind::Playbook, "good", "a status", |s| {
            s.observed_generation == Some(1)
        })
        .await;
    assert_eq!(
        condition(&good_status, "Active").0,
        "True",
        "{good_status:#?}"
    );
    assert!(env.set().playbook(&env.name("reads")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_resource_is_followed_when_it_is_the_only_policy() {
    let mut env = Env::start("policy", &[]).await;
    let default = {
        let loaded = load_paths(&[PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/default.yaml"
        ))]);
        Arc::clone(&loaded.policies[0])
    };
    let choice = PolicyChoice::Default(default);
    assert_eq!(choice.pick(&env.set()).expect("a policy").name, "default");

    env.create(
        DocumentKind::AutonomyPolicy,
        "cluster",
        json!({"maxAutonomousRisk": "low", "dryRun": false}),
    )
    .await;
    let name = env.name("cluster");
    let set = env
        .set_until("the policy joins the set", |s| s.policy(&name).is_some())
        .await;
    let picked = choice.pick(&set).expect("the only policy");
    assert_eq!(picked.name, name);
    assert_eq!(picked.max_autonomous_risk.to_string(), "low");
    let status = env
        .status_until(DocumentKind::AutonomyPolicy, "cluster", "a status", |s| {
            s.observed_generation == Some(1)
        })
        .await;
    assert_eq!(condition(&status, "Active").0, "True", "{status:#?}");
    assert_eq!(status.digest.as_deref(), Some(picked.digest.as_str()));

    // A policy file as well: `--policy FILE` picks it; without it, none is chosen.
    let file = env.dir.path().join("policy.yaml");
    std::fs::write(&file, include_str!("../policies/default.yaml")).expect("write");
    let set = env
        .set_until("the file joins the set", |s| s.policies().len() == 2)
        .await;
    assert!(choice.pick(&set).is_none(), "two policies and no choice");
    let by_file = PolicyChoice::File(file).pick(&set).expect("the file's");
    assert_eq!(by_file.name, "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_do_not_loop() {
    let mut env = Env::start("quiet", &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    while env.outcomes.try_recv().is_ok() {}
    env.create(DocumentKind::Playbook, "restart", playbook_spec(5))
        .await;
    env.status_until(DocumentKind::Playbook, "restart", "a status", |s| {
        s.observed_generation == Some(1)
    })
    .await;
    // Let the written status come back through the watch: it must not reload.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut outcomes = Vec::new();
    while let Ok(outcome) = env.outcomes.try_recv() {
        outcomes.push(outcome);
    }
    assert!(
        matches!(outcomes.as_slice(), [ReloadOutcome::Applied { .. }]),
        "one reload for the create, none for the status: {outcomes:#?}"
    );
    let writes =
        |fake: &FakeApiServer| fake.requests().iter().filter(|r| r.method != "GET").count();
    let before = env.fake.as_ref().map(writes);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut reloads = 0;
    while env.outcomes.try_recv().is_ok() {
        reloads += 1;
    }
    assert_eq!(reloads, 0, "a status write came back as a reload");
    if let Some(fake) = &env.fake {
        assert_eq!(
            Some(writes(fake)),
            before,
            "status written again with nothing changed"
        );
        let status_writes = fake
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with("/status"))
            .count();
        assert_eq!(status_writes, 1, "{:#?}", fake.requests());
    }
    // A resync reload (nothing changed) writes nothing either.
    let outcome = tokio::task::block_in_place(|| env.reloader.reload());
    assert!(
        matches!(outcome, ReloadOutcome::Unchanged { .. }),
        "{outcome:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(fake) = &env.fake {
        assert_eq!(Some(writes(fake)), before);
    }
}

/// `salve run --playbook-resources` (without `--playbooks`) against the fake: the objects
/// there at start are loaded before the engine starts (its policy too), and their status is
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salve_run_loads_the_objects_at_start_and_follows_their_policy() {
    if std::env::var(KUBECONFIG).is_ok_and(|p| !p.is_empty()) {
        return; // The daemon under test talks to the fake only.
    }
    let env = Env::start("run", &[]).await;
    let fake = env.fake.as_ref().expect("the fake");
    let mut playbook = playbook_spec(5);
    playbook["trigger"] = json!({"alert": {"alertname": "ApiDown"}});
    for (kind, name, spec) in [
        (DocumentKind::Playbook, "api-restart", playbook),
        (
            DocumentKind::AutonomyPolicy,
            "cluster-policy",
            json!({"maxAutonomousRisk": "low", "dryRun": true}),
        ),
    ] {
        fake.insert(json!({
            "apiVersion": "salve.dev/v1", "kind": kind.as_str(),
            "metadata": {"name": name, "namespace": "prod"}, "spec": spec,
        }))
        .expect("seeded");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let log = dir.path().join("salve.log");
    let mut daemon = crate::Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
            .arg("run")
            .arg("--playbook-resources")
            .args(["--playbook-resources-namespace", "prod"])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--journal")
            .arg(dir.path().join("journal.db"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start salve run"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let active = |name: &str, kind: &str| {
        fake.get("salve.dev/v1", kind, Some("prod"), name)
            .and_then(|o| serde_json::from_value::<ResourceStatus>(o["status"].clone()).ok())
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Active" && c.status == "True")
            })
    };
    while !(active("api-restart", "Playbook") && active("cluster-policy", "AutonomyPolicy")) {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "no Active status written; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = crate::terminate(&mut daemon.0).await;
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{log}");
    let running = log
        .lines()
        .find(|l| l.contains("salve is running"))
        .unwrap_or_else(|| panic!("no start line in:\n{log}"));
    assert!(
        running.contains("playbooks=1") && running.contains("cluster-policy"),
        "the engine started with the objects and their policy: {running}"
    );
}
