//! An in-process fake Kubernetes API server, so Salve's Kubernetes actions are tested through
//! the real [`kube::Client`] over real HTTP/JSON (no kube-apiserver can run in CI).
//!
//! [`FakeApiServer::start`] serves on `127.0.0.1:0` and returns a client for it (without
//! kube's default retries, see [`FakeApiServer::client`]). Objects live in memory as JSON,
//! keyed by (group/version, resource plural, namespace, name) — see [`ObjectKey`]. Tests seed
//! objects with [`FakeApiServer::insert`], read them back with [`FakeApiServer::get`] /
//! [`FakeApiServer::get_typed`] / [`FakeApiServer::list`], and see what the client sent with
//! [`FakeApiServer::requests`]. [`FakeApiServer::roll_out`] seeds a Deployment's revision
//! history and [`FakeApiServer::set_logs`] its pods' logs; [`FakeApiServer::add_token`] and
//! [`FakeApiServer::grant`] seed what TokenReviews and SubjectAccessReviews are answered from.
//!
//! # What it serves
//!
//! The real URL scheme: `/api/v1/...` and `/apis/{group}/{version}/...`, namespaced
//! (`namespaces/{ns}/{plural}`) and cluster-scoped, for the built-in types in [`ResourceType`]'s
//! table (Pods, Nodes, Namespaces, Services, ConfigMaps, Secrets, Events, ServiceAccounts,
//! PVCs, Deployments, StatefulSets, ReplicaSets, DaemonSets, ControllerRevisions, Jobs,
//! CronJobs, PDBs, Leases, HPAs) plus any type added with [`FakeApiServer::register`].
//!
//! - **GET** one object; **LIST** (also across namespaces) with `labelSelector` (`=`, `==`,
//!   `!=`, `in`, `notin`, `k`, `!k`) and `fieldSelector` (`metadata.name`,
//!   `metadata.namespace`, and the per-kind fields the real server allows, e.g. a Pod's
//!   `spec.nodeName`), answered as `{kind: "XList", apiVersion, metadata: {resourceVersion},
//!   items}` with items lacking `kind`/`apiVersion` as from the real server. `limit` is
//!   ignored: every list is one page.
//! - **WATCH** (`watch=true`): newline-delimited `ADDED`/`MODIFIED`/`DELETED` events. With no
//!   `resourceVersion` (or `0`) existing objects come first as `ADDED`; with one, the changes
//!   after it are replayed from a bounded history (older is an `ERROR` event with a 410
//!   Expired Status, so watchers relist); with `sendInitialEvents=true` the existing objects
//!   are followed by the `k8s.io/initial-events-end` BOOKMARK. Objects entering or leaving a
//!   selector are `ADDED`/`DELETED`. The stream ends at `timeoutSeconds`. No periodic
//!   bookmarks.
//! - **POST** (create; 409 AlreadyExists; `generateName`), **PUT** (replace; 409 Conflict on a
//!   stale `metadata.resourceVersion`), **DELETE** (404 when missing; `preconditions`; also
//!   DELETE of a collection by selector), **PATCH** with `application/merge-patch+json`,
//!   `application/strategic-merge-patch+json` (the subset described on
//!   `patch::strategic_merge`: lists such as `containers` merged by `name`) and
//!   `application/json-patch+json` (RFC 6902). Server-side apply is a 415.
//! - The **`status`** subresource (main-resource writes keep the stored status; `/status`
//!   writes change only status) and the **`scale`** subresource of Deployments, StatefulSets
//!   and ReplicaSets (an `autoscaling/v1` Scale; PUT/PATCH set `spec.replicas`).
//! - **`dryRun=All`** on every write (or `dryRun: ["All"]` in a delete's body): validated and
//!   answered as if written, nothing stored, no resourceVersion used.
//! - Every write bumps one global `resourceVersion` and stamps `metadata.resourceVersion`;
//!   creates set `uid`, `creationTimestamp` and `generation: 1`, drop `status` for types with
//!   a status subresource and default `spec.replicas` to 1 for scalable types; a change to
//!   anything outside `metadata` and `status` bumps `generation`.
//! - Errors are real `Status` objects (`NotFound` 404, `AlreadyExists`/`Conflict` 409,
//!   `Invalid` 422, `BadRequest` 400, ...), so callers see [`kube::Error::Api`]. Validation
//!   covers names (RFC 1123 subdomain), `apiVersion`/`kind`/namespace agreement, negative
//!   replicas, and decoding as the typed k8s-openapi object (a wrong type is a 400, a missing
//!   required field a 422).
//! - **Deployment revisions**, the bookkeeping half of the Deployment controller, done at once
//!   on every create, replace or patch of a Deployment (and on [`FakeApiServer::insert`]; not
//!   in a dry run): the controlled ReplicaSet whose template equals the Deployment's (but for
//!   `pod-template-hash`) is reused, else `{deployment}-{hash}` is created with
//!   `pod-template-hash` in its selector and labels; it gets the next
//!   `deployment.kubernetes.io/revision` and the Deployment's replicas, the others get 0, and
//!   the Deployment is annotated with the current revision. A write's answer is the Deployment
//!   after this bookkeeping. [`FakeApiServer::roll_out`] seeds a history one revision at a time.
//! - **Evictions**: `POST pods/{name}/eviction` with a `policy/v1` Eviction deletes the pod
//!   (201 and a Success Status) unless the one PodDisruptionBudget selecting it allows no
//!   disruption now (429 `TooManyRequests`, "Cannot evict pod as it would violate the pod's
//!   disruption budget.", the budget in `details.causes`); two budgets are the real server's
//!   500. The budget's allowance is computed at the request from the Ready pods it selects
//!   (see the `eviction` module); Pending, Succeeded and Failed pods ignore budgets.
//!   `dryRun=All` and `deleteOptions` preconditions are honoured.
//! - **`pods/log`**: the text seeded with [`FakeApiServer::set_logs`], as `text/plain`, with
//!   `container`, `previous`, `tailLines` and `limitBytes`; a pod with several containers
//!   needs `container` (400 otherwise, worded as the real server's), a missing previous
//!   instance is a 400, a missing pod a 404.
//! - Events (`v1` and `events.k8s.io/v1`) are stored, listed and watched like any object;
//!   nothing generates them.
//! - **TokenReview** (`authentication.k8s.io/v1`) and **SubjectAccessReview**
//!   (`authorization.k8s.io/v1`): cluster-scoped and create-only (POST, 201, nothing stored;
//!   other methods 405). A TokenReview answers who a token seeded with
//!   [`FakeApiServer::add_token`] is (`authenticated: false` for an unknown token, and for one
//!   whose audiences miss `spec.audiences`, or [`API_AUDIENCE`] when none are asked), with
//!   `system:authenticated` among its groups and the common audiences in `status.audiences`.
//!   A SubjectAccessReview is allowed when a [`Grant`] matches as RBAC would (`*`,
//!   subresources and `*/subresource`, resource names, a namespaced grant only in its
//!   namespace, users, groups and service accounts) or the user is in `system:masters`; see
//!   the `review` module. Only reviews are authenticated: ordinary requests never are.
//!
//! # Not (yet) served
//!
//! Event generation, controllers beyond the Deployment revision bookkeeping (nothing
//! schedules Pods, rolls them, or computes a PDB's status), ControllerRevisions for
//! StatefulSets and DaemonSets, finalizers and `deletionTimestamp`, garbage collection (a
//! deleted Deployment leaves its ReplicaSets), admission (a namespace need not exist),
//! defaulting beyond `spec.replicas`, server-side apply, paging, discovery, streaming logs
//! (`follow`) and log times (`sinceSeconds`, `sinceTime`, `timestamps` are ignored),
//! exec/attach, authentication and authorization of the fake's own requests (any client may
//! do anything), TokenRequest, LocalSubjectAccessReview, SelfSubjectAccessReview,
//! SelfSubjectRulesReview and SelfSubjectReview, RBAC objects (Roles and bindings are not
//! served; grants are seeded), `nonResourceAttributes` rules, and a review's
//! `fieldSelector`/`labelSelector` attributes (ignored).

