//! Evaluating triggers: the one code path the live engine and `salve replay` (and `salve
//! test`) share. A [`Tracked`] trigger observes its source at an instant, advances its signal
//! states and fills in the values of the signals that changed; only who picks the instants
//! differs — the live loop (each trigger on its own interval) or [`Evaluation::step`] (every
//! trigger at each step of a replay).
//!
//! Sources:
//! - **Prometheus** for `promql` and the built-in signals (see [`super::queries`]).
//! - **Schedules**: a `schedule` trigger holds at an evaluation when its cron fired since the
//!   previous one (never for times before the first), and resolves at the next.
//! - **Alerts**: an `alert` trigger holds while Alertmanager says a matching alert fires
//!   (the webhook receiver's [`AlertStore`]), so silences and inhibitions apply. Replays and
//!   tests read the `ALERTS` series Prometheus keeps for its alerting rules instead.
//! - **Kubernetes**: an `event` trigger holds while the Kubernetes API reports one of its
//!   reasons about an object of its kind — an Event within its recency window, or a Pod's or
//!   Node's status — as the watchers' [`EventStore`] knows it (see [`super::kube_event`]).
//!   `salve test` feeds the store the events a test describes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::evaluate::Evaluator;
use super::kube_event::EventStore;
use super::state::{LabelSet, Observation, Sample, SignalEvent, Tracker, Transition};
use super::{SignalQueries, for_trigger};
use crate::action::TargetKind;
use crate::alertmanager::AlertStore;
use crate::playbook::{Playbook, TriggerKind};

/// A signal event of one playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybookEvent {
    /// The playbook whose trigger it is.
    pub playbook: String,
    /// What happened.
    pub event: SignalEvent,
}

/// What triggers observe: a Prometheus, Alertmanager's webhook, the Kubernetes API's events,
/// or none of them (then the triggers that need one are inconclusive).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The Prometheus that PromQL-based triggers (and alert triggers replayed from history)
    /// query.
    pub prometheus: Option<Evaluator>,
    /// Where alert triggers learn which alerts fire.
    pub alerts: Alerts,
    /// What the Kubernetes watchers saw, for event triggers.
    pub events: Option<EventStore>,
}

/// Where alert triggers learn which alerts fire.
#[derive(Debug, Clone, Default)]
pub enum Alerts {
    /// Nowhere: alert triggers are inconclusive.
    #[default]
    None,
    /// Alertmanager's notifications to the webhook receiver: what the live engine acts on, so
    /// that silences and inhibitions apply.
    Webhook(AlertStore),
    /// The `ALERTS` series Prometheus keeps for its alerting rules: for replays and tests,
    /// which look at history (and see no silences).
    History,
}

/// Where one trigger's observations come from.
#[derive(Debug)]
enum Source {
    Prometheus(SignalQueries),
    Schedule(Box<cron::Schedule>),
    Alert {
        alertname: String,
        labels: BTreeMap<String, String>,
        /// The same alert in Prometheus's `ALERTS` series, for replays.
        history: String,
    },
    Event {
        kind: TargetKind,
        reasons: Vec<String>,
        namespaces: Vec<String>,
    },
}

#[derive(Debug)]
struct TrackedState {
    tracker: Tracker,
    last_at: Option<DateTime<Utc>>,
}

/// One playbook's trigger with its signal states.
#[derive(Debug)]
pub struct Tracked {
    playbook: Arc<Playbook>,
    source: Source,
    state: Mutex<TrackedState>,
}

impl Tracked {
    /// The trigger of `playbook`; `None` only for a PromQL-based kind without queries.
    pub fn new(playbook: Arc<Playbook>) -> Option<Self> {
        let source = match &playbook.trigger.kind {
            TriggerKind::Schedule { schedule, .. } => Source::Schedule(schedule.clone()),
            TriggerKind::Alert { alertname, labels } => Source::Alert {
                history: alerts_selector(alertname, labels),
                alertname: alertname.clone(),
                labels: labels.clone(),
            },
            TriggerKind::Event {
                kind,
                reasons,
                namespaces,
            } => Source::Event {
                kind: *kind,
                reasons: reasons.clone(),
                namespaces: namespaces.clone(),
            },
            _ => Source::Prometheus(for_trigger(&playbook.trigger)?),
        };
        let tracker = Tracker::new(playbook.trigger.for_, playbook.trigger.keep_firing_for);
        Some(Tracked {
            playbook,
            source,
            state: Mutex::new(TrackedState {
                tracker,
                last_at: None,
            }),
        })
    }

