//! Who may answer an approval, and how they prove it.
//!
//! Approving a step lets Salve do what its policy would not do alone, so every answer is
//! authenticated, authorised for that approval, and records who gave it. [`Approvers`] is the
//! one place that decides, in one of two ways:
//!
//! - **A token file** (outside a cluster, `--api-token-file`): `Authorization: Bearer TOKEN`
//!   with a token from the file; whoever holds one may answer every approval, recorded under
//!   the token's name.
//! - **Kubernetes** (in a cluster, `--api-auth kubernetes[:AUDIENCE]`): the bearer token is
//!   checked with a `TokenReview` (for AUDIENCE when given), then the user it names is
//!   authorised with a `SubjectAccessReview` for verb `approve` or `reject` on resource
//!   `approvals` in API group `salve.dev`, in the namespace of the approval's target (none for
//!   a cluster-scoped one), named by the approval's id. So RBAC decides who may answer what,
//!   and the Kubernetes user name is recorded. Salve's own service account needs to create
//!   both reviews (the built-in ClusterRole `system:auth-delegator`).
//!
//! A rehearsal on demand is authorised the same way, as verb `trigger` on `playbooks` named
//! by the playbook, in its target's namespace (see [`Verb`]).
//!
//! With nothing configured, every answer is refused: the API is never open by default. Every
//! doubt refuses: no token or an unauthenticated one is a 401, an authenticated user without
//! the grant a 403 that names the missing verb, and an API server that cannot be asked a 503 —
//! an answer is never taken when the check could not be made.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

/// Tokens shorter than this are refused when the file is read: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The API group of the verbs RBAC grants to approvers.
pub const API_GROUP: &str = "salve.dev";

/// How long one review may take before the answer is refused as unavailable.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may answer approvals.
#[derive(Debug, Default)]
pub enum Approvers {
    /// No way to authenticate is configured: every answer gets 403, saying how to configure one.
    #[default]
    Unconfigured,
    /// `Authorization: Bearer <token>` with a token from a token file; the approver is the
    /// token's name.
    Tokens(Tokens),
    /// `Authorization: Bearer <token>` with a Kubernetes token, authenticated with a
    /// TokenReview and authorised by RBAC with a SubjectAccessReview; the approver is the
    /// Kubernetes user name.
    Kubernetes(Kubernetes),
}

/// A person (or system) whose answer counts, as authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    /// The name recorded with the answer.
    pub name: String,
}

/// What a request asks to do, as an RBAC verb on a resource of [`API_GROUP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Approve a step: `approve` on `approvals`.
    Approve,
    /// Reject a step: `reject` on `approvals`.
    Reject,
    /// Rehearse a playbook on demand: `trigger` on `playbooks`.
    Trigger,
}

impl Verb {
    /// The RBAC verb: `approve`, `reject` or `trigger`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Approve => "approve",
            Verb::Reject => "reject",
            Verb::Trigger => "trigger",
        }
    }

    /// The resource of [`API_GROUP`] it acts on: `approvals` or `playbooks`.
    pub fn resource(self) -> &'static str {
        match self {
            Verb::Approve | Verb::Reject => "approvals",
            Verb::Trigger => "playbooks",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request asks to do: the authorization question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Approve, reject or trigger.
    pub verb: Verb,
    /// The namespace of the target acted on; `None` when it is cluster-scoped (or unknown:
    /// only a cluster-wide grant then lets the caller learn that).
    pub namespace: Option<&'a str>,
    /// The approval's id, or the playbook's name (the object name RBAC's `resourceNames` can
    /// limit a grant to).
    pub id: &'a str,
}

/// Why a request may not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No way to authenticate is configured (403).
    Unconfigured,
    /// No bearer token was given (401).
    Missing,
    /// The token is not one of the configured ones (401).
    Wrong,
    /// Kubernetes did not authenticate the token (401), for `audience` when one is required.
    Unauthenticated {
        /// The audience Salve asks tokens to be for, if any.
        audience: Option<String>,
    },
    /// The user is authenticated but RBAC does not allow the answer (403).
    Forbidden {
        /// The Kubernetes user name.
        user: String,
        /// What was asked.
        verb: Verb,
        /// The approval's target namespace (`None`: cluster-scoped).
        namespace: Option<String>,
        /// The approval.
        id: String,
        /// The authorizer's reason, if it gave one.
        reason: String,
    },
    /// The Kubernetes API server could not be asked, or failed (503): nothing is answered.
    Unavailable,
}

