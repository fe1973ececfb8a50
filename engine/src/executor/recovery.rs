//! Recovery: after a crash or a kill, the remediations the journal shows in flight — planned
//! but never finished — are found and either resumed or rolled back; none is forgotten.
//!
//! What the journal says decides, entry by entry: the plan as it was made (not as the playbook
//! reads now), the steps that completed with what they found before acting, a step that started
//! and has no result (it may or may not have acted), an approval still waiting, a rollback
//! under way.
//!
//! - A remediation **waiting for approval** goes on waiting for the same request: only that
//!   answer counts, and no answer by its deadline still means rejected. A step above the
//!   ceiling never runs because the engine restarted.
//! - A remediation that was **rolling back** rolls back again from the start (every undo is
//!   idempotent: what is already undone is left alone).
//! - Otherwise the playbook's `onInterrupt` decides: `resume` runs the interrupted step again
//!   (actions are idempotent, and a restart is recorded under its step key so it is not done
//!   twice) and goes on; `rollback` (the default, and the rule when the playbook is gone)
//!   undoes what completed. The interrupted step's own effect is unknown, so it cannot be
//!   undone from what it found: the rollback says so.

use tracing::Instrument;

use super::{Completed, Context, Executor, Finish, Progress, Result};
use crate::gate::Caution;
use crate::incident::is_rehearsal;
use crate::journal::{Entry, Kind, Record};
use crate::plan::Plan;

/// A remediation the journal shows in flight.
#[derive(Debug, Clone)]
pub struct Interrupted {
    /// The incident.
    pub incident: String,
    /// The playbook.
    pub playbook: String,
    /// The step that started and has no result, if any.
    pub step: Option<String>,
    /// The approval request still waiting, if any.
    pub approval: Option<String>,
    /// Whether it was rolling back.
    pub rolling_back: Option<String>,
    plan: Plan,
    context: Context,
    progress: Progress,
}

impl Executor {
    /// The remediations the journal shows planned and not finished, oldest first.
    pub fn interrupted(&self) -> Result<Vec<Interrupted>> {
        let journal = &self.inner.journal;
        let finished: std::collections::BTreeSet<String> = journal
            .by_kind(Kind::RemediationFinished)?
            .into_iter()
            .filter_map(|e| e.record.incident)
            .collect();
        let mut found = Vec::new();
        for planned in journal.by_kind(Kind::Planned)? {
            let Some(incident) = planned.record.incident.clone() else {
                continue;
            };
            if finished.contains(&incident) {
                continue;
            }
            match read(&planned, &journal.timeline(&incident)?) {
                Some(interrupted) => found.push(interrupted),
                None => tracing::error!(
                    incident,
                    "the journaled plan cannot be read back; the remediation is left to a human"
                ),
            }
        }
        Ok(found)
    }

    /// Brings the gate back to what the journal shows — the actions of the last hour (for
    /// `actionsPerHour`) and their results (for the circuit breaker) — then finds the
    /// remediations in flight and claims their targets at once, so that no new incident
    /// remediates a target while its interrupted remediation is being recovered. Call it
    /// before evaluation starts; then [`Recovery::run`] them.
    pub fn prepare_recovery(&self) -> Result<Recovery> {
        self.restore_gate()?;
        let interrupted = self.interrupted()?;
        for found in interrupted.iter().filter(|f| !f.context.rehearsal) {
            tracing::warn!(
                incident = found.incident,
                playbook = found.playbook,
                step = found.step.as_deref().unwrap_or("-"),
                "found a remediation in flight when the engine stopped"
            );
            let labels =
                serde_json::from_value(found.context.evidence["root"].clone()).unwrap_or_default();
            let claim = super::Claim {
                incident: found.incident.clone(),
                root: super::Root {
                    incident: found.incident.clone(),
                    labels,
                    active_at: None,
                },
            };
            self.claim(&found.plan.target.to_string(), claim, |_| Ok(()))?;
        }
        Ok(Recovery {
            executor: self.clone(),
            interrupted,
        })
    }