    /// The playbook.
    pub fn playbook(&self) -> &Arc<Playbook> {
        &self.playbook
    }

    /// Whether a cron schedule drives it.
    pub fn is_schedule(&self) -> bool {
        matches!(self.source, Source::Schedule(_))
    }

    /// Whether Alertmanager's webhook feeds it.
    pub fn is_alert(&self) -> bool {
        matches!(self.source, Source::Alert { .. })
    }

    /// Whether the Kubernetes watchers feed it.
    pub fn is_event(&self) -> bool {
        matches!(self.source, Source::Event { .. })
    }

    /// When it is next due after `now`: `now` plus its interval; for a schedule, its cron's
    /// next fire, or sooner while a fire is still to be resolved.
    pub fn next_due(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let after_interval = chrono::Duration::from_std(self.playbook.trigger.interval)
            .ok()
            .and_then(|interval| now.checked_add_signed(interval))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        match &self.source {
            Source::Schedule(schedule) => {
                let next = schedule
                    .after(&now)
                    .next()
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                if self.lock().tracker.firing().next().is_some() {
                    next.min(after_interval)
                } else {
                    next
                }
            }
            _ => after_interval,
        }
    }

    /// How many evaluations it has had, and how many were inconclusive.
    pub fn counts(&self) -> super::state::Counts {
        self.lock().tracker.counts()
    }

    /// How many of its series are pending, and how many firing.
    pub fn census(&self) -> (usize, usize) {
        let state = self.lock();
        let firing = state.tracker.firing().count();
        (state.tracker.states().len() - firing, firing)
    }

