//! Approvals answered by Kubernetes users: the API (real HTTP on a loopback port) checks the
//! bearer token with a TokenReview and asks RBAC with a SubjectAccessReview for verb `approve`
//! or `reject` on `approvals.salve.dev` in the namespace of the approval's target, through the
//! real `kube::Client`. Who may answer is decided only by grants; who answered is the
//! Kubernetes user name, in the journal; every failure to check refuses the answer.
//!
//! The users are service accounts, so the same tests can run against a real cluster: with
//! `SALVE_TEST_KUBECONFIG=/path/to/kubeconfig` they create two namespaces `salve-test-…`
//! (labelled `salve.dev/test=true`, deleted at the end), service accounts with tokens from the
//! TokenRequest API, and Roles with RoleBindings; the kubeconfig's user must be allowed to do
//! that and to create TokenReviews and SubjectAccessReviews. Against the in-process fake, the
//! tokens and grants are seeded instead.
//!
//! ```text
//! SALVE_TEST_KUBECONFIG=~/.kube/kind cargo test --test tests -- approvers::
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use reqwest::StatusCode;
use salve::api::auth::Kubernetes;
use salve::api::{ApiState, Approvers, PlaybookStatus};
use salve::approval::{Approvals, Ask, State};
use salve::journal::{Journal, Kind};
use salve::kube_fake::{FakeApiServer, Grant, Subject, TokenUser};
use salve::plan::ObjectRef;
use salve::risk::Risk;
use serde_json::{Value, json};

use crate::{KUBECONFIG, real_config};

/// The audience of the tests that ask for one.
const AUDIENCE: &str = "salve.test";

/// A test's Kubernetes: the in-process fake, or a real cluster with two fresh namespaces that
/// are deleted when the `Env` is dropped.
struct Env {
    fake: Option<FakeApiServer>,
    client: kube::Client,
    /// The namespace of the approvals' target, where the users live.
    namespace: String,
    /// Another namespace.
    other: String,
    /// The kubeconfig of a real cluster (to delete the namespaces at the end).
    kubeconfig: Option<String>,
    /// Makes the names of Roles and tokens unique.
    seq: AtomicUsize,
}

/// Who a grant is bound to.
enum To<'a> {
    /// The service account of that name in the test namespace.
    Account(&'a str),
    /// A group.
    Group(&'a str),
}

impl Env {
    async fn start() -> Env {
        let Some(path) = std::env::var(KUBECONFIG).ok().filter(|p| !p.is_empty()) else {
            let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
            return Env {
                fake: Some(fake),
                client,
                namespace: "shop".into(),
                other: "payments".into(),
                kubeconfig: None,
                seq: AtomicUsize::new(0),
            };
        };
        let client = kube::Client::try_from(real_config(&path).await).expect("a client");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let namespace = format!("salve-test-{}-{nanos:x}", std::process::id());
        let env = Env {
            fake: None,
            client,
            other: format!("{namespace}-other"),
            namespace,
            kubeconfig: Some(path),
            seq: AtomicUsize::new(0),
        };
        for name in [&env.namespace, &env.other] {
            env.create(
                Api::<Namespace>::all(env.client.clone()),
                json!({"metadata": {"name": name, "labels": {"salve.dev/test": "true"}}}),
            )
            .await;
        }
        env
    }

    async fn create<K>(&self, api: Api<K>, object: Value) -> K
    where
        K: kube::Resource
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        let object: K = serde_json::from_value(object).expect("a valid object");
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create {object:?}: {e}"))
    }

    fn next(&self) -> usize {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Service account `name` in the test namespace; a bearer token for it (for `audience`,
    /// else the API server's own) and its Kubernetes user name.
    async fn user(&self, name: &str, audience: Option<&str>) -> (String, String) {
        let username = format!("system:serviceaccount:{}:{name}", self.namespace);
        let audiences: Vec<&str> = audience.into_iter().collect();
        if let Some(fake) = &self.fake {
            let token = format!("token-{name}-{}", self.next());
            let user = TokenUser::service_account(&self.namespace, name).for_audiences(&audiences);
            fake.add_token(&token, user);
            return (token, username);
        }
        let accounts = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace);
        if accounts.get_opt(name).await.expect("read").is_none() {
            self.create(accounts.clone(), json!({"metadata": {"name": name}}))
                .await;
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                expiration_seconds: Some(600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("a token for {name}: {e}"))
            .status
            .expect("a token")
            .token;
        (token, username)
    }

    /// Lets `to` answer with `verbs` the approvals of targets in `namespace`: a Role and a
    /// RoleBinding there.
    async fn allow(&self, to: To<'_>, verbs: &[&str], namespace: &str) {
        let subject = match to {
            To::Account(name) => Subject::ServiceAccount {
                namespace: self.namespace.clone(),
                name: name.into(),
            },
            To::Group(group) => Subject::Group(group.into()),
        };
        if let Some(fake) = &self.fake {
            fake.grant(
                Grant::new(subject, verbs, "salve.dev", "approvals").in_namespace(namespace),
            );
            return;
        }
        let name = format!("approver-{}", self.next());
        self.create(
            Api::<Role>::namespaced(self.client.clone(), namespace),
            json!({
                "metadata": {"name": name},
                "rules": [{"apiGroups": ["salve.dev"], "resources": ["approvals"], "verbs": verbs}],
            }),
        )
        .await;
        let subject = match subject {
            Subject::ServiceAccount { namespace, name } => {
                json!({"kind": "ServiceAccount", "namespace": namespace, "name": name})
            }
            Subject::Group(group) => {
                json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group})
            }
            Subject::User(user) => {
                json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user})
            }
        };
        self.create(
            Api::<RoleBinding>::namespaced(self.client.clone(), namespace),
            json!({
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [subject],
            }),
        )
        .await;
        // The API server's RBAC follows its informers: give it a moment.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    /// Approvers asking this Kubernetes, for `audience`.
    fn approvers(&self, audience: Option<&str>) -> Approvers {
        Approvers::Kubernetes(Kubernetes::new(
            self.client.clone(),
            audience.map(str::to_owned),
        ))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some(path) = self.kubeconfig.take() else {
            return;
        };
        let namespaces = [self.namespace.clone(), self.other.clone()];
        crate::clean_up(
            path,
            &format!("the test namespaces {}", namespaces.join(", ")),
            move |client| async move {
                for namespace in namespaces {
                    Api::<Namespace>::all(client.clone())
                        .delete(&namespace, &DeleteParams::background())
                        .await?;
                }
                Ok(())
            },
        );
    }
}