impl Approvers {
    /// Who `headers` prove to be, if they may do what `request` asks; or why not.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        request: &Request<'_>,
    ) -> Result<Approver, Refusal> {
        match self {
            Approvers::Unconfigured => Err(Refusal::Unconfigured),
            Approvers::Tokens(tokens) => {
                let token = bearer(headers).ok_or(Refusal::Missing)?;
                tokens
                    .find(token)
                    .map(|name| Approver {
                        name: name.to_string(),
                    })
                    .ok_or(Refusal::Wrong)
            }
            Approvers::Kubernetes(kubernetes) => {
                let token = bearer(headers).ok_or(Refusal::Missing)?;
                kubernetes.authorize(token, request).await
            }
        }
    }
}

impl Refusal {
    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unconfigured | Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
            Refusal::Missing | Refusal::Wrong | Refusal::Unauthenticated { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What it says: enough for the person refused (or their operator) to fix it, nothing
    /// about the cluster.
    pub fn message(&self) -> String {
        match self {
            Refusal::Unconfigured => "answering approvals over the API is not configured: \
                 start salve with --api-token-file FILE (lines `TOKEN NAME`) and send \
                 `Authorization: Bearer TOKEN`, or in a cluster with --api-auth kubernetes \
                 and send a Kubernetes bearer token"
                .into(),
            Refusal::Missing => "a bearer token is required (Authorization: Bearer ...)".into(),
            Refusal::Wrong => "the bearer token is not valid".into(),
            Refusal::Unauthenticated { audience: None } => {
                "the bearer token is not valid: Kubernetes did not authenticate it".into()
            }
            Refusal::Unauthenticated {
                audience: Some(audience),
            } => format!(
                "the bearer token is not valid: Kubernetes did not authenticate it for audience \
                 {audience:?} (e.g. `kubectl create token NAME --audience {audience}`)"
            ),
            Refusal::Forbidden {
                user,
                verb,
                namespace,
                id,
                reason,
            } => {
                let (scope, binding) = match namespace {
                    Some(namespace) => (
                        format!("in the namespace {namespace:?}"),
                        format!("a RoleBinding in {namespace:?} (or a ClusterRoleBinding)"),
                    ),
                    None => ("at the cluster scope".into(), "a ClusterRoleBinding".into()),
                };
                let reason = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                };
                let resource = verb.resource();
                format!(
                    "{resource}.{API_GROUP} {id:?} is forbidden: User {user:?} cannot {verb} \
                     resource {resource:?} in API group {API_GROUP:?} {scope}{reason}; bind a \
                     (Cluster)Role with apiGroups [{API_GROUP}], resources [{resource}], verbs \
                     [{verb}] to the user or one of its groups with {binding}"
                )
            }
            Refusal::Unavailable => "the Kubernetes API server could not check the answer \
                 (TokenReview or SubjectAccessReview failed); nothing was answered: try again"
                .into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = super::error(self.status(), self.message());
        if self.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// `--api-auth`'s value: `kubernetes`, or `kubernetes:AUDIENCE` to accept only tokens made for
/// AUDIENCE (`kubectl create token NAME --audience AUDIENCE`), which then cannot be replayed
/// against the API server itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesAuth {
    /// The audience tokens must be for; `None`: the API server's own.
    pub audience: Option<String>,
}

impl FromStr for KubernetesAuth {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (mode, audience) = match value.split_once(':') {
            Some((mode, audience)) => (mode, Some(audience.trim())),
            None => (value, None),
        };
        if mode.trim() != "kubernetes" {
            return Err(format!(
                "expected `kubernetes` or `kubernetes:AUDIENCE`, not {value:?} \
                 (for a token file, use --api-token-file)"
            ));
        }
        match audience {
            Some("") => Err("the audience after `kubernetes:` is empty".into()),
            audience => Ok(KubernetesAuth {
                audience: audience.map(str::to_owned),
            }),
        }
    }
}

/// Answers authenticated by Kubernetes and authorised by its RBAC, through the API server
/// `client` talks to. Nothing is cached: every answer is checked afresh, so a revoked token
/// or a removed RoleBinding counts at once.
#[derive(Clone)]
pub struct Kubernetes {
    client: kube::Client,
    audience: Option<String>,
}

impl fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kubernetes")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Kubernetes {
    /// Checks answers with the API server of `client`; with `audience`, only tokens for it
    /// are accepted.
    pub fn new(client: kube::Client, audience: Option<String>) -> Self {
        Kubernetes { client, audience }
    }

