//! Compiles a playbook's trigger: exactly one kind, its settings, and the labels its signals
//! will carry (which `${labels.x}` templates are checked against).

use std::collections::BTreeSet;
use std::time::Duration;

use promql_parser::parser::{Expr, LabelModifier};

use super::defaults;
use crate::action::TargetKind;
use crate::check::{Checker, Labels};
use crate::diagnostic::did_you_mean;
use crate::playbook::spec;
use crate::playbook::{Trigger, TriggerKind};

/// The trigger kinds, as the YAML names them.
pub const KINDS: &[&str] = &[
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

/// The labels every container-level built-in signal carries.
const CONTAINER_LABELS: &[&str] = &["namespace", "pod", "container"];

/// Where one trigger kind's settings live in the document.
struct At(String);

impl At {
    fn field(&self, name: &str) -> String {
        format!("{}/{name}", self.0)
    }
}

/// What compiling one kind produced.
type Compiled = Option<(TriggerKind, Labels)>;

/// Compiles `trigger`, or reports why it cannot be.
pub(super) fn compile(
    trigger: &spec::Trigger,
    checker: &mut Checker<'_>,
) -> Option<(Trigger, Labels)> {
    let name = exactly_one(trigger, checker)?;
    let at = At(format!("/spec/trigger/{name}"));
    let (kind, labels) = if let Some(t) = &trigger.promql {
        promql(t, &at, checker)
    } else if let Some(t) = &trigger.memory_leak {
        memory_leak(t, &at, checker)
    } else if let Some(t) = &trigger.latency {
        latency(t, &at, checker)
    } else if let Some(t) = &trigger.crash_loop {
        crash_loop(t, &at, checker)
    } else if let Some(t) = &trigger.error_rate {
        error_rate(t, &at, checker)
    } else if let Some(t) = &trigger.event {
        event(t, &at, checker)
    } else if let Some(t) = &trigger.schedule {
        schedule(t, &at, checker)
    } else if let Some(t) = &trigger.alert {
        alert(t)
    } else {
        None
    }?;

    let evaluated = !matches!(
        kind,
        TriggerKind::Schedule { .. } | TriggerKind::Alert { .. }
    );
    for (field, set) in [
        ("for", trigger.for_.is_some()),
        ("keepFiringFor", trigger.keep_firing_for.is_some()),
    ] {
        if set && !evaluated {
            let d = checker
                .at_key(
                    &format!("/spec/trigger/{field}"),
                    format!("`{field}` does not apply to a `{}` trigger", kind.name()),
                )
                .expected("`for` and `keepFiringFor` only on PromQL-based and event triggers");
            checker.push(d);
        }
    }
    let built_in = matches!(
        kind,
        TriggerKind::MemoryLeak { .. }
            | TriggerKind::Latency { .. }
            | TriggerKind::CrashLoop { .. }
            | TriggerKind::ErrorRate { .. }
    );
    if trigger.stale_after.is_some() && !built_in {
        let d = checker
            .at_key(
                "/spec/trigger/staleAfter",
                format!("`staleAfter` does not apply to a `{}` trigger", kind.name()),
            )
            .expected("`staleAfter` only on memoryLeak, latency, crashLoop and errorRate");
        checker.push(d);
    }
    let trigger = Trigger {
        kind,
        for_: checker.duration_or(
            "/spec/trigger/for",
            trigger.for_.as_ref(),
            Duration::ZERO,
            false,
        ),
        keep_firing_for: checker.duration_or(
            "/spec/trigger/keepFiringFor",
            trigger.keep_firing_for.as_ref(),
            Duration::ZERO,
            false,
        ),
        interval: checker.duration_or(
            "/spec/trigger/interval",
            trigger.interval.as_ref(),
            defaults::INTERVAL,
            true,
        ),
        stale_after: checker.duration_or(
            "/spec/trigger/staleAfter",
            trigger.stale_after.as_ref(),
            defaults::STALE_AFTER,
            true,
        ),
    };
    Some((trigger, labels))
}

/// The name of the one kind set, or an error when none or several are.
fn exactly_one(trigger: &spec::Trigger, checker: &mut Checker<'_>) -> Option<&'static str> {
    let set: Vec<&'static str> = [
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
    .zip(KINDS)
    .filter(|(set, _)| **set)
    .map(|(_, name)| *name)
    .collect();
    match set.as_slice() {
        [one] => Some(one),
        [] => {
            let d = checker
                .at("/spec/trigger", "the trigger sets no kind")
                .expected(format!("exactly one of {}", KINDS.join(", ")));
            checker.push(d);
            None
        }
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
            None
        }
    }
}

fn promql(t: &spec::PromqlTrigger, at: &At, checker: &mut Checker<'_>) -> Compiled {
    let labels = checker
        .promql(&at.field("expr"), &t.expr)
        .map_or(Labels::Any, |e| output_labels(&e));
    Some((
        TriggerKind::Promql {
            expr: t.expr.clone(),
        },
        labels,
    ))
}

fn memory_leak(t: &spec::MemoryLeakSignal, at: &At, checker: &mut Checker<'_>) -> Compiled {
    let (selector, selected) = selector(checker, at, t.selector.as_ref());
    let window = checker.duration_or(
        &at.field("window"),
        t.window.as_ref(),
        defaults::LEAK_WINDOW,
        true,
    );
    let horizon = checker.duration_or(&at.field("horizon"), Some(&t.horizon), Duration::ZERO, true);
    let min_growth = t.min_growth_mib_per_minute.unwrap_or(0.0);
    if min_growth < 0.0 {
        checker.error(&at.field("minGrowthMiBPerMinute"), "must not be negative");
    }
    let usage_metric = metric(
        checker,
        &at.field("usageMetric"),
        t.usage_metric.as_deref(),
        defaults::USAGE_METRIC,
    );
    let limit_metric = metric(
        checker,
        &at.field("limitMetric"),
        t.limit_metric.as_deref(),
        defaults::LIMIT_METRIC,
    );
    let kind = TriggerKind::MemoryLeak {
        selector,
        window,
        horizon,
        min_growth_mib_per_minute: min_growth,
        usage_metric,
        limit_metric,
    };
    Some((kind, known(CONTAINER_LABELS, selected)))
}

fn latency(t: &spec::LatencySignal, at: &At, checker: &mut Checker<'_>) -> Compiled {
    if !(t.quantile > 0.0 && t.quantile < 1.0) {
        let d = checker
            .at(
                &at.field("quantile"),
                format!("quantile {} is out of range", t.quantile),
            )
            .expected("a number between 0 and 1, such as 0.99");
        checker.push(d);
    }
    let threshold = checker.duration_or(
        &at.field("threshold"),
        Some(&t.threshold),
        Duration::ZERO,
        true,
    );
    let rate = Rate::compile(
        checker,
        at,
        RateSpec {
            selector: t.selector.as_ref(),
            metric: t.metric.as_deref(),
            default_metric: defaults::LATENCY_METRIC,
            window: t.window.as_ref(),
            by: t.by.as_ref(),
        },
    );
    let labels = rate.labels();
    let kind = TriggerKind::Latency {
        selector: rate.selector,
        metric: rate.metric,
        quantile: t.quantile,
        threshold,
        window: rate.window,
        by: rate.by,
    };
    Some((kind, labels))
}

fn crash_loop(t: &spec::CrashLoopSignal, at: &At, checker: &mut Checker<'_>) -> Compiled {
    let (selector, selected) = selector(checker, at, t.selector.as_ref());
    let window = checker.duration_or(
        &at.field("window"),
        t.window.as_ref(),
        defaults::CRASH_WINDOW,
        true,
    );
    let kind = TriggerKind::CrashLoop {
        selector,
        restarts: t.restarts,
        window,
    };
    Some((kind, known(CONTAINER_LABELS, selected)))
}

fn error_rate(t: &spec::ErrorRateSignal, at: &At, checker: &mut Checker<'_>) -> Compiled {
    if !(t.ratio > 0.0 && t.ratio <= 1.0) {
        let d = checker
            .at(
                &at.field("ratio"),
                format!("ratio {} is out of range", t.ratio),
            )
            .expected("a number above 0 and at most 1, such as 0.05 for 5%");
        checker.push(d);
    }
    let error_selector = match &t.error_selector {
        Some(s) => {
            checker.selector(&at.field("errorSelector"), s);
            s.clone()
        }
        None => defaults::ERROR_SELECTOR.to_string(),
    };
    let rate = Rate::compile(
        checker,
        at,
        RateSpec {
            selector: t.selector.as_ref(),
            metric: t.metric.as_deref(),
            default_metric: defaults::REQUESTS_METRIC,
            window: t.window.as_ref(),
            by: t.by.as_ref(),
        },
    );
    let labels = rate.labels();
    let kind = TriggerKind::ErrorRate {
        selector: rate.selector,
        metric: rate.metric,
        error_selector,
        ratio: t.ratio,
        window: rate.window,
        by: rate.by,
    };
    Some((kind, labels))
}

fn event(t: &spec::EventTrigger, at: &At, checker: &mut Checker<'_>) -> Compiled {
    if t.reason.is_empty() {
        checker.error(&at.field("reason"), "list at least one reason");
    }
    for (i, reason) in t.reason.iter().enumerate() {
        // Reasons are open-ended, so an unknown one is fine; a near miss of a well-known one
        // is almost certainly a typo that would never match.
        if !KNOWN_REASONS.contains(&reason.as_str())
            && let Some(help) = did_you_mean(reason, KNOWN_REASONS.iter().copied())
        {
            let d = checker
                .at(
                    &format!("{}/{i}", at.field("reason")),
                    format!("`{reason}` is not a reason Kubernetes reports"),
                )
                .help(Some(help))
                .warning();
            checker.push(d);
        }
    }
    let kind = TriggerKind::Event {
        kind: t.kind,
        reasons: t.reason.clone(),
        namespaces: t.namespaces.clone(),
    };
    // What the event store labels its samples with (see `signal::kube_event`).
    let labels: &[&str] = match t.kind {
        TargetKind::Pod => &["namespace", "name", "kind", "reason", "pod", "container"],
        TargetKind::Node => &["name", "kind", "reason", "node"],
        _ => &["namespace", "name", "kind", "reason"],
    };
    Some((kind, known(labels, BTreeSet::new())))
}

fn schedule(t: &spec::ScheduleTrigger, at: &At, checker: &mut Checker<'_>) -> Compiled {
    let schedule = checker.cron(&at.field("cron"), &t.cron)?;
    let kind = TriggerKind::Schedule {
        cron: t.cron.clone(),
        schedule: Box::new(schedule),
    };
    Some((kind, Labels::Nothing))
}

fn alert(t: &spec::AlertTrigger) -> Compiled {
    let kind = TriggerKind::Alert {
        alertname: t.alertname.clone(),
        labels: t.labels.clone(),
    };
    Some((kind, Labels::Any))
}

/// The settings `latency` and `errorRate` share, as written.
struct RateSpec<'a> {
    selector: Option<&'a String>,
    metric: Option<&'a str>,
    default_metric: &'static str,
    window: Option<&'a String>,
    by: Option<&'a Vec<String>>,
}