/// A journal with one pending approval for a step on Deployment `namespace/api`.
struct Pending {
    journal: Arc<Journal>,
    id: String,
    _dir: tempfile::TempDir,
}

fn pending_in(namespace: &str) -> Pending {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Arc::new(Journal::open(&dir.path().join("j.db")).expect("journal"));
    let target = ObjectRef {
        kind: "Deployment".into(),
        name: "api".into(),
        namespace: Some(namespace.into()),
    };
    let approval = Approvals::new(Arc::clone(&journal))
        .request(
            Ask {
                incident: "inc-1".into(),
                playbook: "heal".into(),
                step: "drain".into(),
                risk: Risk::High,
                reason: "risk high is above the ceiling medium".into(),
                situation: String::new(),
                plan: json!({"incident": "inc-1", "playbook": "heal", "target": target}),
                evidence: json!({}),
            },
            Utc::now(),
            Duration::from_secs(600),
        )
        .expect("requested");
    Pending {
        journal,
        id: approval.id,
        _dir: dir,
    }
}

impl Pending {
    fn state(&self) -> State {
        Approvals::new(Arc::clone(&self.journal))
            .get(&self.id)
            .expect("the approval")
            .state
    }
}

/// Serves the API over `journal` on a free loopback port; its URL.
async fn serve(journal: &Arc<Journal>, approvers: Approvers) -> String {
    let metrics = salve::metrics::Metrics::default();
    let playbooks = PlaybookStatus::new();
    crate::api::serve_state(ApiState::new(
        Arc::clone(journal),
        playbooks,
        metrics,
        approvers,
    ))
    .await
}

