//! The HTTP side: one axum fallback handler that parses the real API's URL scheme and answers
//! GET, LIST, WATCH, POST, PUT, PATCH and DELETE on objects and their `status` and `scale`
//! subresources, a Pod's `eviction` and `log`, and the create-only TokenReview and
//! SubjectAccessReview.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::RecordedRequest;
use super::eviction::{self, Eviction};
use super::logs;
use super::patch::{self, PatchType};
use super::resource::ResourceType;
use super::review::Reviews;
use super::rollout;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, ChangeType, ObjectKey, Store};

/// State shared by the handler and the [`super::FakeApiServer`] handle.
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    /// The tokens and grants TokenReviews and SubjectAccessReviews are answered from.
    pub(crate) reviews: Mutex<Reviews>,
    pub(crate) cancel: CancellationToken,
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn reviews(&self) -> MutexGuard<'_, Reviews> {
        self.reviews.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// The request's target, parsed from its path.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            api_version: self.rt.api_version.clone(),
            plural: self.rt.plural.clone(),
            namespace: self.namespace.clone(),
            name: name.to_owned(),
        }
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(format!("{} \"{name}\" not found", self.rt.qualified()))
    }

    /// A copy of the stored object `name`, or the API's 404.
    fn stored(&self, store: &Store, name: &str) -> ApiResult<Value> {
        store
            .objects
            .get(&self.key(name))
            .cloned()
            .ok_or_else(|| self.not_found(name))
    }
}

fn no_such_resource() -> ApiError {
    ApiError::not_found("the server could not find the requested resource".into())
}

fn parse_target(store: &Store, path: &str) -> ApiResult<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return Err(no_such_resource()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, ..]
            if store
                .type_by_plural(&api_version, plural)
                .is_some_and(|t| t.namespaced) =>
        {
            (Some((*ns).to_owned()), &rest[2..])
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(no_such_resource()),
    };
    let rt = store
        .type_by_plural(&api_version, plural)
        .ok_or_else(no_such_resource)?;
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(no_such_resource());
    }
    match sub {
        None => {}
        Some("status") if rt.status => {}
        Some("scale") if rt.scale => {}
        Some("eviction" | "log") if rt.api_version == "v1" && rt.plural == "pods" => {}
        Some(_) => return Err(no_such_resource()),
    }
    Ok(Target {
        rt,
        namespace,
        name: name.map(str::to_owned),
        sub: sub.map(str::to_owned),
    })
}

/// The one handler: every request comes here.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    shared.store().requests.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        content_type: content_type.clone(),
    });
    let query = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let req = Request {
        method,
        path: uri.path().to_owned(),
        query,
        content_type: content_type.unwrap_or_default(),
        body,
    };
    match route(&shared, req) {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

struct Request {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    content_type: String,
    body: Bytes,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    fn dry_run(&self) -> ApiResult<bool> {
        match self.param("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}, the only supported value is \"All\""
            ))),
        }
    }

    fn json_body(&self) -> ApiResult<Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))
    }
}

/// The create-only reviews: answered, never stored, so not among the stored types.
#[derive(Clone, Copy)]
enum Review {
    Token,
    SubjectAccess,
}

impl Review {
    /// The review served at `path`, if any (both are cluster-scoped).
    fn at(path: &str) -> Option<Review> {
        match path.trim_end_matches('/') {
            "/apis/authentication.k8s.io/v1/tokenreviews" => Some(Review::Token),
            "/apis/authorization.k8s.io/v1/subjectaccessreviews" => Some(Review::SubjectAccess),
            _ => None,
        }
    }

    /// Its type, for checking a body's `apiVersion` and `kind`.
    fn resource_type(self) -> ResourceType {
        match self {
            Review::Token => ResourceType::custom(
                "authentication.k8s.io/v1",
                "TokenReview",
                "tokenreviews",
                false,
            ),
            Review::SubjectAccess => ResourceType::custom(
                "authorization.k8s.io/v1",
                "SubjectAccessReview",
                "subjectaccessreviews",
                false,
            ),
        }
    }

