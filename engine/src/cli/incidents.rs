//! `salve incidents`: the incidents in a journal, with their times to detect and recover, or
//! one incident's timeline as a person reads it.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Result, current_thread_runtime, stdout_error};
use crate::api::client::Client;
use crate::check::format_duration;
use crate::journal::{Entry, IncidentSummary, Journal, Kind, Record};

/// Lists the incidents of `journal`, or shows the timeline of incident `id`.
pub(super) fn run(journal: &Journal, id: Option<&str>) -> Result<ExitCode> {
    let mut out = io::stdout().lock();
    match id {
        None => list(&mut out, &journal.incidents()?).map_err(stdout_error)?,
        Some(id) => {
            let entries = journal.timeline(id)?;
            if entries.is_empty() {
                eprintln!(
                    "salve incidents: no incident `{id}` in {}",
                    journal.path().display()
                );
                return Ok(ExitCode::FAILURE);
            }
            timeline(&mut out, &entries).map_err(stdout_error)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// [`run`], asking the API of the Salve at `server` instead of reading a journal.
pub(super) fn run_remote(server: &str, id: Option<&str>) -> Result<ExitCode> {
    let runtime = current_thread_runtime()?;
    let fetched: crate::api::client::Result<_> = runtime.block_on(async {
        let client = Client::new(server, None)?;
        match id {
            None => {
                let list = client.incidents().await?;
                let incidents: Vec<IncidentSummary> = list
                    .incidents
                    .into_iter()
                    .map(|view| view.summary)
                    .collect();
                Ok((incidents, Vec::new()))
            }
            Some(id) => {
                let one = client.incident(id).await?;
                let entries: Vec<Entry> =
                    one.timeline.into_iter().filter_map(|e| e.entry()).collect();
                Ok((Vec::new(), entries))
            }
        }
    });
    let (incidents, entries) = match fetched {
        Ok(fetched) => fetched,
        Err(e) => {
            eprintln!("salve incidents: {}", crate::diagnostic::chain(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = io::stdout().lock();
    match id {
        None => list(&mut out, &incidents).map_err(stdout_error)?,
        Some(id) if entries.is_empty() => {
            eprintln!("salve incidents: incident `{id}` has no entries");
            return Ok(ExitCode::FAILURE);
        }
        Some(_) => timeline(&mut out, &entries).map_err(stdout_error)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn list(out: &mut impl Write, incidents: &[IncidentSummary]) -> io::Result<()> {
    writeln!(
        out,
        "{:<16}  {:<28}  {:<32}  {:<20}  {:<20}  {:>8}  {:>8}  ADVICE",
        "INCIDENT", "PLAYBOOK", "TARGET", "OPENED", "RESOLVED", "MTTD", "MTTR"
    )?;
    for incident in incidents {
        writeln!(
            out,
            "{:<16}  {:<28}  {:<32}  {:<20}  {:<20}  {:>8}  {:>8}  {}",
            incident.id,
            incident.playbook,
            incident.target.as_deref().unwrap_or("-"),
            time(incident.opened_at),
            incident.resolved_at.map_or("open".into(), time),
            incident
                .time_to_detect()
                .map_or("-".into(), format_duration),
            incident
                .time_to_recover()
                .map_or("-".into(), format_duration),
            incident.advice.as_deref().unwrap_or("-"),
        )?;
    }
    let open = incidents.iter().filter(|i| i.resolved_at.is_none()).count();
    let mean = |spans: Vec<Duration>| {
        let n = u32::try_from(spans.len()).unwrap_or(u32::MAX);
        (n > 0).then(|| spans.iter().sum::<Duration>() / n)
    };
    let detect = mean(
        incidents
            .iter()
            .filter_map(|i| i.time_to_detect())
            .collect(),
    );
    let recover = mean(
        incidents
            .iter()
            .filter_map(|i| i.time_to_recover())
            .collect(),
    );
    writeln!(
        out,
        "{} incident(s), {open} open; MTTD {}, MTTR {}",
        incidents.len(),
        detect.map_or("-".into(), format_duration),
        recover.map_or("-".into(), format_duration),
    )
}

/// One line per entry: `03:17:22 DETECT  crash-loop  Deployment shop/api  {pod="..."} ...`.
fn timeline(out: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    let first = &entries[0].record;
    writeln!(
        out,
        "incident {} of playbook {} ({})",
        first.incident.as_deref().unwrap_or("-"),
        first.playbook,
        first.at.format("%Y-%m-%d UTC")
    )?;
    for Entry { record, .. } in entries {
        writeln!(out, "{}", line(record))?;
    }
    Ok(())
}

/// One timeline line: `03:17:22 EXECUTE  rollout_undo Deployment shop/api`.
pub fn line(record: &Record) -> String {
    let detail = &record.detail;
    let mut text = String::new();
    if let Some(target) = detail["target"].as_str()
        && record.kind == Kind::IncidentOpened
    {
        text.push_str(target);
        text.push_str("  ");
    }
    if let Some(summary) = detail["summary"].as_str() {
        // Executor entries say what happened in one line of their own.
        text.push_str(summary);
        if let Some(reason) = detail["reason"].as_str().filter(|r| !r.is_empty())
            && record.kind == Kind::StepFailed
        {
            text.push_str(&format!(": {reason}"));
        }
        return format!(
            "{} {:<9} {text}",
            record.at.format("%H:%M:%S"),
            record.kind.verb()
        );
    }
    if let Some(labels) = detail["labels"].as_object() {
        let pairs: Vec<String> = labels
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or(v.to_string(), |s| format!("{s:?}"))
                )
            })
            .collect();
        text.push_str(&format!("{{{}}}", pairs.join(", ")));
    }
    if let Some(values) = detail["values"].as_object() {
        for (name, value) in values {
            if let Some(value) = value.as_f64() {
                text.push_str(&format!(" {name}={}", short(value)));
            }
        }
    }
    if let Some(step) = detail["step"].as_str() {
        text.push_str(&format!("step {step}"));
        if let Some(risk) = detail["risk"].as_str() {
            text.push_str(&format!(" (risk {risk})"));
        }
    }
    if let Some(by) = detail["by"].as_str() {
        text.push_str(&format!("by {by}"));
    }
    if let Some(id) = detail["approval"].as_str() {
        text.push_str(&format!(" [{id}]"));
    }
    if let Some(reason) = detail["reason"].as_str().filter(|r| !r.is_empty()) {
        text.push_str(&format!(" ({reason})"));
    }
    format!(
        "{} {:<9} {text}",
        record.at.format("%H:%M:%S"),
        record.kind.verb()
    )
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A value with at most 4 significant decimals.
fn short(value: f64) -> String {
    let text = format!("{value:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_an_sre_writes_them() {
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(750)), "12m30s");
        assert_eq!(format_duration(Duration::from_secs(11_100)), "3h05m");
        assert_eq!(short(8.0), "8");
        assert_eq!(short(0.123_456), "0.1235");
    }
}
