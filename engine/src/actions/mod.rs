//! Built-in actions through the Kubernetes API (`kube`): each is idempotent — run twice, the
//! second run changes nothing and says so — runs as a server-side dry run (`dryRun=All`) when
//! the policy says, and lists the RBAC verbs it needs ([`rbac`]).
//!
//! Built: `scale`, `rollout_restart`, `rollout_undo` (Deployments; StatefulSets and
//! DaemonSets are refused as not supported yet), `patch_resources`, `cordon`, `uncordon`,
//! `evict`, `annotate`, `delete_pod`, `capture_logs`, `notify`. `wait_for` is not an action on
//! the cluster: the executor runs it.

mod annotate;
mod delete_pod;
mod evict;
mod logs;
mod node;
mod notify;
mod resources;
mod restart;
mod scale;
mod undo;

pub(crate) use undo::rollout_history;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};

use crate::action::Action;
use crate::plan::{ObjectRef, PlannedStep};

/// What an action did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether it changed anything (false: it was already so).
    pub changed: bool,
    /// Whether it ran as a server-side dry run.
    pub dry_run: bool,
    /// One line for the journal and the timeline.
    pub message: String,
    /// What it saw before (for rollback and the record).
    pub before: serde_json::Value,
    /// What it left (or, in a dry run, would have left).
    pub after: serde_json::Value,
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed.
    #[error("{action} on {target}: {source}")]
    Api {
        /// The action.
        action: Action,
        /// The target, `Kind namespace/name`.
        target: String,
        /// The client's error (an API `Status` carries code and reason).
        #[source]
        source: kube::Error,
    },
    /// The step cannot run on this target or with these parameters.
    #[error("{action} on {target}: {reason}")]
    Invalid {
        /// The action.
        action: Action,
        /// The target.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// A PodDisruptionBudget does not allow the eviction now (the API answered 429); a later
    /// try may succeed.
    #[error("{action} on {target}: {reason}")]
    DisruptionBudget {
        /// The action.
        action: Action,
        /// The target.
        target: String,
        /// Which pod was refused, and the budget's reason.
        reason: String,
        /// The API's refusal.
        #[source]
        source: kube::Error,
    },
    /// Not built yet.
    #[error("{0} is not built yet")]
    NotBuilt(Action),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cluster actions run against.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    http: reqwest::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Actions through `client`.
    ///
    /// Build the client with `default_retry` off ([`Cluster::from_config`] does): kube's
    /// default retries a 429 up to 15 times, honouring `Retry-After`, so an eviction a
    /// PodDisruptionBudget refuses would take minutes to fail instead of failing the step.
    pub fn new(client: Client) -> Self {
        Cluster {
            client,
            http: reqwest::Client::new(),
        }
    }

    /// Actions through a client built from `config`, with kube's default retry of 429, 503 and
    /// 504 turned off (see [`Cluster::new`]).
    pub fn from_config(mut config: kube::Config) -> Result<Self, kube::Error> {
        config.default_retry = false;
        Ok(Self::new(Client::try_from(config)?))
    }

    /// Runs `step`'s action on `target`; with `dry_run`, as a server-side dry run. `key`
    /// names this run of the step (incident and step): an action that cannot tell from the
    /// object whether it already happened (a restart) records it, so a retry after a crash does
    /// not do it twice.
    pub async fn run(
        &self,
        step: &PlannedStep,
        target: &ObjectRef,
        key: &str,
        dry_run: bool,
    ) -> Result<Outcome> {
        let Some(action) = step.action else {
            return Err(Error::Invalid {
                action: Action::Annotate,
                target: describe(target),
                reason: "a WASM step's actions are run one by one, not as a step".into(),
            });
        };
        let call = Call {
            cluster: self,
            action,
            target,
            params: &step.params,
            key,
            dry_run,
        };
        match action {
            Action::Scale => scale::run(&call).await,
            Action::RolloutRestart => restart::run(&call).await,
            Action::Cordon => node::run(&call, true).await,
            Action::Uncordon => node::run(&call, false).await,
            Action::Annotate => annotate::run(&call).await,
            Action::DeletePod => delete_pod::run(&call).await,
            Action::PatchResources => resources::run(&call).await,
            Action::Notify => notify::run(&call).await,
            Action::RolloutUndo => undo::run(&call).await,
            Action::Evict => evict::run(&call).await,
            Action::CaptureLogs => logs::run(&call).await,
            other => Err(Error::NotBuilt(other)),
        }
    }
}

/// One action's call: what it needs to run.
struct Call<'a> {
    cluster: &'a Cluster,
    action: Action,
    target: &'a ObjectRef,
    params: &'a std::collections::BTreeMap<String, serde_json::Value>,
    key: &'a str,
    dry_run: bool,
}

