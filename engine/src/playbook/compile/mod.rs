//! Compiles a [`PlaybookDocument`] into a [`Playbook`], reporting every problem in one pass.

mod step;
mod test;
pub mod trigger;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use self::step::{StepContext, compile_steps};
use self::test::compile_test;
use super::spec::{self, PlaybookDocument};
use super::{Playbook, Source, Target, Verify};
use crate::check::{Checker, Labels, Scope};

/// Defaults that apply when a playbook leaves a setting out.
pub mod defaults {
    use std::time::Duration;

    /// `trigger.interval`.
    pub const INTERVAL: Duration = Duration::from_secs(30);
    /// `trigger.staleAfter`: a minute-scraped input may miss two scrapes.
    pub const STALE_AFTER: Duration = Duration::from_secs(3 * 60);
    /// `cooldown`.
    pub const COOLDOWN: Duration = Duration::from_secs(30 * 60);
    /// A step's `timeout`; for a WASM step, that of each action it asks for.
    pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
    /// A WASM step's `timeout`: its evaluation, host calls included.
    pub const WASM_STEP_TIMEOUT: Duration = Duration::from_secs(1);
    /// `memoryLeak.window`.
    pub const LEAK_WINDOW: Duration = Duration::from_secs(30 * 60);
    /// `latency.window` and `errorRate.window`.
    pub const RATE_WINDOW: Duration = Duration::from_secs(5 * 60);
    /// `crashLoop.window`.
    pub const CRASH_WINDOW: Duration = Duration::from_secs(15 * 60);
    /// A test's `interval`.
    pub const TEST_INTERVAL: Duration = Duration::from_secs(60);
    /// The working-set metric of `memoryLeak`.
    pub const USAGE_METRIC: &str = "container_memory_working_set_bytes";
    /// The largest runbook read with its playbook.
    pub const MAX_RUNBOOK_BYTES: usize = 64 * 1024;
    /// The limit metric of `memoryLeak`.
    pub const LIMIT_METRIC: &str = r#"kube_pod_container_resource_limits{resource="memory"}"#;
    /// The histogram of `latency`.
    pub const LATENCY_METRIC: &str = "http_request_duration_seconds";
    /// The counter of `errorRate`.
    pub const REQUESTS_METRIC: &str = "http_requests_total";
    /// The failed-request matchers of `errorRate`.
    pub const ERROR_SELECTOR: &str = r#"{code=~"5.."}"#;
    /// The labels `latency` and `errorRate` aggregate by.
    pub const BY: [&str; 2] = ["namespace", "service"];
}

/// Compiles one playbook document. Problems go to `checker`; `None` when there was an error.
pub fn compile(
    document: PlaybookDocument,
    index: usize,
    checker: &mut Checker<'_>,
) -> Option<Playbook> {
    let file = checker.file().to_path_buf();
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let spec = &document.spec;

    check_name(
        checker,
        "/metadata/name",
        &document.metadata.name,
        "playbook name",
    );
    let trigger = trigger::compile(&spec.trigger, checker);
    let labels = trigger
        .as_ref()
        .map_or(Labels::Any, |(_, labels)| labels.clone());
    let target_scope = Scope {
        labels: labels.clone(),
        target: false,
    };
    let step_scope = Scope {
        labels,
        target: true,
    };
    let target = compile_target(&spec.target, &target_scope, checker);
    let step_cx = StepContext {
        target_kind: spec.target.kind,
        scope: &step_scope,
        base: &base,
    };
    let mut names = BTreeMap::new();
    let steps = compile_steps(&spec.steps, "/spec/steps", &step_cx, &mut names, checker);
    if spec.steps.is_empty() {
        checker.error("/spec/steps", "a playbook needs at least one step");
    }
    let rollback = compile_steps(
        &spec.rollback,
        "/spec/rollback",
        &step_cx,
        &mut names,
        checker,
    );
    let cooldown = checker.duration_or(
        "/spec/cooldown",
        spec.cooldown.as_ref(),
        defaults::COOLDOWN,
        false,
    );
    let verify = spec.verify.as_ref().and_then(|v| {
        let promql = checker.templated_promql("/spec/verify/promql", &v.promql, &step_scope);
        let within =
            checker.duration_or("/spec/verify/within", Some(&v.within), Duration::ZERO, true);
        Some(Verify {
            promql: promql?,
            within,
        })
    });
    let tests = spec
        .tests
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            compile_test(
                t,
                &format!("/spec/tests/{i}"),
                &steps,
                &spec.trigger,
                checker,
            )
        })
        .collect();
    let runbook = spec.runbook.as_ref().map(|r| base.join(r));
    let runbook_text = runbook
        .as_deref()
        .and_then(|path| read_runbook(checker, path));

    if checker.has_errors() {
        return None;
    }
    let (trigger, _) = trigger?;
    Some(Playbook {
        name: document.metadata.name.clone(),
        source: Source {
            file,
            document: index,
        },
        // A module's bytes and the runbook's text are part of what the playbook is: a new
        // build of one, an edit of the other, changes it.
        digest: match (module_digests(steps.iter().chain(&rollback)), &runbook_text) {
            (modules, None) if modules.is_empty() => digest(&document),
            (modules, runbook) => digest(&(&document, modules, runbook)),
        },
        description: spec.description.clone(),
        runbook,
        runbook_text,
        trigger,
        target: target?,
        cooldown,
        max_autonomous_risk: spec.max_autonomous_risk,
        on_interrupt: spec.on_interrupt.unwrap_or_default(),
        steps,
        verify,
        rollback,
        tests,
        spec: document,
    })
}

