//! Signal states with the semantics of Prometheus alerting rules: a series whose condition
//! holds is `pending` until it has held for `for`, then `firing`; when it stops holding it is
//! `resolved`, unless `keepFiringFor` keeps it firing a while longer.
//!
//! Missing data is never taken for health: an evaluation that could not be made (Prometheus
//! unreachable, a query error or timeout) or a value that is not a number (NaN, ±Inf) is
//! *inconclusive*. It changes no state — a pending timer keeps running, a firing signal keeps
//! firing — and is reported so it can be logged and counted.
//!
//! The tracker is a pure state machine over evaluation times, so the live engine and a replay
//! over history drive the very same code.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A series' labels.
pub type LabelSet = BTreeMap<String, String>;

/// One series of an evaluation's result: its condition holds, with this value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: LabelSet,
    /// Its value (the signal's main value).
    pub value: f64,
}

/// What one evaluation of a trigger found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The evaluation ran; these series hold (an empty list: none holds).
    Holds(Vec<Sample>),
    /// The evaluation could not be made; nothing can be concluded.
    Inconclusive(String),
}

/// The state of one tracked series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    /// Holds, but not yet for `for`.
    Pending {
        /// When it started to hold.
        active_at: DateTime<Utc>,
    },
    /// Has held for `for`.
    Firing {
        /// When it started to hold.
        active_at: DateTime<Utc>,
        /// When it started firing.
        fired_at: DateTime<Utc>,
        /// When it was last seen holding.
        last_held_at: DateTime<Utc>,
    },
}

/// A change worth reporting.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Started to hold; waiting for `for`.
    Pending,
    /// Held for `for`: the signal fires.
    Firing,
    /// Stopped holding (and `keepFiringFor` ran out).
    Resolved,
    /// Nothing could be concluded; no state changed.
    Inconclusive {
        /// Why.
        reason: String,
    },
}

impl Transition {
    /// The event name used in logs, metrics and replay output.
    pub fn event(&self) -> &'static str {
        match self {
            Transition::Pending => "signal_pending",
            Transition::Firing => "signal_firing",
            Transition::Resolved => "signal_resolved",
            Transition::Inconclusive { .. } => "signal_inconclusive",
        }
    }
}

/// A reported change of one series (or, for a failed evaluation, of the whole trigger: then
/// `labels` is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct SignalEvent {
    /// When the evaluation that caused it ran.
    pub at: DateTime<Utc>,
    /// The series.
    pub labels: LabelSet,
    /// What happened.
    pub transition: Transition,
    /// The series' value at that evaluation, when it had one.
    pub value: Option<f64>,
}

/// Tracks the series of one trigger across evaluations.
#[derive(Debug, Clone)]
pub struct Tracker {
    for_: Duration,
    keep_firing_for: Duration,
    series: BTreeMap<LabelSet, State>,
}

impl Tracker {
    /// A tracker with the trigger's `for` and `keepFiringFor`.
    pub fn new(for_: Duration, keep_firing_for: Duration) -> Self {
        Tracker {
            for_,
            keep_firing_for,
            series: BTreeMap::new(),
        }
    }

    /// The tracked series and their states.
    pub fn states(&self) -> &BTreeMap<LabelSet, State> {
        &self.series
    }

    /// The series firing now.
    pub fn firing(&self) -> impl Iterator<Item = &LabelSet> {
        self.series
            .iter()
            .filter(|(_, s)| matches!(s, State::Firing { .. }))
            .map(|(l, _)| l)
    }

