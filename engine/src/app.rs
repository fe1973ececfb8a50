//! The daemon (`salve run`): triggers → signals → incidents → remediations, wired together and
//! shut down gracefully.
//!
//! - The playbook set (and the policy) hot-reload: a changed policy reaches the gate at the
//!   next decision, counters and breaker kept.
//! - Every signal and incident change is journaled before anything is done about it; an
//!   incident that *opens* gets a remediation ([`Executor::remediate`]); one that reopens
//!   within its cooldown does not (that is what the cooldown is for).
//! - On start, remediations the journal shows in flight are resumed or rolled back
//!   ([`Executor::recover`]) alongside the new work. Under leader election that happens each
//!   time this replica takes the lead (after reading what the cluster keeps), and losing the
//!   lead stops every remediation where it stands, as if the replica had died: the next
//!   leader — maybe this one again — recovers them. With the incidents kept in the cluster,
//!   every replica follows what the others write ([`Executor::follow_cluster`]).
//! - On shutdown (SIGTERM, Ctrl-C) evaluation stops at once; remediations in flight get the
//!   grace period to finish, and whatever is still running then is *parked*: stopped where it
//!   stands, which the journal records exactly, so the next start resumes or rolls it back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, Finish};
use crate::incident::{Incident, IncidentEvent, IncidentTransition, Incidents, describe};
use crate::journal::{Journal, Record};
use crate::playbook::{Playbook, PlaybookSet};
use crate::policy::Policy;
use crate::signal::evaluation::{PlaybookEvent, Sources};
use crate::signal::live::{self, LiveOptions};
use crate::signal::state::{SignalEvent, Transition};

/// The policy Salve runs under when none is given: the shipped `policies/default.yaml` (dry
/// run, ceiling `medium`).
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.yaml");

/// Which policy in the playbook set the gate follows.
#[derive(Debug, Clone)]
pub enum PolicyChoice {
    /// The one loaded from this file.
    File(PathBuf),
    /// The set's only policy, or the built-in default when it has none.
    Default(Arc<Policy>),
}

impl PolicyChoice {
    /// The policy `set` gives for this choice, when there is one.
    pub fn pick(&self, set: &PlaybookSet) -> Option<Arc<Policy>> {
        match self {
            PolicyChoice::File(file) => {
                let wanted = canonical(file);
                set.policies()
                    .find(|p| canonical(&p.source.file) == wanted)
                    .cloned()
            }
            PolicyChoice::Default(default) => {
                let mut policies = set.policies();
                match (policies.next(), policies.next()) {
                    (Some(only), None) => Some(Arc::clone(only)),
                    (None, _) => Some(Arc::clone(default)),
                    (Some(_), Some(_)) => None,
                }
            }
        }
    }
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long remediations in flight may take to finish on shutdown before they are parked.
    pub grace: Duration,
    /// The live evaluation loop's settings.
    pub live: LiveOptions,
    /// Where signals and incidents are counted; the live loop counts its evaluations here
    /// too (whatever `live.metrics` says).
    pub metrics: crate::metrics::Metrics,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            grace: Duration::from_secs(30),
            live: LiveOptions::default(),
            metrics: crate::metrics::Metrics::default(),
        }
    }
}

/// Applies a signal event to the incidents: the incident change it caused, and the journal
/// records of both (the signal tagged with the incident it belongs to).
pub fn apply(
    incidents: &mut Incidents,
    playbook: Option<&Playbook>,
    event: &PlaybookEvent,
) -> (Option<IncidentEvent>, Vec<Record>) {
    let change = playbook.and_then(|p| incidents.apply(p, &event.event));
    let mut signal = Record::signal(event);
    signal.incident = playbook
        .and_then(|p| incidents.find(p, &event.event.labels))
        .map(|incident| incident.id.clone());
    let mut records = vec![signal];
    records.extend(change.iter().map(Record::incident));
    (change, records)
}