    /// Answers a POST of this review: 201 and the review with its status.
    fn create(self, shared: &Shared, req: &Request) -> ApiResult {
        if req.method != Method::POST {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        req.dry_run()?;
        let mut body = req.json_body()?;
        check_type(&self.resource_type(), &mut body)?;
        let reviews = shared.reviews();
        let answer = match self {
            Review::Token => reviews.token_review(body)?,
            Review::SubjectAccess => reviews.subject_access_review(body)?,
        };
        Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
    }
}

fn route(shared: &Arc<Shared>, req: Request) -> ApiResult {
    if let Some(review) = Review::at(&req.path) {
        return review.create(shared, &req);
    }
    let mut store = shared.store();
    let t = parse_target(&store, &req.path)?;
    let (m, name, sub) = (&req.method, t.name.clone(), t.sub.as_deref());
    match (m, name, sub) {
        (&Method::GET, None, None) if req.flag("watch") => {
            watch(&mut store, &t, &req, shared.cancel.clone())
        }
        (&Method::GET, None, None) => list(&store, &t, &req),
        (&Method::GET, Some(n), None | Some("status")) => {
            let obj = store
                .objects
                .get(&t.key(&n))
                .ok_or_else(|| t.not_found(&n))?;
            Ok(ok(obj.clone()))
        }
        (&Method::GET, Some(n), Some("scale")) => {
            let obj = store
                .objects
                .get(&t.key(&n))
                .ok_or_else(|| t.not_found(&n))?;
            Ok(ok(scale_of(obj)))
        }
        (&Method::GET, Some(n), Some("log")) => {
            let namespace = t.namespace.as_deref().unwrap_or_default();
            let text = logs::read(&store, namespace, &n, &req.query)?;
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                text,
            )
                .into_response())
        }
        (&Method::POST, None, None) => create(&mut store, &t, &req),
        (&Method::POST, Some(n), Some("eviction")) => {
            let body = req.json_body()?;
            let eviction = Eviction {
                namespace: t.namespace.as_deref().unwrap_or_default(),
                name: &n,
                body: &body,
                dry_run: req.dry_run()?,
            };
            let status = eviction::evict(&mut store, &eviction)?;
            Ok((StatusCode::CREATED, axum::Json(status)).into_response())
        }
        (&Method::PUT, Some(n), sub @ (None | Some("status" | "scale"))) => {
            let incoming = req.json_body()?;
            let dry = req.dry_run()?;
            match sub {
                Some("scale") => update_scale(&mut store, &t, &n, incoming, dry),
                Some(_) => update(&mut store, &t, &n, incoming, Part::Status, dry).map(ok),
                None => update(&mut store, &t, &n, incoming, Part::Main, dry).map(ok),
            }
        }
        (&Method::PATCH, Some(n), sub @ (None | Some("status" | "scale"))) => {
            let kind = PatchType::from_content_type(&req.content_type)?;
            let dry = req.dry_run()?;
            let old = store
                .objects
                .get(&t.key(&n))
                .ok_or_else(|| t.not_found(&n))?;
            match sub {
                Some("scale") => {
                    let scale = patch::apply(kind, &scale_of(old), &req.body)?;
                    update_scale(&mut store, &t, &n, scale, dry)
                }
                Some(_) => {
                    let patched = patch::apply(kind, old, &req.body)?;
                    update(&mut store, &t, &n, patched, Part::Status, dry).map(ok)
                }
                None => {
                    let patched = patch::apply(kind, old, &req.body)?;
                    update(&mut store, &t, &n, patched, Part::Main, dry).map(ok)
                }
            }
        }
        (&Method::DELETE, Some(n), None) => delete(&mut store, &t, &n, &req),
        (&Method::DELETE, None, None) => delete_collection(&mut store, &t, &req),
        (m, _, _) => Err(ApiError::method_not_allowed(format!(
            "{m} is not supported on {}",
            req.path
        ))),
    }
}

fn ok(obj: Value) -> Response {
    (StatusCode::OK, axum::Json(obj)).into_response()
}

/// The objects of the target's type in its namespace (all namespaces if none) that match the
/// request's selectors.
fn selected<'a>(
    store: &'a Store,
    t: &Target,
    req: &Request,
) -> ApiResult<Vec<(&'a ObjectKey, &'a Value)>> {
    let filter = Filter::new(t, req)?;
    Ok(store
        .objects
        .iter()
        .filter(|(k, v)| filter.key_matches(k) && filter.selects(v))
        .collect())
}

