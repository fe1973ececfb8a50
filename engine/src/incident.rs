//! Incidents: firing signals grouped by fingerprint — the playbook and the target its
//! template names for the signal — so that one broken thing is one incident, however many of
//! its series fire and however often they flap.
//!
//! - **Dedup**: a signal firing for a target that already has an open incident joins it.
//! - **Resolution**: an incident resolves when its last signal resolves. An inconclusive
//!   signal keeps it open: missing data never closes an incident.
//! - **Cooldown**: a signal firing for the same target within the playbook's `cooldown` after
//!   its incident resolved *reopens* that incident instead of opening a new one, so a flapping
//!   series is one incident, not one per flap.
//!
//! The root cause recorded for an incident is its earliest signal. The target is rendered
//! from the signal's labels; a target naming something only the Kubernetes API knows
//! (`${owner.name}`) cannot be rendered here, and then the signal's own series identifies the
//! incident.
//!
//! Like signal states, incidents are a pure state machine over event times: the live engine
//! and `salve replay` apply the same events in the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::playbook::{Playbook, Target};
use crate::signal::state::{LabelSet, SignalEvent, Transition};

/// One incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// A stable id, derived from the playbook, the fingerprint and the opening time.
    pub id: String,
    /// The playbook whose trigger opened it.
    pub playbook: String,
    /// The target, when its template could be rendered (`Deployment shop/api`).
    pub target: Option<String>,
    /// The earliest signal: the root cause.
    pub root: LabelSet,
    /// When the root signal started to hold, when known.
    pub active_at: Option<DateTime<Utc>>,
    /// The signals firing now.
    pub signals: BTreeSet<LabelSet>,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When it last resolved (`None` while open).
    pub resolved_at: Option<DateTime<Utc>>,
    /// How many times it reopened within the cooldown.
    pub reopened: u32,
}

impl Incident {
    fn new(id: String, playbook: &Playbook, target: Option<String>, event: &SignalEvent) -> Self {
        Incident {
            id,
            playbook: playbook.name.clone(),
            target,
            root: event.labels.clone(),
            active_at: event.active_at,
            signals: BTreeSet::new(),
            opened_at: event.at,
            resolved_at: None,
            reopened: 0,
        }
    }

    /// The incident a rehearsal of `playbook` on the firing `event` opens: one of its own,
    /// outside every incident set (it neither joins nor holds back a real incident of the
    /// same target), its id `reh-...` where a real one has `inc-...`.
    pub fn rehearsal(playbook: &Playbook, event: &SignalEvent) -> IncidentEvent {
        let key = key(playbook, &event.labels);
        let id = format!(
            "{REHEARSAL_PREFIX}{}",
            id(&key, event.at).trim_start_matches("inc-")
        );
        let mut incident =
            Incident::new(id, playbook, render(&playbook.target, &event.labels), event);
        incident.signals.insert(event.labels.clone());
        IncidentEvent {
            at: event.at,
            transition: IncidentTransition::Opened,
            incident,
            labels: event.labels.clone(),
            values: event.values.clone(),
        }
    }
}

/// How the id of a rehearsal's incident begins.
const REHEARSAL_PREFIX: &str = "reh-";

/// Whether incident `id` is a rehearsal's ([`Incident::rehearsal`]).
pub fn is_rehearsal(id: &str) -> bool {
    id.starts_with(REHEARSAL_PREFIX)
}

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentTransition {
    /// A signal fired for a target with no incident: a new incident.
    Opened,
    /// A signal fired again within the cooldown after the incident resolved.
    Reopened,
    /// Its last signal resolved.
    Resolved,
}

impl IncidentTransition {
    /// The event name used in logs and replay output.
    pub fn event(self) -> &'static str {
        match self {
            IncidentTransition::Opened => "incident_opened",
            IncidentTransition::Reopened => "incident_reopened",
            IncidentTransition::Resolved => "incident_resolved",
        }
    }
}

/// A change of one incident, caused by one signal event.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// What happened.
    pub transition: IncidentTransition,
    /// The incident, as it is after the change.
    pub incident: Incident,
    /// The signal that caused it.
    pub labels: LabelSet,
    /// That signal's values.
    pub values: BTreeMap<String, f64>,
}

/// Identifies "the same broken thing" for one playbook.
type Fingerprint = (String, String);

/// The incidents of every playbook.
#[derive(Debug, Default)]
pub struct Incidents {
    open: BTreeMap<Fingerprint, Incident>,
    /// Resolved incidents still within their cooldown, with the cooldown's end.
    cooling: BTreeMap<Fingerprint, (Incident, DateTime<Utc>)>,
}

