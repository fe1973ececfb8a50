//! What Salve knows about an incident when it asks the advisor: the signals (the incident's own
//! first), recent Kubernetes events, the target's rollout history and an excerpt of its logs —
//! gathered as they are, before anything is redacted, capped or fenced (that is
//! [`super::context`]'s work).
//!
//! A brief is also what `salve advise-eval` builds from a labelled scenario, so the deterministic
//! correlation, the runbook retrieval and the model are scored on the same input they get live.

use super::context::{Event, LogExcerpt, Revision, Signal};

/// Everything gathered about one incident for the advisor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Brief {
    /// The incident's id.
    pub incident: String,
    /// The firing signals that may belong to it: the incident's own first, then the others
    /// firing at the same time (each one's id in the context is `sig-N`, N from 1 in this order).
    pub signals: Vec<Signal>,
    /// Recent events about the target, its pods and their nodes, newest first.
    pub events: Vec<Event>,
    /// The target's rollout history, newest first.
    pub revisions: Vec<Revision>,
    /// Excerpts of the target's recent logs.
    pub logs: Vec<LogExcerpt>,
}

impl Brief {
    /// The text runbook retrieval ranks playbooks against: what fired (signal kinds and
    /// labels), what the events say (reasons and messages) and the log lines. Untrusted text
    /// only ever orders the candidates; it decides nothing.
    pub fn query(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for signal in &self.signals {
            parts.push(signal.kind.replace('_', " "));
            parts.extend(signal.labels.iter().map(|(k, v)| format!("{k} {v}")));
        }
        for event in &self.events {
            parts.push(format!(
                "{} {} {}",
                event.object, event.reason, event.message
            ));
        }
        for revision in &self.revisions {
            parts.push(revision.change.clone());
        }
        for excerpt in &self.logs {
            parts.push(excerpt.text.clone());
        }
        parts.join("\n")
    }
}