    /// Replays the journaled actions of the last hour (and of the breaker's reset time before
    /// it) into the gate, in the order they happened: a restart neither resets the rate limit
    /// nor closes an open breaker.
    fn restore_gate(&self) -> Result<()> {
        let journal = &self.inner.journal;
        let reset = self.gate().policy().limits.breaker_reset;
        let window = chrono::TimeDelta::hours(1)
            + chrono::TimeDelta::from_std(reset).unwrap_or(chrono::TimeDelta::zero());
        let since = self.now() - window;
        let mut entries = Vec::new();
        for kind in [Kind::StepStarted, Kind::StepSucceeded, Kind::StepFailed] {
            entries.extend(
                journal
                    .by_kind(kind)?
                    .into_iter()
                    .filter(|e| e.record.at > since)
                    // A rehearsal's dry runs never counted.
                    .filter(|e| !e.record.incident.as_deref().is_some_and(is_rehearsal)),
            );
        }
        entries.sort_by_key(|e| e.seq);
        let mut gate = self.gate();
        gate.forget_actions();
        for entry in entries {
            let at = entry.record.at;
            match entry.record.kind {
                Kind::StepStarted => gate.action_executed(at),
                Kind::StepSucceeded => gate.action_succeeded(at),
                _ => gate.action_failed(at),
            }
        }
        drop(gate);
        // A breaker that was open when the engine stopped is open again, and says so.
        self.breaker_changed();
        Ok(())
    }

    /// [`Executor::prepare_recovery`] and [`Recovery::run`].
    pub async fn recover(&self, resume: impl Fn(&str) -> bool) -> Result<Vec<(String, Finish)>> {
        self.prepare_recovery()?.run(resume).await
    }

    /// Resumes or rolls back one remediation in flight.
    async fn recover_one(&self, interrupted: &Interrupted, resume: bool) -> Result<Finish> {
        let Interrupted {
            incident,
            plan,
            context,
            progress,
            ..
        } = interrupted;
        if context.rehearsal {
            // Every step was a dry run: nothing to undo, and nothing worth resuming.
            let finish = Finish::Halted("the engine stopped mid-rehearsal".into());
            self.finish(&context.playbook, incident, &finish)?;
            self.append(&Record {
                at: self.now(),
                kind: Kind::IncidentResolved,
                playbook: context.playbook.clone(),
                incident: Some(incident.clone()),
                detail: serde_json::json!({}),
            })?;
            return Ok(finish);
        }
        let finish = async {
            if let Some(reason) = &interrupted.rolling_back {
                self.gate().incident_started(incident, self.now());
                let finish = self
                    .rollback(context, plan, progress, reason.clone())
                    .await?;
                self.finish(&context.playbook, incident, &finish)?;
                Ok(finish)
            } else if interrupted.approval.is_some() || resume {
                self.execute(context, plan, progress.clone()).await
            } else {
                self.gate().incident_started(incident, self.now());
                let at = interrupted.step.as_deref().map_or(String::new(), |step| {
                    format!(" during step {step}, whose effect is unknown")
                });
                let reason = format!("the engine stopped mid-remediation{at}");
                let finish = self.rollback(context, plan, progress, reason).await?;
                self.finish(&context.playbook, incident, &finish)?;
                Ok(finish)
            }
        }
        .await;
        // Released however it ended: stopped by the journal (this replica lost the lead), the
        // remediation is another leader's to recover, or this one's when it leads again.
        self.release(&plan.target.to_string());
        finish
    }
}

/// The remediations found in flight, their targets claimed.
#[derive(Debug)]
pub struct Recovery {
    executor: Executor,
    interrupted: Vec<Interrupted>,
}

impl Recovery {
    /// How many remediations are to be recovered.
    pub fn len(&self) -> usize {
        self.interrupted.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.interrupted.is_empty()
    }

    /// Resumes or rolls back each (see the module docs), all at once — one waiting for an
    /// approval does not hold up another's rollback; `resume` says whether a playbook asks to
    /// be resumed. Returns how each ended.
    pub async fn run(self, resume: impl Fn(&str) -> bool) -> Result<Vec<(String, Finish)>> {
        let executor = &self.executor;
        let runs = self.interrupted.iter().map(|interrupted| {
            let resume = resume(&interrupted.playbook);
            let span = super::incident_span(&interrupted.incident, &interrupted.playbook);
            async move {
                let finish = executor.recover_one(interrupted, resume).await?;
                Ok::<_, super::Error>((interrupted.incident.clone(), finish))
            }
            .instrument(span)
        });
        futures_util::future::join_all(runs)
            .await
            .into_iter()
            .collect()
    }
}

