//! The gate: whether a step of a plan may run on its own now, under the autonomy policy.
//!
//! For each step the gate gives a [`Verdict`], checking in this order, so that a stricter rule
//! is never hidden behind a laxer one:
//!
//! 0. **Scope.** A step whose target is outside this Salve's [`Scope`] (another namespace,
//!    another node, a workload for a node-local Salve, or a target it cannot place) is denied
//!    ([`Denial::OutOfScope`]) before anything else: no human can approve it here either.
//! 1. **Risk.** The effective [`Ceiling`] is the lowest of the policy's global
//!    `maxAutonomousRisk`, the namespace's override and the playbook's own
//!    `maxAutonomousRisk` — and never above `high`: a `critical` step always needs a human
//!    (see [`Risk::Critical`]), whatever the policy says. A step at or under the ceiling may
//!    run; a step above it gets [`Verdict::NeedsApproval`], whatever else holds, and the plan
//!    stops there.
//! 2. **Freeze.** While a freeze window is in force, steps above `none` get [`Verdict::Hold`]
//!    until it ends; `none` steps (capture logs, notify, wait) change nothing and still run —
//!    the policy schema's own words: "windows in which nothing above `none` runs on its own".
//!    A window limited to some namespaces also holds *cluster-scoped* targets (a node, say):
//!    such a change reaches the frozen namespaces too.
//! 3. **Circuit breaker.** After `circuitBreaker.failures` consecutive action failures the
//!    breaker opens and every step is denied until `reset` has passed; then it is half-open
//!    and exactly one trial action may run: its success closes the breaker, its failure
//!    opens it again for another `reset`.
//! 4. **Limits.** At most `actionsPerHour` actions in any rolling hour, and at most
//!    `concurrentIncidents` incidents being remediated at once. An incident already being
//!    remediated is never denied for the limit it is itself part of, so lowering the limit
//!    on reload lets running remediations finish and only holds back new ones.
//!
//! The breaker and the limits cover every action, `none` ones included: a freeze is about
//! change, but they are about load and runaway loops, and a flood of log captures is load.
//!
//! **Dry run** changes how an allowed step runs (as a server-side dry run), never which
//! verdict a step gets: a dry run counts as an action for the rate limit and its failure counts
//! for the breaker, so a first install in dry-run mode rehearses exactly the decisions it would
//! make live.
//!
//! Freeze schedules are read in UTC (the policy has no time zone). Like signal states and
//! incidents, the gate is a pure state machine over explicit times: it does no I/O, reads no
//! clock and never panics, so the live engine and a replay drive the same code. The engine
//! tells it what happened ([`Gate::incident_started`], [`Gate::action_executed`],
//! [`Gate::action_succeeded`], ...); [`Gate::admit`] checks a step and records it in one call,
//! which keeps a check and its bookkeeping in the same critical section. The policy can be
//! swapped on reload ([`Gate::set_policy`]) without losing the counters.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use crate::playbook::{Playbook, Step};
use crate::policy::{FreezeWindow, Policy};
use crate::risk::Risk;
use crate::scope::{Placement, Scope};

/// The window of the `actionsPerHour` limit.
const HOUR: TimeDelta = TimeDelta::hours(1);

/// The highest risk that can ever run without a human: `critical` always needs one.
const HIGHEST_AUTONOMOUS: Risk = Risk::High;

/// How many chained freeze windows the gate follows to find when a freeze ends.
const MAX_FREEZE_CHAIN: usize = 64;

/// One step the engine wants to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The playbook's name.
    pub playbook: &'a str,
    /// The playbook's own ceiling (`maxAutonomousRisk`), when it sets one.
    pub playbook_ceiling: Option<Risk>,
    /// The step's name.
    pub step: &'a str,
    /// The step's declared risk.
    pub risk: Risk,
    /// The target's namespace; `None` for a cluster-scoped target.
    pub namespace: Option<&'a str>,
    /// The incident the step remediates.
    pub incident: &'a str,
    /// What the advisor asked of this incident: only ever more caution.
    pub caution: Caution,
    /// Where the step acts, for the scope check; `None` when unknown, which a scoped gate
    /// denies.
    pub target: Option<Placement<'a>>,
}

/// What an accepted advice asked of an incident (see [`crate::advisor::answer::Advice`]): a
/// lower ceiling, a human approval for every step, or both. The default asks for nothing.
/// Nothing here can raise the ceiling or remove an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caution {
    /// A ceiling for this incident's steps; it only counts when below the others.
    pub ceiling: Option<Risk>,
    /// Every step of the incident waits for a human approval.
    pub approval: bool,
}

impl Caution {
    /// `ceiling`, or the lower one this caution asks for.
    pub fn lower(self, ceiling: Risk) -> Risk {
        self.ceiling.map_or(ceiling, |asked| asked.min(ceiling))
    }
}

impl<'a> Request<'a> {
    /// A request for `step` of `playbook`, acting in `namespace` for `incident`.
    pub fn new(
        playbook: &'a Playbook,
        step: &'a Step,
        namespace: Option<&'a str>,
        incident: &'a str,
    ) -> Self {
        Request {
            playbook: &playbook.name,
            playbook_ceiling: playbook.max_autonomous_risk,
            step: &step.name,
            risk: step.risk,
            namespace,
            incident,
            caution: Caution::default(),
            target: None,
        }
    }
}

/// Which rule set the effective ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CeilingSource {
    /// The policy's global `maxAutonomousRisk`.
    Policy,
    /// The policy's override for the target's namespace.
    Namespace,
    /// The playbook's own `maxAutonomousRisk`.
    Playbook,
    /// Salve's fixed rule that a `critical` step always needs a human (the policy allowed
    /// `critical`).
    Builtin,
    /// The LLM advisor's advice for the incident (it may only lower the ceiling).
    Advisor,
}

impl CeilingSource {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CeilingSource::Policy => "policy",
            CeilingSource::Namespace => "namespace",
            CeilingSource::Playbook => "playbook",
            CeilingSource::Builtin => "builtin",
            CeilingSource::Advisor => "advisor",
        }
    }
}

/// The effective ceiling for a step: the highest risk that runs without a human.
///
/// When several rules set the same lowest value, the broadest is named: the policy, then the
/// namespace override, then the playbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ceiling {
    /// The highest risk that runs on its own.
    pub risk: Risk,
    /// Which rule set it.
    pub set_by: CeilingSource,
}

/// Why a step that is within the ceiling may not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denial {
    /// `actionsPerHour` actions ran in the last hour.
    RateLimit,
    /// `concurrentIncidents` other incidents are being remediated.
    ConcurrentIncidents,
    /// The circuit breaker is open.
    BreakerOpen,
    /// The circuit breaker is half-open and its one trial action is still running.
    BreakerTrial,
    /// The target is outside this Salve's scope (namespaces, or its node).
    OutOfScope,
    /// A cordon would take more nodes out of scheduling than the cluster-wide limit allows
    /// (node-local Salves, `--max-cordoned`). The executor decides this one, from the count
    /// kept in the API.
    CordonLimit,
}

