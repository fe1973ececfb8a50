//! Compiles a [`PlaybookDocument`] into a [`Playbook`], reporting every problem in one pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use promql_parser::parser::{Expr, LabelModifier};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::spec::{self, PlaybookDocument};
use super::{
    Param, Playbook, PlaybookTest, Source, Step, StepRun, Target, Trigger, TriggerKind, Verify,
};
use crate::action::{Action, ParamType, TargetKind};
use crate::check::{Checker, Labels, Scope};
use crate::diagnostic::did_you_mean;
use crate::series;

/// Defaults that apply when a playbook leaves a setting out.
pub mod defaults {
    use std::time::Duration;

    /// `trigger.interval`.
    pub const INTERVAL: Duration = Duration::from_secs(30);
    /// `cooldown`.
    pub const COOLDOWN: Duration = Duration::from_secs(30 * 60);
    /// A step's `timeout`.
    pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
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

const TRIGGER_KINDS: &[&str] = &[
    "promql",
    "memoryLeak",
    "latency",
    "crashLoop",
    "errorRate",
    "event",
    "schedule",
    "alert",
];

/// Event and container-state reasons Kubernetes reports that playbooks commonly match.
pub const KNOWN_REASONS: &[&str] = &[
    "OOMKilled",
    "OOMKilling",
    "CrashLoopBackOff",
    "BackOff",
    "Failed",
    "FailedScheduling",
    "FailedMount",
    "FailedAttachVolume",
    "FailedCreatePodSandBox",
    "ImagePullBackOff",
    "ErrImagePull",
    "Evicted",
    "Unhealthy",
    "ProbeError",
    "Killing",
    "NodeNotReady",
    "NodeHasDiskPressure",
    "NodeHasInsufficientMemory",
    "NodeHasInsufficientPID",
    "EvictionThresholdMet",
    "SystemOOM",
    "Rebooted",
    "ContainerGCFailed",
    "ImageGCFailed",
];

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
    let trigger = compile_trigger(&spec.trigger, checker);
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
    let target_kind = spec.target.kind;

    let mut names = BTreeMap::new();
    let steps = compile_steps(
        &spec.steps,
        "/spec/steps",
        target_kind,
        &step_scope,
        &base,
        &mut names,
        checker,
    );
    if spec.steps.is_empty() {
        checker.error("/spec/steps", "a playbook needs at least one step");
    }
    let rollback = compile_steps(
        &spec.rollback,
        "/spec/rollback",
        target_kind,
        &step_scope,
        &base,
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
    let step_names: BTreeSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let is_alert = spec.trigger.alert.is_some();
    let tests = spec
        .tests
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            compile_test(
                t,
                &format!("/spec/tests/{i}"),
                &step_names,
                is_alert,
                checker,
            )
        })
        .collect();
    let runbook = spec.runbook.as_ref().map(|r| base.join(r));
    if let Some(path) = &runbook
        && !path.is_file()
    {
        checker.error(
            "/spec/runbook",
            format!("runbook `{}` does not exist", path.display()),
        );
    }

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
        digest: digest(&document),
        description: spec.description.clone(),
        runbook,
        trigger,
        target: target?,
        cooldown,
        max_autonomous_risk: spec.max_autonomous_risk,
        steps,
        verify,
        rollback,
        tests,
        spec: document,
    })
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

