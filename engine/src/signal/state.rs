//! Signal states with the semantics of Prometheus alerting rules: a series whose condition
//! holds is `pending` until it has held for `for`, then `firing`; when it stops holding it is
//! `resolved`, unless `keepFiringFor` keeps it firing a while longer.
//!
//! Missing data is never taken for health. An evaluation that could not be made (Prometheus
//! unreachable, a query error or timeout, an input with no series at all) makes the whole
//! trigger *inconclusive*; a value that is not a number (NaN, ±Inf), or a series whose inputs
//! are stale or have vanished, makes that series inconclusive. Inconclusive changes no state —
//! a pending timer keeps running, a firing signal keeps firing — and is reported once when it
//! starts (or its reason changes) and counted at every evaluation.
//!
//! One exception keeps deleted pods from firing forever: a tracked series whose inputs stay
//! absent for [`ABSENT_EXPIRY`] while the trigger's other inputs are present resolves.
//!
//! The tracker is a pure state machine over evaluation times, so the live engine and a replay
//! over history drive the very same code.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A series' labels.
pub type LabelSet = BTreeMap<String, String>;

/// How long a tracked series' inputs may stay absent (while the trigger's inputs as a whole
/// are present) before its signal resolves: the pod or node is taken to be gone.
pub const ABSENT_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// One series of an evaluation's result: its condition holds, with this value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: LabelSet,
    /// Its value (the signal's main value).
    pub value: f64,
}

/// Whether the inputs of one signal's series can be trusted at an evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Every input has a recent sample.
    Fresh,
    /// An input's newest sample is too old; why.
    Stale(String),
}

/// What one evaluation of a trigger found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The evaluation ran; these series hold (an empty list: none holds). Nothing is known
    /// about the inputs of the series that do not hold, so they resolve as in Prometheus.
    Holds(Vec<Sample>),
    /// The evaluation ran and also checked the trigger's inputs per series: a tracked series
    /// that no longer holds resolves only when its inputs are present and fresh.
    Checked {
        /// The series that hold.
        holds: Vec<Sample>,
        /// The freshness of the inputs of every series that has them.
        inputs: BTreeMap<LabelSet, Freshness>,
    },
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
    /// Stopped holding (and `keepFiringFor` ran out), or its inputs stayed absent for
    /// [`ABSENT_EXPIRY`].
    Resolved,
    /// Nothing could be concluded (about the series, or about the whole trigger when the
    /// labels are empty); no state changed. Reported when it starts or its reason changes.
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
    /// Further named values of the signal at that evaluation (filled in by the evaluation for
    /// pending and firing signals).
    pub values: BTreeMap<String, f64>,
    /// When the series started to hold, on pending and firing events.
    pub active_at: Option<DateTime<Utc>>,
}

/// How many evaluations a tracker has seen, and how many of them were inconclusive in part or
/// in whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Evaluations applied.
    pub evaluations: u64,
    /// Of which something could not be concluded.
    pub inconclusive: u64,
}

/// What cannot be concluded right now: the whole trigger, or some of its series.
#[derive(Debug, Clone, Default)]
struct Unknown {
    trigger: Option<String>,
    series: BTreeMap<LabelSet, String>,
}

/// Tracks the series of one trigger across evaluations.
#[derive(Debug, Clone)]
pub struct Tracker {
    for_: Duration,
    keep_firing_for: Duration,
    series: BTreeMap<LabelSet, State>,
    unknown: Unknown,
    absent_since: BTreeMap<LabelSet, DateTime<Utc>>,
    counts: Counts,
}