impl Denial {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::RateLimit => "rate_limit",
            Denial::ConcurrentIncidents => "concurrent_incidents",
            Denial::BreakerOpen => "breaker_open",
            Denial::BreakerTrial => "breaker_trial",
            Denial::OutOfScope => "out_of_scope",
            Denial::CordonLimit => "cordon_limit",
        }
    }
}

/// The gate's decision about one step. Every verdict carries the effective ceiling and a
/// reason written for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The step runs now.
    Allow {
        /// The effective ceiling.
        ceiling: Ceiling,
        /// Run it as a server-side dry run.
        dry_run: bool,
        /// Why.
        reason: String,
    },
    /// The step is above the ceiling: the plan stops here and asks a human.
    NeedsApproval {
        /// The effective ceiling.
        ceiling: Ceiling,
        /// Why, naming the rule that set the ceiling.
        reason: String,
    },
    /// A change freeze is in force for the target: the step waits.
    Hold {
        /// The effective ceiling.
        ceiling: Ceiling,
        /// Why.
        reason: String,
        /// When the freeze ends, when it can be known.
        until: Option<DateTime<Utc>>,
    },
    /// A safety limit stops the step: the breaker or a rate limit.
    Deny {
        /// The effective ceiling.
        ceiling: Ceiling,
        /// Which limit.
        denial: Denial,
        /// Why.
        reason: String,
        /// When the step could be allowed again, when that can be known.
        until: Option<DateTime<Utc>>,
    },
}

impl Verdict {
    /// The name used in logs, metrics and the journal.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Allow { .. } => "allow",
            Verdict::NeedsApproval { .. } => "needs_approval",
            Verdict::Hold { .. } => "hold",
            Verdict::Deny { .. } => "deny",
        }
    }

    /// Whether the step runs now.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }

    /// The effective ceiling.
    pub fn ceiling(&self) -> Ceiling {
        match self {
            Verdict::Allow { ceiling, .. }
            | Verdict::NeedsApproval { ceiling, .. }
            | Verdict::Hold { ceiling, .. }
            | Verdict::Deny { ceiling, .. } => *ceiling,
        }
    }

    /// The reason, for the journal.
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Allow { reason, .. }
            | Verdict::NeedsApproval { reason, .. }
            | Verdict::Hold { reason, .. }
            | Verdict::Deny { reason, .. } => reason,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.reason())
    }
}

/// The circuit breaker's state at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Actions run.
    Closed,
    /// Too many consecutive failures: nothing runs until `until`.
    Open {
        /// When it half-opens.
        until: DateTime<Utc>,
    },
    /// One trial action may run; its outcome closes or re-opens the breaker.
    HalfOpen,
}

impl Breaker {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen => "half_open",
        }
    }
}

/// What the breaker remembers.
#[derive(Debug, Clone, Default)]
struct BreakerMemory {
    /// Consecutive failures while closed.
    failures: u32,
    /// Set while open or half-open: when it (last) opened until.
    open_until: Option<DateTime<Utc>>,
    /// Whether the half-open trial action has started.
    trial: bool,
}

impl BreakerMemory {
    fn state(&self, at: DateTime<Utc>) -> Breaker {
        match self.open_until {
            None => Breaker::Closed,
            Some(until) if at < until => Breaker::Open { until },
            Some(_) => Breaker::HalfOpen,
        }
    }

    fn open(&mut self, at: DateTime<Utc>, reset: TimeDelta) {
        self.open_until = Some(
            at.checked_add_signed(reset)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        self.trial = false;
    }

    fn close(&mut self) {
        *self = BreakerMemory::default();
    }
}

/// The risk gate: the autonomy policy plus what has happened under it.
#[derive(Debug, Clone)]
pub struct Gate {
    policy: Arc<Policy>,
    /// When each action of (at least) the last hour started.
    actions: Vec<DateTime<Utc>>,
    /// The incidents being remediated, with when they started.
    incidents: BTreeMap<String, DateTime<Utc>>,
    breaker: BreakerMemory,
    /// Where steps may act.
    scope: Arc<Scope>,
}

impl Gate {
    /// A gate under `policy`, with nothing recorded yet, acting anywhere.
    pub fn new(policy: Arc<Policy>) -> Self {
        Gate {
            policy,
            actions: Vec::new(),
            incidents: BTreeMap::new(),
            breaker: BreakerMemory::default(),
            scope: Arc::new(Scope::cluster()),
        }
    }

    /// Forgets every action recorded, and with them what the breaker remembers: as a fresh
    /// gate, for the journal's actions to be replayed into it (again, when a replica takes
    /// the lead back with another leader's actions imported meanwhile).
    pub fn forget_actions(&mut self) {
        self.actions.clear();
        self.breaker = BreakerMemory::default();
    }

    /// Forgets the incidents in progress: their remediations were stopped (the replica lost
    /// the lead); the next leader's recovery counts them again.
    pub fn forget_incidents(&mut self) {
        self.incidents.clear();
    }

    /// The same gate, denying every step whose target is outside `scope`.
    pub fn scoped(self, scope: Scope) -> Self {
        Gate {
            scope: Arc::new(scope),
            ..self
        }
    }

    /// Where steps may act.
    pub fn scope(&self) -> &Arc<Scope> {
        &self.scope
    }

    /// The policy in force.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Swaps the policy (on reload), keeping the counters, the incidents and the breaker. New
    /// limits apply from the next check; an open breaker keeps the end time it opened with.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    /// The effective ceiling for a playbook with `playbook_ceiling` acting in `namespace`
    /// (the same for every step of a plan, so a planner can tell in advance which steps will
    /// need a human).
    pub fn ceiling(&self, playbook_ceiling: Option<Risk>, namespace: Option<&str>) -> Ceiling {
        let mut ceiling = Ceiling {
            risk: self.policy.max_autonomous_risk,
            set_by: CeilingSource::Policy,
        };
        let candidates = [
            (
                Some(self.policy.ceiling_for(namespace)),
                CeilingSource::Namespace,
            ),
            (playbook_ceiling, CeilingSource::Playbook),
            (Some(HIGHEST_AUTONOMOUS), CeilingSource::Builtin),
        ];
        for (risk, set_by) in candidates {
            if let Some(risk) = risk.filter(|r| *r < ceiling.risk) {
                ceiling = Ceiling { risk, set_by };
            }
        }
        ceiling
    }