fn list(store: &Store, t: &Target, req: &Request) -> ApiResult {
    let items: Vec<Value> = selected(store, t, req)?
        .into_iter()
        .map(|(_, obj)| {
            // The real server leaves kind and apiVersion off the items of a list.
            let mut item = obj.clone();
            if let Some(m) = item.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            item
        })
        .collect();
    Ok(ok(list_of(&t.rt, store.rv, items)))
}

fn list_of(rt: &ResourceType, rv: u64, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version,
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Checks `apiVersion`/`kind` in a body against the target type, and fills them in.
fn check_type(rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    for (field, want) in [("apiVersion", &rt.api_version), ("kind", &rt.kind)] {
        match obj.get(field).and_then(Value::as_str) {
            Some(got) if got != want => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({got}) does not match the expected {field} ({want})"
                )));
            }
            _ => obj[field] = json!(want),
        }
    }
    Ok(())
}

/// Checks the body's namespace against the URL's, and fills it in.
fn check_namespace(t: &Target, obj: &mut Value) -> ApiResult<()> {
    let meta = &mut obj["metadata"];
    match (&t.namespace, meta.get("namespace").and_then(Value::as_str)) {
        (Some(url), Some(body)) if url != body => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        (Some(url), _) => {
            meta["namespace"] = json!(url);
            Ok(())
        }
        (None, _) => {
            if let Some(m) = meta.as_object_mut() {
                m.remove("namespace");
            }
            Ok(())
        }
    }
}

/// A DNS-1123 subdomain, the rule most resource names follow.
fn valid_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(ok_char)
        && alnum(name.chars().next())
        && alnum(name.chars().last())
}

/// A replica count as the real server takes it: a whole number from 0 to 2³¹−1.
fn check_replicas(replicas: &Value, what: &str, name: &str) -> ApiResult<()> {
    if replicas
        .as_i64()
        .is_some_and(|r| (0..=i64::from(i32::MAX)).contains(&r))
    {
        return Ok(());
    }
    Err(ApiError::invalid(
        what,
        name,
        format!("spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"),
    ))
}

/// What the real server's validation would reject, as far as the fake checks: the name, a
/// negative `spec.replicas`, and anything the typed k8s-openapi object cannot decode.
pub(crate) fn validate_object(rt: &ResourceType, obj: &Value, name: &str) -> ApiResult<()> {
    let what = rt.qualified();
    if !valid_name(name) {
        return Err(ApiError::invalid(
            &what,
            name,
            "metadata.name: Invalid value: a lowercase RFC 1123 subdomain must consist of lower \
             case alphanumeric characters, '-' or '.', and must start and end with an \
             alphanumeric character",
        ));
    }
    if rt.scale
        && let Some(replicas) = obj["spec"].get("replicas")
    {
        check_replicas(replicas, &what, name)?;
    }
    if let Some(decode) = rt.decode
        && let Err(e) = decode(obj)
    {
        let msg = e.to_string();
        return Err(if msg.contains("missing field") {
            ApiError::invalid(&what, name, msg)
        } else {
            ApiError::bad_request(format!("{what} \"{name}\": {msg}"))
        });
    }
    Ok(())
}

/// Stamps the metadata a real server sets on a new object.
pub(crate) fn stamp_new(store: &mut Store, obj: &mut Value) {
    let meta = &mut obj["metadata"];
    meta["uid"] = json!(store.next_uid());
    meta["creationTimestamp"] = json!(now());
    if meta.get("generation").is_none() {
        meta["generation"] = json!(1);
    }
}

