//! `salve approvals`, `salve approve` and `salve reject`: a person's answers to steps waiting
//! above the risk ceiling, written to the engine's journal.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};

use super::{Result, stdout_error};
use crate::approval::{Answer, Approval, Approvals, Error};
use crate::journal::Journal;

/// Lists the requests waiting for an answer.
pub(super) fn list(journal: Journal) -> Result<ExitCode> {
    let approvals = Approvals::new(Arc::new(journal));
    let pending = approvals.pending().map_err(approval_error)?;
    let mut out = io::stdout().lock();
    let write = |out: &mut io::StdoutLock<'_>| -> io::Result<()> {
        writeln!(
            out,
            "{:<36}  {:<16}  {:<28}  {:<16}  {:<8}  EXPIRES",
            "APPROVAL", "INCIDENT", "PLAYBOOK", "STEP", "RISK"
        )?;
        for a in &pending {
            writeln!(
                out,
                "{:<36}  {:<16}  {:<28}  {:<16}  {:<8}  {}",
                a.id,
                a.incident,
                a.playbook,
                a.step,
                a.risk,
                a.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            )?;
            writeln!(out, "    {}", a.reason)?;
            for line in a.situation.lines() {
                writeln!(out, "    {line}")?;
            }
        }
        writeln!(out, "{} waiting", pending.len())
    };
    write(&mut out).map_err(stdout_error)?;
    Ok(ExitCode::SUCCESS)
}

/// Answers request `id` as `by`.
pub(super) fn answer(journal: Journal, id: &str, answer: Answer, by: &str) -> Result<ExitCode> {
    let approvals = Approvals::new(Arc::new(journal));
    match approvals.answer(id, answer, by, Utc::now()) {
        Ok(approval) => {
            let mut out = io::stdout().lock();
            writeln!(out, "{}", describe(&approval)).map_err(stdout_error)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (Error::Unknown(_) | Error::Decided { .. })) => {
            eprintln!("salve: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(approval_error(e)),
    }
}

fn describe(approval: &Approval) -> String {
    use crate::approval::State;
    let what = format!(
        "step `{}` (risk {}) of incident {} ({})",
        approval.step, approval.risk, approval.incident, approval.playbook
    );
    match &approval.state {
        State::Approved { by, .. } => format!("approved by {by}: {what}"),
        State::Rejected { by, .. } => format!("rejected by {by}: {what}"),
        State::Expired { .. } => format!("expired: {what}"),
        State::Pending => format!("pending: {what}"),
    }
}

fn approval_error(error: Error) -> super::Error {
    match error {
        Error::Journal(e) => super::Error::Journal(e),
        other => super::Error::Approval(other.to_string()),
    }
}
