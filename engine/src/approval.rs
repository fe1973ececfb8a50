//! Approvals: a human's yes or no for a step above the risk ceiling.
//!
//! When the gate says a step needs approval, the plan stops there and an approval request is
//! journaled: an unguessable id, the incident, the step and its risk, the ceiling that stopped
//! it, the plan and the evidence, and when it expires (the policy's approval timeout). A person
//! answers with `salve approve|reject <id>` (or, later, the HTTP API), which writes the answer to
//! the same journal; the engine reads it from there. No answer by the deadline means rejected:
//! [`Approvals::expire`] journals that.
//!
//! Every state comes from the journal and every answer is written in one exclusive
//! transaction that first checks the request is still pending and not past its deadline, so
//! two answers (two people, or a person and the timeout) can never both count, and a restarted
//! engine sees exactly what was decided.

use std::io::Read;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::journal::{self, Entry, Journal, Kind, Record};
use crate::risk::Risk;

/// One approval request and where it stands (as the API shows it, in camelCase, its state
/// flattened: `"state": "pending" | "approved" | "rejected" | "expired"`, with who decided and
/// when, `decidedAt`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// Its id (`apr-` and 32 hex digits from the system's random source).
    pub id: String,
    /// The incident.
    pub incident: String,
    /// The playbook.
    pub playbook: String,
    /// The step waiting.
    pub step: String,
    /// Its risk.
    pub risk: Risk,
    /// Why it waits (the gate's reason: which ceiling stopped it).
    pub reason: String,
    /// The account for the person deciding: what broke, why, what Salve wants to do, what
    /// happens without an answer (empty for requests journaled before it was kept).
    pub situation: String,
    /// When it was asked.
    pub requested_at: DateTime<Utc>,
    /// When no answer means rejected.
    pub expires_at: DateTime<Utc>,
    /// Where it stands.
    #[serde(flatten)]
    pub state: State,
}

/// Where an approval stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    /// Waiting for a person.
    Pending,
    /// Approved.
    Approved {
        /// Who approved.
        by: String,
        /// When.
        #[serde(rename = "decidedAt")]
        at: DateTime<Utc>,
    },
    /// Rejected by a person.
    Rejected {
        /// Who rejected.
        by: String,
        /// When.
        #[serde(rename = "decidedAt")]
        at: DateTime<Utc>,
        /// Why, if they said.
        #[serde(rename = "rejection")]
        reason: String,
    },
    /// Nobody answered in time: rejected.
    Expired {
        /// When that was noted.
        #[serde(rename = "decidedAt")]
        at: DateTime<Utc>,
    },
}

/// A person's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Run the step.
    Approve,
    /// Do not; why.
    Reject(String),
}