fn create(store: &mut Store, t: &Target, req: &Request) -> ApiResult {
    let dry = req.dry_run()?;
    let mut obj = req.json_body()?;
    check_type(&t.rt, &mut obj)?;
    check_namespace(t, &mut obj)?;
    let meta = &obj["metadata"];
    if meta.get("resourceVersion").is_some_and(|v| v != "") {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let name = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName"),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_owned(),
        (_, Some(Value::String(prefix))) => format!("{prefix}{}", store.next_suffix()),
        _ => {
            return Err(ApiError::invalid(
                &t.rt.qualified(),
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    obj["metadata"]["name"] = json!(name);
    if t.rt.status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if t.rt.scale && obj["spec"].is_object() && obj["spec"].get("replicas").is_none() {
        obj["spec"]["replicas"] = json!(1);
    }
    validate_object(&t.rt, &obj, &name)?;
    let key = t.key(&name);
    if store.objects.contains_key(&key) {
        return Err(ApiError::already_exists(&t.rt.qualified(), &name));
    }
    stamp_new(store, &mut obj);
    obj["metadata"]["generation"] = json!(1);
    let stored = if dry {
        obj
    } else {
        let stored = store.commit(key.clone(), Some(obj));
        rollout::sync(store, &key).unwrap_or(stored)
    };
    Ok((StatusCode::CREATED, axum::Json(stored)).into_response())
}

/// Which part of an object a write changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The main resource: everything but `status` (when the type has a status subresource).
    Main,
    /// The `status` subresource: only `status`.
    Status,
}

fn spec_of(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Replaces object `name` with `incoming` (a PUT body, or the result of a patch), as the real
/// server does: optimistic concurrency on `metadata.resourceVersion`, immutable metadata kept,
/// `generation` bumped when anything outside metadata and status changed.
fn update(
    store: &mut Store,
    t: &Target,
    name: &str,
    mut incoming: Value,
    part: Part,
    dry: bool,
) -> ApiResult<Value> {
    let what = t.rt.qualified();
    let key = t.key(name);
    let old = t.stored(store, name)?;
    check_type(&t.rt, &mut incoming)?;
    check_namespace(t, &mut incoming)?;
    match incoming["metadata"].get("name").and_then(Value::as_str) {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => incoming["metadata"]["name"] = json!(name),
    }
    let current_rv = &old["metadata"]["resourceVersion"];
    match incoming["metadata"]
        .get("resourceVersion")
        .and_then(Value::as_str)
    {
        Some(rv) if !rv.is_empty() && Some(rv) != current_rv.as_str() => {
            return Err(ApiError::conflict(&what, name));
        }
        _ => {}
    }
    let mut new = match part {
        Part::Main => {
            if t.rt.status {
                match old.get("status") {
                    Some(s) => incoming["status"] = s.clone(),
                    None => {
                        if let Some(m) = incoming.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            incoming
        }
        Part::Status => {
            let mut new = old.clone();
            new["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
            new
        }
    };
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "generation",
    ] {
        match old["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    if spec_of(&old) != spec_of(&new) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(generation);
    }
    validate_object(&t.rt, &new, name)?;
    new["metadata"]["resourceVersion"] = current_rv.clone();
    if dry {
        return Ok(new);
    }
    let stored = store.commit(key.clone(), Some(new));
    Ok(match part {
        // The Deployment controller's revision bookkeeping follows a change of the template.
        Part::Main => rollout::sync(store, &key).unwrap_or(stored),
        Part::Status => stored,
    })
}

/// The `autoscaling/v1` Scale of a Deployment, StatefulSet or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

/// Writes a Scale (a PUT body or a patched Scale) back to its object's `spec.replicas`.
fn update_scale(store: &mut Store, t: &Target, name: &str, scale: Value, dry: bool) -> ApiResult {
    let what = t.rt.qualified();
    let old = t.stored(store, name)?;
    let replicas = &scale["spec"]["replicas"];
    check_replicas(replicas, &what, name)?;
    let mut new = old.clone();
    new["spec"]["replicas"] = replicas.clone();
    new["metadata"]["resourceVersion"] = match scale["metadata"].get("resourceVersion") {
        Some(Value::String(rv)) if !rv.is_empty() => json!(rv),
        _ => old["metadata"]["resourceVersion"].clone(),
    };
    let stored = update(store, t, name, new, Part::Main, dry)?;
    Ok(ok(scale_of(&stored)))
}

fn delete(store: &mut Store, t: &Target, name: &str, req: &Request) -> ApiResult {
    let key = t.key(name);
    let old = t.stored(store, name)?;
    let options = if req.body.is_empty() {
        json!({})
    } else {
        req.json_body()?
    };
    for (field, path) in [("resourceVersion", "resourceVersion"), ("uid", "uid")] {
        if let Some(want) = options["preconditions"].get(field).and_then(Value::as_str)
            && old["metadata"][path].as_str() != Some(want)
        {
            return Err(ApiError::conflict(&t.rt.qualified(), name));
        }
    }
    let body_dry = options["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    if req.dry_run()? || body_dry {
        return Ok(ok(old));
    }
    Ok(ok(store.commit(key, None)))
}

fn delete_collection(store: &mut Store, t: &Target, req: &Request) -> ApiResult {
    let dry = req.dry_run()?;
    let doomed: Vec<(ObjectKey, Value)> = selected(store, t, req)?
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut items = Vec::new();
    for (key, obj) in doomed {
        items.push(if dry { obj } else { store.commit(key, None) });
    }
    Ok(ok(list_of(&t.rt, store.rv, items)))
}

/// What a LIST or WATCH selects.
struct Filter {
    api_version: String,
    plural: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(t: &Target, req: &Request) -> ApiResult<Self> {
        Ok(Self {
            api_version: t.rt.api_version.clone(),
            plural: t.rt.plural.clone(),
            namespace: t.namespace.clone(),
            labels: LabelSelector::parse(req.param("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(
                req.param("fieldSelector").unwrap_or_default(),
                &t.rt.kind,
            )?,
        })
    }

    fn key_matches(&self, key: &ObjectKey) -> bool {
        key.api_version == self.api_version
            && key.plural == self.plural
            && (self.namespace.is_none() || key.namespace == self.namespace)
    }

    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The watch event a change is for this watch, if any: an object that starts matching the
    /// selectors is ADDED, one that stops matching is DELETED, as from the real server.
    fn event(&self, change: &Change) -> Option<Bytes> {
        if !self.key_matches(&change.key) {
            return None;
        }
        let now = self.selects(&change.new);
        let before = change.old.as_ref().is_some_and(|o| self.selects(o));
        let kind = match change.kind {
            ChangeType::Added if now => "ADDED",
            ChangeType::Deleted if now => "DELETED",
            ChangeType::Modified => match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            },
            _ => return None,
        };
        Some(event_line(kind, &change.new))
    }
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": obj}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A watch: the initial events (existing objects as ADDED, or the history after the asked
/// `resourceVersion`), then live changes, as newline-delimited JSON until `timeoutSeconds`,
/// the client goes away, or the server stops.
fn watch(store: &mut Store, t: &Target, req: &Request, cancel: CancellationToken) -> ApiResult {
    let filter = Filter::new(t, req)?;
    let mut initial = VecDeque::new();
    let rv = match req.param("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let send_initial = req.flag("sendInitialEvents");
    match rv {
        Some(rv) if !send_initial => {
            if rv < store.oldest_resumable() {
                let status = ApiError::expired(rv).to_status();
                initial.push_back(event_line("ERROR", &status));
                return Ok(stream_response(initial, None, Duration::ZERO, cancel));
            }
            initial.extend(
                store
                    .history
                    .iter()
                    .filter(|c| c.rv > rv)
                    .filter_map(|c| filter.event(c)),
            );
        }
        _ => {
            for (key, obj) in &store.objects {
                if filter.key_matches(key) && filter.selects(obj) {
                    initial.push_back(event_line("ADDED", obj));
                }
            }
            if send_initial {
                let bookmark = json!({
                    "kind": t.rt.kind,
                    "apiVersion": t.rt.api_version,
                    "metadata": {
                        "resourceVersion": store.rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                });
                initial.push_back(event_line("BOOKMARK", &bookmark));
            }
        }
    }
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let live = (store.tx.subscribe(), filter);
    Ok(stream_response(initial, Some(live), timeout, cancel))
}

fn stream_response(
    initial: VecDeque<Bytes>,
    live: Option<(broadcast::Receiver<Arc<Change>>, Filter)>,
    timeout: Duration,
    cancel: CancellationToken,
) -> Response {
    let deadline = tokio::time::Instant::now() + timeout;
    let state = (initial, live);
    let stream = futures_util::stream::unfold(state, move |(mut initial, mut live)| {
        let cancel = cancel.clone();
        async move {
            if let Some(line) = initial.pop_front() {
                return Some((Ok::<_, Infallible>(line), (initial, live)));
            }
            let (rx, filter) = live.as_mut()?;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep_until(deadline) => return None,
                    change = rx.recv() => match change {
                        Ok(change) => {
                            if let Some(line) = filter.event(&change) {
                                return Some((Ok(line), (initial, live)));
                            }
                        }
                        // A watcher that fell behind is ended; the client re-watches.
                        Err(_) => return None,
                    },
                }
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