fn compile_trigger(
    trigger: &spec::Trigger,
    checker: &mut Checker<'_>,
) -> Option<(Trigger, Labels)> {
    let set: Vec<&str> = [
        trigger.promql.is_some(),
        trigger.memory_leak.is_some(),
        trigger.latency.is_some(),
        trigger.crash_loop.is_some(),
        trigger.error_rate.is_some(),
        trigger.event.is_some(),
        trigger.schedule.is_some(),
        trigger.alert.is_some(),
    ]
    .iter()
    .zip(TRIGGER_KINDS)
    .filter(|(set, _)| **set)
    .map(|(_, name)| *name)
    .collect();
    match set.as_slice() {
        [] => {
            let d = checker
                .at("/spec/trigger", "the trigger sets no kind")
                .expected(format!("exactly one of {}", TRIGGER_KINDS.join(", ")));
            checker.push(d);
            return None;
        }
        [_] => {}
        [first, rest @ ..] => {
            for other in rest {
                let d = checker
                    .at_key(
                        &format!("/spec/trigger/{other}"),
                        format!(
                            "a trigger has exactly one kind, but sets both `{first}` and `{other}`"
                        ),
                    )
                    .expected("one playbook per trigger");
                checker.push(d);
            }
            return None;
        }
    }
    let pointer = format!("/spec/trigger/{}", set[0]);
    let p = |field: &str| format!("{pointer}/{field}");
    let selector = |checker: &mut Checker<'_>, s: &Option<String>| -> (String, BTreeSet<String>) {
        match s {
            Some(text) => {
                let labels = checker.selector(&p("selector"), text).unwrap_or_default();
                (text.clone(), labels)
            }
            None => (String::new(), BTreeSet::new()),
        }
    };
    let known = |names: &[&str], extra: BTreeSet<String>| {
        let mut all: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
        all.extend(extra);
        Labels::Known(all)
    };
    let by_labels = |by: &Option<Vec<String>>| -> Vec<String> {
        by.clone()
            .unwrap_or_else(|| defaults::BY.iter().map(|s| s.to_string()).collect())
    };

    let (kind, labels) = if let Some(t) = &trigger.promql {
        let labels = checker
            .promql(&p("expr"), &t.expr)
            .map_or(Labels::Any, |e| output_labels(&e));
        (
            TriggerKind::Promql {
                expr: t.expr.clone(),
            },
            labels,
        )
    } else if let Some(t) = &trigger.memory_leak {
        let (selector, extra) = selector(checker, &t.selector);
        let window =
            checker.duration_or(&p("window"), t.window.as_ref(), defaults::LEAK_WINDOW, true);
        let horizon = checker.duration_or(&p("horizon"), Some(&t.horizon), Duration::ZERO, true);
        let min_growth = t.min_growth_mib_per_minute.unwrap_or(0.0);
        if min_growth < 0.0 {
            checker.error(&p("minGrowthMiBPerMinute"), "must not be negative");
        }
        let usage_metric = metric(
            checker,
            &p("usageMetric"),
            t.usage_metric.as_deref(),
            defaults::USAGE_METRIC,
        );
        let limit_metric = metric(
            checker,
            &p("limitMetric"),
            t.limit_metric.as_deref(),
            defaults::LIMIT_METRIC,
        );
        (
            TriggerKind::MemoryLeak {
                selector,
                window,
                horizon,
                min_growth_mib_per_minute: min_growth,
                usage_metric,
                limit_metric,
            },
            known(&["namespace", "pod", "container"], extra),
        )
    } else if let Some(t) = &trigger.latency {
        let (selector, _) = selector(checker, &t.selector);
        if !(t.quantile > 0.0 && t.quantile < 1.0) {
            let d = checker
                .at(
                    &p("quantile"),
                    format!("quantile {} is out of range", t.quantile),
                )
                .expected("a number between 0 and 1, such as 0.99");
            checker.push(d);
        }
        let threshold =
            checker.duration_or(&p("threshold"), Some(&t.threshold), Duration::ZERO, true);
        let window =
            checker.duration_or(&p("window"), t.window.as_ref(), defaults::RATE_WINDOW, true);
        let metric = metric(
            checker,
            &p("metric"),
            t.metric.as_deref(),
            defaults::LATENCY_METRIC,
        );
        let by = by_labels(&t.by);
        let labels = known(&[], by.iter().cloned().collect());
        (
            TriggerKind::Latency {
                selector,
                metric,
                quantile: t.quantile,
                threshold,
                window,
                by,
            },
            labels,
        )
    } else if let Some(t) = &trigger.crash_loop {
        let (selector, extra) = selector(checker, &t.selector);
        let window = checker.duration_or(
            &p("window"),
            t.window.as_ref(),
            defaults::CRASH_WINDOW,
            true,
        );
        (
            TriggerKind::CrashLoop {
                selector,
                restarts: t.restarts,
                window,
            },
            known(&["namespace", "pod", "container"], extra),
        )
    } else if let Some(t) = &trigger.error_rate {
        let (selector, _) = selector(checker, &t.selector);
        if !(t.ratio > 0.0 && t.ratio <= 1.0) {
            let d = checker
                .at(&p("ratio"), format!("ratio {} is out of range", t.ratio))
                .expected("a number above 0 and at most 1, such as 0.05 for 5%");
            checker.push(d);
        }
        let error_selector = match &t.error_selector {
            Some(s) => {
                checker.selector(&p("errorSelector"), s);
                s.clone()
            }
            None => defaults::ERROR_SELECTOR.to_string(),
        };
        let window =
            checker.duration_or(&p("window"), t.window.as_ref(), defaults::RATE_WINDOW, true);
        let metric = metric(
            checker,
            &p("metric"),
            t.metric.as_deref(),
            defaults::REQUESTS_METRIC,
        );
        let by = by_labels(&t.by);
        let labels = known(&[], by.iter().cloned().collect());
        (
            TriggerKind::ErrorRate {
                selector,
                metric,
                error_selector,
                ratio: t.ratio,
                window,
                by,
            },
            labels,
        )
    } else if let Some(t) = &trigger.event {
        if t.reason.is_empty() {
            checker.error(&p("reason"), "list at least one reason");
        }
        for (i, reason) in t.reason.iter().enumerate() {
            // Reasons are open-ended, so an unknown one is fine; a near miss of a well-known
            // one is almost certainly a typo that would never match.
            if !KNOWN_REASONS.contains(&reason.as_str())
                && let Some(help) = did_you_mean(reason, KNOWN_REASONS.iter().copied())
            {
                let d = checker
                    .at(
                        &format!("{}/{i}", p("reason")),
                        format!("`{reason}` is not a reason Kubernetes reports"),
                    )
                    .help(Some(help))
                    .warning();
                checker.push(d);
            }
        }
        (
            TriggerKind::Event {
                kind: t.kind,
                reasons: t.reason.clone(),
                namespaces: t.namespaces.clone(),
            },
            known(
                &["namespace", "name", "kind", "reason", "node"],
                BTreeSet::new(),
            ),
        )
    } else if let Some(t) = &trigger.schedule {
        let schedule = checker.cron(&p("cron"), &t.cron);
        let kind = TriggerKind::Schedule {
            cron: t.cron.clone(),
            schedule: Box::new(schedule?),
        };
        (kind, Labels::Nothing)
    } else if let Some(t) = &trigger.alert {
        (
            TriggerKind::Alert {
                alertname: t.alertname.clone(),
                labels: t.labels.clone(),
            },
            Labels::Any,
        )
    } else {
        return None;
    };

    let promql_based = !matches!(
        kind,
        TriggerKind::Schedule { .. } | TriggerKind::Alert { .. }
    );
    for (field, set) in [
        ("for", trigger.for_.is_some()),
        ("keepFiringFor", trigger.keep_firing_for.is_some()),
    ] {
        if set && !promql_based {
            let d = checker
                .at_key(
                    &format!("/spec/trigger/{field}"),
                    format!("`{field}` does not apply to a `{}` trigger", kind.name()),
                )
                .expected("`for` and `keepFiringFor` only on PromQL-based and event triggers");
            checker.push(d);
        }
    }
    let for_ = checker.duration_or(
        "/spec/trigger/for",
        trigger.for_.as_ref(),
        Duration::ZERO,
        false,
    );
    let keep_firing_for = checker.duration_or(
        "/spec/trigger/keepFiringFor",
        trigger.keep_firing_for.as_ref(),
        Duration::ZERO,
        false,
    );
    let interval = checker.duration_or(
        "/spec/trigger/interval",
        trigger.interval.as_ref(),
        defaults::INTERVAL,
        true,
    );
    Some((
        Trigger {
            kind,
            for_,
            keep_firing_for,
            interval,
        },
        labels,
    ))
}