    /// A copy of its signal states.
    pub fn tracker(&self) -> Tracker {
        self.lock().tracker.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Observes the source at `at` (evaluations must come in time order), advances the
    /// signal states, and returns what changed, with the values of pending and firing signals.
    pub async fn evaluate(&self, sources: &Sources, at: DateTime<Utc>) -> Vec<PlaybookEvent> {
        let observation = self.observe(sources, at).await;
        let mut events = {
            let mut state = self.lock();
            state.last_at = Some(at);
            state.tracker.observe(at, observation)
        };
        if let Source::Prometheus(queries) = &self.source {
            self.fill_values(queries, sources, at, &mut events).await;
        }
        events
            .into_iter()
            .map(|event| PlaybookEvent {
                playbook: self.playbook.name.clone(),
                event,
            })
            .collect()
    }

    async fn observe(&self, sources: &Sources, at: DateTime<Utc>) -> Observation {
        match (&self.source, sources) {
            (Source::Prometheus(queries), Sources { prometheus, .. }) => match prometheus {
                Some(prometheus) => {
                    let tracked: Vec<LabelSet> =
                        self.lock().tracker.states().keys().cloned().collect();
                    prometheus.observe_tracking(queries, at, &tracked).await
                }
                None => Observation::Inconclusive("no Prometheus to query".into()),
            },
            (Source::Schedule(schedule), _) => {
                let last = self.lock().last_at;
                let fired = last
                    .and_then(|last| schedule.after(&last).next())
                    .filter(|fire| *fire <= at);
                Observation::Holds(
                    fired
                        .map(|fire| Sample {
                            labels: LabelSet::from([("schedule".into(), fire.to_rfc3339())]),
                            value: fire.timestamp() as f64,
                        })
                        .into_iter()
                        .collect(),
                )
            }
            (
                Source::Alert {
                    alertname, labels, ..
                },
                Sources {
                    alerts: Alerts::Webhook(store),
                    ..
                },
            ) => store.observe(alertname, labels, at),
            (
                Source::Alert { history, .. },
                Sources {
                    alerts: Alerts::History,
                    prometheus: Some(prometheus),
                    ..
                },
            ) => match prometheus.instant(history, at).await {
                Ok(samples) => Observation::Holds(
                    samples
                        .into_iter()
                        .map(|mut sample| {
                            sample.labels.remove("alertstate");
                            sample
                        })
                        .collect(),
                ),
                Err(reason) => Observation::Inconclusive(reason),
            },
            (
                Source::Alert { .. },
                Sources {
                    alerts: Alerts::History,
                    ..
                },
            ) => Observation::Inconclusive("no Prometheus to read alert history from".into()),
            (
                Source::Alert { .. },
                Sources {
                    alerts: Alerts::None,
                    ..
                },
            ) => Observation::Inconclusive("no Alertmanager webhook receiver is listening".into()),
            (
                Source::Event {
                    kind,
                    reasons,
                    namespaces,
                },
                Sources {
                    events: Some(store),
                    ..
                },
            ) => store.observe(*kind, reasons, namespaces, at),
            (Source::Event { .. }, Sources { events: None, .. }) => {
                Observation::Inconclusive("no Kubernetes API to watch events from".into())
            }
        }
    }

    /// Names each pending or firing event's main value and asks Prometheus for the others.
    /// Values are evidence, not conditions: when they cannot be had, the events go without.
    async fn fill_values(
        &self,
        queries: &SignalQueries,
        sources: &Sources,
        at: DateTime<Utc>,
        events: &mut [SignalEvent],
    ) {
        let wanted =
            |e: &SignalEvent| matches!(e.transition, Transition::Pending | Transition::Firing);
        if !events.iter().any(wanted) {
            return;
        }
        let mut values = match &sources.prometheus {
            Some(prometheus) if !queries.values.is_empty() => {
                match prometheus.values(queries, at).await {
                    Ok(values) => values,
                    Err(reason) => {
                        tracing::warn!(playbook = self.playbook.name, reason, "signal values");
                        BTreeMap::new()
                    }
                }
            }
            _ => BTreeMap::new(),
        };
        for event in events.iter_mut().filter(|e| wanted(e)) {
            if let Some(more) = values.remove(&event.labels) {
                event.values = more;
            }
            if let Some(value) = event.value.filter(|v| v.is_finite()) {
                event.values.insert(queries.value.to_string(), value);
            }
        }
    }
}

/// `ALERTS{alertname="...", alertstate="firing", ...}` for an alert trigger.
fn alerts_selector(alertname: &str, labels: &BTreeMap<String, String>) -> String {
    let quote = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let mut matchers = vec![
        format!("alertname={}", quote(alertname)),
        r#"alertstate="firing""#.to_string(),
    ];
    matchers.extend(labels.iter().map(|(k, v)| format!("{k}={}", quote(v))));
    format!("ALERTS{{{}}}", matchers.join(", "))
}

/// The triggers of a set of playbooks, evaluated together at chosen instants.
#[derive(Debug)]
pub struct Evaluation {
    sources: Sources,
    concurrency: usize,
    triggers: Vec<Tracked>,
}

impl Evaluation {
    /// Tracks the triggers of `playbooks`, evaluating at most `concurrency` at a time.
    pub fn new(
        sources: Sources,
        concurrency: usize,
        playbooks: impl IntoIterator<Item = Arc<Playbook>>,
    ) -> Self {
        Evaluation {
            sources,
            concurrency: concurrency.max(1),
            triggers: playbooks.into_iter().filter_map(Tracked::new).collect(),
        }
    }

    /// How many triggers are evaluated.
    pub fn len(&self) -> usize {
        self.triggers.len()
    }

    /// Whether no trigger is evaluated.
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    /// The tracked triggers.
    pub fn triggers(&self) -> &[Tracked] {
        &self.triggers
    }