impl Incidents {
    /// No incidents.
    pub fn new() -> Self {
        Self::default()
    }

    /// The open incidents.
    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.open.values()
    }

    /// The incident, open or cooling down, that a signal of `playbook` with `labels` belongs
    /// to.
    pub fn find(&self, playbook: &Playbook, labels: &LabelSet) -> Option<&Incident> {
        let key = key(playbook, labels);
        self.open
            .get(&key)
            .or_else(|| self.cooling.get(&key).map(|(incident, _)| incident))
    }

    /// Applies a signal event of `playbook`'s trigger; returns the incident change it caused.
    pub fn apply(&mut self, playbook: &Playbook, event: &SignalEvent) -> Option<IncidentEvent> {
        self.cooling.retain(|_, (_, until)| *until > event.at);
        let target = render(&playbook.target, &event.labels);
        let key = key(playbook, &event.labels);
        let change = |transition, incident: &Incident| IncidentEvent {
            at: event.at,
            transition,
            incident: incident.clone(),
            labels: event.labels.clone(),
            values: event.values.clone(),
        };
        match event.transition {
            Transition::Firing => {
                if let Some(incident) = self.open.get_mut(&key) {
                    incident.signals.insert(event.labels.clone());
                    return None;
                }
                let (transition, mut incident) = match self.cooling.remove(&key) {
                    Some((mut incident, _)) => {
                        incident.reopened += 1;
                        incident.resolved_at = None;
                        (IncidentTransition::Reopened, incident)
                    }
                    None => (
                        IncidentTransition::Opened,
                        Incident::new(id(&key, event.at), playbook, target, event),
                    ),
                };
                incident.signals.insert(event.labels.clone());
                let out = change(transition, &incident);
                self.open.insert(key, incident);
                Some(out)
            }
            Transition::Resolved => {
                let incident = self.open.get_mut(&key)?;
                incident.signals.remove(&event.labels);
                if !incident.signals.is_empty() {
                    return None;
                }
                let mut incident = self.open.remove(&key)?;
                incident.resolved_at = Some(event.at);
                let out = change(IncidentTransition::Resolved, &incident);
                let until = chrono::Duration::from_std(playbook.cooldown)
                    .ok()
                    .and_then(|cooldown| event.at.checked_add_signed(cooldown))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                self.cooling.insert(key, (incident, until));
                Some(out)
            }
            Transition::Pending | Transition::Inconclusive { .. } => None,
        }
    }
}

/// The fingerprint of a signal of `playbook` with `labels`: its target, or its series when the
/// target cannot be named from labels.
fn key(playbook: &Playbook, labels: &LabelSet) -> Fingerprint {
    let identity = render(&playbook.target, labels).unwrap_or_else(|| describe(labels));
    (playbook.name.clone(), identity)
}

/// The target named for a signal with `labels` (`Deployment shop/api`), when every variable
/// is a label.
fn render(target: &Target, labels: &LabelSet) -> Option<String> {
    render_target(target, labels).map(|t| t.to_string())
}

/// The object `target` names for a signal with `labels`, when every variable of its templates
/// is one of the labels.
pub fn render_target(target: &Target, labels: &LabelSet) -> Option<crate::plan::ObjectRef> {
    let lookup = |v: &crate::template::Variable| match v.path.as_slice() {
        [root, name] if root == "labels" => labels.get(name).cloned(),
        _ => None,
    };
    let namespace = match &target.namespace {
        Some(namespace) => Some(namespace.render(lookup).ok()?),
        None => None,
    };
    Some(crate::plan::ObjectRef {
        kind: target.kind.to_string(),
        name: target.name.render(lookup).ok()?,
        namespace,
    })
}