/// A metric override: a metric name, optionally with matchers.
fn metric(checker: &mut Checker<'_>, pointer: &str, text: Option<&str>, default: &str) -> String {
    let Some(text) = text else {
        return default.to_string();
    };
    match checker.promql(pointer, text) {
        Some(Expr::VectorSelector(_)) => {}
        Some(_) => checker.error(
            pointer,
            "expected a metric name, optionally with label matchers",
        ),
        None => {}
    }
    text.to_string()
}

/// The labels the series of `expr` carry, when they can be known without running it.
fn output_labels(expr: &Expr) -> Labels {
    match expr {
        Expr::Paren(p) => output_labels(&p.expr),
        // A comparison or arithmetic with a number keeps the vector side's labels.
        Expr::Binary(b) => match (&*b.lhs, &*b.rhs) {
            (vector, Expr::NumberLiteral(_)) | (Expr::NumberLiteral(_), vector) => {
                output_labels(vector)
            }
            _ => Labels::Any,
        },
        Expr::Aggregate(agg) => {
            let op = agg.op.to_string().to_ascii_lowercase();
            if ["topk", "bottomk", "limitk", "limit_ratio"].contains(&op.as_str()) {
                return output_labels(&agg.expr);
            }
            match &agg.modifier {
                Some(LabelModifier::Include(labels)) => {
                    Labels::Known(labels.labels.iter().cloned().collect())
                }
                Some(LabelModifier::Exclude(_)) => Labels::Any,
                None => Labels::Known(BTreeSet::new()),
            }
        }
        _ => Labels::Any,
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

#[allow(clippy::too_many_arguments)]
fn compile_steps(
    steps: &[spec::Step],
    base_pointer: &str,
    target_kind: TargetKind,
    scope: &Scope,
    base: &Path,
    names: &mut BTreeMap<String, String>,
    checker: &mut Checker<'_>,
) -> Vec<Step> {
    steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let pointer = format!("{base_pointer}/{i}");
            compile_step(step, &pointer, target_kind, scope, base, names, checker)
        })
        .collect()
}