/// The text of the runbook at `path`, read as a dependency of the playbook (an edit reloads
/// it). A missing runbook is an error; one that is too large or not UTF-8 a warning, and the
/// playbook goes without its text.
fn read_runbook(checker: &mut Checker<'_>, path: &Path) -> Option<String> {
    if !checker.file_exists(path) {
        checker.error(
            "/spec/runbook",
            format!("runbook `{}` does not exist", path.display()),
        );
        return None;
    }
    let problem = match checker.read_file(path, defaults::MAX_RUNBOOK_BYTES) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => return Some(text),
            Err(_) => "is not UTF-8 text".to_string(),
        },
        Err(error) => format!("cannot be read: {error}"),
    };
    let d = checker
        .at(
            "/spec/runbook",
            format!("runbook `{}` {problem}", path.display()),
        )
        .expected(format!(
            "a Markdown file of at most {} KiB (the advisor's retrieval ranks the playbook without it)",
            defaults::MAX_RUNBOOK_BYTES / 1024
        ))
        .warning();
    checker.push(d);
    None
}

/// The digests of the modules `steps` run, in order.
fn module_digests<'a>(steps: impl Iterator<Item = &'a super::Step>) -> Vec<&'a str> {
    steps
        .filter_map(|step| match &step.run {
            super::StepRun::Wasm { digest, .. } => Some(digest.as_str()),
            super::StepRun::Action(_) => None,
        })
        .collect()
}

/// SHA-256 of the document's canonical JSON (field order fixed by the types, maps sorted).
pub fn digest<T: serde::Serialize>(document: &T) -> String {
    let bytes = serde_json::to_vec(document).unwrap_or_default();
    let hash = Sha256::digest(&bytes);
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A DNS-1123 label: what Kubernetes accepts as a name, so a playbook can become a resource.
pub fn check_name(checker: &mut Checker<'_>, pointer: &str, name: &str, what: &str) {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        let d = checker
            .at(pointer, format!("`{name}` is not a valid {what}"))
            .expected("at most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit");
        checker.push(d);
    }
}

fn compile_target(
    target: &spec::Target,
    scope: &Scope,
    checker: &mut Checker<'_>,
) -> Option<Target> {
    let name = checker.template("/spec/target/name", &target.name, scope);
    let namespace = match (&target.namespace, target.kind.is_namespaced()) {
        (Some(ns), true) => Some(checker.template("/spec/target/namespace", ns, scope)?),
        (None, true) => {
            let d = checker
                .at(
                    "/spec/target",
                    format!("a {} target needs a namespace", target.kind),
                )
                .expected("`namespace`, for example \"${labels.namespace}\"");
            checker.push(d);
            None
        }
        (Some(_), false) => {
            let d = checker.at_key(
                "/spec/target/namespace",
                format!("{} is cluster-scoped and has no namespace", target.kind),
            );
            checker.push(d);
            None
        }
        (None, false) => None,
    };
    Some(Target {
        kind: target.kind,
        namespace,
        name: name?,
    })
}
