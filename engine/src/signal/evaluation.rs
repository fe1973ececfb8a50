//! Evaluating the triggers of a playbook set over time: one step evaluates every PromQL-based
//! trigger at one instant and advances its signal states. This is the code path the live
//! engine and `salve replay` share; only who picks the instants differs.

use chrono::{DateTime, Utc};

use super::evaluate::Evaluator;
use super::state::{SignalEvent, Tracker};
use super::{SignalQueries, queries};
use crate::playbook::Playbook;

/// A signal event of one playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybookEvent {
    /// The playbook whose trigger it is.
    pub playbook: String,
    /// What happened.
    pub event: SignalEvent,
}

/// The PromQL-based triggers of a set of playbooks, with their signal states.
#[derive(Debug)]
pub struct Evaluation {
    evaluator: Evaluator,
    triggers: Vec<TrackedTrigger>,
}

#[derive(Debug)]
struct TrackedTrigger {
    playbook: String,
    queries: SignalQueries,
    tracker: Tracker,
}

impl Evaluation {
    /// Tracks the triggers of `playbooks` that Prometheus evaluates (events, schedules and
    /// alerts come from elsewhere).
    pub fn new<'a>(
        evaluator: Evaluator,
        playbooks: impl IntoIterator<Item = &'a Playbook>,
    ) -> Self {
        let triggers = playbooks
            .into_iter()
            .filter_map(|p| {
                Some(TrackedTrigger {
                    playbook: p.name.clone(),
                    queries: queries(&p.trigger.kind)?,
                    tracker: Tracker::new(p.trigger.for_, p.trigger.keep_firing_for),
                })
            })
            .collect();
        Evaluation {
            evaluator,
            triggers,
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

    /// Evaluates every trigger at `at` (steps must come in time order); returns what changed,
    /// in playbook order.
    pub async fn step(&mut self, at: DateTime<Utc>) -> Vec<PlaybookEvent> {
        let mut events = Vec::new();
        for trigger in &mut self.triggers {
            let observation = self.evaluator.observe(&trigger.queries, at).await;
            events.extend(
                trigger
                    .tracker
                    .observe(at, observation)
                    .into_iter()
                    .map(|event| PlaybookEvent {
                        playbook: trigger.playbook.clone(),
                        event,
                    }),
            );
        }
        events
    }
}
