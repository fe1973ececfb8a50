//! The alerts Alertmanager has notified, as `alert` triggers observe them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use super::webhook::{Alert, Status, Webhook};
use crate::signal::state::{LabelSet, Observation, Sample};

/// How long a resolved alert is remembered after its notification arrived: long enough that a
/// delayed `firing` notification for the same occurrence (a retry, or the second Alertmanager
/// of an HA pair, which waits `--cluster.peer-timeout` = 15 s per peer) cannot bring it back,
/// and shorter than Alertmanager's default `group_interval` (5 m), the soonest it notifies the
/// same group again.
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(120);

/// What one payload changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Alerts whose state was recorded.
    pub accepted: usize,
    /// Alerts older than what was already known about them, ignored.
    pub stale: usize,
    /// Resolved alerts forgotten because their retention ran out.
    pub pruned: usize,
}

/// The alerts Alertmanager has notified, shared by the webhook receiver (which writes) and the
/// evaluation loop (which reads). Cloning it is cheap: clones share one store.
///
/// Alerts are keyed by Alertmanager's fingerprint (a hash of the labels; a digest of the sorted
/// labels when a sender leaves it empty). The alert's `status` decides:
/// - a `firing` alert holds until a `resolved` notification for it arrives. Its `endsAt` is
///   ignored: Alertmanager sends Go's zero time there for every firing alert.
/// - a `resolved` alert stops holding from its `endsAt` (or from when the notification arrived,
///   if that is earlier: Alertmanager's clock may run ahead of ours), and is forgotten
///   [`RESOLVED_RETENTION`] after it arrived.
///
/// Notifications can arrive out of order (retries, HA pairs), so each alert keeps the latest
/// occurrence seen — ordered by `startsAt`, then resolved after firing — and an older
/// notification never undoes a newer one: a late `firing` retry after the `resolved` of the
/// same occurrence (same `startsAt`) is ignored. The price: the same occurrence firing again
/// within [`RESOLVED_RETENTION`] of its resolve (Prometheus re-sending an alert whose `endsAt`
/// Alertmanager had let lapse) looks just like such a retry, and is seen only at the next
/// notification after the retention — Alertmanager's `repeat_interval` at the latest.
///
/// Alerts are never resolved by their absence from a notification (a notification carries only
/// its group, and `max_alerts` may truncate it), so a route feeding Salve needs
/// `send_resolved: true`, which is the webhook's default.
#[derive(Debug, Clone)]
pub struct AlertStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// By `alertname`, then by fingerprint.
    alerts: Mutex<HashMap<String, HashMap<String, Entry>>>,
    changes: watch::Sender<u64>,
}

/// What is known about one alert.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    labels: LabelSet,
    status: Status,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
}

impl Entry {
    fn new(alert: &Alert, received_at: DateTime<Utc>) -> Self {
        Entry {
            labels: alert.labels.clone(),
            status: alert.status,
            starts_at: alert.starts_at,
            ends_at: alert.ends_at,
            received_at,
        }
    }

    /// Which occurrence and state of the alert this is, for ordering notifications.
    fn order(&self) -> (DateTime<Utc>, Status) {
        (self.starts_at, self.status)
    }

    /// Whether it fires at `at`: from when it started (or arrived, if Alertmanager's clock is
    /// behind ours) until, if resolved, its end.
    fn holds_at(&self, at: DateTime<Utc>) -> bool {
        let since = self.starts_at.min(self.received_at);
        match self.status {
            Status::Firing => since <= at,
            Status::Resolved => {
                let until = self
                    .ends_at
                    .map_or(self.received_at, |ends| ends.min(self.received_at));
                since <= at && at < until
            }
        }
    }

    /// Whether every label of `labels` has that value. As in Prometheus and Alertmanager
    /// matchers, an empty value matches an absent label.
    fn matches(&self, labels: &LabelSet) -> bool {
        labels
            .iter()
            .all(|(name, value)| self.labels.get(name).map_or("", String::as_str) == value.as_str())
    }

    fn forgettable(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::Resolved && age(self.received_at, now) >= RESOLVED_RETENTION
    }
}

impl Default for AlertStore {
    fn default() -> Self {
        Self::new()
    }
}