    /// Who `token` is, if RBAC lets them do what `request` asks.
    async fn authorize(&self, token: &str, request: &Request<'_>) -> Result<Approver, Refusal> {
        let user = self.authenticate(token).await?;
        let username = user.username.clone().unwrap_or_default();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                resource_attributes: Some(ResourceAttributes {
                    group: Some(API_GROUP.into()),
                    resource: Some(request.verb.resource().into()),
                    verb: Some(request.verb.as_str().into()),
                    namespace: request.namespace.map(str::to_owned),
                    name: Some(request.id.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = ask(
            "SubjectAccessReview",
            Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review),
        )
        .await?;
        let status = answer.status.unwrap_or_default();
        if let Some(error) = status.evaluation_error.as_deref().filter(|e| !e.is_empty()) {
            tracing::warn!(
                user = username,
                error,
                "the SubjectAccessReview had an evaluation error"
            );
        }
        if status.allowed && status.denied != Some(true) {
            return Ok(Approver { name: username });
        }
        Err(Refusal::Forbidden {
            user: username,
            verb: request.verb,
            namespace: request.namespace.map(str::to_owned),
            id: request.id.to_owned(),
            reason: status.reason.unwrap_or_default(),
        })
    }

    /// The user `token` authenticates as: a TokenReview for this audience, whose answer must
    /// name a user and, when an audience was asked, say the token is for it (an authenticator
    /// unaware of audiences answers none).
    async fn authenticate(&self, token: &str) -> Result<UserInfo, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: self.audience.clone().map(|a| vec![a]),
            },
            ..TokenReview::default()
        };
        let answer = ask(
            "TokenReview",
            Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review),
        )
        .await?;
        let refused = || Refusal::Unauthenticated {
            audience: self.audience.clone(),
        };
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            if let Some(error) = status.error.as_deref().filter(|e| !e.is_empty()) {
                tracing::info!(error, "Kubernetes did not authenticate an approver's token");
            }
            return Err(refused());
        }
        if let Some(audience) = &self.audience {
            let audiences = status.audiences.as_deref().unwrap_or_default();
            if !audiences.contains(audience) {
                tracing::warn!(
                    audience,
                    ?audiences,
                    "the TokenReview did not confirm the audience: token refused"
                );
                return Err(refused());
            }
        }
        match status.user {
            Some(user) if user.username.as_deref().is_some_and(|u| !u.is_empty()) => Ok(user),
            _ => Err(refused()),
        }
    }
}

/// Sends one review, refused as unavailable if the API server fails or takes longer than
/// [`REVIEW_TIMEOUT`] (logged with the cause: never allowed on a failure).
async fn ask<T>(what: &str, review: impl Future<Output = kube::Result<T>>) -> Result<T, Refusal> {
    let error = match tokio::time::timeout(REVIEW_TIMEOUT, review).await {
        Ok(Ok(answer)) => return Ok(answer),
        Ok(Err(error)) => error,
        Err(_) => {
            tracing::error!(review = what, timeout = ?REVIEW_TIMEOUT, "the Kubernetes API server did not answer in time: answer refused");
            return Err(Refusal::Unavailable);
        }
    };
    let hint = match &error {
        kube::Error::Api(status) if status.code == 403 => {
            " (salve's service account needs to create tokenreviews and subjectaccessreviews: \
             bind it the ClusterRole system:auth-delegator)"
        }
        _ => "",
    };
    tracing::error!(
        review = what,
        error = crate::diagnostic::chain(&error),
        "the Kubernetes API server could not check an answer: refused{hint}"
    );
    Err(Refusal::Unavailable)
}