/// The settings `latency` and `errorRate` share, compiled.
struct Rate {
    selector: String,
    metric: String,
    window: Duration,
    by: Vec<String>,
}

impl Rate {
    fn compile(checker: &mut Checker<'_>, at: &At, spec: RateSpec<'_>) -> Self {
        let (selector, _) = selector(checker, at, spec.selector);
        Rate {
            selector,
            metric: metric(
                checker,
                &at.field("metric"),
                spec.metric,
                spec.default_metric,
            ),
            window: checker.duration_or(
                &at.field("window"),
                spec.window,
                defaults::RATE_WINDOW,
                true,
            ),
            by: spec
                .by
                .cloned()
                .unwrap_or_else(|| defaults::BY.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// Aggregated `by` these labels, the signals carry exactly them.
    fn labels(&self) -> Labels {
        Labels::Known(self.by.iter().cloned().collect())
    }
}

/// A `selector`, with the labels it matches (which the signals carry).
fn selector(
    checker: &mut Checker<'_>,
    at: &At,
    text: Option<&String>,
) -> (String, BTreeSet<String>) {
    match text {
        Some(text) => {
            let labels = checker
                .selector(&at.field("selector"), text)
                .unwrap_or_default();
            (text.clone(), labels)
        }
        None => (String::new(), BTreeSet::new()),
    }
}

fn known(names: &[&str], extra: BTreeSet<String>) -> Labels {
    let mut all: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    all.extend(extra);
    Labels::Known(all)
}

/// A metric override: a metric name, optionally with matchers.
fn metric(checker: &mut Checker<'_>, pointer: &str, text: Option<&str>, default: &str) -> String {
    let Some(text) = text else {
        return default.to_string();
    };
    match checker.promql(pointer, text) {
        Some(Expr::VectorSelector(_)) | None => {}
        Some(_) => checker.error(
            pointer,
            "expected a metric name, optionally with label matchers",
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregations_tell_which_labels_a_promql_trigger_carries() {
        let labels =
            |text: &str| output_labels(&promql_parser::parser::parse(text).expect("parses"));
        let set = |names: &[&str]| Labels::Known(names.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            labels("sum by (namespace, pod) (rate(x[5m])) > 1"),
            set(&["namespace", "pod"])
        );
        assert_eq!(labels("(sum by (namespace) (x))"), set(&["namespace"]));
        assert_eq!(labels("sum(x)"), set(&[]));
        assert_eq!(labels("topk(3, x)"), Labels::Any);
        assert_eq!(labels("sum by (a) (x) / sum by (a) (y)"), Labels::Any);
        assert_eq!(labels("sum without (pod) (x)"), Labels::Any);
    }
}
