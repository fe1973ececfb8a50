//! The executor: an incident becomes a remediation — diagnose, plan, gate, run, verify, and
//! roll back when a step fails or the verify check does not hold.
//!
//! For one incident, in order, each decision journaled *before* it takes effect:
//!
//! 1. **Diagnose** ([`diagnose`]): read the signal's owner and the target from the API.
//! 2. **Plan** ([`crate::plan`]): templates filled, `when` decided, verify and rollback filled.
//!    A target already being remediated for another incident is not acted on twice: the new
//!    incident is journaled as *correlated* with the one that claimed the target first, naming
//!    the root cause — the earlier-starting of the two incidents' root signals. (Correlation is
//!    by target; pods on one node or workloads of one namespace are not grouped yet.)
//! 3. **Advice**, when the policy turns the LLM advisor on: the incident's context is
//!    gathered and the advisor asked ([`crate::advisor`]); its advice, or why there is none, is
//!    journaled before any step. An accepted advice may only lower the incident's ceiling (for
//!    its rollback too) or make every step wait for an approval; anything else — no answer, a
//!    wrong one — leaves the remediation exactly as without an advisor.
//! 4. For each step that runs (a `when` reading earlier steps' outputs is decided as the step
//!    is reached): the **gate**'s verdict. Allowed: the step is journaled as
//!    started, runs (as a server-side dry run when the policy says so) within its timeout, and
//!    its result is journaled and fed to the circuit breaker. Above the ceiling: an approval
//!    request is journaled and the remediation waits for the answer; an approval runs the
//!    step, a rejection or no answer by the deadline halts the plan there — the step never
//!    runs. A freeze or a denial (breaker, limits) halts the plan too.
//! 5. **Verify**: the plan's PromQL must return something within its time.
//! 6. **Rollback**, when a step failed or verify did not hold and some completed step changed
//!    something: the playbook's own `rollback` steps, in the order written, when it declares
//!    them; otherwise every completed step that changed something is undone ([`undo`]) in
//!    reverse order of completion. Each still runs under the risk ceiling (one above it is
//!    left to a human, and the outcome says so). The outcome is journaled.
//!
//! A remediation whose steps all ran as dry runs ends *rehearsed*: nothing changed, so there is
//! nothing to verify or undo.
//!
//! Halting on a rejected approval leaves the completed steps as they are: they were within the
//! ceiling, and the person who rejected the next step decides what comes next.
//!
//! After a crash, [`Executor::recover`] finds the remediations the journal shows in flight and
//! resumes or rolls them back (see [`Executor::prepare_recovery`]).

pub mod check;
pub mod diagnose;
mod recovery;
mod summary;
pub mod undo;
pub mod wasm;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::action::Action;
use crate::actions::Cluster;
use crate::advisor::ask::Advisor;
use crate::advisor::gather::{self, Sources, Subject};
use crate::approval::{self, Approvals, Ask, State};
use crate::clock::Clock;
use crate::gate::{Caution, Gate, Request, Verdict};
use crate::incident::{Incident, is_rehearsal};
use crate::journal::{self, Journal, Kind, Record};
use crate::plan::{Decision, Plan, PlannedStep};
use crate::playbook::Playbook;
use crate::risk::Risk;
use crate::signal::evaluate::Evaluator;
use crate::signal::state::SignalEvent;

pub use recovery::{Interrupted, Recovery};

use check::Waited;
use undo::Undo;

/// Why a remediation could not go on: the journal (or the approvals in it) failed. Nothing
/// acts without its decision written first, so the remediation stops where it was; a restart
/// finds it in flight.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The journal could not be written or read.
    #[error(transparent)]
    Journal(#[from] journal::Error),
    /// An approval could not be requested or read.
    #[error(transparent)]
    Approval(#[from] approval::Error),
}

/// The span every log line of one incident's remediation is in: its id and playbook are fields
/// of each line (`span.incident` in JSON logs), whichever task writes it.
pub(crate) fn incident_span(incident: &str, playbook: &str) -> tracing::Span {
    tracing::info_span!("incident", incident, playbook)
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a remediation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Every step that runs ran, and verify held (or there was none).
    Remediated,
    /// Every step ran as a server-side dry run: nothing changed.
    Rehearsed,
    /// A step failed or verify did not hold; the completed steps were undone (why).
    RolledBack(String),
    /// As [`Finish::RolledBack`], but some undo failed or could not run: a human must look.
    RollbackIncomplete(String),
    /// The plan stopped before a step (rejected, expired, frozen, denied) — why.
    Halted(String),
    /// No plan could be made (why): nothing ran.
    NotPlanned(String),
    /// The playbook remediated this target within its cooldown (when, which incident):
    /// nothing ran.
    CoolingDown(String),
    /// Another incident is remediating the same target (its id): nothing ran.
    Correlated(String),
}

impl Finish {
    /// The name journaled and logged.
    pub fn name(&self) -> &'static str {
        match self {
            Finish::Remediated => "remediated",
            Finish::Rehearsed => "rehearsed",
            Finish::RolledBack(_) => "rolled_back",
            Finish::RollbackIncomplete(_) => "rollback_incomplete",
            Finish::Halted(_) => "halted",
            Finish::NotPlanned(_) => "not_planned",
            Finish::CoolingDown(_) => "cooling_down",
            Finish::Correlated(_) => "correlated",
        }
    }

    /// Why, when there is more to say than the name.
    pub fn reason(&self) -> &str {
        match self {
            Finish::Remediated | Finish::Rehearsed => "",
            Finish::RolledBack(reason)
            | Finish::RollbackIncomplete(reason)
            | Finish::Halted(reason)
            | Finish::NotPlanned(reason)
            | Finish::CoolingDown(reason)
            | Finish::Correlated(reason) => reason,
        }
    }
}

/// How the executor runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often verify, `wait_for` and pending approvals are looked at.
    pub poll: Duration,
    /// Run every step as a dry run, whatever the policy says.
    pub force_dry_run: bool,
    /// The engine's time (the wall clock, but for `salve demo`).
    pub clock: Clock,
    /// Send every `notify` here instead of its own `url` (a sandbox: `salve demo`).
    pub notify_url: Option<String>,
    /// The host WASM steps run in (without one, a WASM step fails).
    pub wasm: Option<crate::wasm::Host>,
    /// The LLM advisor's state (consulted only when the policy turns it on).
    pub advisor: Advisor,
    /// Where the executor counts what it decides and does.
    pub metrics: crate::metrics::Metrics,
    /// Under leader election, the elector's view: no step runs unless this replica leads
    /// (`None`: a single replica, which always may).
    pub leadership: Option<tokio::sync::watch::Receiver<crate::lease::Leadership>>,
    /// With the incidents kept in the cluster, where they are read back from: at start and on
    /// taking the lead (what the previous leader left in flight), and as other replicas write
    /// them (an approval answered through another replica's API).
    pub cluster: Option<crate::state::Importer>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll: Duration::from_secs(5),
            force_dry_run: false,
            clock: Clock::wall(),
            notify_url: None,
            wasm: None,
            advisor: Advisor::default(),
            metrics: crate::metrics::Metrics::default(),
            leadership: None,
            cluster: None,
        }
    }
}