/// `{a="b", c="d"}`.
pub fn describe(labels: &LabelSet) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// `inc-` and 12 hex digits of the fingerprint and opening time.
fn id((playbook, identity): &Fingerprint, opened_at: DateTime<Utc>) -> String {
    let mut hash = Sha256::new();
    for part in [playbook.as_str(), identity, &opened_at.to_rfc3339()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let mut id = String::from("inc-");
    for byte in &hash.finalize()[..6] {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::playbook::load::{Loaded, load_text};

    fn playbook(target: &str, cooldown: &str) -> Playbook {
        let text = format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: p}}\nspec:\n  trigger:\n    crashLoop: {{restarts: 3}}\n  target: {target}\n  cooldown: {cooldown}\n  steps:\n    - {{action: capture_logs, risk: none}}\n"
        );
        let mut loaded = Loaded::default();
        load_text(Path::new("p.yaml"), &text, &mut loaded);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        (*loaded.playbooks[0]).clone()
    }

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).expect("valid time")
    }

    fn signal(minute: i64, pod: &str, transition: Transition) -> SignalEvent {
        SignalEvent {
            at: t(minute),
            labels: LabelSet::from([
                ("namespace".to_string(), "shop".to_string()),
                ("pod".to_string(), pod.to_string()),
            ]),
            transition,
            value: None,
            values: BTreeMap::new(),
            active_at: None,
        }
    }

    fn names(events: &[Option<IncidentEvent>]) -> Vec<&'static str> {
        events
            .iter()
            .flatten()
            .map(|e| e.transition.event())
            .collect()
    }

    const BY_NAMESPACE: &str = r#"{kind: Deployment, namespace: "${labels.namespace}", name: api}"#;

    #[test]
    fn signals_on_one_target_are_one_incident_resolved_by_the_last() {
        let p = playbook(BY_NAMESPACE, "10m");
        let mut incidents = Incidents::new();
        let events = [
            incidents.apply(&p, &signal(0, "a", Transition::Firing)),
            incidents.apply(&p, &signal(1, "b", Transition::Firing)),
            incidents.apply(&p, &signal(2, "a", Transition::Resolved)),
        ];
        assert_eq!(names(&events), ["incident_opened"]);
        let open: Vec<&Incident> = incidents.open().collect();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].target.as_deref(), Some("Deployment shop/api"));
        assert_eq!(open[0].root.get("pod").map(String::as_str), Some("a"));
        let resolved = incidents.apply(&p, &signal(3, "b", Transition::Resolved));
        assert_eq!(names(&[resolved]), ["incident_resolved"]);
        assert_eq!(incidents.open().count(), 0);
    }

    #[test]
    fn a_flap_within_the_cooldown_reopens_the_same_incident() {
        let p = playbook(BY_NAMESPACE, "10m");
        let mut incidents = Incidents::new();
        let opened = incidents.apply(&p, &signal(0, "a", Transition::Firing));
        incidents.apply(&p, &signal(1, "a", Transition::Resolved));
        let again = incidents.apply(&p, &signal(5, "a", Transition::Firing));
        let (opened, again) = (opened.expect("opened"), again.expect("reopened"));
        assert_eq!(again.transition, IncidentTransition::Reopened);
        assert_eq!(again.incident.id, opened.incident.id);
        assert_eq!(again.incident.reopened, 1);
        // After the cooldown it is a new incident.
        incidents.apply(&p, &signal(6, "a", Transition::Resolved));
        let later = incidents
            .apply(&p, &signal(17, "a", Transition::Firing))
            .expect("opened");
        assert_eq!(later.transition, IncidentTransition::Opened);
        assert_ne!(later.incident.id, opened.incident.id);
    }

    #[test]
    fn inconclusive_and_pending_signals_change_no_incident() {
        let p = playbook(BY_NAMESPACE, "10m");
        let mut incidents = Incidents::new();
        incidents.apply(&p, &signal(0, "a", Transition::Firing));
        let reason = "timed out".to_string();
        assert!(
            incidents
                .apply(&p, &signal(1, "a", Transition::Inconclusive { reason }))
                .is_none()
        );
        assert!(
            incidents
                .apply(&p, &signal(1, "b", Transition::Pending))
                .is_none()
        );
        assert_eq!(incidents.open().count(), 1);
    }

    #[test]
    fn a_target_only_kubernetes_can_name_falls_back_to_the_series() {
        let p = playbook(
            r#"{kind: Deployment, namespace: "${labels.namespace}", name: "${owner.name}"}"#,
            "10m",
        );
        let mut incidents = Incidents::new();
        let a = incidents.apply(&p, &signal(0, "a", Transition::Firing));
        let b = incidents.apply(&p, &signal(0, "b", Transition::Firing));
        assert_eq!(
            names(&[a.clone(), b]),
            ["incident_opened", "incident_opened"]
        );
        assert_eq!(a.expect("opened").incident.target, None);
        assert_eq!(p.cooldown, Duration::from_secs(600));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let key = ("p".to_string(), "Deployment shop/api".to_string());
        assert_eq!(id(&key, t(0)), id(&key, t(0)));
        assert_ne!(id(&key, t(0)), id(&key, t(1)));
        assert_eq!(id(&key, t(0)).len(), 16);
    }
}