    /// Applies the evaluation made at `at`; returns what changed. Evaluations must come in
    /// time order; an older one is inconclusive.
    pub fn observe(&mut self, at: DateTime<Utc>, observation: Observation) -> Vec<SignalEvent> {
        let samples = match observation {
            Observation::Holds(samples) => samples,
            Observation::Inconclusive(reason) => {
                return vec![inconclusive(at, LabelSet::new(), None, reason)];
            }
        };
        let mut events = Vec::new();
        let mut seen: BTreeMap<LabelSet, f64> = BTreeMap::new();
        for sample in samples {
            if !sample.value.is_finite() {
                // This series cannot be judged now; leave it exactly as it was.
                let reason = format!("value is {}", sample.value);
                events.push(inconclusive(
                    at,
                    sample.labels.clone(),
                    Some(sample.value),
                    reason,
                ));
                seen.insert(sample.labels, f64::NAN);
                continue;
            }
            seen.insert(sample.labels, sample.value);
        }

        for (labels, value) in &seen {
            if value.is_nan() {
                continue;
            }
            let event = |transition| SignalEvent {
                at,
                labels: labels.clone(),
                transition,
                value: Some(*value),
            };
            match self.series.get(labels).copied() {
                None => {
                    if self.for_.is_zero() {
                        self.series.insert(labels.clone(), firing(at, at, at));
                        events.push(event(Transition::Firing));
                    } else {
                        self.series
                            .insert(labels.clone(), State::Pending { active_at: at });
                        events.push(event(Transition::Pending));
                    }
                }
                Some(State::Pending { active_at }) => {
                    if elapsed(active_at, at) >= self.for_ {
                        self.series
                            .insert(labels.clone(), firing(active_at, at, at));
                        events.push(event(Transition::Firing));
                    }
                }
                Some(State::Firing {
                    active_at,
                    fired_at,
                    ..
                }) => {
                    self.series
                        .insert(labels.clone(), firing(active_at, fired_at, at));
                }
            }
        }

        let gone: Vec<LabelSet> = self
            .series
            .keys()
            .filter(|labels| !seen.contains_key(*labels))
            .cloned()
            .collect();
        for labels in gone {
            match self.series.get(&labels).copied() {
                // A pending series that stops holding goes quietly, as in Prometheus.
                Some(State::Pending { .. }) => {
                    self.series.remove(&labels);
                }
                Some(State::Firing { last_held_at, .. })
                    if elapsed(last_held_at, at) >= self.keep_firing_for =>
                {
                    self.series.remove(&labels);
                    events.push(SignalEvent {
                        at,
                        labels,
                        transition: Transition::Resolved,
                        value: None,
                    });
                }
                Some(State::Firing { .. }) | None => {}
            }
        }
        events
    }
}

fn firing(active_at: DateTime<Utc>, fired_at: DateTime<Utc>, last_held_at: DateTime<Utc>) -> State {
    State::Firing {
        active_at,
        fired_at,
        last_held_at,
    }
}

fn inconclusive(
    at: DateTime<Utc>,
    labels: LabelSet,
    value: Option<f64>,
    reason: String,
) -> SignalEvent {
    SignalEvent {
        at,
        labels,
        transition: Transition::Inconclusive { reason },
        value,
    }
}