    /// Whether the step of `request` may run at `at`. Records nothing: call
    /// [`Gate::action_executed`] (and [`Gate::incident_started`]) when it runs, or use
    /// [`Gate::admit`].
    pub fn check(&self, request: &Request<'_>, at: DateTime<Utc>) -> Verdict {
        let policy = &self.policy;
        let mut ceiling = self.ceiling(request.playbook_ceiling, request.namespace);
        if let Some(risk) = request.caution.ceiling.filter(|r| *r < ceiling.risk) {
            ceiling = Ceiling {
                risk,
                set_by: CeilingSource::Advisor,
            };
        }
        let step = format!("step `{}` (risk {})", request.step, request.risk);

        // 0. Scope: outside it nothing runs, and no human can approve it here.
        if !self.scope.is_cluster_wide() {
            let outside = match &request.target {
                Some(target) => self.scope.admits(target).err(),
                None => Some("its target is unknown".to_string()),
            };
            if let Some(why) = outside {
                return Verdict::Deny {
                    ceiling,
                    denial: Denial::OutOfScope,
                    reason: format!("{step} denied: {why}"),
                    until: None,
                };
            }
        }

        // 1. Risk: above the ceiling never runs on its own, whatever else holds; nor does
        //    any step of an incident the advisor asked a human to look at.
        if request.caution.approval {
            return Verdict::NeedsApproval {
                ceiling,
                reason: format!(
                    "{step}: the advisor asked for a human approval of every step of this incident"
                ),
            };
        }
        if request.risk > ceiling.risk {
            let rule = match ceiling.set_by {
                CeilingSource::Policy => format!("policy `{}`", policy.name),
                CeilingSource::Namespace => format!(
                    "policy `{}`'s override for namespace `{}`",
                    policy.name,
                    request.namespace.unwrap_or_default()
                ),
                CeilingSource::Playbook => {
                    format!("playbook `{}`'s maxAutonomousRisk", request.playbook)
                }
                CeilingSource::Builtin => "Salve: critical steps always need a human".to_string(),
                CeilingSource::Advisor => "the advisor's advice for this incident".to_string(),
            };
            return Verdict::NeedsApproval {
                ceiling,
                reason: format!(
                    "{step} is above the ceiling `{}` set by {rule}; it needs approval",
                    ceiling.risk
                ),
            };
        }

        // 2. Freeze: nothing above `none` runs on its own.
        if request.risk > Risk::None
            && let Some((window, until)) = self.frozen(request.namespace, at)
        {
            let scope = match request.namespace {
                Some(ns) => format!("namespace `{ns}`"),
                None => "cluster-scoped targets".to_string(),
            };
            let end = match until {
                Some(until) => format!("until {}", until.to_rfc3339()),
                None => "with no known end".to_string(),
            };
            return Verdict::Hold {
                ceiling,
                reason: format!(
                    "{step} waits: change freeze `{}` of policy `{}` is in force for {scope} {end}",
                    window.cron, policy.name
                ),
                until,
            };
        }

        // 3. The breaker.
        let deny = |denial, reason, until| Verdict::Deny {
            ceiling,
            denial,
            reason,
            until,
        };
        match self.breaker.state(at) {
            Breaker::Closed => {}
            Breaker::Open { until } => {
                return deny(
                    Denial::BreakerOpen,
                    format!(
                        "{step} denied: the circuit breaker opened after {} consecutive \
                         failed actions and stays open until {}",
                        policy.limits.breaker_failures,
                        until.to_rfc3339()
                    ),
                    Some(until),
                );
            }
            Breaker::HalfOpen if self.breaker.trial => {
                return deny(
                    Denial::BreakerTrial,
                    format!(
                        "{step} denied: the circuit breaker is half-open and its trial action \
                         has not finished"
                    ),
                    None,
                );
            }
            Breaker::HalfOpen => {}
        }

        // 4. Limits.
        let limit = policy.limits.actions_per_hour;
        let recent = self.recent_actions(at);
        if recent.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            // The step fits again once enough of the recent actions leave the window.
            let until = recent
                .len()
                .checked_sub(usize::try_from(limit).unwrap_or(usize::MAX))
                .filter(|_| limit > 0)
                .and_then(|i| recent.get(i))
                .and_then(|t| t.checked_add_signed(HOUR));
            return deny(
                Denial::RateLimit,
                format!(
                    "{step} denied: {} actions ran in the last hour (actionsPerHour: {limit})",
                    recent.len()
                ),
                until,
            );
        }
        let limit = policy.limits.concurrent_incidents;
        if !self.incidents.contains_key(request.incident)
            && self.incidents.len() >= usize::try_from(limit).unwrap_or(usize::MAX)
        {
            return deny(
                Denial::ConcurrentIncidents,
                format!(
                    "{step} denied: {} other incidents are being remediated \
                     (concurrentIncidents: {limit})",
                    self.incidents.len()
                ),
                None,
            );
        }

        let breaker = match self.breaker.state(at) {
            Breaker::HalfOpen => " as the circuit breaker's trial action",
            _ => "",
        };
        let mode = if policy.dry_run {
            ", as a server-side dry run"
        } else {
            ""
        };
        Verdict::Allow {
            ceiling,
            dry_run: policy.dry_run,
            reason: format!(
                "{step} runs{breaker}{mode}: within the ceiling `{}` ({})",
                ceiling.risk,
                ceiling.set_by.as_str()
            ),
        }
    }

    /// [`Gate::check`], and when the step is allowed, records that it runs: its incident
    /// counts as being remediated and the action as executed (claiming the half-open
    /// breaker's trial).
    pub fn admit(&mut self, request: &Request<'_>, at: DateTime<Utc>) -> Verdict {
        let verdict = self.check(request, at);
        if verdict.is_allowed() {
            self.incident_started(request.incident, at);
            self.action_executed(at);
        }
        verdict
    }

    /// Incident `id` is being remediated from `at` on (call it when its first step is
    /// allowed). Returns false when it already was. It is recorded even beyond the
    /// `concurrentIncidents` limit: the gate tracks what runs, the limit holds back new ones.
    pub fn incident_started(&mut self, id: &str, at: DateTime<Utc>) -> bool {
        if self.incidents.contains_key(id) {
            return false;
        }
        self.incidents.insert(id.to_string(), at);
        true
    }

    /// Incident `id`'s remediation ended at `at` (done, rolled back or abandoned). Returns how
    /// long it ran, when it was being remediated.
    pub fn incident_finished(&mut self, id: &str, at: DateTime<Utc>) -> Option<TimeDelta> {
        let started = self.incidents.remove(id)?;
        Some(at.signed_duration_since(started).max(TimeDelta::zero()))
    }