    /// Evaluates every trigger at `at` (steps must come in time order); returns what changed,
    /// in playbook order.
    pub async fn step(&self, at: DateTime<Utc>) -> Vec<PlaybookEvent> {
        futures_util::stream::iter(&self.triggers)
            .map(|trigger| trigger.evaluate(&self.sources, at))
            .buffered(self.concurrency)
            .flat_map(futures_util::stream::iter)
            .collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::playbook::load::{Loaded, load_text};

    fn playbook(trigger: &str) -> Arc<Playbook> {
        let text = format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: p}}\nspec:\n  trigger:\n{trigger}  target: {{kind: Deployment, namespace: batch, name: etl}}\n  steps:\n    - {{action: capture_logs, risk: none}}\n"
        );
        let mut loaded = Loaded::default();
        load_text(Path::new("p.yaml"), &text, &mut loaded);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        Arc::clone(&loaded.playbooks[0])
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("RFC 3339")
            .with_timezone(&Utc)
    }

    async fn events(evaluation: &Evaluation, time: &str) -> Vec<&'static str> {
        evaluation
            .step(at(time))
            .await
            .iter()
            .map(|e| e.event.transition.event())
            .collect()
    }

    #[tokio::test]
    async fn a_schedule_fires_once_per_cron_time_and_never_for_the_past() {
        let evaluation = Evaluation::new(
            Sources::default(),
            1,
            [playbook("    schedule: {cron: '*/5 * * * *'}\n")],
        );
        // The first look only notes the time: 00:00 is not fired late.
        assert!(events(&evaluation, "2026-11-25T00:01:00Z").await.is_empty());
        assert!(events(&evaluation, "2026-11-25T00:04:59Z").await.is_empty());
        let fired = evaluation.step(at("2026-11-25T00:05:00Z")).await;
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].event.transition, Transition::Firing);
        assert_eq!(
            fired[0].event.labels.get("schedule").map(String::as_str),
            Some("2026-11-25T00:05:00+00:00")
        );
        assert_eq!(
            events(&evaluation, "2026-11-25T00:06:00Z").await,
            ["signal_resolved"]
        );
        // Several fire times missed at once (the engine was busy) fire once.
        assert_eq!(
            events(&evaluation, "2026-11-25T00:21:00Z").await,
            ["signal_firing"]
        );
        let tracked = &evaluation.triggers()[0];
        // Firing: due again after its interval (30s) to resolve, before the next fire.
        assert_eq!(
            tracked.next_due(at("2026-11-25T00:21:00Z")),
            at("2026-11-25T00:21:30Z")
        );
        assert_eq!(
            events(&evaluation, "2026-11-25T00:21:30Z").await,
            ["signal_resolved"]
        );
        assert_eq!(
            tracked.next_due(at("2026-11-25T00:21:30Z")),
            at("2026-11-25T00:25:00Z")
        );
    }

    #[tokio::test]
    async fn a_trigger_without_its_source_is_inconclusive() {
        let evaluation = Evaluation::new(
            Sources::default(),
            4,
            [
                playbook("    crashLoop: {restarts: 3}\n"),
                playbook("    alert: {alertname: KubePodCrashLooping}\n"),
                playbook("    event: {kind: Pod, reason: [OOMKilled]}\n"),
            ],
        );
        let found = evaluation.step(at("2026-11-25T00:00:00Z")).await;
        let reasons: Vec<String> = found
            .iter()
            .filter_map(|e| match &e.event.transition {
                Transition::Inconclusive { reason } => Some(reason.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "no Prometheus to query",
                "no Alertmanager webhook receiver is listening",
                "no Kubernetes API to watch events from"
            ]
        );
    }

    #[test]
    fn alert_triggers_replay_from_the_alerts_series() {
        let labels = BTreeMap::from([("severity".to_string(), "page \"1\"".to_string())]);
        assert_eq!(
            alerts_selector("KubePodCrashLooping", &labels),
            r#"ALERTS{alertname="KubePodCrashLooping", alertstate="firing", severity="page \"1\""}"#
        );
    }

    #[tokio::test]
    async fn event_triggers_hold_while_the_store_reports_their_reasons() {
        use super::super::kube_event::Occurrence;
        let event =
            |name, reason, time| Occurrence::event("Pod", Some("prod"), name, reason, at(time));
        let store = EventStore::recorded([
            event("api-1", "OOMKilled", "2026-11-25T00:00:00Z"),
            event("api-2", "BackOff", "2026-11-25T00:00:00Z"),
        ]);
        let sources = Sources {
            events: Some(store),
            ..Sources::default()
        };
        let evaluation = Evaluation::new(
            sources,
            1,
            [playbook(
                "    event: {kind: Pod, reason: [OOMKilled]}\n    for: 1m\n",
            )],
        );
        assert!(evaluation.triggers()[0].is_event());
        let found = evaluation.step(at("2026-11-25T00:00:30Z")).await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].event.transition, Transition::Pending);
        assert_eq!(found[0].event.labels["pod"], "api-1");
        assert_eq!(
            events(&evaluation, "2026-11-25T00:01:30Z").await,
            ["signal_firing"]
        );
        // The window (5m from the event) ends; the signal resolves.
        assert!(events(&evaluation, "2026-11-25T00:05:00Z").await.is_empty());
        assert_eq!(
            events(&evaluation, "2026-11-25T00:05:01Z").await,
            ["signal_resolved"]
        );
    }
}