fn compile_step(
    step: &spec::Step,
    pointer: &str,
    target_kind: TargetKind,
    scope: &Scope,
    base: &Path,
    names: &mut BTreeMap<String, String>,
    checker: &mut Checker<'_>,
) -> Option<Step> {
    let p = |field: &str| format!("{pointer}/{field}");
    let run = match (&step.action, &step.wasm) {
        (Some(action), None) => {
            check_applies(*action, target_kind, &p("action"), checker);
            if step.risk < action.intrinsic_risk() {
                let d = checker
                    .at(
                        &p("risk"),
                        format!("risk `{}` is below what `{action}` can do", step.risk),
                    )
                    .expected(format!("at least `{}`", action.intrinsic_risk()));
                checker.push(d);
            }
            Some(StepRun::Action(*action))
        }
        (None, Some(wasm)) => compile_wasm(wasm, &p("wasm"), target_kind, base, checker),
        (Some(_), Some(_)) => {
            let d = checker
                .at_key(
                    &p("wasm"),
                    "a step runs either an `action` or a `wasm` module, not both",
                )
                .expected("exactly one of `action`, `wasm`");
            checker.push(d);
            None
        }
        (None, None) => {
            let d = checker
                .at(pointer, "the step runs nothing")
                .expected("exactly one of `action`, `wasm`");
            checker.push(d);
            None
        }
    };
    let name = step
        .name
        .clone()
        .or_else(|| match (&step.action, &step.wasm) {
            (Some(a), _) => Some(a.as_str().to_string()),
            (_, Some(w)) => Path::new(&w.module)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned()),
            _ => None,
        });
    let name = name.unwrap_or_default();
    if step.name.is_some() {
        super::compile::check_name(checker, &p("name"), &name, "step name");
    }
    if let Some(first) = names.insert(name.clone(), pointer.to_string()) {
        let where_ = if step.name.is_some() {
            p("name")
        } else {
            pointer.to_string()
        };
        let d = checker
            .at(
                &where_,
                format!(
                    "duplicate step name `{name}` (also at {})",
                    crate::schema::field_path(&first)
                ),
            )
            .expected("step names unique within the playbook; set `name` to tell them apart");
        checker.push(d);
    }
    let when = step
        .when
        .as_ref()
        .and_then(|w| checker.condition(&p("when"), w));
    let timeout = checker.duration_or(
        &p("timeout"),
        step.timeout.as_ref(),
        defaults::STEP_TIMEOUT,
        true,
    );
    let params = match &step.action {
        Some(action) => compile_params(*action, &step.params, &p("params"), scope, checker),
        None => {
            if !step.params.is_empty() {
                let d = checker.at_key(
                    &p("params"),
                    "a `wasm` step takes `wasm.config`, not `params`",
                );
                checker.push(d);
            }
            BTreeMap::new()
        }
    };
    Some(Step {
        name,
        run: run?,
        risk: step.risk,
        when,
        params,
        timeout,
    })
}