    /// An allowed action (a dry run too) started at `at`: it counts for `actionsPerHour`, and
    /// when the breaker is half-open it is the trial. Every executed action must later be
    /// reported as succeeded or failed (a step that times out has failed).
    pub fn action_executed(&mut self, at: DateTime<Utc>) {
        let since = at.checked_sub_signed(HOUR);
        self.actions
            .retain(|t| since.is_none_or(|since| *t > since));
        self.actions.push(at);
        if self.breaker.state(at) == Breaker::HalfOpen {
            self.breaker.trial = true;
        }
    }

    /// An action admitted at `at` did not start after all (the executor refused it, such as a
    /// cordon over the cluster-wide limit): it no longer counts for `actionsPerHour`, and a
    /// half-open breaker's trial is free again. Its incident stays started.
    pub fn action_withdrawn(&mut self, at: DateTime<Utc>) {
        if let Some(i) = self.actions.iter().rposition(|t| *t == at) {
            self.actions.remove(i);
        }
        if self.breaker.state(at) == Breaker::HalfOpen {
            self.breaker.trial = false;
        }
    }

    /// An action finished well at `at`: the consecutive failures start over, and the
    /// half-open breaker's trial closes it. A success reported while the breaker is open, or
    /// half-open before its trial started, is a late result of an older action and changes
    /// nothing.
    pub fn action_succeeded(&mut self, at: DateTime<Utc>) {
        match self.breaker.state(at) {
            Breaker::Closed => self.breaker.failures = 0,
            Breaker::HalfOpen if self.breaker.trial => self.breaker.close(),
            Breaker::HalfOpen | Breaker::Open { .. } => {}
        }
    }

    /// An action failed at `at`: `circuitBreaker.failures` consecutive failures open the
    /// breaker until `at + reset`; any failure while half-open opens it again. A failure
    /// reported while it is open (an older action) changes nothing.
    pub fn action_failed(&mut self, at: DateTime<Utc>) {
        let reset = TimeDelta::from_std(self.policy.limits.breaker_reset).unwrap_or(TimeDelta::MAX);
        match self.breaker.state(at) {
            Breaker::Closed => {
                self.breaker.failures = self.breaker.failures.saturating_add(1);
                // 0 is rejected by the policy compiler; should it get here, one failure opens.
                if self.breaker.failures >= self.policy.limits.breaker_failures.max(1) {
                    self.breaker.open(at, reset);
                }
            }
            Breaker::HalfOpen => self.breaker.open(at, reset),
            Breaker::Open { .. } => {}
        }
    }

    /// The breaker's state at `at`.
    pub fn breaker(&self, at: DateTime<Utc>) -> Breaker {
        self.breaker.state(at)
    }

    /// Consecutive failed actions counted towards opening the breaker.
    pub fn consecutive_failures(&self) -> u32 {
        self.breaker.failures
    }

    /// How many actions started in the hour before `at` (the last hour, `at` included).
    pub fn actions_in_last_hour(&self, at: DateTime<Utc>) -> usize {
        self.recent_actions(at).len()
    }

    /// How many incidents are being remediated.
    pub fn active_incidents(&self) -> usize {
        self.incidents.len()
    }

    /// The actions in the hour up to `at`, oldest first: after `at - 1h`, up to `at`.
    fn recent_actions(&self, at: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let since = at.checked_sub_signed(HOUR);
        let mut recent: Vec<DateTime<Utc>> = self
            .actions
            .iter()
            .copied()
            .filter(|t| *t <= at && since.is_none_or(|since| *t > since))
            .collect();
        recent.sort_unstable();
        recent
    }

    /// The freeze window in force for `namespace` at `at`, if any, and when the freeze ends:
    /// the end of the last window in a chain of overlapping ones (`None` when unknown).
    fn frozen(
        &self,
        namespace: Option<&str>,
        at: DateTime<Utc>,
    ) -> Option<(&FreezeWindow, Option<DateTime<Utc>>)> {
        let windows: Vec<&FreezeWindow> = self
            .policy
            .freeze
            .iter()
            .filter(|w| {
                w.namespaces.is_empty()
                    || namespace.is_none_or(|ns| w.namespaces.iter().any(|n| n == ns))
            })
            .collect();
        let first = windows
            .iter()
            .copied()
            .find(|w| window_end(w, at).is_some())?;
        let mut until = at;
        for _ in 0..MAX_FREEZE_CHAIN {
            let mut next = None;
            for window in &windows {
                match window_end(window, until) {
                    None => {}
                    Some(None) => return Some((first, None)),
                    Some(Some(end)) => next = next.max(Some(end)),
                }
            }
            match next {
                Some(end) => until = end,
                None => return Some((first, Some(until))),
            }
        }
        // A longer chain: the freeze lasts at least this long; a later check looks again.
        Some((first, Some(until)))
    }
}

