//! The live evaluation loop: every trigger of the active playbook set is evaluated when it is
//! due — on its interval, at its cron's fire times, for alert triggers also as soon as
//! Alertmanager delivers, and for event triggers as soon as the Kubernetes watchers see a
//! change — at most `concurrency` at a time, until cancelled. Each evaluation
//! is [`Tracked::evaluate`], the code `salve replay` runs too.
//!
//! Signal states belong to a playbook's content: they survive a reload that leaves the playbook
//! unchanged (same digest), start afresh when it changes, and go when it is removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::evaluation::{Alerts, PlaybookEvent, Sources, Tracked};
use super::state::Counts;
use crate::metrics::Metrics;
use crate::playbook::PlaybookSet;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// At most this many evaluations in flight.
    pub concurrency: usize,
    /// How often the loop looks for triggers that are due.
    pub tick: Duration,
    /// How often it logs how many evaluations ran and how many were inconclusive.
    pub summary: Duration,
    /// Where evaluations (and inconclusive ones) and the signals pending and firing are
    /// counted, by playbook. [`crate::app::run`] sets it to the engine's own.
    pub metrics: Metrics,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            concurrency: 8,
            tick: Duration::from_millis(250),
            summary: Duration::from_secs(300),
            metrics: Metrics::default(),
        }
    }
}

struct Entry {
    digest: String,
    tracked: Arc<Tracked>,
    due: Instant,
    running: bool,
}

/// Evaluates the triggers of the set in `active` until `cancel` fires, sending every signal
/// event to `events` (a closed channel stops the loop).
pub async fn run(
    active: Arc<ArcSwap<PlaybookSet>>,
    sources: Sources,
    options: LiveOptions,
    cancel: CancellationToken,
    events: mpsc::Sender<PlaybookEvent>,
) {
    let sources = Arc::new(sources);
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut alerts = match &sources.alerts {
        Alerts::Webhook(store) => Some(store.changes()),
        Alerts::None | Alerts::History => None,
    };
    let mut kube_events = sources.events.as_ref().map(|store| store.changes());
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut tick = tokio::time::interval(options.tick);
    let mut summary = tokio::time::interval_at(Instant::now() + options.summary, options.summary);
    let mut logged = HashMap::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
            _ = summary.tick() => {
                log_summary(&entries, &mut logged);
                continue;
            }
            Some(Ok(())) = async { Some(alerts.as_mut()?.changed().await) } => {
                // Alertmanager delivered: evaluate alert triggers now, not at their interval.
                let now = Instant::now();
                for entry in entries.values_mut().filter(|e| e.tracked.is_alert()) {
                    entry.due = now;
                }
            }
            Some(Ok(())) = async { Some(kube_events.as_mut()?.changed().await) } => {
                // The Kubernetes API reported a change: evaluate event triggers now.
                let now = Instant::now();
                for entry in entries.values_mut().filter(|e| e.tracked.is_event()) {
                    entry.due = now;
                }
            }
            Some(done) = tasks.join_next() => {
                if let Ok(name) = done && let Some(entry) = entries.get_mut(&name) {
                    entry.running = false;
                }
                continue;
            }
        }
        if events.is_closed() {
            break;
        }
        sync_entries(&active.load(), &mut entries, &options.metrics);
        let now = Instant::now();
        for (name, entry) in entries
            .iter_mut()
            .filter(|(_, e)| !e.running && e.due <= now)
        {
            entry.running = true;
            entry.due = next_due(&entry.tracked, entry.due, now);
            let (name, sources, permits, events, tracked, metrics) = (
                name.clone(),
                Arc::clone(&sources),
                Arc::clone(&permits),
                events.clone(),
                Arc::clone(&entry.tracked),
                options.metrics.clone(),
            );
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire().await else {
                    return name;
                };
                let before = tracked.counts();
                let changes = tracked.evaluate(&sources, Utc::now()).await;
                count(&metrics, &name, &tracked, before);
                for event in changes {
                    if events.send(event).await.is_err() {
                        break;
                    }
                }
                name
            });
        }
    }
    tasks.shutdown().await;
}

/// Counts an evaluation of `tracked` (whose counts were `before` it; one evaluation of a
/// trigger runs at a time) and the signals it leaves pending and firing.
fn count(metrics: &Metrics, playbook: &str, tracked: &Tracked, before: Counts) {
    let inconclusive = tracked.counts().inconclusive > before.inconclusive;
    metrics.evaluated(playbook, inconclusive);
    let (pending, firing) = tracked.census();
    metrics.signals(playbook, pending, firing);
}

/// Evaluations since the last summary: in all, and per playbook that had inconclusive ones.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    evaluations: u64,
    inconclusive: u64,
    by_playbook: Vec<(String, u64)>,
}

/// What ran since `logged` (the counts at the last summary, by playbook digest, so that a
/// changed playbook counts afresh), which it updates.
fn summarize(entries: &HashMap<String, Entry>, logged: &mut HashMap<String, Counts>) -> Summary {
    let mut summary = Summary::default();
    for (name, entry) in entries {
        let now = entry.tracked.counts();
        let before = logged.insert(entry.digest.clone(), now).unwrap_or_default();
        let inconclusive = now.inconclusive.saturating_sub(before.inconclusive);
        summary.evaluations += now.evaluations.saturating_sub(before.evaluations);
        summary.inconclusive += inconclusive;
        if inconclusive > 0 {
            summary.by_playbook.push((name.clone(), inconclusive));
        }
    }
    let current: std::collections::HashSet<&String> = entries.values().map(|e| &e.digest).collect();
    logged.retain(|digest, _| current.contains(digest));
    summary.by_playbook.sort();
    summary
}