fn check_applies(action: Action, kind: TargetKind, pointer: &str, checker: &mut Checker<'_>) {
    if let Some(kinds) = action.target_kinds()
        && !kinds.contains(&kind)
    {
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let d = checker
            .at(pointer, format!("`{action}` cannot act on a {kind} target"))
            .expected(format!("a target of kind {}", names.join(", ")));
        checker.push(d);
    }
}

fn compile_wasm(
    wasm: &spec::WasmStep,
    pointer: &str,
    target_kind: TargetKind,
    base: &Path,
    checker: &mut Checker<'_>,
) -> Option<StepRun> {
    let module = base.join(&wasm.module);
    let module_pointer = format!("{pointer}/module");
    if Path::new(&wasm.module).extension().and_then(|e| e.to_str()) != Some("wasm") {
        let d = checker
            .at(
                &module_pointer,
                format!("`{}` is not a .wasm file", wasm.module),
            )
            .expected("a path to a compiled component ending in .wasm");
        checker.push(d);
    } else if !module.is_file() {
        let d = checker
            .at(
                &module_pointer,
                format!("module `{}` does not exist", module.display()),
            )
            .expected("a path relative to the playbook file");
        checker.push(d);
    }
    for (i, action) in wasm.allowed_actions.iter().enumerate() {
        check_applies(
            *action,
            target_kind,
            &format!("{pointer}/allowedActions/{i}"),
            checker,
        );
    }
    Some(StepRun::Wasm {
        module,
        config: wasm.config.clone().unwrap_or(Value::Null),
        grants: wasm.grants.clone(),
        allowed_actions: wasm.allowed_actions.clone(),
    })
}

fn compile_params(
    action: Action,
    params: &BTreeMap<String, Value>,
    pointer: &str,
    scope: &Scope,
    checker: &mut Checker<'_>,
) -> BTreeMap<String, Param> {
    let known = action.params();
    let names: Vec<&str> = known.iter().map(|p| p.name).collect();
    for required in known.iter().filter(|p| p.required) {
        if !params.contains_key(required.name) {
            let d = checker
                .at(
                    pointer,
                    format!("`{action}` needs the parameter `{}`", required.name),
                )
                .expected(required.ty.expected());
            checker.push(d);
        }
    }
    let mut out = BTreeMap::new();
    for (name, value) in params {
        let at = crate::yaml::push_pointer(pointer, name);
        let Some(param) = known.iter().find(|p| p.name == name) else {
            let expected = if names.is_empty() {
                format!("`{action}` takes no parameters")
            } else {
                format!(
                    "one of {}",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let d = checker
                .at_key(&at, format!("`{action}` has no parameter `{name}`"))
                .expected(expected)
                .help(did_you_mean(name, names.iter().copied()));
            checker.push(d);
            continue;
        };
        let mismatch = |checker: &mut Checker<'_>| {
            let d = checker
                .at(
                    &at,
                    format!("found {}", crate::schema::describe_instance(value)),
                )
                .expected(param.ty.expected());
            checker.push(d);
        };
        let compiled = match (param.ty, value) {
            (ParamType::String, Value::String(s)) => {
                checker.template(&at, s, scope).map(Param::Text)
            }
            (ParamType::Promql, Value::String(s)) => {
                checker.templated_promql(&at, s, scope).map(Param::Text)
            }
            (ParamType::Duration, Value::String(s)) => {
                checker.duration(&at, s);
                Some(Param::Value(value.clone()))
            }
            (ParamType::Quantity, Value::String(s)) => {
                if !is_quantity(s) {
                    mismatch(checker);
                }
                Some(Param::Value(value.clone()))
            }
            (ParamType::Count, Value::Number(n)) if n.is_u64() => Some(Param::Value(value.clone())),
            (ParamType::Bool, Value::Bool(_)) => Some(Param::Value(value.clone())),
            (ParamType::StringMap, Value::Object(map)) if map.values().all(Value::is_string) => {
                for (key, v) in map {
                    if let Value::String(s) = v {
                        checker.template(&crate::yaml::push_pointer(&at, key), s, scope);
                    }
                }
                Some(Param::Value(value.clone()))
            }
            _ => {
                mismatch(checker);
                None
            }
        };
        if let Some(compiled) = compiled {
            out.insert(name.clone(), compiled);
        }
    }
    out
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix.
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        text.strip_suffix(suffix).is_some_and(|number| {
            !number.is_empty()
                && number
                    .parse::<f64>()
                    .is_ok_and(|n| n.is_finite() && n >= 0.0)
                && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        })
    })
}