/// Runs the engine until `cancel`: evaluation of the set in `active`, incidents, and
/// remediations through `executor` (if any: without one, incidents are only journaled).
pub async fn run(
    active: Arc<ArcSwap<PlaybookSet>>,
    sources: Sources,
    journal: Arc<Journal>,
    executor: Option<Executor>,
    options: Options,
    cancel: CancellationToken,
) {
    let mut remediations = JoinSet::new();
    let (leads_tx, mut leads) = mpsc::channel(4);
    let mut following = JoinSet::new();
    if let Some(executor) = &executor {
        let (executor, cancel) = (executor.clone(), cancel.clone());
        following.spawn(async move { executor.follow_cluster(cancel).await });
    }
    match &executor {
        // Under leader election, only the leader recovers what its journal shows in flight
        // (a follower would find every step refused and close them undone), once it has
        // read what the previous leader left in the cluster — each time it takes the lead.
        Some(executor) if executor.elected() => {
            following.spawn(watch_lead(executor.clone(), leads_tx, cancel.clone()));
        }
        // Targets of interrupted remediations are claimed before any evaluation runs, once
        // what the cluster keeps of them (a rescheduled pod's empty journal) is read back.
        Some(executor) => match executor.take_over().await.prepare_recovery() {
            Ok(recovery) if recovery.is_empty() => {}
            Ok(recovery) => {
                let active = Arc::clone(&active);
                remediations.spawn(async move { run_recovery(recovery, &active).await });
            }
            Err(error) => tracing::error!(%error, "cannot read the remediations in flight"),
        },
        None => {}
    }
    let (events_tx, mut events) = mpsc::channel(256);
    let metrics = options.metrics;
    let evaluation = tokio::spawn(live::run(
        Arc::clone(&active),
        sources,
        LiveOptions {
            metrics: metrics.clone(),
            ..options.live
        },
        cancel.clone(),
        events_tx,
    ));
    let mut incidents = Incidents::new();
    // The incidents that opened while this replica did not lead (not remediated here), until
    // they resolve: on taking the lead, those no leader began are remediated.
    let mut skipped = std::collections::HashSet::new();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                let playbook = active.load().playbook(&event.playbook).cloned();
                let change =
                    note(&mut incidents, playbook.as_deref(), &event, &journal, &metrics).await;
                if let Some(change) = &change
                    && change.transition == IncidentTransition::Resolved
                {
                    skipped.remove(&change.incident.id);
                }
                if let (Some(change), Some(playbook), Some(executor)) = (change, playbook, &executor)
                    && change.transition == IncidentTransition::Opened
                {
                    if let Some(why) = executor.not_leading() {
                        tracing::info!(incident = change.incident.id, "not remediated here: {why}");
                        skipped.insert(change.incident.id.clone());
                        continue;
                    }
                    let executor = executor.clone();
                    let signal = event.event.clone();
                    remediations.spawn(async move {
                        let incident = &change.incident;
                        match executor.remediate(&playbook, incident, &signal).await {
                            Ok(finish) => log_finish(&incident.id, &finish),
                            Err(error) => tracing::error!(
                                incident = incident.id, %error,
                                "remediation stopped: the journal failed; nothing acts unjournaled"
                            ),
                        }
                    });
                }
            }
            Some(_) = remediations.join_next(), if !remediations.is_empty() => {}
            Some(change) = leads.recv() => {
                let Some(executor) = &executor else { continue };
                match change {
                    LeadChange::Gained => {
                        tracing::info!("leading: recovering the remediations in flight");
                        let open: Vec<(Arc<Playbook>, Incident)> = incidents
                            .open()
                            .filter(|i| skipped.remove(&i.id))
                            .filter_map(|i| {
                                let playbook = active.load().playbook(&i.playbook).cloned()?;
                                Some((playbook, i.clone()))
                            })
                            .collect();
                        let (executor, active) = (executor.clone(), Arc::clone(&active));
                        remediations.spawn(async move {
                            executor.take_over().await;
                            take_the_lead(&executor, &active, open).await;
                        });
                    }
                    LeadChange::Lost => {
                        // As if this replica had died: what runs stops where it stands (the
                        // cluster holds exactly that), for whoever leads next to recover.
                        if !remediations.is_empty() {
                            tracing::warn!(
                                stopped = remediations.len(),
                                "lost the lead: stopping the remediations in flight where they \
                                 stand; the next leader resumes or rolls them back"
                            );
                        }
                        remediations.shutdown().await;
                        executor.forget_running();
                    }
                }
            }
        }
    }
    following.shutdown().await;
    let _ = evaluation.await;
    park(remediations, options.grace).await;
}

/// A change of this replica's lead, under leader election.
#[derive(Debug, Clone, Copy)]
enum LeadChange {
    /// It took the lead (or took it back).
    Gained,
    /// It lost it (or its local deadline passed).
    Lost,
}

/// Tells `changes` each time `executor`'s replica takes or loses the lead, until `cancel`.
async fn watch_lead(
    executor: Executor,
    changes: mpsc::Sender<LeadChange>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = executor.until_leading() => {}
        }
        // The elector is gone (it stopped with the process): nothing more will change.
        if executor.not_leading().is_some() || changes.send(LeadChange::Gained).await.is_err() {
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = executor.until_not_leading() => {}
        }
        if changes.send(LeadChange::Lost).await.is_err() {
            return;
        }
    }
}