impl Call<'_> {
    /// The target's API, as dynamic objects of its kind.
    fn api(&self) -> Result<Api<DynamicObject>> {
        let (resource, namespaced) = resource(&self.target.kind).ok_or_else(|| {
            self.invalid(format!("Salve does not act on kind `{}`", self.target.kind))
        })?;
        let client = self.cluster.client.clone();
        Ok(match (&self.target.namespace, namespaced) {
            (Some(namespace), true) => Api::namespaced_with(client, namespace, &resource),
            (None, true) => {
                return Err(self.invalid("a namespaced kind needs a namespace".into()));
            }
            (_, false) => Api::all_with(client, &resource),
        })
    }

    /// The target's namespace, for a namespaced kind.
    fn namespace(&self) -> Result<&str> {
        self.target
            .namespace
            .as_deref()
            .ok_or_else(|| self.invalid("a namespaced kind needs a namespace".into()))
    }

    /// A typed API of namespaced kind `K` in the target's namespace.
    fn namespaced<K>(&self) -> Result<Api<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Ok(Api::namespaced(
            self.cluster.client.clone(),
            self.namespace()?,
        ))
    }

    /// A typed API of `K` across the cluster.
    fn cluster_wide<K>(&self) -> Api<K>
    where
        K: kube::Resource,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::all(self.cluster.client.clone())
    }

    fn fail(&self) -> impl Fn(kube::Error) -> Error + '_ {
        |source| Error::Api {
            action: self.action,
            target: describe(self.target),
            source,
        }
    }

    fn invalid(&self, reason: String) -> Error {
        Error::Invalid {
            action: self.action,
            target: describe(self.target),
            reason,
        }
    }

    fn patch_params(&self) -> kube::api::PatchParams {
        kube::api::PatchParams {
            dry_run: self.dry_run,
            ..kube::api::PatchParams::default()
        }
    }

    fn outcome(
        &self,
        changed: bool,
        message: String,
        before: serde_json::Value,
        after: serde_json::Value,
    ) -> Outcome {
        let message = if self.dry_run {
            format!("{message} (dry run)")
        } else {
            message
        };
        Outcome {
            changed,
            dry_run: self.dry_run,
            message,
            before,
            after,
        }
    }
}

/// The API resource of a target kind, and whether it is namespaced.
fn resource(kind: &str) -> Option<(ApiResource, bool)> {
    Some(match kind {
        "Deployment" => (ApiResource::erase::<Deployment>(&()), true),
        "StatefulSet" => (ApiResource::erase::<StatefulSet>(&()), true),
        "DaemonSet" => (ApiResource::erase::<DaemonSet>(&()), true),
        "ReplicaSet" => (ApiResource::erase::<ReplicaSet>(&()), true),
        "Job" => (ApiResource::erase::<Job>(&()), true),
        "Pod" => (ApiResource::erase::<Pod>(&()), true),
        "Node" => (ApiResource::erase::<Node>(&()), false),
        _ => return None,
    })
}

/// A `spec.selector` (`matchLabels` and `matchExpressions`) in the `labelSelector` syntax of a
/// LIST, or `None` for an operator the API does not define.
fn selector_query(selector: &LabelSelector) -> Option<String> {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default().join(",");
        terms.push(match expr.operator.as_str() {
            "In" => format!("{} in ({values})", expr.key),
            "NotIn" => format!("{} notin ({values})", expr.key),
            "Exists" => expr.key.clone(),
            "DoesNotExist" => format!("!{}", expr.key),
            _ => return None,
        });
    }
    Some(terms.join(","))
}

/// Whether a Kubernetes API error has this HTTP code.
fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// `Deployment shop/api`, `Node n1`.
pub fn describe(target: &ObjectRef) -> String {
    match &target.namespace {
        Some(namespace) => format!("{} {namespace}/{}", target.kind, target.name),
        None => format!("{} {}", target.kind, target.name),
    }
}

/// The RBAC rules an action needs: (API group, resource, verbs), for a Role or ClusterRole.
pub fn rbac(action: Action) -> &'static [(&'static str, &'static str, &'static [&'static str])] {
    match action {
        Action::Scale => &[
            ("apps", "deployments/scale", &["get", "patch"]),
            ("apps", "statefulsets/scale", &["get", "patch"]),
            ("apps", "replicasets/scale", &["get", "patch"]),
        ],
        Action::RolloutRestart => &[
            ("apps", "deployments", &["get", "patch"]),
            ("apps", "statefulsets", &["get", "patch"]),
            ("apps", "daemonsets", &["get", "patch"]),
        ],
        Action::Cordon | Action::Uncordon => &[("", "nodes", &["get", "patch"])],
        Action::Annotate => &[
            ("apps", "deployments", &["get", "patch"]),
            ("apps", "statefulsets", &["get", "patch"]),
            ("apps", "daemonsets", &["get", "patch"]),
            ("apps", "replicasets", &["get", "patch"]),
            ("batch", "jobs", &["get", "patch"]),
            ("", "pods", &["get", "patch"]),
            ("", "nodes", &["get", "patch"]),
        ],
        Action::DeletePod => &[("", "pods", &["get", "delete"])],
        Action::PatchResources => &[
            ("apps", "deployments", &["get", "patch"]),
            ("apps", "statefulsets", &["get", "patch"]),
            ("apps", "daemonsets", &["get", "patch"]),
        ],
        Action::RolloutUndo => &[
            ("apps", "deployments", &["get", "patch"]),
            ("apps", "replicasets", &["list"]),
        ],
        Action::Evict => &[
            ("", "pods", &["get", "list"]),
            ("", "pods/eviction", &["create"]),
        ],
        Action::CaptureLogs => &[
            ("apps", "deployments", &["get"]),
            ("apps", "statefulsets", &["get"]),
            ("apps", "daemonsets", &["get"]),
            ("apps", "replicasets", &["get"]),
            ("batch", "jobs", &["get"]),
            ("", "pods", &["get", "list"]),
            ("", "pods/log", &["get"]),
        ],
        Action::Notify | Action::WaitFor => &[],
    }
}