/// What a new request holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// The incident.
    pub incident: String,
    /// The playbook.
    pub playbook: String,
    /// The step waiting.
    pub step: String,
    /// Its risk.
    pub risk: Risk,
    /// The gate's reason.
    pub reason: String,
    /// The account for the person deciding (see [`Approval::situation`]).
    pub situation: String,
    /// The plan, for the person deciding.
    pub plan: serde_json::Value,
    /// The evidence (signals, values), for the person deciding.
    pub evidence: serde_json::Value,
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] journal::Error),
    /// The system's random source could not be read (no id can be made unguessable).
    #[error("cannot read /dev/urandom for an approval id: {0}")]
    Random(#[source] std::io::Error),
    /// No request has that id.
    #[error("no approval request `{0}`")]
    Unknown(String),
    /// It was answered already, or expired.
    #[error("approval `{id}` is no longer pending: {state}")]
    Decided {
        /// The request.
        id: String,
        /// How it was decided.
        state: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The approval requests kept in a journal.
#[derive(Debug, Clone)]
pub struct Approvals {
    journal: Arc<Journal>,
}

impl Approvals {
    /// The approvals in `journal`.
    pub fn new(journal: Arc<Journal>) -> Self {
        Approvals { journal }
    }

    /// Journals a request that expires after `timeout`; returns it.
    pub fn request(
        &self,
        ask: Ask,
        at: DateTime<Utc>,
        timeout: std::time::Duration,
    ) -> Result<Approval> {
        let id = new_id()?;
        let expires_at = chrono::Duration::from_std(timeout)
            .ok()
            .and_then(|t| at.checked_add_signed(t))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.journal.append(&Record {
            at,
            kind: Kind::ApprovalRequested,
            playbook: ask.playbook.clone(),
            incident: Some(ask.incident.clone()),
            detail: json!({
                "approval": id,
                "step": ask.step,
                "risk": ask.risk,
                "reason": ask.reason,
                "situation": ask.situation,
                "expiresAt": expires_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "plan": ask.plan,
                "evidence": ask.evidence,
            }),
        })?;
        Ok(Approval {
            id,
            incident: ask.incident,
            playbook: ask.playbook,
            step: ask.step,
            risk: ask.risk,
            reason: ask.reason,
            situation: ask.situation,
            requested_at: at,
            expires_at,
            state: State::Pending,
        })
    }

    /// Records `by`'s answer to request `id`, if it is still pending and not past its deadline.
    pub fn answer(
        &self,
        id: &str,
        answer: Answer,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Approval> {
        self.decide(id, at, |approval| {
            let (kind, state, detail) = match &answer {
                Answer::Approve => (
                    Kind::ApprovalGranted,
                    State::Approved {
                        by: by.to_string(),
                        at,
                    },
                    json!({"approval": id, "by": by}),
                ),
                Answer::Reject(reason) => (
                    Kind::ApprovalRejected,
                    State::Rejected {
                        by: by.to_string(),
                        at,
                        reason: reason.clone(),
                    },
                    json!({"approval": id, "by": by, "reason": reason}),
                ),
            };
            if at >= approval.expires_at {
                return None;
            }
            Some((kind, state, detail))
        })
    }

    /// Journals every pending request past its deadline as expired (rejected); returns them.
    pub fn expire(&self, at: DateTime<Utc>) -> Result<Vec<Approval>> {
        let mut expired = Vec::new();
        for approval in self.pending()? {
            if at < approval.expires_at {
                continue;
            }
            let id = approval.id.clone();
            match self.decide(&id, at, |_| {
                Some((
                    Kind::ApprovalExpired,
                    State::Expired { at },
                    json!({"approval": id, "reason": "no answer before the deadline"}),
                ))
            }) {
                Ok(approval) => expired.push(approval),
                // Answered meanwhile: that answer stands.
                Err(Error::Decided { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// Request `id` as the journal tells it.
    pub fn get(&self, id: &str) -> Result<Approval> {
        approval(id, &self.journal.by_detail("approval", id)?)
            .ok_or_else(|| Error::Unknown(id.to_string()))
    }

    /// Every request still waiting for an answer (some may be past their deadline until
    /// [`Approvals::expire`] runs).
    pub fn pending(&self) -> Result<Vec<Approval>> {
        let requested = self.journal.by_kind(Kind::ApprovalRequested)?;
        let mut pending = Vec::new();
        for entry in requested {
            let Some(id) = entry.record.detail["approval"].as_str() else {
                continue;
            };
            let approval = self.get(id)?;
            if approval.state == State::Pending {
                pending.push(approval);
            }
        }
        Ok(pending)
    }

    /// Writes the decision `decide` makes for pending request `id` (`None`: too late).
    fn decide(
        &self,
        id: &str,
        at: DateTime<Utc>,
        decide: impl FnOnce(&Approval) -> Option<(Kind, State, serde_json::Value)>,
    ) -> Result<Approval> {
        let outcome = self.journal.append_after(("approval", id), |entries| {
            let Some(mut approval) = approval(id, entries) else {
                return Err(Refusal::Unknown);
            };
            if approval.state != State::Pending {
                return Err(Refusal::Decided(state_text(&approval.state)));
            }
            let Some((kind, state, detail)) = decide(&approval) else {
                return Err(Refusal::Decided(format!(
                    "its deadline {} has passed (no answer means rejected)",
                    approval
                        .expires_at
                        .to_rfc3339_opts(SecondsFormat::Secs, true)
                )));
            };
            approval.state = state;
            let record = Record {
                at,
                kind,
                playbook: approval.playbook.clone(),
                incident: Some(approval.incident.clone()),
                detail,
            };
            Ok((record, approval))
        })?;
        match outcome {
            Ok((_, approval)) => Ok(approval),
            Err(Refusal::Unknown) => Err(Error::Unknown(id.to_string())),
            Err(Refusal::Decided(state)) => Err(Error::Decided {
                id: id.to_string(),
                state,
            }),
        }
    }
}

/// Why an answer cannot be written.
enum Refusal {
    Unknown,
    Decided(String),
}

fn state_text(state: &State) -> String {
    match state {
        State::Pending => "pending".to_string(),
        State::Approved { by, at } => format!("approved by {by} at {}", at.to_rfc3339()),
        State::Rejected { by, at, .. } => format!("rejected by {by} at {}", at.to_rfc3339()),
        State::Expired { at } => format!("expired at {} (rejected)", at.to_rfc3339()),
    }
}

/// Request `id` from its entries (the request, then at most one answer that counts).
fn approval(id: &str, entries: &[Entry]) -> Option<Approval> {
    let mut entries = entries.iter();
    let request = entries.find(|e| e.record.kind == Kind::ApprovalRequested)?;
    let detail = &request.record.detail;
    let text = |key: &str| detail[key].as_str().unwrap_or_default().to_string();
    let mut approval = Approval {
        id: id.to_string(),
        incident: request.record.incident.clone().unwrap_or_default(),
        playbook: request.record.playbook.clone(),
        step: text("step"),
        risk: serde_json::from_value(detail["risk"].clone()).unwrap_or(Risk::Critical),
        reason: text("reason"),
        situation: text("situation"),
        requested_at: request.record.at,
        expires_at: DateTime::parse_from_rfc3339(&text("expiresAt"))
            .map_or(request.record.at, |t| t.with_timezone(&Utc)),
        state: State::Pending,
    };
    if let Some(answer) = entries.next() {
        let detail = &answer.record.detail;
        let by = detail["by"].as_str().unwrap_or_default().to_string();
        let at = answer.record.at;
        approval.state = match answer.record.kind {
            Kind::ApprovalGranted => State::Approved { by, at },
            Kind::ApprovalRejected => State::Rejected {
                by,
                at,
                reason: detail["reason"].as_str().unwrap_or_default().to_string(),
            },
            _ => State::Expired { at },
        };
    }
    Some(approval)
}

/// `apr-` and 128 random bits in hex.
fn new_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(Error::Random)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("apr-{hex}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("valid time")
    }

    fn approvals() -> (tempfile::TempDir, Approvals) {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(&dir.path().join("j.db")).expect("journal");
        (dir, Approvals::new(Arc::new(journal)))
    }

    fn ask() -> Ask {
        Ask {
            incident: "inc-1".into(),
            playbook: "memory-leak-rollback".into(),
            step: "rollback".into(),
            risk: Risk::High,
            reason: "risk high is above the policy's ceiling medium".into(),
            situation: "What broke: a leak.".into(),
            plan: json!({"steps": ["capture-logs", "rollback"]}),
            evidence: json!({"secondsToOOM": 1140}),
        }
    }

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn a_request_is_pending_until_answered_once() {
        let (_dir, approvals) = approvals();
        let asked = approvals
            .request(ask(), t(0), FIVE_MINUTES)
            .expect("request");
        assert!(
            asked.id.starts_with("apr-") && asked.id.len() == 36,
            "{}",
            asked.id
        );
        assert_eq!(
            approvals.pending().expect("pending"),
            std::slice::from_ref(&asked)
        );
        let approved = approvals
            .answer(&asked.id, Answer::Approve, "alice", t(60))
            .expect("approve");
        assert_eq!(
            approved.state,
            State::Approved {
                by: "alice".into(),
                at: t(60)
            }
        );
        // A second answer does not count, whoever gives it.
        let again = approvals
            .answer(&asked.id, Answer::Reject("no".into()), "bob", t(61))
            .expect_err("already decided");
        assert!(again.to_string().contains("approved by alice"), "{again}");
        assert!(approvals.pending().expect("pending").is_empty());
        assert_eq!(approvals.get(&asked.id).expect("get").state, approved.state);
    }

    #[test]
    fn no_answer_in_time_is_a_rejection() {
        let (_dir, approvals) = approvals();
        let asked = approvals
            .request(ask(), t(0), FIVE_MINUTES)
            .expect("request");
        assert!(approvals.expire(t(299)).expect("expire").is_empty());
        // Too late to approve, even before the expiry has been journaled.
        let late = approvals
            .answer(&asked.id, Answer::Approve, "alice", t(300))
            .expect_err("too late");
        assert!(late.to_string().contains("deadline"), "{late}");
        let expired = approvals.expire(t(300)).expect("expire");
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].state, State::Expired { at: t(300) });
        assert!(approvals.expire(t(400)).expect("expire").is_empty(), "once");
    }

    #[test]
    fn a_rejection_keeps_its_reason_and_ids_are_unguessable() {
        let (_dir, approvals) = approvals();
        let a = approvals
            .request(ask(), t(0), FIVE_MINUTES)
            .expect("request");
        let b = approvals
            .request(ask(), t(0), FIVE_MINUTES)
            .expect("request");
        assert_ne!(a.id, b.id);
        let rejected = approvals
            .answer(&a.id, Answer::Reject("deploy freeze".into()), "bob", t(10))
            .expect("reject");
        assert!(
            matches!(rejected.state, State::Rejected { ref reason, .. } if reason == "deploy freeze")
        );
        assert_eq!(approvals.pending().expect("pending").len(), 1);
        assert!(matches!(
            approvals.answer("apr-nope", Answer::Approve, "eve", t(1)),
            Err(Error::Unknown(_))
        ));
    }
}
