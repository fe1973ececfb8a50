//! `TokenReview` and `SubjectAccessReview`: who a bearer token belongs to, and whether RBAC
//! lets a user do something — the two questions a server that delegates authentication and
//! authorization to Kubernetes asks it.
//!
//! Both are create-only and cluster-scoped: a POST is answered with the review and its
//! `status`, 201 Created, and nothing is stored. Tests seed what the real server would know:
//! tokens with [`FakeApiServer::add_token`](super::FakeApiServer::add_token) (who they
//! authenticate, for which audiences) and RBAC rules with
//! [`FakeApiServer::grant`](super::FakeApiServer::grant), each a rule bound to one subject, in
//! one namespace (a Role and its RoleBinding) or cluster-wide (a ClusterRole and its
//! ClusterRoleBinding). The fake authenticates only reviews: ordinary requests stay
//! unauthenticated.
//!
//! What follows the real server: an unknown token is `authenticated: false` (still a 201); a
//! review without `spec.audiences` asks for the API server's own audience ([`API_AUDIENCE`]);
//! a token is authenticated only if its audiences intersect the asked ones, and
//! `status.audiences` is that intersection; `system:authenticated` is added to the groups of
//! every authenticated user. RBAC's matching (`evaluation_helpers.go`): `*` in verbs, API
//! groups and resources; `resource/subresource`, and `*/subresource`; resource names (an empty
//! list allows every name); a namespaced grant never covers a cluster-scoped request; a
//! ServiceAccount subject is the user `system:serviceaccount:NS:NAME`; the `system:masters`
//! group may do anything. RBAC never denies, it only does not allow: `denied` is never set and
//! a refusal has no reason.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::status::ApiError;

/// The audience a review without `spec.audiences` asks for: the API server's own
/// (`--api-audiences`, by default its service account issuer).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// The group the real server adds to every authenticated user.
const AUTHENTICATED: &str = "system:authenticated";

/// The group the real server lets do anything, whatever RBAC says.
const MASTERS: &str = "system:masters";

/// Who a seeded bearer token authenticates as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenUser {
    /// The user name (`ana`, `system:serviceaccount:shop:deployer`).
    pub username: String,
    /// The user's uid; empty: the fake makes one when the token is added.
    pub uid: String,
    /// The user's groups (`system:authenticated` is added in every answer).
    pub groups: Vec<String>,
    /// Extra attributes, passed on as the authenticator's `extra`.
    pub extra: BTreeMap<String, Vec<String>>,
    /// The audiences the token is for; empty: the API server's own ([`API_AUDIENCE`]).
    pub audiences: Vec<String>,
}

impl TokenUser {
    /// User `username` in `groups`, for the API server's audience.
    pub fn new(username: &str, groups: &[&str]) -> Self {
        TokenUser {
            username: username.to_owned(),
            groups: strings(groups),
            ..TokenUser::default()
        }
    }

    /// Service account `namespace/name`, with the user name and groups the real server gives
    /// its tokens.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        TokenUser::new(
            &format!("system:serviceaccount:{namespace}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{namespace}"),
            ],
        )
    }

    /// The same user, with a token only for `audiences` (as `kubectl create token --audience`).
    pub fn for_audiences(mut self, audiences: &[&str]) -> Self {
        self.audiences = strings(audiences);
        self
    }
}

