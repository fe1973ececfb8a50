//! Salve's own metrics, in the OpenMetrics text format (`GET /metrics`).
//!
//! One [`Metrics`] per engine; clones share one registry, so the live loop, the engine loop and
//! the executor each hold a clone and record with one typed call where the thing happens
//! (`metrics.verdict(risk, &verdict)`, `metrics.action(kind, ok, dry_run)`, ...). The names are
//! the constants in [`names`]; the README's "Metrics" section lists every family with its type
//! and labels, and a test keeps the two in step.
//!
//! Labels stay bounded: playbook names, risks, verdicts, action kinds, outcomes and reason
//! codes — never incident ids, pods or targets. Label values known up front (advisor reason
//! codes, approval answers, reload outcomes, breaker states, WASM outcomes, rollback outcomes)
//! are registered at zero, so their series exist before the first event and `rate()` and
//! alerts work from the start.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::advisor::answer::Rejection;
use crate::advisor::consult::{Consultation, FAILURES, Outcome};
use crate::gate::{Breaker, Verdict};
use crate::incident::{IncidentEvent, IncidentTransition};
use crate::playbook::watch::ReloadOutcome;
use crate::risk::Risk;
use crate::signal::state::Transition;

/// The metric families' names as exposed (counters with their `_total`, units in the name).
pub mod names {
    /// Counter: trigger evaluations, by playbook.
    pub const EVALUATIONS: &str = "salve_evaluations_total";
    /// Counter: evaluations that could not conclude (no data, errors, NaN, stale inputs), by
    /// playbook.
    pub const EVALUATIONS_INCONCLUSIVE: &str = "salve_evaluations_inconclusive_total";
    /// Gauge: series pending or firing now, by playbook and state.
    pub const SIGNALS: &str = "salve_signals";
    /// Counter: signal transitions, by playbook and transition.
    pub const SIGNAL_TRANSITIONS: &str = "salve_signal_transitions_total";
    /// Counter: incidents opened, by playbook.
    pub const INCIDENTS_OPENED: &str = "salve_incidents_opened_total";
    /// Counter: incidents reopened within their cooldown, by playbook.
    pub const INCIDENTS_REOPENED: &str = "salve_incidents_reopened_total";
    /// Counter: incidents resolved, by playbook.
    pub const INCIDENTS_RESOLVED: &str = "salve_incidents_resolved_total";
    /// Gauge: incidents open now, by playbook.
    pub const INCIDENTS_OPEN: &str = "salve_incidents_open";
    /// Histogram: from the root signal starting to hold to the incident opening (MTTD).
    pub const TIME_TO_DETECT: &str = "salve_incident_time_to_detect_seconds";
    /// Histogram: from the root signal starting to hold to the incident resolving (MTTR).
    pub const TIME_TO_RESOLVE: &str = "salve_incident_time_to_resolve_seconds";
    /// Counter: remediations finished, by playbook and outcome.
    pub const REMEDIATIONS: &str = "salve_remediations_total";
    /// Counter: gate verdicts, by the step's risk and the verdict.
    pub const GATE_VERDICTS: &str = "salve_gate_verdicts_total";
    /// Counter: actions run, by kind, outcome and dry run.
    pub const ACTIONS: &str = "salve_actions_total";
    /// Counter: rollbacks finished, by outcome.
    pub const ROLLBACKS: &str = "salve_rollbacks_total";
    /// Gauge: the executor's circuit breaker, one series per state, 1 for the current one.
    pub const CIRCUIT_BREAKER: &str = "salve_circuit_breaker_state";
    /// Gauge: 1 while this replica holds the lead (`--leader-elect`), else 0.
    pub const LEADER: &str = "salve_leader";
    /// Counter: approvals requested.
    pub const APPROVALS_REQUESTED: &str = "salve_approvals_requested_total";
    /// Gauge: approvals the engine is waiting for now.
    pub const APPROVALS_PENDING: &str = "salve_approvals_pending";
    /// Counter: approvals answered by a human, by answer.
    pub const APPROVALS_ANSWERED: &str = "salve_approvals_answered_total";
    /// Counter: approvals with no answer by their deadline (so: rejected).
    pub const APPROVALS_EXPIRED: &str = "salve_approvals_expired_total";
    /// Counter: playbook set reloads, by outcome.
    pub const RELOADS: &str = "salve_reloads_total";
    /// Gauge: 1 when the last load or reload of the playbook set succeeded, else 0.
    pub const RELOAD_LAST_SUCCESSFUL: &str = "salve_reload_last_successful";
    /// Counter: WASM step evaluations, by outcome (the module's decision, or failed).
    pub const WASM_STEPS: &str = "salve_wasm_steps_total";
    /// Histogram: a WASM step's evaluation time, instantiation included.
    pub const WASM_STEP_DURATION: &str = "salve_wasm_step_duration_seconds";
    /// Counter: LLM advisor consultations, by outcome.
    pub const ADVISOR_CONSULTATIONS: &str = "salve_advisor_consultations_total";
    /// Counter: advisor consultations that gave no usable advice, by reason code.
    pub const ADVISOR_REJECTIONS: &str = "salve_advisor_rejections_total";
    /// Histogram: an advisor consultation's time.
    pub const ADVISOR_DURATION: &str = "salve_advisor_consultation_duration_seconds";

