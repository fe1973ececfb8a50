//! Compiles a playbook's `tests:` blocks: series in promtool's notation, alerts, Kubernetes
//! events, and the expected outcome, checked against the playbook's own steps.

use promql_parser::parser::Expr;

use super::defaults;
use crate::check::Checker;
use crate::diagnostic::did_you_mean;
use crate::plan::{Facts, ObjectRef, TargetFacts};
use crate::playbook::spec;
use crate::playbook::{PlaybookTest, Step, StepRun, TestEvent};
use crate::series;

/// Compiles one test; `steps` are the playbook's steps, `trigger` its trigger (which decides
/// whether it receives alerts or Kubernetes events).
pub(super) fn compile_test(
    test: &spec::PlaybookTest,
    pointer: &str,
    steps: &[Step],
    trigger: &spec::Trigger,
    checker: &mut Checker<'_>,
) -> Option<PlaybookTest> {
    let is_alert = trigger.alert.is_some();
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
        match crate::check::parse_promql(selector) {
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
    if test.series.is_empty() && test.alerts.is_empty() && test.events.is_empty() {
        let d = checker
            .at(pointer, "the test has no series, alerts or events")
            .expected("at least one entry under `series`, `alerts` or `events`");
        checker.push(d);
    }
    if trigger.event.is_some() && !test.series.is_empty() {
        let d = checker
            .at_key(&p("series"), "an `event` trigger reads no series")
            .expected("what the Kubernetes API reports, under `events`");
        checker.push(d);
    }
    let events = test
        .events
        .iter()
        .enumerate()
        .filter_map(|(i, event)| {
            compile_event(event, &format!("{}/{i}", p("events")), trigger, checker)
        })
        .collect();
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
        let names = expected_names(steps);
        for (i, name) in expected.iter().enumerate() {
            let at = format!("{pointer}/expect/steps/{i}");
            match steps.iter().find(|s| s.name == *name) {
                Some(Step {
                    run: StepRun::Wasm { .. },
                    ..
                }) => {
                    let d = checker
                        .at(&at, format!("`{name}` is a WASM step: it runs what it decides"))
                        .expected(format!(
                            "the actions it asks for (`{name}/1-<action>`, `{name}/2-<action>`...), or `{name}/escalate`; nothing when it skips"
                        ));
                    checker.push(d);
                }
                Some(_) => {}
                None if wasm_entry(steps, name) => {}
                None => {
                    let d = checker
                        .at(&at, format!("no step is named `{name}`"))
                        .help(did_you_mean(name, names.iter().map(String::as_str)));
                    checker.push(d);
                }
            }
        }
    }
    let at = test
        .expect
        .at
        .as_ref()
        .and_then(|a| checker.duration(&format!("{pointer}/expect/at"), a));
    let facts = test.facts.clone().unwrap_or(spec::TestFacts {
        owner: None,
        target: None,
        objects: Vec::new(),
    });
    for (i, object) in facts.objects.iter().enumerate() {
        check_object(object, &p(&format!("facts/objects/{i}")), checker);
    }
    let target = facts.target.unwrap_or_default();
    let revision_age = target
        .revision_age
        .as_ref()
        .and_then(|age| checker.duration(&p("facts/target/revisionAge"), age));
    Some(PlaybookTest {
        name: test.name.clone(),
        interval,
        series,
        alerts,
        events,
        facts: Facts {
            owner: facts.owner.map(|owner| ObjectRef {
                kind: owner.kind.unwrap_or_else(|| "Deployment".into()),
                name: owner.name,
                namespace: owner.namespace,
            }),
            target: TargetFacts {
                revision: target.revision,
                deployed_at: None,
                replicas: target.replicas,
                ready_replicas: target.ready_replicas,
                node: target.node,
                labels: target.labels,
                annotations: target.annotations,
            },
        },
        objects: facts.objects,
        revision_age,
        expect: test.expect.clone(),
        at,
    })
}