/// `POST {api}/api/v1/approvals/{id}/{verb}` as `token` when given: status and JSON body.
async fn answer(api: &str, id: &str, verb: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{api}/api/v1/approvals/{id}/{verb}"))
        .header("content-type", "application/json")
        .body("{}");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_user_approves_and_the_journal_records_the_kubernetes_user() {
    let env = Env::start().await;
    let p = pending_in(&env.namespace);
    let api = serve(&p.journal, env.approvers(None)).await;
    let (token, username) = env.user("oncall", None).await;
    env.allow(
        To::Account("oncall"),
        &["approve", "reject"],
        &env.namespace,
    )
    .await;

    let (code, body) = answer(&api, &p.id, "approve", Some(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "approved");
    assert_eq!(body["by"], json!(username));
    assert!(
        matches!(p.state(), State::Approved { by, .. } if by == username),
        "{:?}",
        p.state()
    );
    let granted = p
        .journal
        .by_detail("approval", &p.id)
        .expect("the journal")
        .into_iter()
        .find(|e| e.record.kind == Kind::ApprovalGranted)
        .expect("the grant is journaled");
    assert_eq!(granted.record.detail["by"], json!(username));
    if let Some(fake) = &env.fake {
        let paths: Vec<String> = fake
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.path)
            .collect();
        assert_eq!(
            paths,
            [
                "/apis/authentication.k8s.io/v1/tokenreviews",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            ],
            "one review of each"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_or_an_unknown_one_is_unauthenticated() {
    let env = Env::start().await;
    let p = pending_in(&env.namespace);
    let api = serve(&p.journal, env.approvers(None)).await;

    let (code, body) = answer(&api, &p.id, "approve", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        error_of(&body).contains("bearer token is required"),
        "{body}"
    );
    let (code, body) = answer(&api, &p.id, "approve", Some("not-a-token")).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        error_of(&body).contains("Kubernetes did not authenticate"),
        "{body}"
    );
    assert_eq!(p.state(), State::Pending);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_the_grant_is_forbidden_and_told_what_to_grant() {
    let env = Env::start().await;
    let p = pending_in(&env.namespace);
    let api = serve(&p.journal, env.approvers(None)).await;
    let (token, username) = env.user("visitor", None).await;

    let (code, body) = answer(&api, &p.id, "approve", Some(&token)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let error = error_of(&body);
    for part in [
        format!("User {username:?} cannot approve"),
        format!("in the namespace {:?}", env.namespace),
        "apiGroups [salve.dev], resources [approvals], verbs [approve]".into(),
    ] {
        assert!(error.contains(&part), "{part} in {error}");
    }
    assert_eq!(
        p.state(),
        State::Pending,
        "still waiting for someone allowed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_to_reject_does_not_let_a_user_approve() {
    let env = Env::start().await;
    let p = pending_in(&env.namespace);
    let api = serve(&p.journal, env.approvers(None)).await;
    let (token, username) = env.user("skeptic", None).await;
    env.allow(To::Account("skeptic"), &["reject"], &env.namespace)
        .await;

    let (code, body) = answer(&api, &p.id, "approve", Some(&token)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(error_of(&body).contains("cannot approve"), "{body}");
    assert_eq!(p.state(), State::Pending);
    let (code, body) = answer(&api, &p.id, "reject", Some(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        matches!(p.state(), State::Rejected { by, .. } if by == username),
        "{:?}",
        p.state()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_in_another_namespace_does_not_count_but_one_to_a_group_does() {
    let env = Env::start().await;
    let p = pending_in(&env.namespace);
    let api = serve(&p.journal, env.approvers(None)).await;
    let (token, username) = env.user("neighbour", None).await;
    env.allow(To::Account("neighbour"), &["approve"], &env.other)
        .await;

    let (code, body) = answer(&api, &p.id, "approve", Some(&token)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(p.state(), State::Pending);

    // Every service account of the namespace, through its group.
    let group = format!("system:serviceaccounts:{}", env.namespace);
    env.allow(To::Group(&group), &["approve"], &env.namespace)
        .await;
    let (code, body) = answer(&api, &p.id, "approve", Some(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(matches!(p.state(), State::Approved { by, .. } if by == username));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_api_server_refuses_the_answer() {
    let mut env = Env::start().await;
    let p = pending_in(&env.namespace);
    let (token, _) = env.user("oncall", None).await;
    env.allow(To::Account("oncall"), &["approve"], &env.namespace)
        .await;
    let approvers = match env.fake.take() {
        Some(fake) => {
            // The fake stops: wait until nothing listens on its port any more.
            let address = fake.url().trim_start_matches("http://").to_owned();
            let approvers = env.approvers(None);
            drop(fake);
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(&address).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            approvers
        }
        None => {
            // A port nothing listens on.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            let url = format!("http://{}", listener.local_addr().expect("an address"));
            drop(listener);
            let mut config = kube::Config::new(url.parse().expect("a URL"));
            config.default_retry = false;
            let client = kube::Client::try_from(config).expect("a client");
            Approvers::Kubernetes(Kubernetes::new(client, None))
        }
    };
    let api = serve(&p.journal, approvers).await;

    let (code, body) = answer(&api, &p.id, "approve", Some(&token)).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(error_of(&body).contains("nothing was answered"), "{body}");
    assert_eq!(p.state(), State::Pending, "never allowed on a failure");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_another_audience_is_unauthenticated() {
    let env = Env::start().await;
    let p = pending_in(&env.namespace);
    let api = serve(&p.journal, env.approvers(Some(AUDIENCE))).await;
    env.allow(To::Account("oncall"), &["approve"], &env.namespace)
        .await;
    let (general, _) = env.user("oncall", None).await;
    let (elsewhere, _) = env.user("oncall", Some("another.test")).await;
    let (scoped, username) = env.user("oncall", Some(AUDIENCE)).await;

    for token in [&general, &elsewhere] {
        let (code, body) = answer(&api, &p.id, "approve", Some(token)).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
        assert!(
            error_of(&body).contains(AUDIENCE),
            "says which audience: {body}"
        );
    }
    assert_eq!(p.state(), State::Pending);
    let (code, body) = answer(&api, &p.id, "approve", Some(&scoped)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(matches!(p.state(), State::Approved { by, .. } if by == username));
}

/// The reviews themselves, through the typed client, as the real server answers them.
#[tokio::test(flavor = "multi_thread")]
async fn reviews_are_answered_as_the_real_api_server_does() {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };

    let env = Env::start().await;
    let tokens = Api::<TokenReview>::all(env.client.clone());
    let accesses = Api::<SubjectAccessReview>::all(env.client.clone());
    let token_review = |token: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let code = |e: kube::Error| match e {
        kube::Error::Api(status) => status.code,
        other => panic!("not an API error: {other}"),
    };

    let unknown = tokens
        .create(&PostParams::default(), &token_review("not-a-token"))
        .await
        .expect("a review");
    let status = unknown.status.expect("a status");
    assert_ne!(status.authenticated, Some(true), "{status:?}");
    let empty = tokens
        .create(&PostParams::default(), &token_review(""))
        .await
        .expect_err("a token is required");
    assert_eq!(code(empty), 400);

    let (token, username) = env.user("reader", None).await;
    let known = tokens
        .create(&PostParams::default(), &token_review(&token))
        .await
        .expect("a review")
        .status
        .expect("a status");
    assert_eq!(known.authenticated, Some(true));
    let user = known.user.expect("a user");
    assert_eq!(user.username.as_deref(), Some(username.as_str()));
    let groups = user.groups.unwrap_or_default();
    assert!(
        groups.iter().any(|g| g == "system:authenticated"),
        "{groups:?}"
    );

    let access =
        |user: &str, groups: &[&str], attributes: Option<ResourceAttributes>| SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                resource_attributes: attributes,
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
    let approve = ResourceAttributes {
        group: Some("salve.dev".into()),
        resource: Some("approvals".into()),
        verb: Some("approve".into()),
        namespace: Some(env.namespace.clone()),
        ..ResourceAttributes::default()
    };
    let review = |r: SubjectAccessReview| {
        let accesses = accesses.clone();
        async move { accesses.create(&PostParams::default(), &r).await }
    };
    let nobody = review(access(&username, &[], Some(approve.clone())))
        .await
        .expect("a review");
    assert!(!nobody.status.expect("a status").allowed);
    let root = review(access("root", &["system:masters"], Some(approve.clone())))
        .await
        .expect("a review");
    assert!(root.status.expect("a status").allowed);
    env.allow(To::Account("reader"), &["approve"], &env.namespace)
        .await;
    let granted = review(access(&username, &[], Some(approve)))
        .await
        .expect("a review");
    assert!(granted.status.expect("a status").allowed);
    let invalid = review(access(&username, &[], None))
        .await
        .expect_err("resourceAttributes or nonResourceAttributes");
    assert_eq!(code(invalid), 422);

    if env.fake.is_some() {
        let listed = tokens
            .list(&Default::default())
            .await
            .expect_err("create-only");
        assert_eq!(code(listed), 405);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn salve_run_with_api_auth_kubernetes_lets_rbac_decide() {
    let env = Env::start().await;
    let p = pending_in(&env.namespace);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = match (&env.fake, &env.kubeconfig) {
        (Some(fake), _) => {
            let path = dir.path().join("kubeconfig");
            fake.write_kubeconfig(&path).expect("write the kubeconfig");
            path
        }
        (None, Some(path)) => path.into(),
        (None, None) => unreachable!("a fake or a cluster"),
    };
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir(&playbooks).expect("mkdir");
    std::fs::write(
        playbooks.join("heal.yaml"),
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: heal}\nspec:\n  trigger:\n    alert: {alertname: ApiDown}\n  target: {kind: Deployment, namespace: shop, name: api}\n  steps:\n    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n",
    )
    .expect("playbook");
    let port = crate::free_port();
    let _engine = crate::Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
            .arg("run")
            .arg("--playbooks")
            .arg(&playbooks)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--journal")
            .arg(p.journal.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--api-auth", &format!("kubernetes:{AUDIENCE}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start salve run"),
    );
    let api = format!("http://127.0.0.1:{port}");
    let began = std::time::Instant::now();
    while reqwest::get(format!("{api}/healthz")).await.is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "salve run serves"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (token, username) = env.user("oncall", Some(AUDIENCE)).await;
    let (code, body) = answer(&api, &p.id, "approve", Some(&token)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    env.allow(To::Account("oncall"), &["approve"], &env.namespace)
        .await;
    let (code, body) = answer(&api, &p.id, "approve", Some(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["by"], json!(username));
}
