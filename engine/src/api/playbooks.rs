//! `/api/v1/playbooks`: the active playbook set and how the last reload went.
//!
//! [`PlaybookStatus`] is what the API reads: the active set (the reloader's `ArcSwap`, once
//! loaded) and the last [`ReloadOutcome`] the watcher reported, which whoever receives the
//! watcher's outcomes records with [`PlaybookStatus::record`].

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiState;
use crate::playbook::PlaybookSet;
use crate::playbook::watch::ReloadOutcome;
use crate::risk::Risk;

/// The active set and the last reload, shared by the engine and the API. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PlaybookStatus {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    active: OnceLock<Arc<ArcSwap<PlaybookSet>>>,
    last: Mutex<Option<LastReload>>,
}

/// How the last reload went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastReload {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// `applied` (a new set is active), `unchanged` (the files compiled to the same set) or
    /// `rejected` (the files are invalid; the previous set stays active).
    pub result: String,
    /// The generation active after it.
    pub generation: Option<u64>,
    /// Every error found, as `file:line:col: error: ...` (rejected only).
    pub errors: Vec<String>,
    /// The warnings found.
    pub warnings: Vec<String>,
}

impl PlaybookStatus {
    /// A status whose set is not loaded yet (the API is not ready until [`Self::loaded`]).
    pub fn new() -> Self {
        PlaybookStatus::default()
    }

    /// A status of the loaded set `active`.
    pub fn of(active: Arc<ArcSwap<PlaybookSet>>) -> Self {
        let status = PlaybookStatus::new();
        status.loaded(active);
        status
    }

    /// The set is loaded: `active` is the reloader's handle. Only the first call counts.
    pub fn loaded(&self, active: Arc<ArcSwap<PlaybookSet>>) {
        let _ = self.inner.active.set(active);
    }

    /// The active set, once loaded.
    pub fn active(&self) -> Option<&Arc<ArcSwap<PlaybookSet>>> {
        self.inner.active.get()
    }

    /// Records the outcome of a reload that finished at `at`.
    pub fn record(&self, outcome: &ReloadOutcome, at: DateTime<Utc>) {
        let current = self.active().map(|set| set.load().generation());
        let text = |d: &crate::diagnostic::Diagnostic| d.to_string();
        let last = match outcome {
            ReloadOutcome::Applied {
                generation,
                warnings,
                ..
            } => LastReload {
                at,
                result: "applied".into(),
                generation: Some(*generation),
                errors: Vec::new(),
                warnings: warnings.iter().map(text).collect(),
            },
            ReloadOutcome::Unchanged { .. } => LastReload {
                at,
                result: "unchanged".into(),
                generation: current,
                errors: Vec::new(),
                warnings: Vec::new(),
            },
            ReloadOutcome::Rejected { diagnostics, .. } => LastReload {
                at,
                result: "rejected".into(),
                generation: current,
                errors: diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(text)
                    .collect(),
                warnings: diagnostics
                    .iter()
                    .filter(|d| !d.is_error())
                    .map(text)
                    .collect(),
            },
        };
        *self
            .inner
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(last);
    }

    /// How the last reload went; `None` before the first.
    pub fn last_reload(&self) -> Option<LastReload> {
        self.inner
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One playbook of the active set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybookView {
    /// Its name.
    pub name: String,
    /// SHA-256 of its canonical content.
    pub digest: String,
    /// What it is for.
    pub description: Option<String>,
    /// The file it was loaded from.
    pub file: String,
    /// Its document's index within the file, from 0.
    pub document: usize,
    /// Its trigger's kind (`promql`, `alert`, ...).
    pub trigger: String,
    /// Its steps, in order.
    pub steps: Vec<String>,
    /// The highest risk among its steps.
    pub max_step_risk: Risk,
}

/// One policy of the active set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// Its name.
    pub name: String,
    /// SHA-256 of its canonical content.
    pub digest: String,
    /// The file it was loaded from.
    pub file: String,
    /// The ceiling it sets.
    pub max_autonomous_risk: Risk,
    /// Whether it runs everything as a dry run.
    pub dry_run: bool,
}

/// `GET /api/v1/playbooks`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybookList {
    /// The active set's generation; `null` before it is loaded.
    pub generation: Option<u64>,
    /// Its playbooks, by name.
    pub playbooks: Vec<PlaybookView>,
    /// Its policies, by name.
    pub policies: Vec<PolicyView>,
    /// How the last reload went; `null` before the first.
    pub last_reload: Option<LastReload>,
}

/// `GET /api/v1/playbooks`.
pub(super) async fn list(State(state): State<ApiState>) -> Response {
    let status = &state.playbooks;
    let mut answer = PlaybookList {
        generation: None,
        playbooks: Vec::new(),
        policies: Vec::new(),
        last_reload: status.last_reload(),
    };
    if let Some(active) = status.active() {
        let set = active.load();
        answer.generation = Some(set.generation());
        answer.playbooks = set
            .playbooks()
            .map(|p| PlaybookView {
                name: p.name.clone(),
                digest: p.digest.clone(),
                description: p.description.clone(),
                file: p.source.file.display().to_string(),
                document: p.source.document,
                trigger: p.trigger.kind.name().to_string(),
                steps: p.steps.iter().map(|s| s.name.clone()).collect(),
                max_step_risk: p.max_step_risk(),
            })
            .collect();
        answer.policies = set
            .policies()
            .map(|p| PolicyView {
                name: p.name.clone(),
                digest: p.digest.clone(),
                file: p.source.file.display().to_string(),
                max_autonomous_risk: p.max_autonomous_risk,
                dry_run: p.dry_run,
            })
            .collect();
    }
    Json(answer).into_response()
}
