//! `/api/v1/incidents`: the journal's incidents, and one incident with its timeline.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiState, blocking, error, journal_error};
use crate::journal::{Entry, IncidentSummary, Kind, Record};

/// One incident as the API shows it: its summary, with the times to detect and to recover in
/// seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentView {
    /// The journal's summary (`id`, `playbook`, `target`, `activeAt`, `openedAt`,
    /// `resolvedAt`, `advice`).
    #[serde(flatten)]
    pub summary: IncidentSummary,
    /// Time to detect, in seconds ([`IncidentSummary::time_to_detect`]).
    pub mttd_seconds: Option<f64>,
    /// Time to recover, in seconds ([`IncidentSummary::time_to_recover`]).
    pub mttr_seconds: Option<f64>,
}

impl From<&IncidentSummary> for IncidentView {
    fn from(summary: &IncidentSummary) -> Self {
        IncidentView {
            mttd_seconds: summary.time_to_detect().map(|d| d.as_secs_f64()),
            mttr_seconds: summary.time_to_recover().map(|d| d.as_secs_f64()),
            summary: summary.clone(),
        }
    }
}

/// One journal entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryView {
    /// Its position in the journal.
    pub seq: i64,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// What it is (`incident_opened`, `step_succeeded`, ...).
    pub kind: String,
    /// The playbook.
    pub playbook: String,
    /// The incident.
    pub incident: Option<String>,
    /// Everything else the journal holds of it.
    pub detail: serde_json::Value,
}

impl From<&Entry> for EntryView {
    fn from(entry: &Entry) -> Self {
        EntryView {
            seq: entry.seq,
            at: entry.record.at,
            kind: entry.record.kind.as_str().to_string(),
            playbook: entry.record.playbook.clone(),
            incident: entry.record.incident.clone(),
            detail: entry.record.detail.clone(),
        }
    }
}

impl EntryView {
    /// The journal entry, or `None` when its kind is one this Salve does not know.
    pub fn entry(self) -> Option<Entry> {
        Some(Entry {
            seq: self.seq,
            record: Record {
                at: self.at,
                kind: Kind::parse(&self.kind)?,
                playbook: self.playbook,
                incident: self.incident,
                detail: self.detail,
            },
        })
    }
}

/// `GET /api/v1/incidents`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentList {
    /// Every incident, oldest first.
    pub incidents: Vec<IncidentView>,
}

/// `GET /api/v1/incidents/{id}`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentTimeline {
    /// The incident; `null` when the journal has entries of it but no opening (a partial
    /// journal).
    pub incident: Option<IncidentView>,
    /// Its entries, in the order written.
    pub timeline: Vec<EntryView>,
}

/// `GET /api/v1/incidents`.
pub(super) async fn list(State(state): State<ApiState>) -> Response {
    let journal = Arc::clone(&state.journal);
    match blocking(move || journal.incidents()).await {
        Ok(Ok(incidents)) => Json(IncidentList {
            incidents: incidents.iter().map(IncidentView::from).collect(),
        })
        .into_response(),
        Ok(Err(e)) => journal_error(&e),
        Err(response) => response,
    }
}

/// `GET /api/v1/incidents/{id}`.
pub(super) async fn one(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let journal = Arc::clone(&state.journal);
    let wanted = id.clone();
    let read = blocking(move || -> crate::journal::Result<_> {
        let timeline = journal.timeline(&wanted)?;
        let summary = journal.incident(&wanted)?;
        Ok((summary, timeline))
    })
    .await;
    match read {
        Ok(Ok((summary, timeline))) => {
            if summary.is_none() && timeline.is_empty() {
                return error(StatusCode::NOT_FOUND, format!("no incident `{id}`"));
            }
            Json(IncidentTimeline {
                incident: summary.as_ref().map(IncidentView::from),
                timeline: timeline.iter().map(EntryView::from).collect(),
            })
            .into_response()
        }
        Ok(Err(e)) => journal_error(&e),
        Err(response) => response,
    }
}