/// Logs [`summarize`]: missing data is counted, not only reported when it starts.
fn log_summary(entries: &HashMap<String, Entry>, logged: &mut HashMap<String, Counts>) {
    let summary = summarize(entries, logged);
    for (playbook, inconclusive) in &summary.by_playbook {
        tracing::warn!(playbook, inconclusive, "inconclusive evaluations");
    }
    tracing::info!(
        triggers = entries.len(),
        evaluations = summary.evaluations,
        inconclusive = summary.inconclusive,
        "evaluations since the last summary"
    );
}

/// When `tracked`, due at `due` and started at `now`, is next due: on the grid of its interval
/// from `due` (skipping what the loop missed), as Prometheus keeps rule evaluations on a grid;
/// a schedule at its cron's next fire.
fn next_due(tracked: &Tracked, due: Instant, now: Instant) -> Instant {
    let interval = tracked.playbook().trigger.interval;
    if tracked.is_schedule() || interval.is_zero() {
        return by_clock(tracked);
    }
    let missed = now.saturating_duration_since(due).as_nanos() / interval.as_nanos();
    let steps = u32::try_from(missed.saturating_add(1)).unwrap_or(u32::MAX);
    interval
        .checked_mul(steps)
        .and_then(|ahead| due.checked_add(ahead))
        .unwrap_or_else(|| now + interval)
}

/// When `tracked` is next due by the wall clock, as a monotonic instant.
fn by_clock(tracked: &Tracked) -> Instant {
    let now = Utc::now();
    let wait = (tracked.next_due(now) - now)
        .to_std()
        .unwrap_or(Duration::ZERO);
    // A schedule years away still needs a finite instant; it is recomputed on every reload.
    Instant::now() + wait.min(Duration::from_secs(365 * 24 * 3600))
}

/// Brings the tracked triggers in line with `set`: new and changed playbooks start afresh,
/// unchanged ones keep their state, removed ones go (and their signal gauges with them).
fn sync_entries(set: &PlaybookSet, entries: &mut HashMap<String, Entry>, metrics: &Metrics) {
    entries.retain(|name, entry| {
        let keep = set.playbook(name).is_some_and(|p| p.digest == entry.digest);
        if !keep {
            metrics.playbook_removed(name);
        }
        keep
    });
    for playbook in set.playbooks() {
        if entries.contains_key(&playbook.name) {
            continue;
        }
        let Some(tracked) = Tracked::new(Arc::clone(playbook)) else {
            continue;
        };
        // A schedule is first looked at now (to note the time), then at its fire times.
        entries.insert(
            playbook.name.clone(),
            Entry {
                digest: playbook.digest.clone(),
                tracked: Arc::new(tracked),
                due: Instant::now(),
                running: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::playbook::load::{Loaded, load_text};

    fn tracked(trigger: &str) -> Tracked {
        let text = format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: p}}\nspec:\n  trigger:\n{trigger}  target: {{kind: Deployment, namespace: a, name: b}}\n  steps:\n    - {{action: capture_logs, risk: none}}\n"
        );
        let mut loaded = Loaded::default();
        load_text(Path::new("p.yaml"), &text, &mut loaded);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        Tracked::new(Arc::clone(&loaded.playbooks[0])).expect("tracked")
    }

    #[test]
    fn evaluations_stay_on_the_grid_of_the_interval() {
        let tracked = tracked("    promql: {expr: up}\n    interval: 30s\n");
        let due = Instant::now();
        let s = Duration::from_secs;
        // Started a little late: the next one is still one interval after the due time.
        let late = due + Duration::from_millis(250);
        assert_eq!(next_due(&tracked, due, late), due + s(30));
        // The loop missed two evaluations: skip them, keep the grid.
        assert_eq!(next_due(&tracked, due, due + s(95)), due + s(120));
    }

    #[test]
    fn schedules_follow_the_clock() {
        let tracked = tracked("    schedule: {cron: '0 0 1 1 *'}\n");
        let now = Instant::now();
        assert!(next_due(&tracked, now, now) > now + Duration::from_secs(60));
    }

    #[tokio::test]
    async fn summaries_count_inconclusive_evaluations_since_the_last_one() {
        let tracked = Arc::new(tracked("    promql: {expr: up}\n"));
        let entry = |digest: &str| Entry {
            digest: digest.to_string(),
            tracked: Arc::clone(&tracked),
            due: Instant::now(),
            running: false,
        };
        let mut entries = HashMap::from([("p".to_string(), entry("d1"))]);
        let mut logged = HashMap::new();
        let sources = Sources::default();
        for _ in 0..2 {
            tracked.evaluate(&sources, Utc::now()).await;
        }
        let first = summarize(&entries, &mut logged);
        assert_eq!(
            first,
            Summary {
                evaluations: 2,
                inconclusive: 2,
                by_playbook: vec![("p".into(), 2)]
            }
        );
        assert_eq!(summarize(&entries, &mut logged), Summary::default());
        tracked.evaluate(&sources, Utc::now()).await;
        // The playbook changed: its counts start afresh (here the tracker is the same, so all
        // three count), and the old digest is forgotten.
        entries.insert("p".into(), entry("d2"));
        let changed = summarize(&entries, &mut logged);
        assert_eq!((changed.evaluations, changed.inconclusive), (3, 3));
        assert_eq!(logged.len(), 1);
    }
}