/// How long before an incident opened here a remediation of its target that another replica
/// planned is taken for the same problem's ([`Executor::begun`]): replicas evaluate at their
/// own times, and one may see a problem open a few evaluations before another.
pub const SAME_PROBLEM: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Runs remediations. Cloning it is cheap: clones share the gate, the journal and the claims.
#[derive(Debug, Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    journal: Arc<Journal>,
    approvals: Approvals,
    gate: Mutex<Gate>,
    cluster: Cluster,
    client: kube::Client,
    prometheus: Option<Evaluator>,
    settings: Settings,
    /// Targets being remediated, with the incident remediating each.
    claims: Mutex<BTreeMap<String, Claim>>,
    /// A node-local Salve's slot in the cluster-wide count of cordoned nodes.
    cordons: Option<crate::scope::cordon::Cordons>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("journal", &self.journal.path())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A step that completed, as rollback and later `when` conditions need it.
#[derive(Debug, Clone)]
struct Completed {
    step: PlannedStep,
    changed: bool,
    before: Value,
    /// `steps.<name>` for conditions.
    output: Value,
}

/// Where a plan's run stands: the next step, and what completed before it.
#[derive(Debug, Clone, Default)]
struct Progress {
    next: usize,
    completed: Vec<Completed>,
    /// How many steps ran as dry runs, of how many that ran.
    dry_runs: usize,
    runs: usize,
    /// A step already approved (after a restart).
    approved: Option<usize>,
    /// A step whose approval request is already journaled (after a restart): its id.
    pending_approval: Option<(usize, String)>,
    /// What each step that ran or was skipped gave, as `when` conditions read it
    /// (`steps.<name>.status`, `.changed`, and the action's outputs, e.g. `.lines`).
    outputs: BTreeMap<String, Value>,
}

/// What the playbook says of a remediation, beyond its plan.
#[derive(Debug, Clone)]
struct Context {
    playbook: String,
    playbook_ceiling: Option<Risk>,
    evidence: Value,
    /// What diagnosis read of the target (unknown after a restart).
    facts: crate::plan::TargetFacts,
    /// What the advisor's accepted advice asked: only ever more caution.
    caution: Caution,
    /// Why it broke, in a line for people: the advice's account, else Salve's correlation
    /// (when the advisor was asked).
    why: Option<String>,
    /// A rehearsal ([`Executor::rehearse`]): every step a dry run, nothing counted by the gate.
    rehearsal: bool,
}