/// Whom a [`Grant`] is bound to: a RoleBinding's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user, by name.
    User(String),
    /// Every user in a group.
    Group(String),
    /// A service account: the user `system:serviceaccount:{namespace}:{name}`.
    ServiceAccount {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl Subject {
    /// Whether a user named `user` in `groups` is this subject.
    fn covers(&self, user: &str, groups: &[String]) -> bool {
        match self {
            Subject::User(name) => name == user,
            Subject::Group(group) => groups.iter().any(|g| g == group),
            Subject::ServiceAccount { namespace, name } => {
                user == format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }

    /// How the real server's reasons name it: `User "ana"`.
    fn describe(&self) -> String {
        match self {
            Subject::User(name) => format!("User {name:?}"),
            Subject::Group(group) => format!("Group {group:?}"),
            Subject::ServiceAccount { namespace, name } => {
                format!("ServiceAccount \"{namespace}/{name}\"")
            }
        }
    }
}

/// One RBAC rule bound to one subject: what a Role (or ClusterRole) with a single rule and a
/// RoleBinding (or ClusterRoleBinding) to a single subject allow. Each list matches when it
/// holds the asked value or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Whom it is bound to.
    pub subject: Subject,
    /// The verbs (`get`, `approve`, `*`).
    pub verbs: Vec<String>,
    /// The API groups (`""` for core, `salve.dev`, `*`).
    pub api_groups: Vec<String>,
    /// The resources (`pods`, `pods/log`, `*/scale`, `*`).
    pub resources: Vec<String>,
    /// The object names it is limited to; empty: every name.
    pub resource_names: Vec<String>,
    /// The namespace of its RoleBinding; `None`: a ClusterRoleBinding (every namespace, and
    /// cluster-scoped resources).
    pub namespace: Option<String>,
}

impl Grant {
    /// `verbs` on `resource` (with its subresource: `pods/log`) of `api_group`, for `subject`,
    /// cluster-wide until [`Grant::in_namespace`].
    pub fn new(subject: Subject, verbs: &[&str], api_group: &str, resource: &str) -> Self {
        Grant {
            subject,
            verbs: strings(verbs),
            api_groups: vec![api_group.to_owned()],
            resources: vec![resource.to_owned()],
            resource_names: Vec::new(),
            namespace: None,
        }
    }

    /// The same rule, bound in `namespace` only.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// The same rule, for the objects named `names` only.
    pub fn named(mut self, names: &[&str]) -> Self {
        self.resource_names = strings(names);
        self
    }

    /// Whether this grant allows `asked`, as RBAC decides.
    fn allows(&self, asked: &Attributes<'_>) -> bool {
        let in_scope = match &self.namespace {
            None => true,
            Some(namespace) => asked.namespace == namespace,
        };
        in_scope
            && self.subject.covers(asked.user, asked.groups)
            && has(&self.verbs, asked.verb)
            && has(&self.api_groups, asked.group)
            && self.resource_matches(asked.resource, asked.subresource)
            && (self.resource_names.is_empty()
                || self.resource_names.iter().any(|n| n == asked.name))
    }

    /// RBAC's `ResourceMatches`: `*`, the exact `resource[/subresource]`, or `*/subresource`.
    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        let combined = if subresource.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{subresource}")
        };
        self.resources.iter().any(|rule| {
            rule == "*"
                || *rule == combined
                || (!subresource.is_empty() && rule.strip_prefix("*/") == Some(subresource))
        })
    }

    /// The reason the real server gives for an allowed review, with this grant's made-up
    /// binding named after its place among the grants.
    fn reason(&self, index: usize) -> String {
        let name = format!("fake-grant-{index}");
        let binding = match &self.namespace {
            Some(namespace) => format!("RoleBinding \"{name}/{namespace}\" of Role {name:?}"),
            None => format!("ClusterRoleBinding {name:?} of ClusterRole {name:?}"),
        };
        format!("RBAC: allowed by {binding} to {}", self.subject.describe())
    }
}

/// What the fake knows for reviews: the seeded tokens and grants.
#[derive(Debug, Default)]
pub(crate) struct Reviews {
    tokens: BTreeMap<String, TokenUser>,
    grants: Vec<Grant>,
}

impl Reviews {
    /// Makes `token` authenticate as `user` (replacing what it did before).
    pub(crate) fn add_token(&mut self, token: String, user: TokenUser) {
        self.tokens.insert(token, user);
    }

    /// Adds `grant` to the RBAC rules.
    pub(crate) fn grant(&mut self, grant: Grant) {
        self.grants.push(grant);
    }