/// Time from `from` to `to`; zero when `to` is earlier (a clock step back never fires early).
fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).expect("valid time")
    }

    fn labels(pod: &str) -> LabelSet {
        LabelSet::from([("pod".to_string(), pod.to_string())])
    }

    fn holds(pods: &[(&str, f64)]) -> Observation {
        Observation::Holds(
            pods.iter()
                .map(|(pod, value)| Sample {
                    labels: labels(pod),
                    value: *value,
                })
                .collect(),
        )
    }

    fn events(tracker: &mut Tracker, minute: i64, observation: Observation) -> Vec<&'static str> {
        tracker
            .observe(t(minute), observation)
            .iter()
            .map(|e| e.transition.event())
            .collect()
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved() {
        let mut tracker = Tracker::new(Duration::from_secs(120), Duration::ZERO);
        assert_eq!(
            events(&mut tracker, 0, holds(&[("a", 1.0)])),
            ["signal_pending"]
        );
        assert_eq!(
            events(&mut tracker, 1, holds(&[("a", 1.0)])),
            Vec::<&str>::new()
        );
        assert_eq!(
            events(&mut tracker, 2, holds(&[("a", 1.0)])),
            ["signal_firing"]
        );
        assert_eq!(
            events(&mut tracker, 3, holds(&[("a", 1.0)])),
            Vec::<&str>::new()
        );
        assert_eq!(tracker.firing().count(), 1);
        assert_eq!(events(&mut tracker, 4, holds(&[])), ["signal_resolved"]);
        assert!(tracker.states().is_empty());
    }

    #[test]
    fn a_spike_shorter_than_for_never_fires() {
        let mut tracker = Tracker::new(Duration::from_secs(300), Duration::ZERO);
        assert_eq!(
            events(&mut tracker, 0, holds(&[("a", 9.0)])),
            ["signal_pending"]
        );
        assert_eq!(events(&mut tracker, 1, holds(&[])), Vec::<&str>::new());
        assert!(tracker.states().is_empty(), "a pending series goes quietly");
    }

    #[test]
    fn zero_for_fires_at_once() {
        let mut tracker = Tracker::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(
            events(&mut tracker, 0, holds(&[("a", 1.0)])),
            ["signal_firing"]
        );
    }

    #[test]
    fn keep_firing_for_rides_out_a_flap() {
        let mut tracker = Tracker::new(Duration::ZERO, Duration::from_secs(180));
        assert_eq!(
            events(&mut tracker, 0, holds(&[("a", 1.0)])),
            ["signal_firing"]
        );
        assert_eq!(events(&mut tracker, 1, holds(&[])), Vec::<&str>::new());
        assert_eq!(
            events(&mut tracker, 2, holds(&[("a", 1.0)])),
            Vec::<&str>::new()
        );
        assert_eq!(events(&mut tracker, 4, holds(&[])), Vec::<&str>::new());
        assert_eq!(events(&mut tracker, 5, holds(&[])), ["signal_resolved"]);
    }

    #[test]
    fn a_failed_evaluation_changes_nothing() {
        let mut tracker = Tracker::new(Duration::from_secs(120), Duration::ZERO);
        events(&mut tracker, 0, holds(&[("a", 1.0), ("b", 1.0)]));
        events(&mut tracker, 2, holds(&[("a", 1.0), ("b", 1.0)]));
        let before = tracker.states().clone();
        let found = events(
            &mut tracker,
            3,
            Observation::Inconclusive("connection refused".into()),
        );
        assert_eq!(found, ["signal_inconclusive"]);
        assert_eq!(
            tracker.states(),
            &before,
            "a firing signal is not resolved by missing data"
        );
        assert_eq!(tracker.firing().count(), 2);
    }

    #[test]
    fn a_nan_value_is_inconclusive_for_its_series_only() {
        let mut tracker = Tracker::new(Duration::ZERO, Duration::ZERO);
        events(&mut tracker, 0, holds(&[("a", 1.0), ("b", 1.0)]));
        let found = events(&mut tracker, 1, holds(&[("a", f64::NAN)]));
        assert_eq!(
            found,
            ["signal_inconclusive", "signal_resolved"],
            "b resolved, a kept"
        );
        assert_eq!(tracker.firing().cloned().collect::<Vec<_>>(), [labels("a")]);
        // A NaN never starts a new pending series either.
        let found = events(&mut tracker, 2, holds(&[("a", 1.0), ("c", f64::INFINITY)]));
        assert_eq!(found, ["signal_inconclusive"]);
        assert!(!tracker.states().contains_key(&labels("c")));
    }

    #[test]
    fn for_keeps_counting_across_an_inconclusive_evaluation() {
        let mut tracker = Tracker::new(Duration::from_secs(120), Duration::ZERO);
        events(&mut tracker, 0, holds(&[("a", 1.0)]));
        events(&mut tracker, 1, Observation::Inconclusive("timeout".into()));
        assert_eq!(
            events(&mut tracker, 2, holds(&[("a", 1.0)])),
            ["signal_firing"]
        );
    }

    #[test]
    fn a_clock_step_back_does_not_fire_early() {
        let mut tracker = Tracker::new(Duration::from_secs(120), Duration::ZERO);
        events(&mut tracker, 10, holds(&[("a", 1.0)]));
        assert_eq!(
            events(&mut tracker, 5, holds(&[("a", 1.0)])),
            Vec::<&str>::new()
        );
    }
}