    /// Every family, as exposed.
    pub const ALL: [&str; 27] = [
        EVALUATIONS,
        EVALUATIONS_INCONCLUSIVE,
        SIGNALS,
        SIGNAL_TRANSITIONS,
        INCIDENTS_OPENED,
        INCIDENTS_REOPENED,
        INCIDENTS_RESOLVED,
        INCIDENTS_OPEN,
        TIME_TO_DETECT,
        TIME_TO_RESOLVE,
        REMEDIATIONS,
        GATE_VERDICTS,
        ACTIONS,
        ROLLBACKS,
        CIRCUIT_BREAKER,
        LEADER,
        APPROVALS_REQUESTED,
        APPROVALS_PENDING,
        APPROVALS_ANSWERED,
        APPROVALS_EXPIRED,
        RELOADS,
        RELOAD_LAST_SUCCESSFUL,
        WASM_STEPS,
        WASM_STEP_DURATION,
        ADVISOR_CONSULTATIONS,
        ADVISOR_REJECTIONS,
        ADVISOR_DURATION,
    ];
}

/// Time to detect: a second to two hours.
const DETECT_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];
/// Time to resolve: half a minute to a day.
const RESOLVE_BUCKETS: [f64; 12] = [
    30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];
/// A WASM step: a warm evaluation (microseconds) to its epoch deadline (seconds).
const WASM_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// An LLM consultation: a cached answer to the call's timeout.
const ADVISOR_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The breaker's states, as [`Breaker::as_str`] spells them.
const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];
/// A WASM step's outcomes: the module's decision, or failed (a trap, a limit, a bad answer).
const WASM_OUTCOMES: [&str; 4] = ["proceed", "skip", "escalate", "failed"];
/// How a reload of the playbook set went.
const RELOAD_OUTCOMES: [&str; 3] = ["applied", "unchanged", "rejected"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByPlaybook {
    playbook: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalState {
    playbook: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalTransition {
    playbook: String,
    transition: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Remediation {
    playbook: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateVerdict {
    risk: &'static str,
    verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionRun {
    action: &'static str,
    outcome: &'static str,
    dry_run: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByOutcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByState {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByAnswer {
    answer: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByReason {
    reason: &'static str,
}

type Histograms = Family<ByPlaybook, Histogram, fn() -> Histogram>;

/// The engine's metrics. Cheap to clone: clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    evaluations: Family<ByPlaybook, Counter>,
    inconclusive: Family<ByPlaybook, Counter>,
    signals: Family<SignalState, Gauge>,
    transitions: Family<SignalTransition, Counter>,
    opened: Family<ByPlaybook, Counter>,
    reopened: Family<ByPlaybook, Counter>,
    resolved: Family<ByPlaybook, Counter>,
    open: Family<ByPlaybook, Gauge>,
    detect: Histograms,
    resolve: Histograms,
    remediations: Family<Remediation, Counter>,
    verdicts: Family<GateVerdict, Counter>,
    actions: Family<ActionRun, Counter>,
    rollbacks: Family<ByOutcome, Counter>,
    breaker: Family<ByState, Gauge>,
    /// Held while the breaker's series are switched, so that one state at a time reads 1.
    breaker_lock: Mutex<()>,
    leader: Gauge,
    approvals_requested: Counter,
    approvals_pending: Gauge,
    approvals_answered: Family<ByAnswer, Counter>,
    approvals_expired: Counter,
    reloads: Family<ByOutcome, Counter>,
    reload_ok: Gauge,
    wasm_steps: Family<ByOutcome, Counter>,
    wasm_duration: Histogram,
    consultations: Family<ByOutcome, Counter>,
    rejections: Family<ByReason, Counter>,
    advisor_duration: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Arc::new(Inner::new()),
        }
    }
}

/// Registers `metric` as `name` (the exposed name: the encoder adds a counter's `_total` and
/// a unit's `_seconds` itself, and a full stop to the help) and returns it. A family is listed
/// (`# HELP`, `# TYPE`) before it has a series, so every family shows from the first scrape.
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    let name = name.strip_suffix("_total").unwrap_or(name);
    let help = help.strip_suffix('.').unwrap_or(help);
    let listed = Listed(metric.clone());
    match name.strip_suffix("_seconds") {
        Some(base) => registry.register_with_unit(base, help, Unit::Seconds, listed),
        None => registry.register(name, help, listed),
    }
    metric
}

/// A metric that is encoded even with no series (the registry skips empty families).
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

impl Inner {
    fn new() -> Self {
        use names::*;
        let mut r = Registry::default();
        let r = &mut r;
        let detect: Histograms = Family::new_with_constructor(|| Histogram::new(DETECT_BUCKETS));
        let resolve: Histograms = Family::new_with_constructor(|| Histogram::new(RESOLVE_BUCKETS));
        let inner = Inner {
            evaluations: add(r, EVALUATIONS, "Trigger evaluations.", Family::default()),
            inconclusive: add(
                r,
                EVALUATIONS_INCONCLUSIVE,
                "Trigger evaluations that could not conclude (no data, a query error, NaN, stale \
                 inputs): never taken for healthy or broken.",
                Family::default(),
            ),
            signals: add(
                r,
                SIGNALS,
                "Series whose signal is pending or firing now.",
                Family::default(),
            ),
            transitions: add(
                r,
                SIGNAL_TRANSITIONS,
                "Signal transitions: pending, firing, resolved, inconclusive.",
                Family::default(),
            ),
            opened: add(r, INCIDENTS_OPENED, "Incidents opened.", Family::default()),
            reopened: add(
                r,
                INCIDENTS_REOPENED,
                "Incidents reopened within their cooldown (not remediated again).",
                Family::default(),
            ),
            resolved: add(
                r,
                INCIDENTS_RESOLVED,
                "Incidents resolved.",
                Family::default(),
            ),
            open: add(r, INCIDENTS_OPEN, "Incidents open now.", Family::default()),
            detect: add(
                r,
                TIME_TO_DETECT,
                "Time from the root signal starting to hold to its incident opening (MTTD).",
                detect,
            ),
            resolve: add(
                r,
                TIME_TO_RESOLVE,
                "Time from the root signal starting to hold to its incident's first resolution \
                 (MTTR).",
                resolve,
            ),
            remediations: add(
                r,
                REMEDIATIONS,
                "Remediations finished, by how they ended.",
                Family::default(),
            ),
            verdicts: add(
                r,
                GATE_VERDICTS,
                "The gate's verdicts on steps, by the step's risk.",
                Family::default(),
            ),
            actions: add(
                r,
                ACTIONS,
                "Actions run (steps and undo steps), by kind and outcome.",
                Family::default(),
            ),
            rollbacks: add(
                r,
                ROLLBACKS,
                "Rollbacks finished: complete, or incomplete (a human must look).",
                Family::default(),
            ),
            breaker: add(
                r,
                CIRCUIT_BREAKER,
                "The executor's circuit breaker: 1 for its state at the last gate decision or \
                 action result.",
                Family::default(),
            ),
            breaker_lock: Mutex::new(()),
            leader: add(
                r,
                LEADER,
                "1 while this replica holds the lead and may act (--leader-elect; a single \
                 replica always does), else 0.",
                Gauge::default(),
            ),
            approvals_requested: add(
                r,
                APPROVALS_REQUESTED,
                "Approvals requested for steps above the risk ceiling.",
                Counter::default(),
            ),
            approvals_pending: add(
                r,
                APPROVALS_PENDING,
                "Approvals the engine is waiting for.",
                Gauge::default(),
            ),
            approvals_answered: add(
                r,
                APPROVALS_ANSWERED,
                "Approvals answered by a human.",
                Family::default(),
            ),
            approvals_expired: add(
                r,
                APPROVALS_EXPIRED,
                "Approvals with no answer by their deadline: rejected.",
                Counter::default(),
            ),
            reloads: add(
                r,
                RELOADS,
                "Reloads of the playbook set.",
                Family::default(),
            ),
            reload_ok: add(
                r,
                RELOAD_LAST_SUCCESSFUL,
                "1 when the last load or reload of the playbook set succeeded; 0 when it was \
                 rejected (the last good set keeps running).",
                Gauge::default(),
            ),
            wasm_steps: add(
                r,
                WASM_STEPS,
                "WASM step evaluations, by the module's decision (or failed).",
                Family::default(),
            ),
            wasm_duration: add(
                r,
                WASM_STEP_DURATION,
                "A WASM step's evaluation time, instantiation included.",
                Histogram::new(WASM_BUCKETS),
            ),
            consultations: add(
                r,
                ADVISOR_CONSULTATIONS,
                "Consultations of the LLM advisor: advice accepted, or rejected.",
                Family::default(),
            ),
            rejections: add(
                r,
                ADVISOR_REJECTIONS,
                "Advisor consultations that gave no usable advice, by reason code.",
                Family::default(),
            ),
            advisor_duration: add(
                r,
                ADVISOR_DURATION,
                "An advisor consultation's time.",
                Histogram::new(ADVISOR_BUCKETS),
            ),
            registry: std::mem::take(r),
        };
        // The label values known up front, at zero (the breaker closed, the set loaded: Salve
        // starts only with a valid one).
        for outcome in ["complete", "incomplete"] {
            inner.rollbacks.get_or_create_owned(&ByOutcome { outcome });
        }
        for state in BREAKER_STATES {
            inner
                .breaker
                .get_or_create(&ByState { state })
                .set(i64::from(state == "closed"));
        }
        // A single replica leads; an elected one says otherwise until it wins.
        inner.leader.set(1);
        for answer in ["approved", "rejected"] {
            inner
                .approvals_answered
                .get_or_create_owned(&ByAnswer { answer });
        }
        for outcome in RELOAD_OUTCOMES {
            inner.reloads.get_or_create_owned(&ByOutcome { outcome });
        }
        inner.reload_ok.set(1);
        for outcome in WASM_OUTCOMES {
            inner.wasm_steps.get_or_create_owned(&ByOutcome { outcome });
        }
        for outcome in ["advice", "rejected"] {
            inner
                .consultations
                .get_or_create_owned(&ByOutcome { outcome });
        }
        for reason in FAILURES.into_iter().chain(Rejection::REASONS) {
            inner.rejections.get_or_create_owned(&ByReason { reason });
        }
        inner
    }
}

/// Seconds from `from` to `to`, never negative.
fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).to_std().unwrap_or_default().as_secs_f64()
}

fn yes_no(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

impl Metrics {
    /// The metrics in the OpenMetrics text format, `# EOF` included.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// An evaluation of `playbook`'s trigger, inconclusive in part or in whole or not.
    pub fn evaluated(&self, playbook: &str, inconclusive: bool) {
        let by = ByPlaybook {
            playbook: playbook.to_string(),
        };
        self.inner.evaluations.get_or_create(&by).inc();
        if inconclusive {
            self.inner.inconclusive.get_or_create(&by).inc();
        }
    }

    /// How many of `playbook`'s series are pending and firing now.
    pub fn signals(&self, playbook: &str, pending: usize, firing: usize) {
        for (state, count) in [("pending", pending), ("firing", firing)] {
            let label = SignalState {
                playbook: playbook.to_string(),
                state,
            };
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.inner.signals.get_or_create(&label).set(count);
        }
    }

    /// `playbook` is no longer in the set: its signal gauges go (its counters stay, as
    /// counters do).
    pub fn playbook_removed(&self, playbook: &str) {
        for state in ["pending", "firing"] {
            self.inner.signals.remove(&SignalState {
                playbook: playbook.to_string(),
                state,
            });
        }
    }

    /// A signal transition of `playbook`.
    pub fn signal(&self, playbook: &str, transition: &Transition) {
        let transition = match transition {
            Transition::Pending => "pending",
            Transition::Firing => "firing",
            Transition::Resolved => "resolved",
            Transition::Inconclusive { .. } => "inconclusive",
        };
        let label = SignalTransition {
            playbook: playbook.to_string(),
            transition,
        };
        self.inner.transitions.get_or_create(&label).inc();
    }

    /// An incident opened, reopened or resolved. Opening observes the time to detect (when the
    /// root signal's start is known); the first resolution the time to resolve, from the root
    /// signal's start (or the opening, when that is unknown).
    pub fn incident(&self, event: &IncidentEvent) {
        let incident = &event.incident;
        let by = ByPlaybook {
            playbook: incident.playbook.clone(),
        };
        let inner = &self.inner;
        match event.transition {
            IncidentTransition::Opened => {
                inner.opened.get_or_create(&by).inc();
                inner.open.get_or_create(&by).inc();
                if let Some(active_at) = incident.active_at {
                    let took = seconds(active_at, incident.opened_at);
                    inner.detect.get_or_create(&by).observe(took);
                }
            }
            IncidentTransition::Reopened => {
                inner.reopened.get_or_create(&by).inc();
                inner.open.get_or_create(&by).inc();
            }
            IncidentTransition::Resolved => {
                inner.resolved.get_or_create(&by).inc();
                inner.open.get_or_create(&by).dec();
                if incident.reopened == 0 {
                    let start = incident.active_at.unwrap_or(incident.opened_at);
                    let end = incident.resolved_at.unwrap_or(event.at);
                    inner
                        .resolve
                        .get_or_create(&by)
                        .observe(seconds(start, end));
                }
            }
        }
    }

    /// A remediation of `playbook` finished, ending as `outcome` (`Finish::name`).
    pub fn remediation(&self, playbook: &str, outcome: &'static str) {
        let label = Remediation {
            playbook: playbook.to_string(),
            outcome,
        };
        self.inner.remediations.get_or_create(&label).inc();
    }

    /// The gate's `verdict` on a step of `risk`.
    pub fn verdict(&self, risk: Risk, verdict: &Verdict) {
        let label = GateVerdict {
            risk: risk.as_str(),
            verdict: verdict.name(),
        };
        self.inner.verdicts.get_or_create(&label).inc();
    }

    /// An action of `kind` ran: succeeded (`ok`) or failed, as a dry run or not.
    pub fn action(&self, kind: &'static str, ok: bool, dry_run: bool) {
        let label = ActionRun {
            action: kind,
            outcome: if ok { "succeeded" } else { "failed" },
            dry_run: yes_no(dry_run),
        };
        self.inner.actions.get_or_create(&label).inc();
    }

    /// A rollback finished: `complete`, or some undo failed or was left to a human.
    pub fn rollback(&self, complete: bool) {
        let outcome = if complete { "complete" } else { "incomplete" };
        self.inner
            .rollbacks
            .get_or_create(&ByOutcome { outcome })
            .inc();
    }

    /// The circuit breaker's state now.
    pub fn breaker(&self, state: Breaker) {
        let _switching = self
            .inner
            .breaker_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for name in BREAKER_STATES {
            let value = i64::from(name == state.as_str());
            self.inner
                .breaker
                .get_or_create(&ByState { state: name })
                .set(value);
        }
    }

    /// Whether this replica leads now.
    pub fn leader(&self, leads: bool) {
        self.inner.leader.set(i64::from(leads));
    }

    /// An approval was requested.
    pub fn approval_requested(&self) {
        self.inner.approvals_requested.inc();
    }

    /// The engine waits for an approval's answer until the returned guard is dropped (so a
    /// remediation parked at shutdown stops counting too).
    pub fn approval_pending(&self) -> PendingApproval {
        self.inner.approvals_pending.inc();
        PendingApproval {
            gauge: self.inner.approvals_pending.clone(),
        }
    }

    /// A human answered an approval: approved or rejected.
    pub fn approval_answered(&self, approved: bool) {
        let answer = if approved { "approved" } else { "rejected" };
        self.inner
            .approvals_answered
            .get_or_create(&ByAnswer { answer })
            .inc();
    }

    /// An approval got no answer by its deadline.
    pub fn approval_expired(&self) {
        self.inner.approvals_expired.inc();
    }

    /// A reload of the playbook set (the watcher's outcome).
    pub fn reload(&self, outcome: &ReloadOutcome) {
        let (outcome, ok) = match outcome {
            ReloadOutcome::Applied { .. } => ("applied", true),
            ReloadOutcome::Unchanged { .. } => ("unchanged", true),
            ReloadOutcome::Rejected { .. } => ("rejected", false),
        };
        self.inner
            .reloads
            .get_or_create(&ByOutcome { outcome })
            .inc();
        self.inner.reload_ok.set(i64::from(ok));
    }

    /// A WASM step was evaluated: its `outcome` (the decision's name, or `failed`) and, when
    /// it ran to an answer, how long it took.
    pub fn wasm_step(&self, outcome: &'static str, took: Option<Duration>) {
        self.inner
            .wasm_steps
            .get_or_create(&ByOutcome { outcome })
            .inc();
        if let Some(took) = took {
            self.inner.wasm_duration.observe(took.as_secs_f64());
        }
    }

    /// The LLM advisor was consulted: advice, or a rejection with its reason code.
    pub fn advice(&self, consultation: &Consultation) {
        let outcome = match &consultation.outcome {
            Outcome::Advice(_) => "advice",
            Outcome::Rejected { reason, .. } => {
                self.inner
                    .rejections
                    .get_or_create(&ByReason { reason })
                    .inc();
                "rejected"
            }
        };
        self.inner
            .consultations
            .get_or_create(&ByOutcome { outcome })
            .inc();
        self.inner
            .advisor_duration
            .observe(consultation.took.as_secs_f64());
    }
}

/// An approval the engine waits for: counted in `salve_approvals_pending` until dropped.
#[derive(Debug)]
#[must_use = "the approval counts as pending only while this is held"]
pub struct PendingApproval {
    gauge: Gauge,
}

impl Drop for PendingApproval {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `series` (name and labels as exposed), if it is there.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_family_is_exposed_with_help_and_type() {
        let text = Metrics::default().encode();
        for name in names::ALL {
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no HELP for {name}:\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "no TYPE for {name}:\n{text}"
            );
        }
        assert!(text.contains("# TYPE salve_gate_verdicts counter"));
        assert!(text.contains("# TYPE salve_incident_time_to_detect_seconds histogram"));
        assert!(text.contains("# UNIT salve_incident_time_to_detect_seconds seconds"));
        assert!(text.contains("# TYPE salve_approvals_pending gauge"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn known_label_values_exist_at_zero() {
        let text = Metrics::default().encode();
        for reason in FAILURES.into_iter().chain(Rejection::REASONS) {
            let series = format!("salve_advisor_rejections_total{{reason=\"{reason}\"}}");
            assert_eq!(value(&text, &series), Some(0.0), "{series}");
        }
        assert_eq!(
            value(&text, "salve_circuit_breaker_state{state=\"closed\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "salve_circuit_breaker_state{state=\"open\"}"),
            Some(0.0)
        );
        assert_eq!(value(&text, "salve_reload_last_successful"), Some(1.0));
        assert_eq!(
            value(&text, "salve_rollbacks_total{outcome=\"incomplete\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "salve_approvals_answered_total{answer=\"approved\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn recording_moves_the_right_series() {
        let metrics = Metrics::default();
        let clone = metrics.clone();
        clone.evaluated("leak", true);
        clone.evaluated("leak", false);
        clone.signals("leak", 2, 1);
        clone.signal("leak", &Transition::Firing);
        metrics.verdict(
            Risk::Medium,
            &Verdict::NeedsApproval {
                ceiling: crate::gate::Ceiling {
                    risk: Risk::Low,
                    set_by: crate::gate::CeilingSource::Policy,
                },
                reason: String::new(),
            },
        );
        metrics.action("rollout_undo", true, false);
        metrics.action("rollout_undo", false, true);
        metrics.rollback(false);
        metrics.remediation("leak", "rolled_back");
        metrics.breaker(Breaker::Open { until: Utc::now() });
        metrics.approval_requested();
        let pending = metrics.approval_pending();
        metrics.approval_expired();
        metrics.approval_answered(true);
        metrics.wasm_step("proceed", Some(Duration::from_millis(3)));
        metrics.wasm_step("failed", None);
        let text = metrics.encode();
        let is = |series: &str, expected: f64| {
            assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
        };
        is("salve_evaluations_total{playbook=\"leak\"}", 2.0);
        is(
            "salve_evaluations_inconclusive_total{playbook=\"leak\"}",
            1.0,
        );
        is("salve_signals{playbook=\"leak\",state=\"pending\"}", 2.0);
        is("salve_signals{playbook=\"leak\",state=\"firing\"}", 1.0);
        is(
            "salve_signal_transitions_total{playbook=\"leak\",transition=\"firing\"}",
            1.0,
        );
        is(
            "salve_gate_verdicts_total{risk=\"medium\",verdict=\"needs_approval\"}",
            1.0,
        );
        is(
            "salve_actions_total{action=\"rollout_undo\",outcome=\"succeeded\",dry_run=\"false\"}",
            1.0,
        );
        is(
            "salve_actions_total{action=\"rollout_undo\",outcome=\"failed\",dry_run=\"true\"}",
            1.0,
        );
        is("salve_rollbacks_total{outcome=\"incomplete\"}", 1.0);
        is("salve_rollbacks_total{outcome=\"complete\"}", 0.0);
        is(
            "salve_remediations_total{playbook=\"leak\",outcome=\"rolled_back\"}",
            1.0,
        );
        is("salve_circuit_breaker_state{state=\"open\"}", 1.0);
        is("salve_circuit_breaker_state{state=\"closed\"}", 0.0);
        is("salve_approvals_requested_total", 1.0);
        is("salve_approvals_pending", 1.0);
        is("salve_approvals_expired_total", 1.0);
        is("salve_approvals_answered_total{answer=\"approved\"}", 1.0);
        is("salve_wasm_steps_total{outcome=\"proceed\"}", 1.0);
        is("salve_wasm_steps_total{outcome=\"failed\"}", 1.0);
        is("salve_wasm_step_duration_seconds_count", 1.0);
        is("salve_wasm_step_duration_seconds_bucket{le=\"0.005\"}", 1.0);
        is(
            "salve_wasm_step_duration_seconds_bucket{le=\"0.0025\"}",
            0.0,
        );
        drop(pending);
        assert_eq!(
            value(&metrics.encode(), "salve_approvals_pending"),
            Some(0.0)
        );
        metrics.playbook_removed("leak");
        assert!(!metrics.encode().contains("salve_signals{"));
    }

    #[test]
    fn incidents_count_and_time_detection_and_resolution() {
        let metrics = Metrics::default();
        let at = |minute: i64| DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::minutes(minute);
        let incident = crate::incident::Incident {
            id: "i".into(),
            playbook: "leak".into(),
            target: None,
            root: Default::default(),
            active_at: Some(at(0)),
            signals: Default::default(),
            opened_at: at(2),
            resolved_at: None,
            reopened: 0,
        };
        let event = |transition, incident: &crate::incident::Incident| IncidentEvent {
            at: incident.resolved_at.unwrap_or(incident.opened_at),
            transition,
            incident: incident.clone(),
            labels: Default::default(),
            values: Default::default(),
        };
        metrics.incident(&event(IncidentTransition::Opened, &incident));
        let text = metrics.encode();
        let by = "{playbook=\"leak\"}";
        assert_eq!(
            value(&text, &format!("salve_incidents_opened_total{by}")),
            Some(1.0)
        );
        assert_eq!(
            value(&text, &format!("salve_incidents_open{by}")),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("salve_incident_time_to_detect_seconds_sum{by}")
            ),
            Some(120.0)
        );
        let resolved = crate::incident::Incident {
            resolved_at: Some(at(12)),
            ..incident
        };
        metrics.incident(&event(IncidentTransition::Resolved, &resolved));
        let text = metrics.encode();
        assert_eq!(
            value(&text, &format!("salve_incidents_resolved_total{by}")),
            Some(1.0)
        );
        assert_eq!(
            value(&text, &format!("salve_incidents_open{by}")),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("salve_incident_time_to_resolve_seconds_sum{by}")
            ),
            Some(720.0)
        );
    }

    #[test]
    fn reloads_say_whether_the_last_one_succeeded() {
        let metrics = Metrics::default();
        metrics.reload(&ReloadOutcome::Rejected {
            diagnostics: Vec::new(),
            took: Duration::ZERO,
        });
        let text = metrics.encode();
        assert_eq!(
            value(&text, "salve_reloads_total{outcome=\"rejected\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "salve_reload_last_successful"), Some(0.0));
        metrics.reload(&ReloadOutcome::Unchanged {
            took: Duration::ZERO,
        });
        assert_eq!(
            value(&metrics.encode(), "salve_reload_last_successful"),
            Some(1.0)
        );
    }

    #[test]
    fn the_readme_lists_every_family() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Metrics\n")
            .nth(1)
            .expect("README.md has a `## Metrics` section");
        for name in names::ALL {
            assert!(
                section.contains(&format!("`{name}`")),
                "README's Metrics section does not list `{name}`"
            );
        }
    }
}