impl AlertStore {
    /// An empty store.
    pub fn new() -> Self {
        let (changes, _) = watch::channel(0);
        AlertStore {
            inner: Arc::new(Inner {
                alerts: Mutex::new(HashMap::new()),
                changes,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Entry>>> {
        self.inner
            .alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one webhook payload received at `received_at`.
    pub fn apply(&self, payload: &Webhook, received_at: DateTime<Utc>) -> Applied {
        let mut applied = Applied::default();
        {
            let mut alerts = self.lock();
            // Forget first, so an alert whose resolve has been forgotten starts afresh.
            for known in alerts.values_mut() {
                let before = known.len();
                known.retain(|_, entry| !entry.forgettable(received_at));
                applied.pruned += before - known.len();
            }
            alerts.retain(|_, known| !known.is_empty());
            for alert in &payload.alerts {
                let alertname = alert.labels.get("alertname").cloned().unwrap_or_default();
                let key = key(alert);
                let entry = Entry::new(alert, received_at);
                let known = alerts.entry(alertname).or_default();
                match known.get(&key) {
                    Some(stored) if entry.order() < stored.order() => {
                        applied.stale += 1;
                        tracing::debug!(
                            fingerprint = key,
                            status = alert.status.as_str(),
                            starts_at = %alert.starts_at,
                            known = stored.status.as_str(),
                            known_starts_at = %stored.starts_at,
                            "ignored an alert older than the one known"
                        );
                    }
                    _ => {
                        applied.accepted += 1;
                        known.insert(key, entry);
                    }
                }
            }
        }
        let firing = payload
            .alerts
            .iter()
            .filter(|a| a.status == Status::Firing)
            .count();
        tracing::info!(
            receiver = payload.receiver,
            status = payload.status.as_str(),
            alerts = payload.alerts.len(),
            firing,
            resolved = payload.alerts.len() - firing,
            stale = applied.stale,
            group_key = payload.group_key,
            "alertmanager notification"
        );
        if payload.truncated_alerts > 0 {
            tracing::warn!(
                receiver = payload.receiver,
                truncated = payload.truncated_alerts,
                group_key = payload.group_key,
                "alertmanager left alerts out of a notification (the receiver's max_alerts); \
                 they are seen only once a notification carries them"
            );
        }
        self.inner
            .changes
            .send_modify(|count| *count = count.wrapping_add(1));
        applied
    }

    /// The alerts matching `alertname` and every label in `labels`, firing at `at`: one sample
    /// per alert, with the alert's labels and the value 1.
    pub fn observe(&self, alertname: &str, labels: &LabelSet, at: DateTime<Utc>) -> Observation {
        let holding: BTreeSet<LabelSet> = self
            .lock()
            .get(alertname)
            .into_iter()
            .flat_map(HashMap::values)
            .filter(|entry| entry.matches(labels) && entry.holds_at(at))
            .map(|entry| entry.labels.clone())
            .collect();
        Observation::Holds(
            holding
                .into_iter()
                .map(|labels| Sample { labels, value: 1.0 })
                .collect(),
        )
    }

    /// Bumped after every applied payload, so the evaluation loop can evaluate alert triggers
    /// at once instead of waiting for their interval.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// How many alerts it knows: the firing ones and those resolved within
    /// [`RESOLVED_RETENTION`].
    pub fn known(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }
}

/// The alert's fingerprint, or a digest of its sorted labels when it has none.
fn key(alert: &Alert) -> String {
    if !alert.fingerprint.is_empty() {
        return alert.fingerprint.clone();
    }
    let mut digest = Sha256::new();
    for (name, value) in &alert.labels {
        // A name or value cannot contain NUL in JSON text Alertmanager writes; even if one
        // did, the lengths keep the encoding unambiguous.
        digest.update(name.len().to_le_bytes());
        digest.update(name.as_bytes());
        digest.update(value.len().to_le_bytes());
        digest.update(value.as_bytes());
    }
    format!("labels:{:x}", digest.finalize())
}

/// Time from `from` to `to`; zero when `to` is earlier.
fn age(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRING: &str = include_str!("testdata/firing.json");
    const RESOLVED: &str = include_str!("testdata/resolved.json");

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// An alert of `status` with `labels`, starting and ending (if resolved) at these seconds
    /// from `t(0)`, without a fingerprint.
    fn alert(
        status: Status,
        labels: LabelSet,
        starts: i64,
        ends: Option<i64>,
    ) -> serde_json::Value {
        serde_json::json!({
            "status": status.as_str(),
            "labels": labels,
            "startsAt": t(starts).to_rfc3339(),
            "endsAt": ends.map_or("0001-01-01T00:00:00Z".into(), |e| t(e).to_rfc3339()),
            "fingerprint": "",
        })
    }

    fn webhook(alerts: Vec<serde_json::Value>) -> Webhook {
        let body = serde_json::json!({
            "version": "4", "status": "firing", "receiver": "salve", "alerts": alerts,
        });
        Webhook::parse(body.to_string().as_bytes()).expect("a valid payload")
    }

    /// An alert as (status, labels, startsAt, endsAt).
    type Spec<'a> = (Status, &'a [(&'a str, &'a str)], i64, Option<i64>);

    /// A payload of these alerts.
    fn payload(alerts: &[Spec<'_>]) -> Webhook {
        webhook(
            alerts
                .iter()
                .map(|(status, pairs, starts, ends)| alert(*status, labels(pairs), *starts, *ends))
                .collect(),
        )
    }

    fn holding(
        store: &AlertStore,
        alertname: &str,
        want: &[(&str, &str)],
        at: i64,
    ) -> Vec<LabelSet> {
        match store.observe(alertname, &labels(want), t(at)) {
            Observation::Holds(samples) => {
                assert!(samples.iter().all(|s| s.value == 1.0), "{samples:?}");
                samples.into_iter().map(|s| s.labels).collect()
            }
            other => panic!("not Holds: {other:?}"),
        }
    }

    const CRASH: &[(&str, &str)] = &[
        ("alertname", "KubePodCrashLooping"),
        ("severity", "critical"),
        ("pod", "api-1"),
    ];

    #[test]
    fn real_notifications_fire_then_resolve() {
        let store = AlertStore::new();
        let received = |text: &str| DateTime::parse_from_rfc3339(text).expect("valid").to_utc();
        let firing = Webhook::parse(FIRING.as_bytes()).expect("parses");
        let applied = store.apply(&firing, received("2026-11-25T20:23:07.048Z"));
        assert_eq!(applied.accepted, 1);
        let at = received("2026-11-25T20:23:08Z");
        assert_eq!(
            store.observe(
                "KubePodCrashLooping",
                &labels(&[("severity", "critical")]),
                at
            ),
            Observation::Holds(vec![Sample {
                labels: labels(CRASH),
                value: 1.0
            }])
        );
        let resolved = Webhook::parse(RESOLVED.as_bytes()).expect("parses");
        store.apply(&resolved, received("2026-11-25T20:23:10.048Z"));
        let later = received("2026-11-25T20:23:11Z");
        assert_eq!(
            store.observe("KubePodCrashLooping", &LabelSet::new(), later),
            Observation::Holds(vec![])
        );
        // Asked about a time before its end, the resolved alert still held then.
        assert_eq!(
            store.observe("KubePodCrashLooping", &LabelSet::new(), at),
            Observation::Holds(vec![Sample {
                labels: labels(CRASH),
                value: 1.0
            }])
        );
    }

    #[rstest::rstest]
    #[case::alertname_alone("KubePodCrashLooping", &[], true)]
    #[case::label_subset("KubePodCrashLooping", &[("severity", "critical")], true)]
    #[case::every_label("KubePodCrashLooping", CRASH, true)]
    #[case::other_alertname("KubePodNotReady", &[], false)]
    #[case::other_value("KubePodCrashLooping", &[("severity", "warning")], false)]
    #[case::absent_label("KubePodCrashLooping", &[("namespace", "prod")], false)]
    #[case::empty_value_matches_absent("KubePodCrashLooping", &[("namespace", "")], true)]
    #[case::empty_value_does_not_match_present("KubePodCrashLooping", &[("pod", "")], false)]
    #[case::alertname_is_case_sensitive("kubepodcrashlooping", &[], false)]
    fn a_trigger_matches_its_alertname_and_a_subset_of_labels(
        #[case] alertname: &str,
        #[case] want: &[(&str, &str)],
        #[case] matches: bool,
    ) {
        let store = AlertStore::new();
        store.apply(&payload(&[(Status::Firing, CRASH, 0, None)]), t(1));
        let found = holding(&store, alertname, want, 2);
        assert_eq!(found, if matches { vec![labels(CRASH)] } else { vec![] });
    }

    #[test]
    fn each_matching_alert_is_one_series() {
        let store = AlertStore::new();
        let pod = |name| [("alertname", "Crash"), ("pod", name)];
        store.apply(
            &payload(&[
                (Status::Firing, &pod("b"), 0, None),
                (Status::Firing, &pod("a"), 0, None),
                (
                    Status::Firing,
                    &[("alertname", "Other"), ("pod", "a")],
                    0,
                    None,
                ),
            ]),
            t(1),
        );
        assert_eq!(
            holding(&store, "Crash", &[], 2),
            [labels(&pod("a")), labels(&pod("b"))]
        );
    }

    #[test]
    fn a_firing_alert_holds_until_resolved_whatever_its_ends_at() {
        let store = AlertStore::new();
        // A firing alert with an endsAt (not what Alertmanager sends, but some senders do):
        // firing means firing until a resolved notification says otherwise.
        store.apply(&payload(&[(Status::Firing, CRASH, 0, Some(60))]), t(1));
        assert_eq!(
            holding(&store, "KubePodCrashLooping", &[], 3600),
            [labels(CRASH)]
        );
        store.apply(
            &payload(&[(Status::Resolved, CRASH, 0, Some(4000))]),
            t(4000),
        );
        assert!(holding(&store, "KubePodCrashLooping", &[], 4000).is_empty());
        assert_eq!(
            holding(&store, "KubePodCrashLooping", &[], 3999),
            [labels(CRASH)],
            "held until its end"
        );
    }

    #[test]
    fn a_resolved_end_ahead_of_our_clock_stops_at_arrival() {
        let store = AlertStore::new();
        store.apply(&payload(&[(Status::Firing, CRASH, 0, None)]), t(1));
        // Alertmanager's clock runs 10 minutes ahead.
        store.apply(&payload(&[(Status::Resolved, CRASH, 0, Some(700))]), t(100));
        assert!(holding(&store, "KubePodCrashLooping", &[], 101).is_empty());
    }

    #[test]
    fn a_firing_alert_holds_from_its_start_or_arrival() {
        let store = AlertStore::new();
        store.apply(&payload(&[(Status::Firing, CRASH, 50, None)]), t(60));
        assert!(holding(&store, "KubePodCrashLooping", &[], 49).is_empty());
        assert_eq!(
            holding(&store, "KubePodCrashLooping", &[], 50),
            [labels(CRASH)]
        );
        // Alertmanager's clock runs behind ours: its startsAt is "later" than the arrival.
        let store = AlertStore::new();
        store.apply(&payload(&[(Status::Firing, CRASH, 90, None)]), t(60));
        assert_eq!(
            holding(&store, "KubePodCrashLooping", &[], 61),
            [labels(CRASH)]
        );
    }

    #[test]
    fn a_late_firing_retry_does_not_undo_a_resolve() {
        let store = AlertStore::new();
        store.apply(&payload(&[(Status::Firing, CRASH, 0, None)]), t(1));
        store.apply(&payload(&[(Status::Resolved, CRASH, 0, Some(30))]), t(31));
        // The first notification, retried or sent by the HA peer, arrives late.
        let applied = store.apply(&payload(&[(Status::Firing, CRASH, 0, None)]), t(40));
        assert_eq!(applied.stale, 1);
        assert_eq!(applied.accepted, 0);
        assert!(holding(&store, "KubePodCrashLooping", &[], 41).is_empty());
    }

    #[test]
    fn a_late_resolve_of_an_earlier_occurrence_does_not_undo_a_new_firing() {
        let store = AlertStore::new();
        store.apply(&payload(&[(Status::Firing, CRASH, 100, None)]), t(101));
        let applied = store.apply(&payload(&[(Status::Resolved, CRASH, 0, Some(50))]), t(102));
        assert_eq!(applied.stale, 1);
        assert_eq!(
            holding(&store, "KubePodCrashLooping", &[], 103),
            [labels(CRASH)]
        );
    }

    #[test]
    fn a_new_occurrence_fires_again_after_a_resolve() {
        let store = AlertStore::new();
        store.apply(&payload(&[(Status::Firing, CRASH, 0, None)]), t(1));
        store.apply(&payload(&[(Status::Resolved, CRASH, 0, Some(30))]), t(31));
        let applied = store.apply(&payload(&[(Status::Firing, CRASH, 60, None)]), t(61));
        assert_eq!(applied.accepted, 1);
        assert_eq!(
            holding(&store, "KubePodCrashLooping", &[], 62),
            [labels(CRASH)]
        );
    }

    #[test]
    fn the_same_occurrence_firing_again_is_taken_once_the_resolve_is_forgotten() {
        let store = AlertStore::new();
        store.apply(&payload(&[(Status::Resolved, CRASH, 0, Some(30))]), t(31));
        let retention = i64::try_from(RESOLVED_RETENTION.as_secs()).expect("small");
        let applied = store.apply(
            &payload(&[(Status::Firing, CRASH, 0, None)]),
            t(31 + retention),
        );
        assert_eq!(applied.pruned, 1);
        assert_eq!(applied.accepted, 1);
        assert_eq!(
            holding(&store, "KubePodCrashLooping", &[], 32 + retention),
            [labels(CRASH)]
        );
    }

    #[test]
    fn resolved_alerts_are_pruned_after_the_retention_and_firing_ones_kept() {
        let store = AlertStore::new();
        let retention = i64::try_from(RESOLVED_RETENTION.as_secs()).expect("small");
        let flaps = (0..1000)
            .map(|i| {
                let labels = labels(&[("alertname", "Flap"), ("i", &i.to_string())]);
                alert(Status::Resolved, labels, 0, Some(10))
            })
            .collect();
        store.apply(&webhook(flaps), t(10));
        store.apply(&payload(&[(Status::Firing, CRASH, 0, None)]), t(11));
        assert_eq!(store.known(), 1001);
        let applied = store.apply(&payload(&[]), t(10 + retention - 1));
        assert_eq!((applied.pruned, store.known()), (0, 1001));
        let applied = store.apply(&payload(&[]), t(10 + retention));
        assert_eq!((applied.pruned, store.known()), (1000, 1));
        assert_eq!(
            holding(&store, "KubePodCrashLooping", &[], 10_000),
            [labels(CRASH)]
        );
    }

    #[test]
    fn an_alert_without_a_fingerprint_is_keyed_by_its_labels() {
        let with = |fingerprint: &str| Alert {
            status: Status::Firing,
            labels: labels(CRASH),
            annotations: LabelSet::new(),
            starts_at: t(0),
            ends_at: None,
            generator_url: String::new(),
            fingerprint: fingerprint.into(),
        };
        assert_eq!(key(&with("2a6792fa6fd9c402")), "2a6792fa6fd9c402");
        assert_eq!(key(&with("")), key(&with("")));
        let mut other = with("");
        other.labels.insert("pod".into(), "api-2".into());
        assert_ne!(key(&with("")), key(&other));
        // Label boundaries count: {a="bc"} is not {ab="c"}.
        let mut a = with("");
        a.labels = labels(&[("a", "bc")]);
        let mut b = with("");
        b.labels = labels(&[("ab", "c")]);
        assert_ne!(key(&a), key(&b));
    }

    #[tokio::test]
    async fn every_applied_payload_is_announced() {
        let store = AlertStore::new();
        let mut changes = store.changes();
        assert!(!changes.has_changed().expect("the store is alive"));
        store.apply(&payload(&[(Status::Firing, CRASH, 0, None)]), t(1));
        store.apply(&payload(&[]), t(2));
        tokio::time::timeout(Duration::from_secs(1), changes.changed())
            .await
            .expect("announced")
            .expect("the store is alive");
        assert_eq!(*changes.borrow_and_update(), 2);
        // A clone shares the store and its announcements.
        store.clone().apply(&payload(&[]), t(3));
        assert!(changes.has_changed().expect("the store is alive"));
    }
}