/// The token in `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The tokens of a token file: one `TOKEN NAME` per line (NAME is who answers with it; blank
/// lines and `#` comments are skipped). Only their SHA-256 digests are kept, and a token is
/// looked up by comparing digests in constant time, so neither the time taken nor a memory
/// dump tells a token.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], String)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(_, n)| n.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// Reads the token file at `path`.
    pub fn read(path: &Path) -> super::Result<Self> {
        let fail = |reason: String| super::Error::TokenFile {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Tokens::parse(&text).map_err(fail)
    }

    /// Parses a token file's text; the error names the line that is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<([u8; 32], String)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let Some((token, name)) = line.split_once(char::is_whitespace) else {
                return Err(format!(
                    "line {number}: expected `TOKEN NAME` (the name is recorded with each answer)"
                ));
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {number}: the token is shorter than {MIN_TOKEN_LEN} characters"
                ));
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if entries.iter().any(|(d, _)| *d == digest) {
                return Err(format!("line {number}: the same token is given twice"));
            }
            entries.push((digest, name.trim().to_string()));
        }
        if entries.is_empty() {
            return Err("no tokens: expected lines `TOKEN NAME`".into());
        }
        Ok(Tokens { entries })
    }

    /// The name of `token`, if it is one of these. Every entry is compared, each in constant
    /// time.
    pub fn find(&self, token: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (expected, name) in &self.entries {
            if constant_time_eq(&digest, expected) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Compares without returning early.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "# who may approve\n0123456789abcdef-ana ana\n\nfedcba9876543210-bob  Bob Builder \n";

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            value.parse().expect("a header value"),
        );
        headers
    }

    #[test]
    fn a_token_file_names_who_answers() {
        let tokens = Tokens::parse(FILE).expect("valid");
        assert_eq!(tokens.find("0123456789abcdef-ana"), Some("ana"));
        assert_eq!(tokens.find("fedcba9876543210-bob"), Some("Bob Builder"));
        assert_eq!(tokens.find("0123456789abcdef-an"), None);
        assert!(!format!("{tokens:?}").contains("0123"), "no token in Debug");
    }

    #[test]
    fn a_bad_token_file_says_which_line() {
        let error = |text: &str| Tokens::parse(text).expect_err("invalid");
        assert!(error("").contains("no tokens"));
        assert!(error("# only\n0123456789abcdef\n").starts_with("line 2:"));
        assert!(error("short ana\n").contains("shorter than 16"));
        assert!(error("0123456789abcdef a\n0123456789abcdef b\n").contains("twice"));
    }

    const ANSWER: Request<'static> = Request {
        verb: Verb::Approve,
        namespace: Some("shop"),
        id: "apr-1",
    };

    #[tokio::test]
    async fn answers_need_a_configured_way_and_a_valid_token() {
        let unconfigured = Approvers::Unconfigured;
        assert_eq!(
            unconfigured
                .authorize(&headers("Bearer 0123456789abcdef-ana"), &ANSWER)
                .await,
            Err(Refusal::Unconfigured)
        );
        let tokens = Approvers::Tokens(Tokens::parse(FILE).expect("valid"));
        assert_eq!(
            tokens.authorize(&HeaderMap::new(), &ANSWER).await,
            Err(Refusal::Missing)
        );
        assert_eq!(
            tokens.authorize(&headers("Basic YW5hOnB3"), &ANSWER).await,
            Err(Refusal::Missing)
        );
        assert_eq!(
            tokens.authorize(&headers("Bearer nope"), &ANSWER).await,
            Err(Refusal::Wrong)
        );
        assert_eq!(
            tokens
                .authorize(&headers("bearer 0123456789abcdef-ana"), &ANSWER)
                .await,
            Ok(Approver { name: "ana".into() })
        );
        assert_eq!(Refusal::Unconfigured.status(), StatusCode::FORBIDDEN);
        assert_eq!(Refusal::Wrong.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            Refusal::Unavailable.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let unconfigured = Refusal::Unconfigured.message();
        assert!(unconfigured.contains("--api-token-file"), "{unconfigured}");
        assert!(
            unconfigured.contains("--api-auth kubernetes"),
            "{unconfigured}"
        );
    }

    #[test]
    fn a_forbidden_answer_says_what_to_grant() {
        let refusal = Refusal::Forbidden {
            user: "ana".into(),
            verb: Verb::Reject,
            namespace: Some("shop".into()),
            id: "apr-1".into(),
            reason: String::new(),
        };
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            refusal.message(),
            "approvals.salve.dev \"apr-1\" is forbidden: User \"ana\" cannot reject resource \
             \"approvals\" in API group \"salve.dev\" in the namespace \"shop\"; bind a \
             (Cluster)Role with apiGroups [salve.dev], resources [approvals], verbs [reject] to \
             the user or one of its groups with a RoleBinding in \"shop\" (or a \
             ClusterRoleBinding)"
        );
        let cluster = Refusal::Forbidden {
            user: "ana".into(),
            verb: Verb::Reject,
            namespace: None,
            id: "apr-1".into(),
            reason: String::new(),
        };
        assert!(
            cluster.message().contains("at the cluster scope"),
            "{cluster}"
        );
        assert!(
            cluster.message().ends_with("with a ClusterRoleBinding"),
            "{cluster}"
        );
    }

    #[test]
    fn the_flag_names_kubernetes_and_an_optional_audience() {
        let parse = |v: &str| v.parse::<KubernetesAuth>();
        assert_eq!(parse("kubernetes"), Ok(KubernetesAuth { audience: None }));
        assert_eq!(
            parse("kubernetes:https://salve.example"),
            Ok(KubernetesAuth {
                audience: Some("https://salve.example".into())
            })
        );
        assert!(parse("kubernetes:").is_err());
        let error = parse("token-file").expect_err("not a mode");
        assert!(error.contains("--api-token-file"), "{error}");
    }
}