/// What a replica does on taking the lead (having read what the cluster keeps): recovers the
/// remediations in flight, and remediates the incidents `open` (still open, opened while it
/// followed) that no leader began to remediate (one opened while there was no leader, or just
/// before the leader died), as if they had just opened — their targets claimed by the
/// recovery first.
async fn take_the_lead(
    executor: &Executor,
    active: &Arc<ArcSwap<PlaybookSet>>,
    open: Vec<(Arc<Playbook>, Incident)>,
) {
    let recovery = match executor.prepare_recovery() {
        Ok(recovery) => recovery,
        Err(error) => {
            tracing::error!(%error, "cannot read the remediations in flight");
            return;
        }
    };
    let mut orphans = Vec::new();
    for (playbook, incident) in open {
        match executor.begun(&incident) {
            Ok(true) => {}
            Ok(false) => orphans.push((playbook, incident)),
            Err(error) => {
                tracing::error!(incident = incident.id, %error, "cannot read the journal")
            }
        }
    }
    let remediate = orphans.iter().map(|(playbook, incident)| async move {
        tracing::info!(
            incident = incident.id,
            "open, and no leader began to remediate it: remediating it now"
        );
        let signal = SignalEvent {
            at: executor.now(),
            labels: incident.root.clone(),
            transition: Transition::Firing,
            value: None,
            values: Default::default(),
            active_at: incident.active_at,
        };
        match executor.remediate(playbook, incident, &signal).await {
            Ok(finish) => log_finish(&incident.id, &finish),
            Err(error) => tracing::error!(
                incident = incident.id, %error,
                "remediation stopped: the journal failed; nothing acts unjournaled"
            ),
        }
    });
    tokio::join!(
        run_recovery(recovery, active),
        futures_util::future::join_all(remediate)
    );
}

/// Resumes or rolls back each remediation of `recovery` (resumed when its playbook, as now
/// loaded, says `onInterrupt: resume`).
async fn run_recovery(recovery: crate::executor::Recovery, active: &Arc<ArcSwap<PlaybookSet>>) {
    let resume = |name: &str| {
        active
            .load()
            .playbook(name)
            .is_some_and(|p| p.on_interrupt == crate::playbook::OnInterrupt::Resume)
    };
    match recovery.run(resume).await {
        Ok(outcomes) => {
            for (incident, finish) in outcomes {
                tracing::info!(incident, outcome = finish.name(), "recovered a remediation");
            }
        }
        Err(error) => tracing::error!(%error, "cannot recover remediations in flight"),
    }
}

/// Journals, logs and counts a signal event and the incident change it causes.
async fn note(
    incidents: &mut Incidents,
    playbook: Option<&Playbook>,
    event: &PlaybookEvent,
    journal: &Arc<Journal>,
    metrics: &crate::metrics::Metrics,
) -> Option<IncidentEvent> {
    let (change, records) = apply(incidents, playbook, event);
    // Counted as it happened (the incidents changed), whether or not the journal takes it.
    metrics.signal(&event.playbook, &event.event.transition);
    if let Some(change) = &change {
        metrics.incident(change);
    }
    // Written before anything is said or done about it.
    let writer = Arc::clone(journal);
    match tokio::task::spawn_blocking(move || {
        records.iter().try_for_each(|r| writer.append(r).map(drop))
    })
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot write the journal; not acting on this event");
            return None;
        }
        Err(error) => {
            tracing::error!(%error, "the journal writer stopped; not acting on this event");
            return None;
        }
    }
    let kind = event.event.transition.event();
    let labels = describe(&event.event.labels);
    match &event.event.transition {
        Transition::Inconclusive { reason } => {
            tracing::warn!(playbook = event.playbook, event = kind, %labels, reason, "signal");
        }
        _ => tracing::info!(playbook = event.playbook, event = kind, %labels, "signal"),
    }
    if let Some(change) = &change {
        tracing::info!(
            playbook = event.playbook,
            event = change.transition.event(),
            incident = change.incident.id,
            target = change.incident.target.as_deref().unwrap_or("-"),
            "incident"
        );
        if change.transition == IncidentTransition::Reopened {
            tracing::info!(
                incident = change.incident.id,
                "reopened within its cooldown: not remediated again"
            );
        }
    }
    change
}

fn log_finish(incident: &str, finish: &Finish) {
    match finish {
        Finish::Remediated | Finish::Rehearsed | Finish::Correlated(_) => {
            tracing::info!(
                incident,
                outcome = finish.name(),
                reason = finish.reason(),
                "remediation"
            );
        }
        _ => tracing::warn!(
            incident,
            outcome = finish.name(),
            reason = finish.reason(),
            "remediation"
        ),
    }
}

/// Gives the remediations in flight `grace` to finish, then parks the rest.
async fn park(mut remediations: JoinSet<()>, grace: Duration) {
    if remediations.is_empty() {
        return;
    }
    tracing::info!(
        in_flight = remediations.len(),
        grace = ?grace,
        "waiting for remediations in flight to finish"
    );
    let finished = tokio::time::timeout(grace, async {
        while remediations.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            parked = remediations.len(),
            "grace period over: parking the remediations still in flight; the journal holds \
             where each stands, and the next start resumes or rolls it back"
        );
        remediations.shutdown().await;
    }
}
