//! The short account of a remediation for people — in an approval request and in a `notify`
//! message: what broke, why, what Salve wants to do, and what happens if nobody answers.

use std::time::Duration;

use crate::advisor::consult::printable;
use crate::check::format_duration;
use crate::plan::{Decision, Plan, PlannedStep};
use crate::risk::Risk;
use crate::signal::state::LabelSet;

use super::Context;

/// The account of `plan` when `current` (if any) and then the plan's steps from `from` on are
/// still to run, under `ceiling` (the advisor's caution included), with approvals that
/// expire after `timeout`.
pub(super) fn situation(
    context: &Context,
    plan: &Plan,
    (current, from): (Option<&PlannedStep>, usize),
    ceiling: Risk,
    timeout: Duration,
) -> String {
    let labels: LabelSet =
        serde_json::from_value(context.evidence["labels"].clone()).unwrap_or_default();
    let value = context.evidence["value"]
        .as_f64()
        .map(|v| format!(" (value {v})"))
        .unwrap_or_default();
    let mut lines = vec![format!(
        "What broke: {} fired for {} on {}{value}.",
        context.playbook,
        crate::incident::describe(&labels),
        plan.target
    )];
    lines.push(match &context.why {
        Some(why) => format!("Why: {}", printable(why)),
        None => "Why: no advisor was consulted; see `salve explain` for the signals.".into(),
    });
    let mut needs_approval = Vec::new();
    let next: Vec<String> = current
        .into_iter()
        .chain(plan.steps.iter().skip(from))
        .filter(|s| !matches!(s.decision, Decision::Skip(_)))
        .map(|s| {
            let asks = context.caution.approval || s.risk > ceiling;
            if asks {
                needs_approval.push(s.name.as_str());
            }
            let action = s.action.map_or("wasm", |a| a.as_str());
            let approval = if asks { ", needs approval" } else { "" };
            format!("{} ({action}, risk {}{approval})", s.name, s.risk)
        })
        .collect();
    lines.push(if next.is_empty() {
        "Salve wants to: nothing more; it verifies and closes.".into()
    } else {
        format!("Salve wants to: {}.", next.join(" → "))
    });
    lines.push(if needs_approval.is_empty() {
        "If nobody answers: nothing waits for a human; Salve goes on within its ceiling.".into()
    } else {
        format!(
            "If nobody answers within {}: {} is rejected and the plan halts there; steps already done stay as they are.",
            format_duration(timeout),
            needs_approval.join(", ")
        )
    });
    lines.join("\n")
}
