//! `salve approvals`, `salve approve` and `salve reject`: a person's answers to steps waiting
//! above the risk ceiling, written to the engine's journal, or sent to its API (`--server`).

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};

use super::{Result, current_thread_runtime, stdout_error};
use crate::api::client::{self, Client};
use crate::approval::{Answer, Approval, Approvals, Error};
use crate::journal::Journal;

/// Lists the requests waiting for an answer.
pub(super) fn list(journal: Journal) -> Result<ExitCode> {
    let approvals = Approvals::new(Arc::new(journal));
    let pending = approvals.pending().map_err(approval_error)?;
    print(&pending)
}

/// [`list`], asking the API of the Salve at `server`.
pub(super) fn list_remote(server: &str) -> Result<ExitCode> {
    let runtime = current_thread_runtime()?;
    let fetched = runtime.block_on(async { Client::new(server, None)?.approvals().await });
    match fetched {
        Ok(list) => {
            let pending = list.approvals;
            print(&pending)
        }
        Err(e) => refused("salve approvals", &e),
    }
}

/// Answers request `id` through the API of the Salve at `server`, authenticated with the
/// token in `token_file`: approves it, or rejects it when `rejection` is given. The server
/// records the name its token file gives the token.
pub(super) fn answer_remote(
    server: &str,
    token_file: Option<&Path>,
    id: &str,
    rejection: Option<String>,
) -> Result<ExitCode> {
    let token = match token_file.map(read_token).transpose() {
        Ok(token) => token,
        Err(reason) => {
            eprintln!("salve: {reason}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = current_thread_runtime()?;
    let answered =
        runtime.block_on(async { Client::new(server, token)?.answer(id, rejection).await });
    match answered {
        Ok(view) => {
            let mut out = io::stdout().lock();
            writeln!(out, "{}", describe(&view)).map_err(stdout_error)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => refused("salve", &e),
    }
}

/// The bearer token in a token file: the first word of its first line that is not blank or a
/// `#` comment (so a line of the server's `TOKEN NAME` file works as it is).
pub(super) fn read_token(path: &Path) -> std::result::Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| format!("{}: no token in the file", path.display()))
}

fn refused(command: &str, error: &client::Error) -> Result<ExitCode> {
    eprintln!("{command}: {}", crate::diagnostic::chain(error));
    Ok(ExitCode::FAILURE)
}

fn print(pending: &[Approval]) -> Result<ExitCode> {
    let mut out = io::stdout().lock();
    let write = |out: &mut io::StdoutLock<'_>| -> io::Result<()> {
        writeln!(
            out,
            "{:<36}  {:<16}  {:<28}  {:<16}  {:<8}  EXPIRES",
            "APPROVAL", "INCIDENT", "PLAYBOOK", "STEP", "RISK"
        )?;
        for a in pending {
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