impl Executor {
    /// An executor acting through `client`, journaling to `journal`, gated by `gate`, verifying
    /// against `prometheus` (without one, verify and `wait_for` never hold).
    pub fn new(
        client: kube::Client,
        journal: Arc<Journal>,
        gate: Gate,
        prometheus: Option<Evaluator>,
        settings: Settings,
    ) -> Self {
        let cordons = gate.scope().node.as_ref().map(|node| {
            crate::scope::cordon::Cordons::new(
                client.clone(),
                &node.lease_namespace,
                &node.name,
                node.max_cordoned,
            )
        });
        Executor {
            inner: Arc::new(Inner {
                cordons,
                approvals: Approvals::new(Arc::clone(&journal)),
                journal,
                gate: Mutex::new(gate),
                cluster: Cluster::new(client.clone()),
                client,
                prometheus,
                settings,
                claims: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The gate, to swap its policy on reload or read its state.
    pub fn gate(&self) -> MutexGuard<'_, Gate> {
        self.inner
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Why this replica may not act now, when it runs under leader election and does not hold
    /// the lead (or its lead's deadline passed); `None` when it may.
    pub fn not_leading(&self) -> Option<&'static str> {
        let leadership = self.inner.settings.leadership.as_ref()?;
        let leading = leadership.borrow().may_act(tokio::time::Instant::now());
        (!leading).then_some("this replica does not hold the lead (another one acts)")
    }

    /// Whether this replica runs under leader election.
    pub fn elected(&self) -> bool {
        self.inner.settings.leadership.is_some()
    }

    /// Having just started or taken the lead: imports from the cluster the incident entries
    /// this replica's journal lacks (what the previous leader, or this pod before it was
    /// rescheduled, did), so that recovery sees them. Itself, for chaining.
    pub async fn take_over(&self) -> &Self {
        let Some(cluster) = &self.inner.settings.cluster else {
            return self;
        };
        match cluster.import(&self.inner.journal).await {
            Ok(0) => {}
            Ok(imported) => {
                tracing::info!(imported, "took over the previous leader's incident entries");
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the previous leader's incidents; recovering what this journal holds");
            }
        }
        self
    }

    /// Until `cancel`, with the incidents kept in the cluster: imports the entries other
    /// replicas write as they write them, and while this replica leads (or runs alone),
    /// deletes the incidents over for longer than the retention ([`crate::state::Importer`]).
    /// Returns at once without cluster state.
    pub async fn follow_cluster(&self, cancel: tokio_util::sync::CancellationToken) {
        let Some(cluster) = &self.inner.settings.cluster else {
            return;
        };
        cluster
            .follow(&self.inner.journal, || self.not_leading().is_none(), cancel)
            .await;
    }

    /// Whether a remediation of `incident` was begun (here, or by another replica whose
    /// entries were imported): the incident diagnosed, correlated, planned or finished — or,
    /// as another replica may have seen the same problem open under an id of its own (at
    /// another evaluation's time, earlier or later), a remediation of its target planned or
    /// correlated since [`SAME_PROBLEM`] before it began.
    pub fn begun(&self, incident: &Incident) -> Result<bool> {
        let journal = &self.inner.journal;
        let own = journal.timeline(&incident.id)?.iter().any(|e| {
            matches!(
                e.record.kind,
                Kind::Diagnosed | Kind::Correlated | Kind::Planned | Kind::RemediationFinished
            )
        });
        if own {
            return Ok(true);
        }
        let Some(target) = &incident.target else {
            return Ok(false);
        };
        let since = incident.active_at.unwrap_or(incident.opened_at) - SAME_PROBLEM;
        for kind in [Kind::Planned, Kind::Correlated] {
            let seen = journal.by_kind(kind)?.into_iter().any(|e| {
                e.record.at >= since
                    && e.record.detail["target"].as_str() == Some(target)
                    && !e.record.incident.as_deref().is_some_and(is_rehearsal)
            });
            if seen {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Waits until this replica does not lead any more (never without leader election).
    pub async fn until_not_leading(&self) {
        match &self.inner.settings.leadership {
            Some(leadership) => {
                let mut leadership = leadership.clone();
                // The lead's local deadline passes without any message: look again then.
                loop {
                    let until = leadership
                        .borrow()
                        .acting_until(tokio::time::Instant::now());
                    match until {
                        None => return,
                        Some(deadline) => {
                            tokio::select! {
                                () = tokio::time::sleep_until(deadline) => {}
                                changed = leadership.changed() => {
                                    if changed.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Waits until this replica leads (at once without leader election).
    pub async fn until_leading(&self) {
        if let Some(leadership) = &self.inner.settings.leadership {
            let mut leadership = leadership.clone();
            let _ = leadership
                .wait_for(|l| l.may_act(tokio::time::Instant::now()))
                .await;
        }
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.inner.journal
    }

    /// The time now, by the executor's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.settings.clock.now()
    }

    /// Remediates `incident` of `playbook`, opened by `signal`; returns how it ended.
    pub async fn remediate(
        &self,
        playbook: &Playbook,
        incident: &Incident,
        signal: &SignalEvent,
    ) -> Result<Finish> {
        self.remediate_as(playbook, incident, signal, false)
            .instrument(incident_span(&incident.id, &playbook.name))
            .await
    }

    /// Rehearses `playbook` as if its trigger had fired with `labels`, on behalf of `by`:
    /// everything a real incident goes through — diagnosis, plan, cooldown, advice, the gate's
    /// verdict on each step — with every step (and any rollback) a server-side dry run, and
    /// nothing counted by the gate (its hourly budget, the breaker, the concurrent incidents)
    /// nor claimed (a real incident on the same target is remediated as if there were no
    /// rehearsal). A step above the ceiling ends the rehearsal there, as a real run would
    /// wait; no approval is asked. It is journaled as an incident of its own (`reh-...`, with
    /// who asked), opened before this returns (its id is returned) and resolved when the
    /// rehearsal ends.
    pub fn rehearse(
        &self,
        playbook: Arc<Playbook>,
        labels: crate::signal::state::LabelSet,
        by: &str,
    ) -> Result<(String, tokio::task::JoinHandle<Result<Finish>>)> {
        let now = self.now();
        let signal = SignalEvent {
            at: now,
            labels,
            transition: crate::signal::state::Transition::Firing,
            value: None,
            values: BTreeMap::new(),
            active_at: Some(now),
        };
        let opened = Incident::rehearsal(&playbook, &signal);
        let mut record = Record::incident(&opened);
        record.detail["by"] = json!(by);
        record.detail["summary"] = json!(format!("rehearsal asked by {by}"));
        self.append(&record)?;
        let id = opened.incident.id.clone();
        let executor = self.clone();
        let run = tokio::spawn(async move {
            let finish = executor
                .remediate_as(&playbook, &opened.incident, &signal, true)
                .instrument(incident_span(&opened.incident.id, &playbook.name))
                .await;
            let mut resolved = opened.clone();
            resolved.at = executor.now();
            resolved.transition = crate::incident::IncidentTransition::Resolved;
            executor.append(&Record::incident(&resolved))?;
            finish
        });
        Ok((id, run))
    }

    async fn remediate_as(
        &self,
        playbook: &Playbook,
        incident: &Incident,
        signal: &SignalEvent,
        rehearsal: bool,
    ) -> Result<Finish> {
        let diagnosis = diagnose::diagnose(&self.inner.client, playbook, &signal.labels).await;
        let record = |kind, detail| Record {
            at: self.now(),
            kind,
            playbook: playbook.name.clone(),
            incident: Some(incident.id.clone()),
            detail,
        };
        let mut detail = diagnose::to_json(&diagnosis);
        detail["summary"] = json!(diagnosis_summary(&diagnosis, self.now()));
        self.append(&record(Kind::Diagnosed, detail))?;
        let plan = match crate::plan::plan(playbook, incident, signal, &diagnosis.facts, self.now())
        {
            Ok(plan) => plan,
            Err(error) => {
                let finish = Finish::NotPlanned(error.to_string());
                self.finish(&playbook.name, &incident.id, &finish)?;
                return Ok(finish);
            }
        };
        let target = plan.target.to_string();
        // A rehearsal claims nothing: a real incident of the target is remediated as if there
        // were no rehearsal.
        if !rehearsal {
            let mine = Claim {
                incident: incident.id.clone(),
                root: Root {
                    incident: incident.id.clone(),
                    labels: incident.root.clone(),
                    active_at: incident.active_at,
                },
            };
            // One broken thing, one remediation; the root cause is the earliest signal. Journaled
            // under the claim, so the entries name the roots in the order they were decided.
            let correlated = self.claim(&target, mine, |holder| {
                let root = &holder.root;
                let reason = format!(
                    "{target} is being remediated for incident {}; root cause: the earliest signal, \
                     {} of incident {}",
                    holder.incident,
                    crate::incident::describe(&root.labels),
                    root.incident
                );
                self.append(&record(
                    Kind::Correlated,
                    json!({
                        "with": holder.incident, "target": target,
                        "root": root.labels, "rootIncident": root.incident,
                        "rootActiveAt": root.active_at.map(|t| t.to_rfc3339()),
                        "summary": reason,
                    }),
                ))
            })?;
            if let Some(holder) = correlated {
                self.metrics().remediation(&playbook.name, "correlated");
                return Ok(Finish::Correlated(holder));
            }
        }
        // Claimed: a remediation in flight on the target was told apart above (correlated);
        // a finished one within the cooldown leaves it alone.
        let cooling = self.cooling_down(playbook, &target);
        if !rehearsal && !matches!(cooling, Ok(None)) {
            self.release(&target);
        }
        if let Some(reason) = cooling? {
            let finish = Finish::CoolingDown(reason);
            self.finish(&playbook.name, &incident.id, &finish)?;
            return Ok(finish);
        }
        let mut context = Context {
            playbook: playbook.name.clone(),
            playbook_ceiling: playbook.max_autonomous_risk,
            evidence: json!({
                "labels": signal.labels,
                "value": signal.value.filter(|v| v.is_finite()),
                "values": journal::finite(&signal.values),
                "activeSince": signal.active_at,
                "root": incident.root,
            }),
            facts: diagnosis.facts.target.clone(),
            caution: Caution::default(),
            why: None,
            rehearsal,
        };
        let planned = self.append(&record(
            Kind::Planned,
            json!({
                "plan": plan,
                "context": {"playbookCeiling": context.playbook_ceiling, "evidence": context.evidence},
                "target": target,
                "summary": plan_summary(&plan),
            }),
        ));
        let finish = async {
            planned?;
            self.advise(&mut context, &plan, signal).await?;
            self.execute(&context, &plan, Progress::default()).await
        }
        .await;
        if !rehearsal {
            self.release(&target);
        }
        finish
    }

    /// Consults the LLM advisor when the policy turns it on, and journals what it said (or
    /// why it said nothing) before any step runs. An accepted advice may only add caution
    /// to `context`; anything else leaves the remediation exactly as without an advisor.
    async fn advise(&self, context: &mut Context, plan: &Plan, signal: &SignalEvent) -> Result<()> {
        let (config, ceiling) = {
            let gate = self.gate();
            let Some(config) = gate.policy().advisor.clone() else {
                return Ok(());
            };
            let ceiling = gate.ceiling(context.playbook_ceiling, plan.target.namespace.as_deref());
            (config, ceiling.risk)
        };
        // Whether a step that may run already waits for a human (the model may not ask to
        // remove that).
        let approval_required = plan
            .steps
            .iter()
            .any(|s| !matches!(s.decision, Decision::Skip(_)) && s.risk > ceiling);
        let advisor = &self.inner.settings.advisor;
        let set = advisor.set();
        let scope = Arc::clone(self.gate().scope());
        let sources = Sources {
            kube: &self.inner.client,
            cluster: &self.inner.cluster,
            journal: &self.inner.journal,
            set: set.as_deref(),
            scope: &scope,
        };
        let subject = Subject {
            incident: &plan.incident,
            playbook: &context.playbook,
            signal,
            target: &plan.target,
            now: self.now(),
        };
        let gathered = gather::gather(&sources, &subject).await;
        let fingerprint = format!("{}|{}", context.playbook, plan.target);
        let asked = advisor
            .ask(
                &config,
                &gathered.brief,
                &fingerprint,
                ceiling,
                approval_required,
            )
            .await;
        let caution = asked.caution(ceiling);
        let mut detail = asked.to_json(caution);
        detail["gaps"] = json!(gathered.gaps);
        let kind = match asked.consultation.advice() {
            Some(_) => Kind::Advice,
            None => Kind::AdviceRejected,
        };
        // Journaled before it takes effect, like every decision.
        self.record(context, plan, kind, detail)?;
        self.metrics().advice(&asked.consultation);
        context.why = Some(match asked.consultation.advice() {
            Some(advice) => crate::advisor::consult::summarize(advice),
            None => asked.correlation.reason.clone(),
        });
        context.caution = caution;
        Ok(())
    }

    /// Why `playbook` must not act on `target` yet: it planned a remediation of it within its
    /// `cooldown` (the journal says when, so this holds across restarts and across incidents of
    /// different series on one target — two pods of one Deployment leaking).
    fn cooling_down(&self, playbook: &Playbook, target: &str) -> Result<Option<String>> {
        let Ok(cooldown) = chrono::TimeDelta::from_std(playbook.cooldown) else {
            return Ok(None);
        };
        if cooldown.is_zero() {
            return Ok(None);
        }
        let since = self.now() - cooldown;
        let last = self
            .inner
            .journal
            .by_detail("target", target)?
            .into_iter()
            .rev()
            .find(|e| {
                e.record.kind == Kind::Planned
                    && e.record.playbook == playbook.name
                    && !e.record.incident.as_deref().is_some_and(is_rehearsal)
            });
        Ok(last.filter(|e| e.record.at > since).map(|e| {
            let ago = (self.now() - e.record.at).to_std().unwrap_or_default();
            format!(
                "{} remediated {target} {} ago (incident {}); its cooldown is {}",
                playbook.name,
                crate::check::format_duration(ago),
                e.record.incident.as_deref().unwrap_or("-"),
                crate::check::format_duration(playbook.cooldown)
            )
        }))
    }

    /// Runs `plan` from `progress` on: the steps, verify, and rollback when needed; journals
    /// the finish.
    async fn execute(
        &self,
        context: &Context,
        plan: &Plan,
        mut progress: Progress,
    ) -> Result<Finish> {
        if !context.rehearsal {
            self.gate().incident_started(&plan.incident, self.now());
        }
        let finish = match self.steps(context, plan, &mut progress).await? {
            Some(Failure::Halt(reason)) => Finish::Halted(reason),
            Some(Failure::Rollback(reason)) => {
                self.rollback(context, plan, &progress, reason).await?
            }
            None if context.rehearsal => Finish::Rehearsed,
            None if progress.runs > 0 && progress.dry_runs == progress.runs => Finish::Rehearsed,
            None => match self.verify(context, plan).await? {
                Ok(()) => Finish::Remediated,
                Err(reason) => self.rollback(context, plan, &progress, reason).await?,
            },
        };
        self.finish(&context.playbook, &plan.incident, &finish)?;
        Ok(finish)
    }

    /// Runs the steps from `progress.next`; `None` when all ran.
    async fn steps(
        &self,
        context: &Context,
        plan: &Plan,
        progress: &mut Progress,
    ) -> Result<Option<Failure>> {
        while let Some(step) = plan.steps.get(progress.next) {
            let index = progress.next;
            progress.next += 1;
            let skip = match &step.decision {
                Decision::Run => None,
                Decision::Skip(reason) => Some(reason.clone()),
                Decision::Deferred(when) => decide(when, plan, context, &progress.outputs).err(),
            };
            if let Some(reason) = skip {
                progress
                    .outputs
                    .insert(step.name.clone(), json!({"status": "skipped"}));
                self.record(
                    context,
                    plan,
                    Kind::StepSkipped,
                    json!({
                        "step": step.name, "index": index, "reason": reason,
                        "summary": format!("{} not run: {reason}", step.name),
                    }),
                )?;
                continue;
            }
            if let Some(failure) = match &step.wasm {
                Some(wasm) => {
                    self.run_wasm(context, plan, step, wasm, index, progress)
                        .await?
                }
                None => self.gated(context, plan, step, index, progress).await?,
            } {
                return Ok(Some(failure));
            }
        }
        Ok(None)
    }

    /// Gates `step` (asking for approval above the ceiling) and runs it if it may; `None`
    /// when it ran well.
    async fn gated(
        &self,
        context: &Context,
        plan: &Plan,
        step: &PlannedStep,
        index: usize,
        progress: &mut Progress,
    ) -> Result<Option<Failure>> {
        let node = self.target_node(context, plan).await;
        let request = Request {
            playbook: &context.playbook,
            playbook_ceiling: context.playbook_ceiling,
            step: &step.name,
            risk: step.risk,
            namespace: plan.target.namespace.as_deref(),
            incident: &plan.incident,
            caution: context.caution,
            target: Some(crate::scope::Placement {
                node: node.as_deref(),
                ..crate::scope::Placement::of(&plan.target, &context.facts)
            }),
        };
        // A rehearsal asks what the gate would say, and leaves its counters alone.
        let mut admitted_at = self.now();
        let verdict = if context.rehearsal {
            self.gate().check(&request, admitted_at)
        } else {
            self.gate().admit(&request, admitted_at)
        };
        self.verdict(context, plan, (step, index), &verdict)?;
        self.breaker_changed();
        let dry_run = match verdict {
            Verdict::Allow { dry_run, .. } => dry_run,
            Verdict::NeedsApproval { .. } if context.rehearsal => {
                return Ok(Some(Failure::Halt(format!(
                    "a real run would wait here for a human approval of {}: {}",
                    step.name,
                    verdict.reason()
                ))));
            }
            Verdict::NeedsApproval { .. } => {
                let answer = if progress.approved.take_if(|i| *i == index).is_some() {
                    Ok(())
                } else if let Some((_, id)) =
                    progress.pending_approval.take_if(|(i, _)| *i == index)
                {
                    self.answer(&id).await?
                } else {
                    self.ask(context, plan, (step, index), verdict.reason())
                        .await?
                };
                match answer {
                    Ok(()) => {
                        let mut gate = self.gate();
                        admitted_at = self.now();
                        gate.action_executed(admitted_at);
                        gate.policy().dry_run
                    }
                    Err(reason) => return Ok(Some(Failure::Halt(reason))),
                }
            }
            Verdict::Hold { .. } | Verdict::Deny { .. } => {
                return Ok(Some(Failure::Halt(verdict.reason().to_string())));
            }
        };
        let dry_run = dry_run || self.inner.settings.force_dry_run || context.rehearsal;
        // Checked last, after any wait for an approval: a replica that lost the lead meanwhile
        // must not act (a rehearsal changes nothing and may run anywhere).
        if !context.rehearsal
            && let Some(why) = self.not_leading()
        {
            return Ok(Some(Failure::Halt(format!(
                "step {} not run: {why}",
                step.name
            ))));
        }
        // A node-local Salve takes a slot in the cluster-wide count before it cordons its node;
        // none free, the gate's admission is withdrawn and the plan halts, journaled as a
        // denial.
        if step.action == Some(Action::Cordon)
            && !dry_run
            && let Err(why) = self.cordon_slot().await
        {
            self.gate().action_withdrawn(admitted_at);
            let denied = Verdict::Deny {
                ceiling: verdict.ceiling(),
                denial: crate::gate::Denial::CordonLimit,
                reason: format!("step `{}` (risk {}) denied: {why}", step.name, step.risk),
                until: None,
            };
            self.verdict(context, plan, (step, index), &denied)?;
            return Ok(Some(Failure::Halt(denied.reason().to_string())));
        }
        match self
            .run_step(context, plan, step, index, "steps", dry_run)
            .await?
        {
            Ok(completed) => {
                progress
                    .outputs
                    .insert(step.name.clone(), completed.output.clone());
                progress.runs += 1;
                progress.dry_runs += usize::from(dry_run);
                progress.completed.push(completed);
                Ok(None)
            }
            Err(reason) => Ok(Some(Failure::Rollback(format!(
                "step {} failed: {reason}",
                step.name
            )))),
        }
    }

    /// Journals the gate's `verdict` on `step` and counts it.
    fn verdict(
        &self,
        context: &Context,
        plan: &Plan,
        (step, index): (&PlannedStep, usize),
        verdict: &Verdict,
    ) -> Result<()> {
        let mut detail = json!({
            "step": step.name, "index": index, "risk": step.risk,
            "verdict": verdict.name(), "ceiling": verdict.ceiling().risk,
            "reason": verdict.reason(),
            "summary": format!("{}: {}", verdict.name(), verdict.reason()),
        });
        if let Verdict::Deny { denial, .. } = verdict {
            detail["denial"] = json!(denial.as_str());
        }
        self.record(context, plan, Kind::GateVerdict, detail)?;
        self.metrics().verdict(step.risk, verdict);
        Ok(())
    }

    /// The node the plan's target (a Pod) runs on: as diagnosis read it, else — after a
    /// restart, which journals no facts — read now for a node-local Salve; `None` when unknown
    /// (the scope then denies).
    async fn target_node(&self, context: &Context, plan: &Plan) -> Option<String> {
        if let Some(node) = &context.facts.node {
            return Some(node.clone());
        }
        if plan.target.kind != "Pod" || self.gate().scope().node.is_none() {
            return None;
        }
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(self.inner.client.clone(), plan.target.namespace.as_deref()?);
        let pod = pods.get_opt(&plan.target.name).await.ok().flatten()?;
        pod.spec?.node_name
    }

    /// A slot in the cluster-wide count of cordoned nodes, for a node-local Salve about to
    /// cordon its node (`Ok` at once for any other Salve); `Err(why not)`.
    async fn cordon_slot(&self) -> Result<(), String> {
        let Some(cordons) = &self.inner.cordons else {
            return Ok(());
        };
        match cordons.take(self.now()).await {
            Ok(taken) => {
                tracing::info!(?taken, lease = cordons.lease(), "cordon slot held");
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// A WASM step: the module decides (sandboxed, under its grants and limits); the actions
    /// it asks for then go one by one through the gate and run like playbook steps, each at
    /// the risk the host settled (never below the step's or the action's own). `skip` goes
    /// on, `escalate` halts the plan, a failure of the module rolls it back.
    async fn run_wasm(
        &self,
        context: &Context,
        plan: &Plan,
        step: &PlannedStep,
        wasm: &crate::plan::PlannedWasm,
        index: usize,
        progress: &mut Progress,
    ) -> Result<Option<Failure>> {
        self.record(
            context,
            plan,
            Kind::StepStarted,
            json!({
                "step": step.name, "index": index, "phase": "steps", "action": "wasm",
                "module": wasm.module, "digest": wasm.digest, "risk": step.risk,
                "summary": format!("wasm {} for {}", wasm.module.display(), plan.target),
            }),
        )?;
        let evaluated = match &self.inner.settings.wasm {
            None => Err(("no WASM host in this engine".to_string(), Vec::new())),
            Some(host) => match wasm::load(host, wasm) {
                Err(error) => Err((error, Vec::new())),
                Ok(module) => {
                    let outputs = progress
                        .outputs
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let evaluation = wasm::Evaluation::new(
                        plan,
                        step,
                        wasm,
                        root_signal(&context.evidence),
                        &context.facts,
                        outputs,
                    );
                    let services = crate::wasm::Services {
                        prometheus: self.inner.prometheus.clone(),
                        kube: Some(self.inner.client.clone()),
                        clock: self.inner.settings.clock,
                    };
                    host.evaluate(
                        &module,
                        &evaluation.grants,
                        &evaluation.limits,
                        evaluation.input,
                        &services,
                    )
                    .await
                    .map_err(|failure| (failure.error.to_string(), failure.logs))
                }
            },
        };
        let result = match evaluated {
            Ok(result) => result,
            Err((reason, logs)) => {
                self.metrics().wasm_step("failed", None);
                self.step_failed(
                    context,
                    plan,
                    json!({
                        "step": step.name, "index": index, "phase": "steps", "action": "wasm",
                        "reason": reason, "logs": logs,
                    }),
                )?;
                return Ok(Some(Failure::Rollback(format!(
                    "step {} failed: {reason}",
                    step.name
                ))));
            }
        };
        let decision = result.decision.name();
        self.metrics().wasm_step(decision, Some(result.took));
        let reason = result.decision.reason();
        let actions = match &result.decision {
            crate::wasm::Decision::Proceed(actions) => actions.as_slice(),
            crate::wasm::Decision::Skip(_) | crate::wasm::Decision::Escalate(_) => &[],
        };
        let asked: Vec<String> = actions
            .iter()
            .map(|a| format!("{} ({})", a.action.as_str(), a.risk))
            .collect();
        self.record(
            context,
            plan,
            Kind::StepSucceeded,
            json!({
                "step": step.name, "index": index, "phase": "steps", "action": "wasm",
                "changed": false, "decision": decision, "reason": reason, "actions": actions,
                "after": result.output, "logs": result.logs,
                "seconds": result.took.as_secs_f64(),
                "summary": match decision {
                    "proceed" => format!("decided: {}", asked.join(" → ")),
                    _ => format!("decided: {decision}: {reason}"),
                },
            }),
        )?;
        progress
            .outputs
            .insert(step.name.clone(), wasm::step_output(&result));
        if decision == "escalate" {
            return Ok(Some(Failure::Halt(format!(
                "step {} escalated to a human: {reason}",
                step.name
            ))));
        }
        for action in wasm::asked_steps(step, actions) {
            if let Some(failure) = self.gated(context, plan, &action, index, progress).await? {
                return Ok(Some(failure));
            }
        }
        Ok(None)
    }

    /// The account of `plan` for people, `next` still to run (see [`summary`]).
    fn situation(
        &self,
        context: &Context,
        plan: &Plan,
        next: (Option<&PlannedStep>, usize),
    ) -> String {
        let (ceiling, timeout) = {
            let gate = self.gate();
            let ceiling = gate
                .ceiling(context.playbook_ceiling, plan.target.namespace.as_deref())
                .risk;
            (ceiling, gate.policy().approval_timeout)
        };
        summary::situation(context, plan, next, context.caution.lower(ceiling), timeout)
    }

    /// Requests approval for `step` and waits for the answer: `Ok` to run it, `Err(why not)`.
    async fn ask(
        &self,
        context: &Context,
        plan: &Plan,
        (step, index): (&PlannedStep, usize),
        reason: &str,
    ) -> Result<Result<(), String>> {
        let timeout = self.gate().policy().approval_timeout;
        let situation = self.situation(context, plan, (Some(step), index + 1));
        let approval = self.inner.approvals.request(
            Ask {
                situation,
                incident: plan.incident.clone(),
                playbook: context.playbook.clone(),
                step: step.name.clone(),
                risk: step.risk,
                reason: reason.to_string(),
                plan: serde_json::to_value(plan).unwrap_or(Value::Null),
                evidence: context.evidence.clone(),
            },
            self.now(),
            timeout,
        )?;
        self.metrics().approval_requested();
        tracing::warn!(
            incident = plan.incident,
            step = step.name,
            approval = approval.id,
            expires = %approval.expires_at,
            "approval needed: salve approve {} (or reject)",
            approval.id
        );
        self.answer(&approval.id).await
    }

    /// Waits for the answer to approval `id` (no answer by its deadline: rejected).
    async fn answer(&self, id: &str) -> Result<Result<(), String>> {
        let _pending = self.metrics().approval_pending();
        loop {
            let approval = self.inner.approvals.get(id)?;
            let now = self.now();
            match approval.state {
                State::Approved { by, .. } => {
                    self.metrics().approval_answered(true);
                    tracing::info!(approval = id, by, "approved");
                    return Ok(Ok(()));
                }
                State::Rejected { by, reason, .. } => {
                    self.metrics().approval_answered(false);
                    return Ok(Err(format!(
                        "step {} rejected by {by}{}",
                        approval.step,
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {reason}")
                        }
                    )));
                }
                State::Expired { .. } => {
                    self.metrics().approval_expired();
                    return Ok(Err(format!(
                        "step {} was not approved before {}: rejected",
                        approval.step, approval.expires_at
                    )));
                }
                State::Pending if now >= approval.expires_at => {
                    match self.inner.approvals.expire(now) {
                        Ok(_) => {}
                        // The cluster refused the expiry (an answer another replica took is
                        // there and on its way here) or cannot be reached: look again.
                        Err(crate::approval::Error::Journal(
                            error @ journal::Error::Mirror { .. },
                        )) => {
                            tracing::warn!(approval = id, %error, "cannot record the expiry yet");
                            self.inner
                                .settings
                                .clock
                                .sleep(self.inner.settings.poll)
                                .await;
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
                State::Pending => {
                    let left = (approval.expires_at - now).to_std().unwrap_or_default();
                    self.inner
                        .settings
                        .clock
                        .sleep(left.min(self.inner.settings.poll))
                        .await;
                }
            }
        }
    }

    /// Runs one step: journaled before, its result after; fed to the breaker.
    async fn run_step(
        &self,
        context: &Context,
        plan: &Plan,
        step: &PlannedStep,
        index: usize,
        phase: &str,
        dry_run: bool,
    ) -> Result<Result<Completed, String>> {
        let action = step.action.map_or("wasm", Action::as_str);
        let key = format!("{}/{phase}/{}", plan.incident, step.name);
        // A notification goes to the sandbox's receiver when there is one, and on the way
        // forward carries the account of the remediation (what broke, why, what comes next).
        let notify;
        let step = if step.action == Some(Action::Notify) {
            let mut copy = step.clone();
            if let Some(url) = &self.inner.settings.notify_url {
                copy.params.insert("url".into(), json!(url));
            }
            if phase == "steps" {
                let situation = self.situation(context, plan, (None, index + 1));
                copy.params.insert("summary".into(), json!(situation));
            }
            notify = copy;
            &notify
        } else {
            step
        };
        self.record(context, plan, Kind::StepStarted, json!({
            "step": step.name, "index": index, "phase": phase, "action": action,
            "params": step.params, "risk": step.risk, "dryRun": dry_run, "key": key,
            "summary": format!("{action} {}{}", plan.target, if dry_run { " (dry run)" } else { "" }),
        }))?;
        let started = tokio::time::Instant::now();
        let result = match step.action {
            Some(Action::WaitFor) => self.wait_for(step).await,
            _ => match tokio::time::timeout(
                self.inner.settings.clock.wall_time(step.timeout),
                self.inner.cluster.run(step, &plan.target, &key, dry_run),
            )
            .await
            {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!(
                    "no result within its timeout of {}",
                    crate::check::format_duration(step.timeout)
                )),
            },
        };
        let took = started.elapsed().as_secs_f64() * self.inner.settings.clock.speed();
        match result {
            Ok(outcome) => {
                if !context.rehearsal {
                    self.gate().action_succeeded(self.now());
                }
                // The node is schedulable again: its slot in the count of cordoned nodes is free.
                if step.action == Some(Action::Uncordon)
                    && !outcome.dry_run
                    && let Some(cordons) = &self.inner.cordons
                    && let Err(error) = cordons.give_back().await
                {
                    tracing::warn!(%error, "the cordon slot could not be given back");
                }
                self.metrics().action(action, true, outcome.dry_run);
                self.breaker_changed();
                self.record(
                    context,
                    plan,
                    Kind::StepSucceeded,
                    json!({
                        "step": step.name, "index": index, "phase": phase, "action": action,
                        "planned": step,
                        "changed": outcome.changed, "dryRun": outcome.dry_run,
                        "before": outcome.before, "after": outcome.after, "seconds": took,
                        "summary": outcome.message,
                    }),
                )?;
                let output = output(&outcome.after, outcome.changed, outcome.dry_run);
                Ok(Ok(Completed {
                    step: step.clone(),
                    changed: outcome.changed && !outcome.dry_run,
                    before: outcome.before,
                    output,
                }))
            }
            Err(reason) => {
                self.metrics().action(action, false, dry_run);
                self.step_failed(
                    context,
                    plan,
                    json!({
                        "step": step.name, "index": index, "phase": phase, "action": action,
                        "reason": reason, "seconds": took,
                    }),
                )?;
                Ok(Err(reason))
            }
        }
    }

    /// The `wait_for` action: its PromQL must hold within its `timeout` (or the step's).
    async fn wait_for(&self, step: &PlannedStep) -> Result<crate::actions::Outcome, String> {
        let promql = step
            .params
            .get("promql")
            .and_then(Value::as_str)
            .ok_or("wait_for needs `promql`")?;
        let duration = |name: &str| {
            step.params
                .get(name)
                .and_then(Value::as_str)
                .and_then(crate::check::parse_duration)
        };
        let within = duration("timeout").unwrap_or(step.timeout);
        let every = duration("interval").unwrap_or(self.inner.settings.poll);
        let clock = &self.inner.settings.clock;
        match check::until_holds(self.inner.prometheus.as_ref(), clock, promql, within, every).await
        {
            Waited::Held(after) => Ok(crate::actions::Outcome {
                changed: false,
                dry_run: false,
                message: format!(
                    "`{promql}` held after {}",
                    crate::check::format_duration(after)
                ),
                before: Value::Null,
                after: Value::Null,
            }),
            Waited::TimedOut(reason) => Err(reason),
        }
    }

    /// The plan's verify check: `Ok` when it held (or there is none), `Err(why)` otherwise.
    async fn verify(&self, context: &Context, plan: &Plan) -> Result<Result<(), String>> {
        let Some(verify) = &plan.verify else {
            return Ok(Ok(()));
        };
        let waited = check::until_holds(
            self.inner.prometheus.as_ref(),
            &self.inner.settings.clock,
            &verify.promql,
            verify.within,
            self.inner.settings.poll,
        )
        .await;
        match waited {
            Waited::Held(after) => {
                self.record(
                    context,
                    plan,
                    Kind::VerifyPassed,
                    json!({
                        "promql": verify.promql, "seconds": after.as_secs_f64(),
                        "summary": format!("ok after {}", crate::check::format_duration(after)),
                    }),
                )?;
                Ok(Ok(()))
            }
            Waited::TimedOut(reason) => {
                self.record(
                    context,
                    plan,
                    Kind::VerifyFailed,
                    json!({
                        "promql": verify.promql, "reason": reason,
                        "summary": "failed",
                    }),
                )?;
                Ok(Err(format!("verify failed: {reason}")))
            }
        }
    }

    /// Undoes the completed steps in reverse order, then runs the playbook's rollback steps.
    async fn rollback(
        &self,
        context: &Context,
        plan: &Plan,
        progress: &Progress,
        reason: String,
    ) -> Result<Finish> {
        let mut notes = Vec::new();
        let changed = progress.completed.iter().any(|c| c.changed);
        let (undo, how): (Vec<PlannedStep>, &str) = if !changed {
            (Vec::new(), "nothing had changed: nothing to undo")
        } else if plan.rollback.is_empty() {
            let mut undo = Vec::new();
            for completed in progress.completed.iter().rev() {
                match undo::undo(&completed.step, completed.changed, &completed.before) {
                    Undo::Step(step) => undo.push(*step),
                    Undo::Unchanged => {}
                    Undo::Irreversible(why) => {
                        notes.push(format!("{}: {why}", completed.step.name));
                    }
                }
            }
            (undo, "the completed steps, undone in reverse order")
        } else {
            let declared = plan
                .rollback
                .iter()
                .filter(|s| s.decision == Decision::Run)
                .cloned()
                .collect();
            (
                declared,
                "the playbook's rollback steps, in the order written",
            )
        };
        self.record(
            context,
            plan,
            Kind::RollbackStarted,
            json!({
                "reason": reason,
                "steps": undo.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
                "irreversible": notes,
                "summary": format!("{}: {how}", reason),
            }),
        )?;
        let dry_run =
            self.gate().policy().dry_run || self.inner.settings.force_dry_run || context.rehearsal;
        let mut failed = Vec::new();
        let node = self.target_node(context, plan).await;
        for (index, step) in undo.iter().enumerate() {
            let mut ceiling = self
                .gate()
                .ceiling(context.playbook_ceiling, plan.target.namespace.as_deref());
            // The advisor's lower ceiling holds for rollback too; its approvals do not (undoing
            // what was approved is not a new change).
            ceiling.risk = context.caution.lower(ceiling.risk);
            // Undo acts on the plan's target, which the gate admitted; a plan journaled under
            // another scope (a restart with other flags) is left to a human, as is a step above
            // the ceiling, and nothing runs on a replica that lost the lead. A cordon (undoing
            // an uncordon) needs its slot like any other, taken last.
            let mut not_run = self
                .gate()
                .scope()
                .admits(&crate::scope::Placement {
                    node: node.as_deref(),
                    ..crate::scope::Placement::of(&plan.target, &context.facts)
                })
                .err()
                .map(|why| format!("outside this Salve's scope: {why}"))
                .or_else(|| {
                    (step.risk > ceiling.risk).then(|| {
                        format!(
                            "its risk {} is above the ceiling `{}`: a human must run it",
                            step.risk, ceiling.risk
                        )
                    })
                })
                .or_else(|| {
                    (!context.rehearsal)
                        .then(|| self.not_leading().map(str::to_string))
                        .flatten()
                });
            if not_run.is_none() && step.action == Some(Action::Cordon) && !dry_run {
                not_run = self.cordon_slot().await.err();
            }
            if let Some(why) = not_run {
                let why = format!("rollback step {} not run: {why}", step.name);
                self.record(
                    context,
                    plan,
                    Kind::StepSkipped,
                    json!({
                        "step": step.name, "index": index, "phase": "rollback",
                        "reason": why, "summary": why,
                    }),
                )?;
                failed.push(why);
                continue;
            }
            if !context.rehearsal {
                self.gate().action_executed(self.now());
            }
            if let Err(why) = self
                .run_step(context, plan, step, index, "rollback", dry_run)
                .await?
            {
                failed.push(format!("{}: {why}", step.name));
            }
        }
        self.metrics().rollback(failed.is_empty());
        Ok(if failed.is_empty() {
            Finish::RolledBack(reason)
        } else {
            Finish::RollbackIncomplete(format!("{reason}; undo failed: {}", failed.join("; ")))
        })
    }

    /// A step (or a WASM module) failed: the breaker counts it and the journal says why.
    fn step_failed(&self, context: &Context, plan: &Plan, detail: Value) -> Result<()> {
        if !context.rehearsal {
            self.gate().action_failed(self.now());
            self.breaker_changed();
        }
        self.record(context, plan, Kind::StepFailed, detail)
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.settings.metrics
    }

    /// Tells the metrics where the circuit breaker stands now.
    fn breaker_changed(&self) {
        let state = self.gate().breaker(self.now());
        self.metrics().breaker(state);
    }

    fn record(&self, context: &Context, plan: &Plan, kind: Kind, detail: Value) -> Result<()> {
        self.append(&Record {
            at: self.now(),
            kind,
            playbook: context.playbook.clone(),
            incident: Some(plan.incident.clone()),
            detail,
        })
    }

    fn append(&self, record: &Record) -> Result<()> {
        self.inner.journal.append(record)?;
        Ok(())
    }

    fn finish(&self, playbook: &str, incident: &str, finish: &Finish) -> Result<()> {
        self.gate().incident_finished(incident, self.now());
        self.metrics().remediation(playbook, finish.name());
        let summary = match finish.reason() {
            "" => finish.name().to_string(),
            reason => format!("{}: {reason}", finish.name()),
        };
        self.append(&Record {
            at: self.now(),
            kind: Kind::RemediationFinished,
            playbook: playbook.to_string(),
            incident: Some(incident.to_string()),
            detail: json!({"outcome": finish.name(), "reason": finish.reason(), "summary": summary}),
        })?;
        tracing::info!(
            incident,
            outcome = finish.name(),
            reason = finish.reason(),
            "remediation finished"
        );
        Ok(())
    }

    /// Claims `target` for `claim`'s incident. When another incident holds it, its root
    /// becomes the earlier of the two roots (so the group's root is its earliest signal,
    /// whatever order the incidents arrived in), `held` is called with it while the claims are
    /// locked, and the holder's incident is returned.
    fn claim(
        &self,
        target: &str,
        claim: Claim,
        held: impl FnOnce(&Claim) -> Result<()>,
    ) -> Result<Option<String>> {
        let mut claims = self
            .inner
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match claims.get_mut(target) {
            Some(holder) if holder.incident != claim.incident => {
                let earlier = match (holder.root.active_at, claim.root.active_at) {
                    (Some(theirs), Some(ours)) => ours < theirs,
                    (None, Some(_)) => true,
                    _ => false,
                };
                if earlier {
                    holder.root = claim.root;
                }
                held(holder)?;
                Ok(Some(holder.incident.clone()))
            }
            _ => {
                claims.insert(target.to_string(), claim);
                Ok(None)
            }
        }
    }

    /// Forgets the remediations that were running: every target's claim, and the incidents
    /// the gate counts as in progress (for `concurrentIncidents`). They were stopped (this
    /// replica lost the lead), and whoever leads next recovers them from the journal.
    pub fn forget_running(&self) {
        self.inner
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.gate().forget_incidents();
    }

    fn release(&self, target: &str) {
        self.inner
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(target);
    }
}

/// The root signal a WASM step is told, as the plan's `evidence` journaled it.
fn root_signal(evidence: &Value) -> crate::wasm::SignalInput {
    let evidence = |field: &str| evidence[field].clone();
    crate::wasm::SignalInput {
        labels: serde_json::from_value(evidence("labels")).unwrap_or_default(),
        value: evidence("value").as_f64(),
        values: serde_json::from_value(evidence("values")).unwrap_or_default(),
        active_since: serde_json::from_value(evidence("activeSince")).unwrap_or_default(),
    }
}

/// `steps.<name>` for a step that succeeded: its status, whether it changed anything, whether
/// it was a dry run, and the fields of the action's output (`after`).
fn output(after: &Value, changed: bool, dry_run: bool) -> Value {
    let mut output = match after {
        Value::Object(fields) => fields.clone(),
        Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("output".to_string(), other.clone())]),
    };
    output.insert("status".into(), json!("succeeded"));
    output.insert("changed".into(), json!(changed));
    output.insert("dryRun".into(), json!(dry_run));
    Value::Object(output)
}

/// Decides a `when` that reads earlier steps' outputs, now that they are known: `Ok` to run,
/// `Err(why not)`. Its context holds `steps`, the signal's `labels` and the target's name;
/// anything else it reads (the target's facts, say) cannot be decided here, and an undecided
/// condition does not run its step.
fn decide(
    when: &str,
    plan: &Plan,
    context: &Context,
    outputs: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let condition = crate::condition::Condition::compile(when)
        .map_err(|errors| format!("`{when}` does not compile: {errors:?}"))?;
    let mut cel = cel::Context::default();
    let value = |json: Value| cel::to_value(json).map_err(|e| e.to_string());
    cel.add_variable_from_value("steps", value(json!(outputs))?);
    cel.add_variable_from_value("labels", value(context.evidence["labels"].clone())?);
    cel.add_variable_from_value(
        "target",
        value(json!({
            "kind": plan.target.kind,
            "name": plan.target.name,
            "namespace": plan.target.namespace,
        }))?,
    );
    match condition.program().execute(&cel) {
        Ok(cel::Value::Bool(true)) => Ok(()),
        Ok(cel::Value::Bool(false)) => Err(format!("`{when}` is false")),
        Ok(other) => Err(format!("`{when}` gave {other:?}, not true or false")),
        Err(error) => Err(format!(
            "`{when}` cannot be decided ({error}); a step is not run on unknown facts"
        )),
    }
}

/// Who is remediating a target: the incident, and the root cause of every incident on it.
#[derive(Debug, Clone)]
struct Claim {
    incident: String,
    root: Root,
}

/// The earliest signal among the incidents on one target.
#[derive(Debug, Clone)]
struct Root {
    incident: String,
    labels: crate::signal::state::LabelSet,
    active_at: Option<DateTime<Utc>>,
}

/// Why the steps stopped.
#[derive(Debug)]
enum Failure {
    /// The plan stops here; what completed stays.
    Halt(String),
    /// A step failed: undo what completed.
    Rollback(String),
}

fn diagnosis_summary(diagnosis: &diagnose::Diagnosis, now: DateTime<Utc>) -> String {
    let mut parts = Vec::new();
    if let Some(owner) = &diagnosis.facts.owner {
        parts.push(format!("owner {owner}"));
    }
    if let Some(target) = &diagnosis.target {
        parts.push(format!("target {target}"));
    }
    let facts = &diagnosis.facts.target;
    if let Some(revision) = facts.revision {
        parts.push(format!("revision {revision}"));
    }
    if let Some(at) = facts.deployed_at {
        let age = (now - at).to_std().unwrap_or_default();
        parts.push(format!(
            "rolled out {} ago",
            crate::check::format_duration(age)
        ));
    }
    parts.extend(diagnosis.notes.iter().cloned());
    parts.join(", ")
}

fn plan_summary(plan: &Plan) -> String {
    let steps: Vec<String> = plan
        .steps
        .iter()
        .map(|s| match s.decision {
            Decision::Run => format!("{} ({})", s.name, s.risk),
            _ => format!("[skip {}]", s.name),
        })
        .collect();
    format!("{} on {}", steps.join(" → "), plan.target)
}