/// Checks that `object` (at `at`) is a manifest the test's API server can hold.
fn check_object(object: &serde_json::Value, at: &str, checker: &mut Checker<'_>) {
    for (pointer, field) in [
        ("/apiVersion", "apiVersion"),
        ("/kind", "kind"),
        ("/metadata/name", "metadata.name"),
    ] {
        if !object.pointer(pointer).is_some_and(|v| v.is_string()) {
            let d = checker
                .at(at, format!("the object has no `{field}`"))
                .expected("a Kubernetes manifest with `apiVersion`, `kind` and `metadata.name`");
            checker.push(d);
        }
    }
}

/// Compiles one Kubernetes event of a test at `at` (its JSON pointer).
fn compile_event(
    event: &spec::TestEvent,
    at: &str,
    trigger: &spec::Trigger,
    checker: &mut Checker<'_>,
) -> Option<TestEvent> {
    let Some(own) = &trigger.event else {
        checker.error(
            at,
            "only a playbook with an `event` trigger receives Kubernetes events",
        );
        return None;
    };
    let kind = event.kind.unwrap_or(own.kind);
    for (field, value) in [("name", &event.name), ("reason", &event.reason)] {
        if value.is_empty() {
            checker.error(&format!("{at}/{field}"), format!("`{field}` is empty"));
        }
    }
    match (&event.namespace, kind.is_namespaced()) {
        (None, true) => {
            let d = checker
                .at(at, format!("a {kind} needs a `namespace`"))
                .expected("the namespace of the involved object");
            checker.push(d);
        }
        (Some(_), false) => {
            let d = checker
                .at_key(
                    &format!("{at}/namespace"),
                    format!("a {kind} has no namespace"),
                )
                .expected("no `namespace` for a cluster-scoped kind");
            checker.push(d);
        }
        _ => {}
    }
    let from = checker.duration(&format!("{at}/at"), &event.at);
    let until = match &event.until {
        Some(until) => Some(checker.duration(&format!("{at}/until"), until)?),
        None => None,
    };
    if let (Some(from), Some(until)) = (from, until)
        && until < from
    {
        let d = checker
            .at(
                &format!("{at}/until"),
                format!(
                    "`until: {}` is before `at: {}`",
                    event.until.as_deref().unwrap_or_default(),
                    event.at
                ),
            )
            .expected("a time at or after `at`");
        checker.push(d);
    }
    Some(TestEvent {
        at: from?,
        until,
        kind,
        namespace: event.namespace.clone(),
        name: event.name.clone(),
        reason: event.reason.clone(),
        container: event.container.clone(),
    })
}

/// What `expect.steps` may name: the action steps, and for each WASM step the actions it may
/// ask for (`guard/1-rollout_undo`) and `guard/escalate`.
fn expected_names(steps: &[Step]) -> Vec<String> {
    let mut names = Vec::new();
    for step in steps {
        match &step.run {
            StepRun::Action(_) => names.push(step.name.clone()),
            StepRun::Wasm {
                allowed_actions, ..
            } => {
                names.extend(
                    allowed_actions
                        .iter()
                        .map(|a| format!("{}/1-{}", step.name, a.as_str())),
                );
                names.push(format!("{}/escalate", step.name));
            }
        }
    }
    names
}

/// Whether `name` is what a WASM step of `steps` may run, as the executor names it:
/// `<step>/<n>-<action>` for an action it may ask for (n from 1), or `<step>/escalate`.
fn wasm_entry(steps: &[Step], name: &str) -> bool {
    let Some((step, rest)) = name.split_once('/') else {
        return false;
    };
    let Some(StepRun::Wasm {
        allowed_actions, ..
    }) = steps.iter().find(|s| s.name == step).map(|s| &s.run)
    else {
        return false;
    };
    if rest == "escalate" {
        return true;
    }
    rest.split_once('-').is_some_and(|(n, action)| {
        n.parse::<u32>().is_ok_and(|n| n >= 1)
            && allowed_actions.iter().any(|a| a.as_str() == action)
    })
}