/// Whether `window` is in force at `at`: `None` when not, else when it ends (`Some(None)`
/// when that cannot be represented).
fn window_end(window: &FreezeWindow, at: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
    if window.duration.is_zero() {
        return None;
    }
    let length = TimeDelta::from_std(window.duration).unwrap_or(TimeDelta::MAX);
    // The window in force is the one that opened last within `length` before `at`.
    let since = at
        .checked_sub_signed(length)
        .unwrap_or(DateTime::UNIX_EPOCH)
        .max(DateTime::UNIX_EPOCH);
    // Cron schedules end in 2100; near the end of time there is no opening to find (and
    // the cron crate would overflow looking for one).
    since.checked_add_signed(TimeDelta::days(1))?;
    let opened = window
        .schedule
        .after(&since)
        .next()
        .filter(|opened| *opened <= at)?;
    match opened.checked_add_signed(length) {
        Some(end) if end <= at => None,
        Some(end) => Some(Some(end)),
        None => Some(None),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rstest::rstest;

    use super::*;
    use crate::playbook::load::{Loaded, load_text};

    /// Compiles a policy document through the real loader.
    fn compile_policy(text: &str) -> Arc<Policy> {
        let mut loaded = Loaded::default();
        load_text(Path::new("policy.yaml"), text, &mut loaded);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        Arc::clone(&loaded.policies[0])
    }

    /// A policy with this `spec` body (indented two spaces).
    fn policy(spec: &str) -> Arc<Policy> {
        compile_policy(&format!(
            "apiVersion: salve.dev/v1\nkind: AutonomyPolicy\nmetadata: {{name: test}}\nspec:\n{spec}"
        ))
    }

    /// A live policy: global ceiling `ceiling`, kube-system at `none`, no freeze.
    fn live(ceiling: &str) -> Arc<Policy> {
        policy(&format!(
            "  maxAutonomousRisk: {ceiling}\n  dryRun: false\n  overrides: [{{namespaces: [kube-system], maxAutonomousRisk: none}}]\n"
        ))
    }

    fn default_policy() -> Arc<Policy> {
        compile_policy(include_str!("../../policies/default.yaml"))
    }

    /// A playbook compiled through the real loader, with steps of every risk.
    fn playbook(ceiling: Option<&str>) -> Playbook {
        let ceiling = ceiling
            .map(|c| format!("  maxAutonomousRisk: {c}\n"))
            .unwrap_or_default();
        let text = format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: p}}\nspec:\n  trigger:\n    crashLoop: {{restarts: 3}}\n  target: {{kind: Deployment, namespace: shop, name: api}}\n{ceiling}  steps:\n    - {{name: logs, action: capture_logs, risk: none}}\n    - {{name: restart, action: rollout_restart, risk: low}}\n    - {{name: undo, action: rollout_undo, risk: medium}}\n    - {{name: flip, action: annotate, risk: high, params: {{annotations: {{a: b}}}}}}\n    - {{name: wipe, action: scale, risk: critical, params: {{replicas: 0}}}}\n"
        );
        let mut loaded = Loaded::default();
        load_text(Path::new("p.yaml"), &text, &mut loaded);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        (*loaded.playbooks[0]).clone()
    }

    fn step(playbook: &Playbook, risk: Risk) -> &Step {
        playbook
            .steps
            .iter()
            .find(|s| s.risk == risk)
            .expect("a step of that risk")
    }

    fn request<'a>(
        playbook: &'a Playbook,
        risk: Risk,
        namespace: Option<&'a str>,
        incident: &'a str,
    ) -> Request<'a> {
        Request::new(playbook, step(playbook, risk), namespace, incident)
    }

    #[test]
    fn a_target_outside_the_scope_is_denied_before_anything_else() {
        let t0 = Utc::now();
        let mut gate = Gate::new(live("medium")).scoped(Scope::node_local("n1", 1, "salve"));
        let playbook = playbook(None);
        let at = |kind, name, node| Placement {
            kind,
            name,
            namespace: (kind != "Node").then_some("shop"),
            node,
        };
        // Even a step that would need approval is denied: no one may approve it here.
        for (target, risk) in [
            (Some(at("Node", "n2", None)), Risk::Low),
            (Some(at("Pod", "p", Some("n2"))), Risk::High),
            (Some(at("Pod", "p", None)), Risk::Low),
            (Some(at("Deployment", "api", None)), Risk::None),
            (None, Risk::Low),
        ] {
            let mut asked = request(&playbook, risk, Some("shop"), "i1");
            asked.target = target;
            let verdict = gate.admit(&asked, t0);
            assert!(
                matches!(
                    verdict,
                    Verdict::Deny {
                        denial: Denial::OutOfScope,
                        ..
                    }
                ),
                "{target:?}: {verdict}"
            );
        }
        assert_eq!(gate.actions_in_last_hour(t0), 0, "a denial counts nothing");
        let mut own = request(&playbook, Risk::Low, None, "i1");
        own.target = Some(at("Node", "n1", None));
        assert!(gate.admit(&own, t0).is_allowed());
        // An unscoped gate does not look at the target.
        let mut anywhere = Gate::new(live("medium"));
        assert!(
            anywhere
                .admit(&request(&playbook, Risk::Low, None, "i2"), t0)
                .is_allowed()
        );
    }

    #[test]
    fn a_withdrawn_action_frees_its_count_and_the_breakers_trial() {
        let t0 = Utc::now();
        let mut gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  dryRun: false\n  limits: {actionsPerHour: 1, circuitBreaker: {failures: 1, reset: 1m}}\n",
        ));
        let playbook = playbook(None);
        let asked = request(&playbook, Risk::Low, Some("shop"), "i1");
        assert!(gate.admit(&asked, t0).is_allowed());
        gate.action_withdrawn(t0);
        assert!(
            gate.admit(&asked, t0).is_allowed(),
            "the hourly count was given back"
        );
        gate.action_failed(t0);
        let later = t0 + TimeDelta::minutes(2);
        gate.action_withdrawn(t0);
        let half_open = gate.admit(&asked, later);
        assert!(half_open.is_allowed(), "{half_open}");
        gate.action_withdrawn(later);
        assert!(
            gate.admit(&asked, later).is_allowed(),
            "the trial is free again"
        );
    }

    /// A time in UTC: `2024-05-03T17:00:00` (a Friday).
    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("{text}Z"))
            .expect("valid time")
            .with_timezone(&Utc)
    }

    /// A Tuesday noon, outside the default freeze, plus `minutes`.
    fn tue(minutes: i64) -> DateTime<Utc> {
        t("2024-05-07T12:00:00") + TimeDelta::minutes(minutes)
    }

    #[rstest]
    #[case::policy_allows_at_its_ceiling(
        "medium",
        None,
        Some("shop"),
        Risk::Medium,
        true,
        Risk::Medium,
        CeilingSource::Policy
    )]
    #[case::policy_decides_above(
        "medium",
        None,
        Some("shop"),
        Risk::High,
        false,
        Risk::Medium,
        CeilingSource::Policy
    )]
    #[case::namespace_override_decides(
        "medium",
        None,
        Some("kube-system"),
        Risk::Low,
        false,
        Risk::None,
        CeilingSource::Namespace
    )]
    #[case::namespace_override_allows_none(
        "medium",
        None,
        Some("kube-system"),
        Risk::None,
        true,
        Risk::None,
        CeilingSource::Namespace
    )]
    #[case::playbook_decides(
        "medium",
        Some("low"),
        Some("shop"),
        Risk::Medium,
        false,
        Risk::Low,
        CeilingSource::Playbook
    )]
    #[case::playbook_allows_at_its_ceiling(
        "medium",
        Some("low"),
        Some("shop"),
        Risk::Low,
        true,
        Risk::Low,
        CeilingSource::Playbook
    )]
    #[case::playbook_cannot_raise(
        "low",
        Some("high"),
        Some("shop"),
        Risk::Medium,
        false,
        Risk::Low,
        CeilingSource::Policy
    )]
    #[case::tie_names_the_policy(
        "low",
        Some("low"),
        Some("shop"),
        Risk::Medium,
        false,
        Risk::Low,
        CeilingSource::Policy
    )]
    #[case::lowest_of_three_wins(
        "medium",
        Some("low"),
        Some("kube-system"),
        Risk::Low,
        false,
        Risk::None,
        CeilingSource::Namespace
    )]
    #[case::cluster_scoped_gets_the_global(
        "medium",
        None,
        None,
        Risk::Medium,
        true,
        Risk::Medium,
        CeilingSource::Policy
    )]
    #[case::critical_always_needs_a_human(
        "critical",
        None,
        Some("shop"),
        Risk::Critical,
        false,
        Risk::High,
        CeilingSource::Builtin
    )]
    #[case::high_runs_under_a_critical_policy(
        "critical",
        None,
        Some("shop"),
        Risk::High,
        true,
        Risk::High,
        CeilingSource::Builtin
    )]
    fn the_lowest_ceiling_decides(
        #[case] global: &str,
        #[case] playbook_ceiling: Option<&str>,
        #[case] namespace: Option<&str>,
        #[case] risk: Risk,
        #[case] allowed: bool,
        #[case] ceiling: Risk,
        #[case] set_by: CeilingSource,
    ) {
        let gate = Gate::new(live(global));
        let p = playbook(playbook_ceiling);
        let verdict = gate.check(&request(&p, risk, namespace, "inc-1"), tue(0));
        assert_eq!(verdict.is_allowed(), allowed, "{verdict}");
        if !allowed {
            assert!(
                matches!(verdict, Verdict::NeedsApproval { .. }),
                "{verdict}"
            );
        }
        assert_eq!(
            verdict.ceiling(),
            Ceiling {
                risk: ceiling,
                set_by
            }
        );
    }

    #[test]
    fn approval_reasons_name_the_deciding_rule() {
        let gate = Gate::new(live("medium"));
        let p = playbook(Some("low"));
        let cases = [
            (Some("shop"), Risk::High, "playbook `p`'s maxAutonomousRisk"),
            (
                Some("kube-system"),
                Risk::Low,
                "policy `test`'s override for namespace `kube-system`",
            ),
        ];
        for (namespace, risk, rule) in cases {
            let verdict = gate.check(&request(&p, risk, namespace, "inc-1"), tue(0));
            assert!(verdict.reason().contains(rule), "{verdict}");
        }
        let gate = Gate::new(live("critical"));
        let verdict = gate.check(
            &request(&playbook(None), Risk::Critical, Some("shop"), "i"),
            tue(0),
        );
        assert!(
            verdict
                .reason()
                .contains("critical steps always need a human"),
            "{verdict}"
        );
        let gate = Gate::new(live("low"));
        let verdict = gate.check(
            &request(&playbook(None), Risk::Medium, Some("shop"), "i"),
            tue(0),
        );
        assert_eq!(
            verdict.reason(),
            "step `undo` (risk medium) is above the ceiling `low` set by policy `test`; it needs approval"
        );
    }

    #[test]
    fn the_advisors_caution_only_ever_lowers_the_ceiling_or_adds_an_approval() {
        let gate = Gate::new(live("medium"));
        let p = playbook(None);
        let with = |risk, caution| {
            let mut request = request(&p, risk, Some("shop"), "i");
            request.caution = caution;
            gate.check(&request, tue(0))
        };
        // A lower ceiling: a step within the policy's now waits, and says who asked.
        let lower = Caution {
            ceiling: Some(Risk::None),
            approval: false,
        };
        let verdict = with(Risk::Low, lower);
        assert_eq!(verdict.name(), "needs_approval", "{verdict}");
        assert_eq!(verdict.ceiling().set_by, CeilingSource::Advisor);
        assert!(
            verdict.reason().contains("the advisor's advice"),
            "{verdict}"
        );
        assert!(with(Risk::None, lower).is_allowed());
        // A higher "ceiling" changes nothing: what the policy holds back stays held back.
        let higher = Caution {
            ceiling: Some(Risk::Critical),
            approval: false,
        };
        assert!(with(Risk::Medium, higher).is_allowed());
        let verdict = with(Risk::High, higher);
        assert_eq!(verdict.name(), "needs_approval");
        assert_eq!(verdict.ceiling().risk, Risk::Medium);
        // An approval for every step, even one that changes nothing.
        let approval = Caution {
            ceiling: None,
            approval: true,
        };
        for risk in [Risk::None, Risk::Medium, Risk::High] {
            assert_eq!(with(risk, approval).name(), "needs_approval", "{risk}");
        }
        assert_eq!(lower.lower(Risk::Medium), Risk::None);
        assert_eq!(higher.lower(Risk::Medium), Risk::Medium);
    }

    #[test]
    fn every_step_at_or_under_the_ceiling_runs_and_every_one_above_needs_approval() {
        let p = playbook(None);
        for global in Risk::ALL {
            let gate = Gate::new(live(global.as_str()));
            for risk in Risk::ALL {
                let verdict = gate.check(&request(&p, risk, Some("shop"), "i"), tue(0));
                let expected = risk <= global && risk < Risk::Critical;
                assert_eq!(verdict.is_allowed(), expected, "{global}/{risk}: {verdict}");
                assert_eq!(
                    verdict.name(),
                    if expected { "allow" } else { "needs_approval" }
                );
            }
        }
    }

    #[rstest]
    #[case::default_is_dry_run("  maxAutonomousRisk: medium\n", true)]
    #[case::explicit_dry_run("  maxAutonomousRisk: medium\n  dryRun: true\n", true)]
    #[case::live("  maxAutonomousRisk: medium\n  dryRun: false\n", false)]
    fn a_dry_run_policy_allows_as_a_dry_run(#[case] spec: &str, #[case] dry_run: bool) {
        let gate = Gate::new(policy(spec));
        let p = playbook(None);
        match gate.check(&request(&p, Risk::Medium, Some("shop"), "i"), tue(0)) {
            Verdict::Allow {
                dry_run: got,
                reason,
                ..
            } => {
                assert_eq!(got, dry_run);
                assert_eq!(reason.contains("dry run"), dry_run, "{reason}");
            }
            other => panic!("expected allow, got {other}"),
        }
        // Dry run never changes the verdict: above the ceiling still needs a human.
        let verdict = gate.check(&request(&p, Risk::High, Some("shop"), "i"), tue(0));
        assert_eq!(verdict.name(), "needs_approval");
    }

    /// The default policy freezes from Friday 17:00 UTC for 64h, until Monday 09:00.
    #[rstest]
    #[case::thursday("2024-05-02T17:00:00", Risk::Low, None)]
    #[case::friday_before("2024-05-03T16:59:59", Risk::Low, None)]
    #[case::friday_opening("2024-05-03T17:00:00", Risk::Low, Some("2024-05-06T09:00:00"))]
    #[case::saturday("2024-05-04T03:00:00", Risk::Medium, Some("2024-05-06T09:00:00"))]
    #[case::monday_last_second("2024-05-06T08:59:59", Risk::Low, Some("2024-05-06T09:00:00"))]
    #[case::monday_end("2024-05-06T09:00:00", Risk::Low, None)]
    #[case::none_risk_runs_in_a_freeze("2024-05-04T03:00:00", Risk::None, None)]
    fn the_default_policy_freezes_the_weekend(
        #[case] at: &str,
        #[case] risk: Risk,
        #[case] held_until: Option<&str>,
    ) {
        let gate = Gate::new(default_policy());
        let p = playbook(None);
        let verdict = gate.check(&request(&p, risk, Some("shop"), "i"), t(at));
        match held_until {
            None => assert!(verdict.is_allowed(), "{verdict}"),
            Some(end) => match verdict {
                Verdict::Hold { until, reason, .. } => {
                    assert_eq!(until, Some(t(end)));
                    assert!(reason.contains("`0 0 17 * * FRI`"), "{reason}");
                }
                other => panic!("expected hold, got {other}"),
            },
        }
    }

    #[rstest]
    #[case::frozen_namespace(Some("prod"), true)]
    #[case::other_namespace(Some("shop"), false)]
    #[case::cluster_scoped_is_frozen_too(None, true)]
    fn a_namespaced_freeze_holds_its_namespaces_and_cluster_scoped_targets(
        #[case] namespace: Option<&str>,
        #[case] held: bool,
    ) {
        let gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  freeze: [{schedule: \"0 9 * * *\", duration: 2h, namespaces: [prod]}]\n",
        ));
        let p = playbook(None);
        let inside = t("2024-05-07T10:00:00");
        let verdict = gate.check(&request(&p, Risk::Low, namespace, "i"), inside);
        assert_eq!(verdict.name() == "hold", held, "{verdict}");
        let outside = t("2024-05-07T11:00:00");
        let verdict = gate.check(&request(&p, Risk::Low, namespace, "i"), outside);
        assert!(verdict.is_allowed(), "{verdict}");
    }

    #[test]
    fn the_strict_policy_freezes_the_holidays() {
        let gate = Gate::new(compile_policy(include_str!("../../policies/strict.yaml")));
        let p = playbook(None);
        // Dec 20 for 336h: until Jan 3 00:00 (the Friday freeze of Dec 27 lies inside it).
        let verdict = gate.check(
            &request(&p, Risk::Low, Some("shop"), "i"),
            t("2024-12-28T12:00:00"),
        );
        assert!(
            matches!(verdict, Verdict::Hold { until: Some(u), .. } if u == t("2025-01-03T00:00:00")),
            "{verdict}"
        );
        // In prod even a low step needs a human; that comes before the freeze.
        let verdict = gate.check(
            &request(&p, Risk::Low, Some("prod"), "i"),
            t("2024-12-28T12:00:00"),
        );
        assert_eq!(verdict.name(), "needs_approval");
        let verdict = gate.check(
            &request(&p, Risk::Low, Some("shop"), "i"),
            t("2025-01-03T00:00:00"),
        );
        assert!(verdict.is_allowed(), "{verdict}");
    }

    #[test]
    fn overlapping_freezes_hold_until_the_last_one_ends() {
        let gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  freeze:\n    - {schedule: \"0 0 17 * * FRI\", duration: 64h}\n    - {schedule: \"0 0 8 * * MON\", duration: 4h}\n",
        ));
        let p = playbook(None);
        let verdict = gate.check(
            &request(&p, Risk::Low, Some("shop"), "i"),
            t("2024-05-04T00:00:00"),
        );
        assert!(
            matches!(verdict, Verdict::Hold { until: Some(u), .. } if u == t("2024-05-06T12:00:00")),
            "{verdict}"
        );
    }

    #[test]
    fn actions_per_hour_is_a_sliding_window() {
        let mut gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  limits: {actionsPerHour: 3}\n",
        ));
        let p = playbook(None);
        let r = request(&p, Risk::Low, Some("shop"), "i");
        for minute in [0, 10, 20] {
            assert!(gate.admit(&r, tue(minute)).is_allowed());
        }
        assert_eq!(gate.actions_in_last_hour(tue(30)), 3);
        // At the limit: denied until the oldest action leaves the window.
        let verdict = gate.check(&r, tue(30));
        assert_eq!(
            verdict,
            Verdict::Deny {
                ceiling: Ceiling {
                    risk: Risk::Medium,
                    set_by: CeilingSource::Policy
                },
                denial: Denial::RateLimit,
                reason: "step `restart` (risk low) denied: 3 actions ran in the last hour (actionsPerHour: 3)".to_string(),
                until: Some(tue(60)),
            }
        );
        assert!(!gate.check(&r, tue(60) - TimeDelta::seconds(1)).is_allowed());
        // Exactly an hour later the oldest one has left the window.
        assert!(gate.admit(&r, tue(60)).is_allowed());
        // The window slides: 10, 20, 60 are in it now.
        let verdict = gate.check(&r, tue(65));
        assert!(
            matches!(verdict, Verdict::Deny { denial: Denial::RateLimit, until: Some(u), .. } if u == tue(70)),
            "{verdict}"
        );
        assert!(gate.check(&r, tue(70)).is_allowed());
        assert_eq!(gate.actions_in_last_hour(tue(200)), 0);
    }

    #[test]
    fn dry_runs_count_as_actions() {
        let mut gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  dryRun: true\n  limits: {actionsPerHour: 1}\n",
        ));
        let p = playbook(None);
        let r = request(&p, Risk::None, Some("shop"), "i");
        assert!(matches!(
            gate.admit(&r, tue(0)),
            Verdict::Allow { dry_run: true, .. }
        ));
        assert_eq!(gate.check(&r, tue(1)).name(), "deny");
    }

    #[test]
    fn concurrent_incidents_hold_back_new_incidents_only() {
        let mut gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  limits: {concurrentIncidents: 2}\n",
        ));
        let p = playbook(None);
        let r = |incident| request(&p, Risk::Low, Some("shop"), incident);
        assert!(gate.admit(&r("a"), tue(0)).is_allowed());
        assert!(gate.admit(&r("b"), tue(1)).is_allowed());
        assert!(!gate.incident_started("b", tue(2)), "not counted twice");
        assert_eq!(gate.active_incidents(), 2);
        let verdict = gate.check(&r("c"), tue(2));
        assert!(
            matches!(
                verdict,
                Verdict::Deny {
                    denial: Denial::ConcurrentIncidents,
                    until: None,
                    ..
                }
            ),
            "{verdict}"
        );
        // An incident that is part of the limit is never denied by it.
        assert!(gate.admit(&r("a"), tue(3)).is_allowed());
        assert_eq!(
            gate.incident_finished("a", tue(10)),
            Some(TimeDelta::minutes(10))
        );
        assert_eq!(gate.incident_finished("a", tue(11)), None);
        assert!(gate.admit(&r("c"), tue(11)).is_allowed());
        assert!(!gate.check(&r("d"), tue(12)).is_allowed());
    }

    #[test]
    fn the_breaker_opens_half_opens_and_closes() {
        let mut gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  limits: {circuitBreaker: {failures: 3, reset: 5m}}\n",
        ));
        let p = playbook(None);
        let r = request(&p, Risk::None, Some("shop"), "i");
        // A success in between starts the count over.
        for (minute, ok) in [(0, false), (1, false), (2, true), (3, false), (4, false)] {
            assert!(gate.admit(&r, tue(minute)).is_allowed());
            if ok {
                gate.action_succeeded(tue(minute));
            } else {
                gate.action_failed(tue(minute));
            }
        }
        assert_eq!(gate.breaker(tue(4)), Breaker::Closed);
        assert_eq!(gate.consecutive_failures(), 2);
        assert!(gate.admit(&r, tue(5)).is_allowed());
        gate.action_failed(tue(5));
        // Open: everything is denied, `none` steps too.
        assert_eq!(gate.breaker(tue(5)), Breaker::Open { until: tue(10) });
        let verdict = gate.check(&r, tue(9));
        assert!(
            matches!(verdict, Verdict::Deny { denial: Denial::BreakerOpen, until: Some(u), .. } if u == tue(10)),
            "{verdict}"
        );
        // A late result of an older action changes nothing while open.
        gate.action_succeeded(tue(6));
        assert_eq!(gate.breaker(tue(6)), Breaker::Open { until: tue(10) });
        // Half-open: exactly one trial.
        assert_eq!(gate.breaker(tue(10)), Breaker::HalfOpen);
        let verdict = gate.admit(&r, tue(10));
        assert!(verdict.reason().contains("trial"), "{verdict}");
        let verdict = gate.check(&r, tue(11));
        assert!(
            matches!(
                verdict,
                Verdict::Deny {
                    denial: Denial::BreakerTrial,
                    ..
                }
            ),
            "{verdict}"
        );
        // The trial fails: open again for another reset.
        gate.action_failed(tue(12));
        assert_eq!(gate.breaker(tue(12)), Breaker::Open { until: tue(17) });
        assert_eq!(gate.check(&r, tue(16)).name(), "deny");
        // The next trial succeeds: closed, count reset.
        assert!(gate.admit(&r, tue(17)).is_allowed());
        assert_eq!(gate.breaker(tue(17)).as_str(), "half_open");
        gate.action_succeeded(tue(18));
        assert_eq!(gate.breaker(tue(18)), Breaker::Closed);
        assert_eq!(gate.consecutive_failures(), 0);
        assert!(gate.check(&r, tue(18)).is_allowed());
    }

    #[test]
    fn a_failure_while_half_open_reopens_even_without_a_trial() {
        let mut gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  limits: {circuitBreaker: {failures: 1, reset: 5m}}\n",
        ));
        gate.action_failed(tue(0));
        gate.action_succeeded(tue(6)); // a late success before any trial: ignored
        assert_eq!(gate.breaker(tue(6)), Breaker::HalfOpen);
        gate.action_failed(tue(7));
        assert_eq!(gate.breaker(tue(7)), Breaker::Open { until: tue(12) });
    }

    #[test]
    fn checks_run_in_a_safe_order() {
        // Always frozen, the breaker open and the rate limit reached, all at once.
        let mut gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  freeze: [{schedule: \"0 0 * * *\", duration: 24h}]\n  limits: {actionsPerHour: 1, circuitBreaker: {failures: 1, reset: 30m}}\n",
        ));
        let p = playbook(None);
        let at = tue(0);
        gate.action_executed(at);
        gate.action_failed(at);
        let r = |risk| request(&p, risk, Some("shop"), "i");
        // Above the ceiling: needs approval, whatever else holds.
        assert_eq!(gate.check(&r(Risk::High), at).name(), "needs_approval");
        // Within it: the freeze comes before the breaker.
        assert_eq!(gate.check(&r(Risk::Low), at).name(), "hold");
        // A `none` step passes the freeze but not the breaker.
        let verdict = gate.check(&r(Risk::None), at);
        assert!(
            matches!(
                verdict,
                Verdict::Deny {
                    denial: Denial::BreakerOpen,
                    ..
                }
            ),
            "{verdict}"
        );
        // Once the breaker half-opens, the rate limit still applies.
        assert_eq!(gate.breaker(tue(30)), Breaker::HalfOpen);
        let verdict = gate.check(&r(Risk::None), tue(30));
        assert!(
            matches!(verdict, Verdict::Deny { denial: Denial::RateLimit, until: Some(u), .. } if u == tue(60)),
            "{verdict}"
        );
        assert!(gate.check(&r(Risk::None), tue(60)).is_allowed());
    }

    #[test]
    fn a_policy_swap_keeps_the_counters() {
        let mut gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  limits: {actionsPerHour: 2, concurrentIncidents: 5, circuitBreaker: {failures: 2, reset: 10m}}\n",
        ));
        let p = playbook(None);
        let r = |incident| request(&p, Risk::Low, Some("shop"), incident);
        assert!(gate.admit(&r("a"), tue(0)).is_allowed());
        assert!(gate.admit(&r("b"), tue(1)).is_allowed());
        gate.action_failed(tue(1));
        assert_eq!(gate.check(&r("a"), tue(2)).name(), "deny");

        // More actions per hour, fewer incidents: the counts carry over.
        gate.set_policy(policy(
            "  maxAutonomousRisk: medium\n  limits: {actionsPerHour: 3, concurrentIncidents: 1, circuitBreaker: {failures: 2, reset: 10m}}\n",
        ));
        assert_eq!(gate.actions_in_last_hour(tue(2)), 2);
        assert_eq!(gate.active_incidents(), 2);
        assert_eq!(gate.consecutive_failures(), 1);
        assert!(
            gate.check(&r("a"), tue(2)).is_allowed(),
            "running incidents go on"
        );
        assert_eq!(gate.check(&r("c"), tue(2)).name(), "deny");
        // The failure before the swap counts towards the breaker after it.
        assert!(gate.admit(&r("a"), tue(3)).is_allowed());
        gate.action_failed(tue(3));
        assert_eq!(gate.breaker(tue(3)), Breaker::Open { until: tue(13) });
        // A swap keeps an open breaker open.
        gate.set_policy(live("medium"));
        assert_eq!(gate.breaker(tue(4)), Breaker::Open { until: tue(13) });
        assert_eq!(gate.check(&r("a"), tue(4)).name(), "deny");
        assert_eq!(gate.policy().name, "test");
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let mut gate = Gate::new(policy(
            "  maxAutonomousRisk: medium\n  freeze: [{schedule: \"0 0 17 * * FRI\", duration: 64h}]\n  limits: {circuitBreaker: {failures: 1, reset: 5m}}\n",
        ));
        let p = playbook(None);
        let r = request(&p, Risk::Low, None, "i");
        for at in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::UNIX_EPOCH,
        ] {
            let _ = gate.check(&r, at);
            let _ = gate.admit(&r, at);
            gate.action_failed(at);
            gate.action_succeeded(at);
            let _ = gate.breaker(at);
            let _ = gate.incident_finished("i", at);
        }
        // Opened at the end of time, the breaker stays open for good.
        assert_eq!(
            gate.breaker(tue(0)),
            Breaker::Open {
                until: DateTime::<Utc>::MAX_UTC
            }
        );
    }
}