fn compile_test(
    test: &spec::PlaybookTest,
    pointer: &str,
    steps: &BTreeSet<&str>,
    is_alert: bool,
    checker: &mut Checker<'_>,
) -> Option<PlaybookTest> {
    let p = |field: &str| format!("{pointer}/{field}");
    let interval = checker.duration_or(
        &p("interval"),
        test.interval.as_ref(),
        defaults::TEST_INTERVAL,
        true,
    );
    let mut series = Vec::new();
    for (selector, values) in &test.series {
        let at = crate::yaml::push_pointer(&p("series"), selector);
        match promql_parser::parser::parse(selector) {
            Ok(Expr::VectorSelector(_)) => {}
            _ => {
                let d = checker
                    .at_key(&at, format!("`{selector}` is not a series"))
                    .expected(r#"a metric name with labels, such as up{job="api"}"#);
                checker.push(d);
            }
        }
        match series::parse(values) {
            Ok(samples) => series.push((selector.clone(), samples)),
            Err(e) => {
                let d = checker
                    .at(&at, e.to_string())
                    .expected("promtool's expanding notation, such as `1+2x10`, `0 _ 5`, `stale`");
                checker.push(d);
            }
        }
    }
    if test.series.is_empty() && test.alerts.is_empty() {
        let d = checker
            .at(pointer, "the test has neither series nor alerts")
            .expected("at least one entry under `series` or `alerts`");
        checker.push(d);
    }
    let mut alerts = Vec::new();
    for (i, alert) in test.alerts.iter().enumerate() {
        let at = format!("{}/{i}", p("alerts"));
        if !is_alert {
            checker.error(
                &at,
                "only a playbook with an `alert` trigger receives alerts",
            );
        }
        if !alert.labels.contains_key("alertname") {
            checker.error(
                &format!("{at}/labels"),
                "an alert needs an `alertname` label",
            );
        }
        if let Some(offset) = checker.duration(&format!("{at}/at"), &alert.at) {
            alerts.push((offset, alert.labels.clone()));
        }
    }
    if let Some(expected) = &test.expect.steps {
        for (i, name) in expected.iter().enumerate() {
            if !steps.contains(name.as_str()) {
                let d = checker
                    .at(
                        &format!("{pointer}/expect/steps/{i}"),
                        format!("no step is named `{name}`"),
                    )
                    .help(did_you_mean(name, steps.iter().copied()));
                checker.push(d);
            }
        }
    }
    let at = test
        .expect
        .at
        .as_ref()
        .and_then(|a| checker.duration(&format!("{pointer}/expect/at"), a));
    Some(PlaybookTest {
        name: test.name.clone(),
        interval,
        series,
        alerts,
        expect: test.expect.clone(),
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_kubernetes() {
        for ok in ["512Mi", "1Gi", "250m", "2", "0.5", "1.5Gi"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Mi", "-1Gi", "1GB", "abc", "1e3Mi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn aggregations_tell_which_labels_a_promql_trigger_carries() {
        let labels =
            |text: &str| output_labels(&promql_parser::parser::parse(text).expect("parses"));
        assert_eq!(
            labels("sum by (namespace, pod) (rate(x[5m])) > 1"),
            Labels::Known(["namespace".to_string(), "pod".to_string()].into())
        );
        assert_eq!(labels("sum by (a) (x) / sum by (a) (y)"), Labels::Any);
        assert_eq!(
            labels("(sum by (namespace) (x))"),
            Labels::Known(["namespace".to_string()].into())
        );
        assert_eq!(labels("sum(x)"), Labels::Known(BTreeSet::new()));
        assert_eq!(labels("topk(3, x)"), Labels::Any);
    }
}