impl Tracker {
    /// A tracker with the trigger's `for` and `keepFiringFor`.
    pub fn new(for_: Duration, keep_firing_for: Duration) -> Self {
        Tracker {
            for_,
            keep_firing_for,
            series: BTreeMap::new(),
            unknown: Unknown::default(),
            absent_since: BTreeMap::new(),
            counts: Counts::default(),
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

    /// Why the whole trigger is inconclusive now, if it is.
    pub fn inconclusive(&self) -> Option<&str> {
        self.unknown.trigger.as_deref()
    }

    /// The evaluations seen so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Applies the evaluation made at `at`; returns what changed. Evaluations must come in
    /// time order (a `for` never elapses backwards).
    pub fn observe(&mut self, at: DateTime<Utc>, observation: Observation) -> Vec<SignalEvent> {
        self.counts.evaluations += 1;
        let (samples, inputs) = match observation {
            Observation::Holds(samples) => (samples, None),
            Observation::Checked { holds, inputs } => (holds, Some(inputs)),
            Observation::Inconclusive(reason) => {
                self.counts.inconclusive += 1;
                if self.unknown.trigger.as_ref() == Some(&reason) {
                    return Vec::new();
                }
                self.unknown.trigger = Some(reason.clone());
                return vec![event(
                    at,
                    LabelSet::new(),
                    Transition::Inconclusive { reason },
                    None,
                )];
            }
        };
        self.unknown.trigger = None;

        // Sort this evaluation's series into those that can be judged and those that cannot.
        let freshness = |labels: &LabelSet| match &inputs {
            None => Some(Freshness::Fresh),
            Some(inputs) => inputs.get(labels).cloned(),
        };
        let mut held: BTreeMap<LabelSet, f64> = BTreeMap::new();
        let mut unjudged: BTreeMap<LabelSet, (String, Option<f64>)> = BTreeMap::new();
        let mut absent: BTreeMap<LabelSet, Option<f64>> = BTreeMap::new();
        for sample in samples {
            if !sample.value.is_finite() {
                let reason = format!("value is {}", sample.value);
                unjudged.insert(sample.labels, (reason, Some(sample.value)));
                continue;
            }
            match freshness(&sample.labels) {
                Some(Freshness::Fresh) => {
                    held.insert(sample.labels, sample.value);
                }
                Some(Freshness::Stale(reason)) => {
                    unjudged.insert(sample.labels, (reason, Some(sample.value)));
                }
                // A range function can still hold over inputs that are no longer reported.
                None => {
                    absent.insert(sample.labels, Some(sample.value));
                }
            }
        }

        let mut events = Vec::new();
        for (labels, value) in &held {
            self.absent_since.remove(labels);
            let transition = match self.series.get(labels).copied() {
                None if self.for_.is_zero() => {
                    self.series.insert(labels.clone(), firing(at, at, at));
                    Some(Transition::Firing)
                }
                None => {
                    self.series
                        .insert(labels.clone(), State::Pending { active_at: at });
                    Some(Transition::Pending)
                }
                Some(State::Pending { active_at }) if elapsed(active_at, at) >= self.for_ => {
                    self.series
                        .insert(labels.clone(), firing(active_at, at, at));
                    Some(Transition::Firing)
                }
                Some(State::Pending { .. }) => None,
                Some(State::Firing {
                    active_at,
                    fired_at,
                    ..
                }) => {
                    self.series
                        .insert(labels.clone(), firing(active_at, fired_at, at));
                    None
                }
            };
            if let Some(transition) = transition {
                let mut change = event(at, labels.clone(), transition, Some(*value));
                change.active_at = match self.series.get(labels) {
                    Some(State::Pending { active_at } | State::Firing { active_at, .. }) => {
                        Some(*active_at)
                    }
                    None => None,
                };
                events.push(change);
            }
        }

        let gone: Vec<LabelSet> = self
            .series
            .keys()
            .filter(|l| {
                !held.contains_key(*l) && !unjudged.contains_key(*l) && !absent.contains_key(*l)
            })
            .cloned()
            .collect();
        for labels in gone {
            match freshness(&labels) {
                Some(Freshness::Fresh) => {
                    self.absent_since.remove(&labels);
                    if self.stop_holding(&labels, at) {
                        events.push(event(at, labels, Transition::Resolved, None));
                    }
                }
                Some(Freshness::Stale(reason)) => {
                    unjudged.insert(labels, (reason, None));
                }
                None => {
                    absent.insert(labels, None);
                }
            }
        }
        for (labels, value) in absent {
            let reason = format!(
                "its inputs have no recent series (a tracked signal resolves after {}s of this)",
                ABSENT_EXPIRY.as_secs()
            );
            if !self.series.contains_key(&labels) {
                unjudged.insert(labels, (reason, value));
                continue;
            }
            let since = *self.absent_since.entry(labels.clone()).or_insert(at);
            if elapsed(since, at) >= ABSENT_EXPIRY {
                self.absent_since.remove(&labels);
                self.series.remove(&labels);
                events.push(event(at, labels, Transition::Resolved, value));
            } else {
                unjudged.insert(labels, (reason, value));
            }
        }

        if !unjudged.is_empty() {
            self.counts.inconclusive += 1;
        }
        let before = std::mem::take(&mut self.unknown.series);
        for (labels, (reason, value)) in unjudged {
            if before.get(&labels) != Some(&reason) {
                let transition = Transition::Inconclusive {
                    reason: reason.clone(),
                };
                events.push(event(at, labels.clone(), transition, value));
            }
            self.unknown.series.insert(labels, reason);
        }
        events
    }

    /// A tracked series stopped holding at `at`: a pending one goes quietly (as in
    /// Prometheus), a firing one resolves once `keepFiringFor` has run out. Whether it
    /// resolved.
    fn stop_holding(&mut self, labels: &LabelSet, at: DateTime<Utc>) -> bool {
        match self.series.get(labels).copied() {
            Some(State::Pending { .. }) => {
                self.series.remove(labels);
                false
            }
            Some(State::Firing { last_held_at, .. })
                if elapsed(last_held_at, at) >= self.keep_firing_for =>
            {
                self.series.remove(labels);
                true
            }
            Some(State::Firing { .. }) | None => false,
        }
    }
}

fn firing(active_at: DateTime<Utc>, fired_at: DateTime<Utc>, last_held_at: DateTime<Utc>) -> State {
    State::Firing {
        active_at,
        fired_at,
        last_held_at,
    }
}

fn event(
    at: DateTime<Utc>,
    labels: LabelSet,
    transition: Transition,
    value: Option<f64>,
) -> SignalEvent {
    SignalEvent {
        at,
        labels,
        transition,
        value,
        values: BTreeMap::new(),
        active_at: None,
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
    fn firing_events_say_when_the_series_started_to_hold() {
        let mut tracker = Tracker::new(Duration::from_secs(120), Duration::ZERO);
        let pending = tracker.observe(t(0), holds(&[("a", 1.0)]));
        assert_eq!(pending[0].active_at, Some(t(0)));
        tracker.observe(t(1), holds(&[("a", 1.0)]));
        let firing = tracker.observe(t(2), holds(&[("a", 1.0)]));
        assert_eq!(firing[0].transition, Transition::Firing);
        assert_eq!(firing[0].active_at, Some(t(0)));
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
            ["signal_resolved", "signal_inconclusive"],
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

    fn checked(held: &[(&str, f64)], inputs: &[(&str, Freshness)]) -> Observation {
        let Observation::Holds(holds) = holds(held) else {
            unreachable!()
        };
        Observation::Checked {
            holds,
            inputs: inputs
                .iter()
                .map(|(pod, freshness)| (labels(pod), freshness.clone()))
                .collect(),
        }
    }

    #[test]
    fn inconclusive_is_reported_once_per_reason_and_counted_every_time() {
        let mut tracker = Tracker::new(Duration::ZERO, Duration::ZERO);
        let refused = || Observation::Inconclusive("connection refused".into());
        assert_eq!(events(&mut tracker, 0, refused()), ["signal_inconclusive"]);
        assert_eq!(events(&mut tracker, 1, refused()), Vec::<&str>::new());
        assert_eq!(tracker.inconclusive(), Some("connection refused"));
        let timeout = Observation::Inconclusive("timed out".into());
        assert_eq!(events(&mut tracker, 2, timeout), ["signal_inconclusive"]);
        events(&mut tracker, 3, holds(&[]));
        assert_eq!(tracker.inconclusive(), None);
        assert_eq!(
            tracker.counts(),
            Counts {
                evaluations: 4,
                inconclusive: 3
            }
        );
    }

    #[test]
    fn a_firing_series_with_stale_inputs_stays_firing() {
        let mut tracker = Tracker::new(Duration::ZERO, Duration::ZERO);
        let fresh = Freshness::Fresh;
        let stale = Freshness::Stale("the newest sample is older than 2m".into());
        events(
            &mut tracker,
            0,
            checked(
                &[("a", 1.0), ("b", 1.0)],
                &[("a", fresh.clone()), ("b", fresh.clone())],
            ),
        );
        // a's scrape stopped: it no longer holds, but that is no proof of health.
        let found = events(
            &mut tracker,
            1,
            checked(&[("b", 1.0)], &[("a", stale.clone()), ("b", fresh.clone())]),
        );
        assert_eq!(found, ["signal_inconclusive"]);
        assert_eq!(tracker.firing().count(), 2);
        // Still stale: nothing new to report.
        let found = events(
            &mut tracker,
            2,
            checked(&[("b", 1.0)], &[("a", stale), ("b", fresh.clone())]),
        );
        assert_eq!(found, Vec::<&str>::new());
        // Fresh again and not holding: now it has really recovered.
        let found = events(
            &mut tracker,
            3,
            checked(&[("b", 1.0)], &[("a", fresh.clone()), ("b", fresh)]),
        );
        assert_eq!(found, ["signal_resolved"]);
    }

    #[test]
    fn a_stale_series_does_not_start_pending() {
        let mut tracker = Tracker::new(Duration::from_secs(60), Duration::ZERO);
        let stale = Freshness::Stale("old".into());
        let found = events(&mut tracker, 0, checked(&[("a", 1.0)], &[("a", stale)]));
        assert_eq!(found, ["signal_inconclusive"]);
        assert!(tracker.states().is_empty());
    }

    #[test]
    fn vanished_inputs_are_inconclusive_until_the_expiry_then_resolve() {
        let mut tracker = Tracker::new(Duration::ZERO, Duration::ZERO);
        let fresh = Freshness::Fresh;
        events(
            &mut tracker,
            0,
            checked(&[("a", 1.0)], &[("a", fresh.clone())]),
        );
        // Pod a is gone from every input while pod b is still scraped.
        let only_b = || checked(&[], &[("b", Freshness::Fresh)]);
        assert_eq!(events(&mut tracker, 1, only_b()), ["signal_inconclusive"]);
        assert_eq!(events(&mut tracker, 15, only_b()), Vec::<&str>::new());
        assert_eq!(
            tracker.firing().count(),
            1,
            "still firing before the expiry"
        );
        assert_eq!(events(&mut tracker, 16, only_b()), ["signal_resolved"]);
        assert!(tracker.states().is_empty());
        // Coming back starts afresh.
        assert_eq!(
            events(&mut tracker, 17, checked(&[("a", 1.0)], &[("a", fresh)])),
            ["signal_firing"]
        );
    }
}