/// Rebuilds where a remediation stood from its timeline.
fn read(planned: &Entry, timeline: &[Entry]) -> Option<Interrupted> {
    let detail = &planned.record.detail;
    let plan: Plan = serde_json::from_value(detail["plan"].clone()).ok()?;
    let mut context = Context {
        playbook: planned.record.playbook.clone(),
        playbook_ceiling: serde_json::from_value(detail["context"]["playbookCeiling"].clone())
            .ok()
            .flatten(),
        evidence: detail["context"]["evidence"].clone(),
        facts: crate::plan::TargetFacts::default(),
        caution: Caution::default(),
        why: None,
        rehearsal: planned.record.incident.as_deref().is_some_and(is_rehearsal),
    };
    let mut progress = Progress::default();
    let mut step = None;
    let mut approval: Option<(usize, String)> = None;
    let mut rolling_back = None;
    for entry in timeline.iter().filter(|e| e.seq > planned.seq) {
        let detail = &entry.record.detail;
        let index = detail["index"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok());
        let forward = detail["phase"].as_str() != Some("rollback");
        match (entry.record.kind, index) {
            (Kind::StepStarted, Some(index)) if forward => {
                step = Some(index);
                progress.next = index;
            }
            (Kind::StepSucceeded, Some(index)) if forward => {
                step = None;
                progress.next = index + 1;
                // The step as it ran (a WASM step's action is not in the plan itself).
                let ran: Option<crate::plan::PlannedStep> =
                    serde_json::from_value(detail["planned"].clone()).ok();
                let Some(planned_step) = ran.as_ref().or_else(|| plan.steps.get(index)) else {
                    continue;
                };
                let dry_run = detail["dryRun"].as_bool().unwrap_or(false);
                progress.runs += 1;
                progress.dry_runs += usize::from(dry_run);
                let changed = detail["changed"].as_bool().unwrap_or(true);
                let output = super::output(&detail["after"], changed, dry_run);
                progress
                    .outputs
                    .insert(planned_step.name.clone(), output.clone());
                progress.completed.push(Completed {
                    step: planned_step.clone(),
                    changed: changed && !dry_run,
                    before: detail["before"].clone(),
                    output,
                });
            }
            (Kind::StepFailed, Some(index)) if forward => {
                step = None;
                progress.next = index + 1;
            }
            (Kind::StepSkipped, Some(index)) if forward => {
                progress.next = index + 1;
                if let Some(skipped) = plan.steps.get(index) {
                    progress.outputs.insert(
                        skipped.name.clone(),
                        serde_json::json!({"status": "skipped"}),
                    );
                }
            }
            (Kind::GateVerdict, Some(index)) => progress.next = index,
            // The advisor's caution holds after a restart as before it.
            (Kind::Advice | Kind::AdviceRejected, _) => {
                context.caution = crate::advisor::ask::caution_from_json(&detail["caution"]);
                context.why = detail["summary"].as_str().map(str::to_string);
            }
            (Kind::ApprovalRequested, _) => {
                let id = detail["approval"].as_str().unwrap_or_default().to_string();
                let index = plan
                    .steps
                    .iter()
                    .position(|s| Some(s.name.as_str()) == detail["step"].as_str());
                approval = index.map(|index| (index, id));
            }
            (Kind::ApprovalGranted, _) => {
                if let Some((index, _)) = approval.take() {
                    progress.approved = Some(index);
                }
            }
            (Kind::ApprovalRejected | Kind::ApprovalExpired, _) => {
                // The answer came; the plan halts at that step when it is reached again.
                if let Some((index, id)) = approval.take() {
                    progress.pending_approval = Some((index, id));
                }
            }
            (Kind::RollbackStarted, _) => {
                rolling_back = Some(
                    detail["reason"]
                        .as_str()
                        .unwrap_or("a rollback was under way")
                        .to_string(),
                );
            }
            _ => {}
        }
    }
    let waiting = approval.clone().map(|(_, id)| id);
    if let Some(pending) = approval {
        progress.pending_approval = Some(pending);
    }
    Some(Interrupted {
        incident: plan.incident.clone(),
        playbook: context.playbook.clone(),
        step: step.and_then(|i| plan.steps.get(i)).map(|s| s.name.clone()),
        approval: waiting,
        rolling_back,
        plan,
        context,
        progress,
    })
}