mod eviction;
mod logs;
mod patch;
mod resource;
mod review;
mod rollout;
mod selector;
mod server;
mod status;
mod store;

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use resource::ResourceType;
pub use review::{API_AUDIENCE, Grant, Subject, TokenUser};
pub use store::ObjectKey;

use review::Reviews;
use server::Shared;
use store::Store;

/// Errors from setting up or seeding the fake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not be bound.
    #[error("cannot bind the fake API server")]
    Bind(#[source] std::io::Error),
    /// The client could not be built for the fake's URL.
    #[error("cannot build a kube client for the fake API server")]
    Client(#[source] kube::Error),
    /// A seeded object does not serialize to JSON, or a stored one does not decode.
    #[error("object is not valid JSON for its type")]
    Json(#[source] serde_json::Error),
    /// A seeded object has an `apiVersion`/`kind` the fake does not serve.
    #[error("the fake API server does not serve {kind} in {api_version}")]
    UnknownType {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
    /// A seeded object is rejected by the same validation as a create.
    #[error("invalid object: {0}")]
    Invalid(String),
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One request the fake received, for tests to assert what the client did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method (`GET`, `PATCH`, ...).
    pub method: String,
    /// The URL path (`/apis/apps/v1/namespaces/prod/deployments/api`).
    pub path: String,
    /// The raw query string, without `?` (`dryRun=All&fieldManager=salve`).
    pub query: String,
    /// The `Content-Type` header, if any (tells the patch type).
    pub content_type: Option<String>,
}

impl RecordedRequest {
    /// The value of query parameter `name`, if present (raw, not percent-decoded).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// A running fake API server; dropping it stops the server and ends its watches.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    url: String,
}

impl FakeApiServer {
    /// Starts a fake on a free loopback port and returns it with a [`kube::Client`] for it
    /// (plain HTTP, no auth, default namespace `default`).
    pub async fn start() -> Result<(Self, kube::Client)> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            reviews: Mutex::new(Reviews::default()),
            cancel: CancellationToken::new(),
        });
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(shared.clone());
        let cancel = shared.cancel.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "fake API server stopped");
            }
        });
        let fake = Self {
            shared,
            url: format!("http://{addr}"),
        };
        let client = fake.client()?;
        Ok((fake, client))
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes to `path` a kubeconfig that points at this server, for a `salve run` process
    /// under test (`--kubeconfig PATH`).
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: '{}'}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: u}}}}]\ncurrent-context: fake\n",
                self.url
            ),
        )
    }

    /// Another client for this server. kube's default retry of 429, 503 and 504 is off: a
    /// refused eviction (429, with `Retry-After: 10` as from the real server) would otherwise
    /// be retried for minutes before the caller sees it.
    pub fn client(&self) -> Result<kube::Client> {
        let uri = self
            .url
            .parse()
            .map_err(|e| Error::Invalid(format!("{e}")))?;
        let mut config = kube::Config::new(uri);
        config.default_retry = false;
        kube::Client::try_from(config).map_err(Error::Client)
    }

    /// Serves one more resource type (e.g. a CRD such as Salve's own).
    pub fn register(&self, resource: ResourceType) {
        let mut store = self.shared.store();
        store
            .types
            .retain(|t| !(t.api_version == resource.api_version && t.kind == resource.kind));
        store.types.push(resource);
    }

    /// Seeds an object (typed or JSON, with `apiVersion` and `kind`), creating or overwriting
    /// it as a controller would: unlike a create through the API it keeps `status` and
    /// `generation` (and, on an overwrite, a `creationTimestamp` it gives). Watchers see ADDED or MODIFIED. A Deployment gets its revision
    /// bookkeeping (a ReplicaSet for its template, see the module docs), so inserting a
    /// Deployment and then [`FakeApiServer::roll_out`] a new template makes revision 2.
    /// Returns the stored object.
    pub fn insert(&self, obj: impl Serialize) -> Result<Value> {
        let mut obj = serde_json::to_value(obj).map_err(Error::Json)?;
        let mut store = self.shared.store();
        let field = |f: &str| {
            obj.get(f)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let rt = store
            .type_by_kind(&api_version, &kind)
            .ok_or(Error::UnknownType { api_version, kind })?;
        let meta = &obj["metadata"];
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let namespace = match (rt.namespaced, meta.get("namespace").and_then(Value::as_str)) {
            (true, ns) => Some(ns.unwrap_or("default").to_owned()),
            (false, _) => None,
        };
        obj["metadata"]["namespace"] = namespace.clone().map_or(Value::Null, Value::String);
        if namespace.is_none()
            && let Some(m) = obj["metadata"].as_object_mut()
        {
            m.remove("namespace");
        }
        server::validate_object(&rt, &obj, &name).map_err(|e| Error::Invalid(e.message))?;
        let key = ObjectKey {
            api_version: rt.api_version,
            plural: rt.plural,
            namespace,
            name,
        };
        match store.objects.get(&key).map(|o| o["metadata"].clone()) {
            Some(old) => {
                obj["metadata"]["uid"] = old["uid"].clone();
                // A seeded `creationTimestamp` is kept: tests and the demo backdate history.
                if obj["metadata"]["creationTimestamp"].is_null() {
                    obj["metadata"]["creationTimestamp"] = old["creationTimestamp"].clone();
                }
            }
            None => server::stamp_new(&mut store, &mut obj),
        }
        let stored = store.commit(key.clone(), Some(obj));
        Ok(rollout::sync(&mut store, &key).unwrap_or(stored))
    }

    /// Rolls Deployment `namespace/name` out to a new pod `template`, as `kubectl set image`
    /// or an edit of `spec.template` would: the template is replaced whole and the revision
    /// bookkeeping follows (a new ReplicaSet and revision, or an old one brought back). Seeds
    /// a rollout history in one line per revision. Returns the stored Deployment.
    pub fn roll_out(&self, namespace: &str, name: &str, template: impl Serialize) -> Result<Value> {
        let template = serde_json::to_value(template).map_err(Error::Json)?;
        let mut deployment = self
            .get("apps/v1", "Deployment", Some(namespace), name)
            .ok_or_else(|| {
                Error::Invalid(format!("no Deployment {namespace}/{name} to roll out"))
            })?;
        if deployment["spec"]["template"] != template {
            deployment["spec"]["template"] = template;
            let generation = deployment["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            deployment["metadata"]["generation"] = generation.into();
        }
        self.insert(deployment)
    }

    /// Seeds the log text of `container` in pod `namespace/pod` (of its previous, terminated
    /// instance when `previous`), served by `GET .../pods/{pod}/log`. The pod itself is seeded
    /// separately; a container without seeded text has an empty log, and one without a
    /// previous instance answers `previous=true` with the real server's 400.
    pub fn set_logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
        text: impl Into<String>,
    ) {
        let key = (namespace.into(), pod.into(), container.into(), previous);
        self.shared.store().logs.insert(key, text.into());
    }

    /// Makes bearer `token` authenticate as `user` in TokenReviews (replacing what it did
    /// before). A user without a uid gets one. Ordinary requests to the fake stay
    /// unauthenticated.
    pub fn add_token(&self, token: &str, mut user: TokenUser) {
        if user.uid.is_empty() {
            user.uid = self.shared.store().next_uid();
        }
        self.shared.reviews().add_token(token.to_owned(), user);
    }

    /// Adds `grant` to the RBAC rules SubjectAccessReviews are answered from.
    pub fn grant(&self, grant: Grant) {
        self.shared.reviews().grant(grant);
    }

    /// The stored object of `kind` in `api_version`, if any (`namespace` is ignored for
    /// cluster-scoped kinds).
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = self.shared.store();
        let rt = store.type_by_kind(api_version, kind)?;
        let key = ObjectKey {
            namespace: if rt.namespaced {
                namespace.map(str::to_owned)
            } else {
                None
            },
            api_version: rt.api_version,
            plural: rt.plural,
            name: name.to_owned(),
        };
        store.objects.get(&key).cloned()
    }

    /// The stored objects of `kind` in `api_version`, in `namespace` (every namespace when
    /// `None`), ordered by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let store = self.shared.store();
        let Some(rt) = store.type_by_kind(api_version, kind) else {
            return Vec::new();
        };
        store
            .objects
            .iter()
            .filter(|(k, _)| {
                k.api_version == rt.api_version
                    && k.plural == rt.plural
                    && (namespace.is_none() || k.namespace.as_deref() == namespace)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The stored object as a typed k8s-openapi resource, if any.
    pub fn get_typed<K>(&self, namespace: Option<&str>, name: &str) -> Result<Option<K>>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        self.get(K::API_VERSION, K::KIND, namespace, name)
            .map(|v| serde_json::from_value(v).map_err(Error::Json))
            .transpose()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.store().requests.clone()
    }

    /// The current global `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}