    /// Answers a TokenReview (its body, `apiVersion` and `kind` checked): the review with its
    /// `status`.
    pub(crate) fn token_review(&self, mut review: Value) -> Result<Value, ApiError> {
        let spec = &review["spec"];
        let token = spec["token"].as_str().unwrap_or_default();
        if token.is_empty() {
            return Err(ApiError::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let asked = match strings_at(&spec["audiences"]) {
            audiences if audiences.is_empty() => vec![API_AUDIENCE.to_owned()],
            audiences => audiences,
        };
        let status = match self.tokens.get(token) {
            // As the real server: no authenticator knows it, no error, an empty user.
            None => json!({"user": {}}),
            Some(user) => {
                let audiences = if user.audiences.is_empty() {
                    vec![API_AUDIENCE.to_owned()]
                } else {
                    user.audiences.clone()
                };
                let common: Vec<&String> = asked.iter().filter(|a| audiences.contains(a)).collect();
                if common.is_empty() {
                    json!({
                        "user": {},
                        "error": format!(
                            "[invalid bearer token, token audiences {audiences:?} is invalid \
                             for the target audiences {asked:?}]"
                        ),
                    })
                } else {
                    let mut groups = user.groups.clone();
                    if !groups.iter().any(|g| g == AUTHENTICATED) {
                        groups.push(AUTHENTICATED.to_owned());
                    }
                    json!({
                        "authenticated": true,
                        "user": {
                            "username": user.username,
                            "uid": user.uid,
                            "groups": groups,
                            "extra": user.extra,
                        },
                        "audiences": common,
                    })
                }
            }
        };
        review["status"] = status;
        Ok(review)
    }

    /// Answers a SubjectAccessReview (its body, `apiVersion` and `kind` checked): the review
    /// with its `status`, allowed when a grant (or `system:masters`) allows it.
    pub(crate) fn subject_access_review(&self, mut review: Value) -> Result<Value, ApiError> {
        let spec = &review["spec"];
        let invalid =
            |why: &str| ApiError::invalid("SubjectAccessReview.authorization.k8s.io", "", why);
        let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
        let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
        if resource.is_some() == non_resource.is_some() {
            return Err(invalid(
                "spec.resourceAttributes: Invalid value: \"null\": exactly one of \
                 nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
        let user = spec["user"].as_str().unwrap_or_default();
        let groups = strings_at(&spec["groups"]);
        if user.is_empty() && groups.is_empty() {
            return Err(invalid(
                "spec.user: Invalid value: \"\": at least one of user or group must be specified",
            ));
        }
        let allowed_by = if groups.iter().any(|g| g == MASTERS) {
            Some(String::new())
        } else {
            resource.and_then(|attributes| {
                let text = |field: &str| attributes[field].as_str().unwrap_or_default();
                let asked = Attributes {
                    user,
                    groups: &groups,
                    verb: text("verb"),
                    group: text("group"),
                    resource: text("resource"),
                    subresource: text("subresource"),
                    namespace: text("namespace"),
                    name: text("name"),
                };
                self.allowed_by(&asked)
            })
        };
        let mut status = Map::new();
        status.insert("allowed".into(), json!(allowed_by.is_some()));
        if let Some(reason) = allowed_by.filter(|r| !r.is_empty()) {
            status.insert("reason".into(), json!(reason));
        }
        review["status"] = Value::Object(status);
        Ok(review)
    }

    /// The reason of the first grant that allows `asked`, if one does.
    fn allowed_by(&self, asked: &Attributes<'_>) -> Option<String> {
        self.grants
            .iter()
            .enumerate()
            .find(|(_, grant)| grant.allows(asked))
            .map(|(index, grant)| grant.reason(index + 1))
    }
}

/// A SubjectAccessReview's `resourceAttributes` with its subject; an absent field is `""`.
struct Attributes<'a> {
    user: &'a str,
    groups: &'a [String],
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    subresource: &'a str,
    /// `""`: cluster-scoped (or every namespace).
    namespace: &'a str,
    name: &'a str,
}

/// Whether an RBAC list holds `value` or `*`.
fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|&v| v.to_owned()).collect()
}

/// The strings of a JSON array (nothing for anything else).
fn strings_at(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    /// A review of `verb` on `resource` (`pods/log` splits into resource and subresource) of
    /// `group`, in `namespace` (`""`: cluster-wide), for `user` in `groups`.
    fn review(
        user: &str,
        groups: &[&str],
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
    ) -> Value {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "resourceAttributes": {
                    "verb": verb, "group": group, "resource": resource,
                    "subresource": subresource, "namespace": namespace, "name": "x",
                },
            },
        })
    }

    fn allowed(reviews: &Reviews, review: Value) -> bool {
        let answer = reviews
            .subject_access_review(review)
            .expect("a valid review");
        answer["status"]["allowed"]
            .as_bool()
            .expect("allowed is always set")
    }

    fn with(grant: Grant) -> Reviews {
        let mut reviews = Reviews::default();
        reviews.grant(grant);
        reviews
    }

    fn ana() -> Subject {
        Subject::User("ana".into())
    }

    #[rstest]
    #[case::exact("approve", "salve.dev", "approvals", "shop", true)]
    #[case::other_verb("reject", "salve.dev", "approvals", "shop", false)]
    #[case::other_group("approve", "apps", "approvals", "shop", false)]
    #[case::other_resource("approve", "salve.dev", "incidents", "shop", false)]
    #[case::other_namespace("approve", "salve.dev", "approvals", "prod", false)]
    #[case::cluster_scoped("approve", "salve.dev", "approvals", "", false)]
    #[case::a_subresource("approve", "salve.dev", "approvals/status", "shop", false)]
    fn a_namespaced_grant_matches_exactly(
        #[case] verb: &str,
        #[case] group: &str,
        #[case] resource: &str,
        #[case] namespace: &str,
        #[case] expected: bool,
    ) {
        let reviews =
            with(Grant::new(ana(), &["approve"], "salve.dev", "approvals").in_namespace("shop"));
        let asked = review("ana", &[], verb, group, resource, namespace);
        assert_eq!(allowed(&reviews, asked), expected);
    }

    #[rstest]
    #[case::any_verb(Grant::new(ana(), &["*"], "salve.dev", "approvals"), "reject", "salve.dev", "approvals", true)]
    #[case::any_group(Grant::new(ana(), &["get"], "*", "pods"), "get", "", "pods", true)]
    #[case::any_resource(Grant::new(ana(), &["get"], "", "*"), "get", "", "pods/log", true)]
    #[case::a_resource_is_not_its_subresource(Grant::new(ana(), &["get"], "", "pods"), "get", "", "pods/log", false)]
    #[case::the_subresource(Grant::new(ana(), &["get"], "", "pods/log"), "get", "", "pods/log", true)]
    #[case::a_subresource_is_not_its_resource(Grant::new(ana(), &["get"], "", "pods/log"), "get", "", "pods", false)]
    #[case::any_resources_subresource(Grant::new(ana(), &["update"], "apps", "*/scale"), "update", "apps", "deployments/scale", true)]
    #[case::star_slash_needs_a_subresource(Grant::new(ana(), &["update"], "apps", "*/scale"), "update", "apps", "deployments", false)]
    #[case::another_subresource(Grant::new(ana(), &["update"], "apps", "*/scale"), "update", "apps", "deployments/status", false)]
    #[case::a_cluster_grant_covers_cluster_scoped(Grant::new(ana(), &["get"], "", "nodes"), "get", "", "nodes", true)]
    #[case::a_cluster_grant_covers_every_namespace(Grant::new(ana(), &["approve"], "salve.dev", "approvals"), "approve", "salve.dev", "approvals", true)]
    #[case::the_name(Grant::new(ana(), &["get"], "", "pods").named(&["x"]), "get", "", "pods", true)]
    #[case::another_name(Grant::new(ana(), &["get"], "", "pods").named(&["y"]), "get", "", "pods", false)]
    fn wildcards_and_subresources_match_as_in_rbac(
        #[case] grant: Grant,
        #[case] verb: &str,
        #[case] group: &str,
        #[case] resource: &str,
        #[case] expected: bool,
    ) {
        let asked = review("ana", &[], verb, group, resource, "shop");
        assert_eq!(allowed(&with(grant.clone()), asked), expected, "{grant:?}");
    }

    #[test]
    fn subjects_are_users_groups_and_service_accounts() {
        let group = with(Grant::new(
            Subject::Group("sre".into()),
            &["approve"],
            "salve.dev",
            "approvals",
        ));
        assert!(allowed(
            &group,
            review(
                "bob",
                &["dev", "sre"],
                "approve",
                "salve.dev",
                "approvals",
                "shop"
            )
        ));
        assert!(allowed(
            &group,
            review("", &["sre"], "approve", "salve.dev", "approvals", "shop")
        ));
        assert!(!allowed(
            &group,
            review("sre", &["dev"], "approve", "salve.dev", "approvals", "shop")
        ));

        let account = Subject::ServiceAccount {
            namespace: "ops".into(),
            name: "pager".into(),
        };
        let sa = with(Grant::new(account, &["approve"], "salve.dev", "approvals"));
        let user = "system:serviceaccount:ops:pager";
        assert!(allowed(
            &sa,
            review(user, &[], "approve", "salve.dev", "approvals", "shop")
        ));
        assert!(!allowed(
            &sa,
            review(
                "system:serviceaccount:shop:pager",
                &[],
                "approve",
                "salve.dev",
                "approvals",
                "shop"
            )
        ));

        let nobody = Reviews::default();
        assert!(!allowed(
            &nobody,
            review("ana", &[], "approve", "salve.dev", "approvals", "shop")
        ));
        assert!(allowed(
            &nobody,
            review("root", &["system:masters"], "delete", "", "nodes", "")
        ));
    }

    #[test]
    fn an_allowed_review_names_the_binding_and_a_refusal_has_no_reason() {
        let reviews =
            with(Grant::new(ana(), &["approve"], "salve.dev", "approvals").in_namespace("shop"));
        let yes = reviews
            .subject_access_review(review(
                "ana",
                &[],
                "approve",
                "salve.dev",
                "approvals",
                "shop",
            ))
            .expect("valid");
        assert_eq!(
            yes["status"],
            json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"fake-grant-1/shop\" of Role \"fake-grant-1\" to User \"ana\""})
        );
        let no = reviews
            .subject_access_review(review(
                "bob",
                &[],
                "approve",
                "salve.dev",
                "approvals",
                "shop",
            ))
            .expect("valid");
        assert_eq!(no["status"], json!({"allowed": false}));
        assert_eq!(no["spec"]["user"], "bob", "the review is echoed");
    }

    #[test]
    fn an_invalid_review_is_refused_as_the_real_server_does() {
        let reviews = Reviews::default();
        let mut both = review("ana", &[], "get", "", "pods", "");
        both["spec"]["nonResourceAttributes"] = json!({"path": "/healthz", "verb": "get"});
        let error = reviews.subject_access_review(both).expect_err("invalid");
        assert_eq!(error.code.as_u16(), 422);
        assert!(
            error.message.contains("exactly one of"),
            "{}",
            error.message
        );
        let nobody = review("", &[], "get", "", "pods", "");
        let error = reviews.subject_access_review(nobody).expect_err("invalid");
        assert!(
            error.message.contains("at least one of user or group"),
            "{}",
            error.message
        );
        let mut path = review("ana", &[], "get", "", "pods", "");
        path["spec"]["resourceAttributes"] = Value::Null;
        path["spec"]["nonResourceAttributes"] = json!({"path": "/healthz", "verb": "get"});
        assert!(
            !allowed(&with(Grant::new(ana(), &["*"], "*", "*")), path),
            "grants are resource rules"
        );
    }

    fn token_review(reviews: &Reviews, token: &str, audiences: &[&str]) -> Value {
        let review = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        });
        reviews.token_review(review).expect("a valid review")["status"].clone()
    }

    #[test]
    fn a_token_authenticates_its_user_for_its_audiences() {
        let mut reviews = Reviews::default();
        let mut ana = TokenUser::new("ana", &["sre"]);
        ana.uid = "u-1".into();
        ana.extra.insert("scopes".into(), vec!["approvals".into()]);
        reviews.add_token("t-ana".into(), ana.clone());
        reviews.add_token("t-salve".into(), ana.for_audiences(&["salve", "other"]));

        assert_eq!(
            token_review(&reviews, "t-ana", &[]),
            json!({
                "authenticated": true,
                "user": {"username": "ana", "uid": "u-1", "groups": ["sre", "system:authenticated"],
                         "extra": {"scopes": ["approvals"]}},
                "audiences": [API_AUDIENCE],
            })
        );
        let status = token_review(&reviews, "t-salve", &["salve", "third"]);
        assert_eq!(status["authenticated"], true);
        assert_eq!(status["audiences"], json!(["salve"]), "the intersection");

        let wrong = token_review(&reviews, "t-ana", &["salve"]);
        assert_eq!(
            wrong["authenticated"],
            Value::Null,
            "false is left out, as in Go"
        );
        assert!(
            wrong["error"]
                .as_str()
                .unwrap_or_default()
                .contains("audiences"),
            "{wrong}"
        );
        assert_eq!(
            token_review(&reviews, "t-salve", &[])["authenticated"],
            Value::Null
        );
        assert_eq!(token_review(&reviews, "nope", &[]), json!({"user": {}}));

        let empty =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}});
        let error = reviews.token_review(empty).expect_err("no token");
        assert_eq!(error.code.as_u16(), 400);
    }

    #[test]
    fn a_service_account_token_is_named_as_the_real_server_names_it() {
        let user = TokenUser::service_account("ops", "pager");
        assert_eq!(user.username, "system:serviceaccount:ops:pager");
        assert_eq!(
            user.groups,
            ["system:serviceaccounts", "system:serviceaccounts:ops"]
        );
    }
}
