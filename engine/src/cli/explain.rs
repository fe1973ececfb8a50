//! `salve explain <incident>`: the full reasoning trail of one incident, from its journal —
//! the signals, Salve's own correlation, what the advisor was shown and answered (with the
//! items it cited, as they were sent) or why there was no advice, and every decision after.
//!
//! Text that came from a model is printed with its control characters escaped, so an answer
//! cannot move the cursor or recolour the terminal.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::incidents::line;
use super::{Result, stdout_error};
use crate::advisor::consult::printable;
use crate::journal::{Entry, Journal, Kind};

/// The last lines of a cited log excerpt that are printed.
const CITED_LINES: usize = 3;

/// Arguments of `salve explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The journal.
    #[arg(long, env = "SALVE_JOURNAL")]
    pub journal: PathBuf,
    /// The incident.
    pub id: String,
}

/// Runs `salve explain`.
pub(super) fn run(args: ExplainArgs) -> Result<ExitCode> {
    let journal = Journal::open(&args.journal)?;
    let entries = journal.timeline(&args.id)?;
    if entries.is_empty() {
        eprintln!(
            "salve explain: no incident `{}` in {}",
            args.id,
            journal.path().display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut out = io::stdout().lock();
    explain(&mut out, &entries).map_err(stdout_error)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the trail of the incident whose entries are `entries`.
fn explain(out: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    let first = &entries[0].record;
    let target = entries
        .iter()
        .find_map(|e| e.record.detail["target"].as_str())
        .unwrap_or("-");
    writeln!(
        out,
        "Incident {} of playbook {} on {target}",
        first.incident.as_deref().unwrap_or("-"),
        first.playbook
    )?;
    let finish = entries
        .iter()
        .rev()
        .find(|e| e.record.kind == Kind::RemediationFinished);
    if let Some(finish) = finish {
        writeln!(out, "Outcome: {}", line(&finish.record))?;
    }

    writeln!(out, "\nSignals")?;
    for entry in entries.iter().filter(|e| e.record.kind.is_detection()) {
        writeln!(out, "  {}", line(&entry.record))?;
    }

    let consulted: Vec<&Entry> = entries
        .iter()
        .filter(|e| matches!(e.record.kind, Kind::Advice | Kind::AdviceRejected))
        .collect();
    if consulted.is_empty() {
        writeln!(
            out,
            "\nAdvisor\n  not consulted (it is off unless the policy's `advisor:` block turns it on)"
        )?;
    }
    for entry in consulted {
        advisor(out, &entry.record.detail)?;
    }

    writeln!(out, "\nDecisions")?;
    for entry in entries.iter().filter(|e| {
        !e.record.kind.is_detection()
            && !matches!(e.record.kind, Kind::Advice | Kind::AdviceRejected)
    }) {
        writeln!(out, "  {}", line(&entry.record))?;
    }
    Ok(())
}

/// The correlation and the advisor's part of one consultation.
fn advisor(out: &mut impl Write, detail: &Value) -> io::Result<()> {
    let text = |value: &Value| printable(value.as_str().unwrap_or("-"));
    let list = |value: &Value| {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(printable)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let correlation = &detail["correlation"];
    writeln!(out, "\nDeterministic correlation")?;
    writeln!(
        out,
        "  root {}; related {}; shared: {}",
        text(&correlation["root"]),
        list(&correlation["related"]),
        Some(list(&correlation["shared"]))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "nothing".into())
    )?;
    writeln!(out, "  {}", text(&correlation["reason"]))?;

    let model = detail["model"].as_str().map(printable);
    writeln!(
        out,
        "\nAdvisor ({}, {:.1} s, {} tokens{})",
        model.as_deref().unwrap_or("no answer"),
        detail["seconds"].as_f64().unwrap_or_default(),
        detail["tokens"].as_u64().unwrap_or_default(),
        if detail["cached"] == Value::Bool(true) {
            ", from the cache"
        } else {
            ""
        }
    )?;
    let shown = &detail["shown"];
    writeln!(
        out,
        "  shown: {} items in {} bytes (candidates: {}; retrieval: {}{})",
        shown["ids"].as_array().map_or(0, Vec::len),
        shown["bytes"].as_u64().unwrap_or_default(),
        list(&detail["candidates"]),
        text(&detail["retrieval"]["method"]),
        detail["retrieval"]["fallback"]
            .as_str()
            .map(|why| format!(", embeddings not used: {}", printable(why)))
            .unwrap_or_default()
    )?;
    if let Some(redactions) = shown["redactions"].as_object().filter(|r| !r.is_empty()) {
        let counts: Vec<String> = redactions
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        writeln!(out, "  redacted before sending: {}", counts.join(", "))?;
    }
    let cut = list(&shown["shortened"]);
    if !cut.is_empty() {
        writeln!(out, "  cut to fit: {cut}")?;
    }
    let gaps = list(&detail["gaps"]);
    if !gaps.is_empty() {
        writeln!(out, "  could not gather: {gaps}")?;
    }
    let advice = &detail["advice"];
    if advice.is_null() {
        writeln!(
            out,
            "  no advice ({}): {}\n  the remediation went on exactly as without an advisor",
            text(&detail["reason"]),
            text(&detail["message"])
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "  root cause: {} ({:.0}% sure)",
        text(&advice["rootCause"]),
        advice["confidence"].as_f64().unwrap_or_default() * 100.0
    )?;
    writeln!(out, "  explanation: {}", text(&advice["explanation"]))?;
    writeln!(
        out,
        "  suggested playbook: {}",
        advice["suggestedPlaybook"]
            .as_str()
            .map_or("none".into(), printable)
    )?;
    let caution = &detail["caution"];
    let mut asked = Vec::new();
    if let Some(ceiling) = caution["ceiling"].as_str() {
        asked.push(format!("ceiling lowered to {ceiling}"));
    }
    if caution["approval"] == Value::Bool(true) {
        asked.push("a human approval for every step".into());
    }
    writeln!(
        out,
        "  caution asked: {}",
        if asked.is_empty() {
            "none".into()
        } else {
            asked.join("; ")
        }
    )?;
    writeln!(out, "  evidence cited:")?;
    let sent = shown["text"].as_str().unwrap_or_default();
    for id in advice["evidence"].as_array().into_iter().flatten() {
        let id = id.as_str().unwrap_or_default();
        writeln!(out, "    {}  {}", printable(id), cited(sent, id))?;
    }
    Ok(())
}

/// The item `id` as the context showed it: its JSON line, or for a log excerpt its source and
/// last lines (indented under it).
fn cited(context: &str, id: &str) -> String {
    let json_line = format!("{{\"id\":\"{id}\"");
    let lines: Vec<&str> = context.lines().collect();
    if let Some(line) = lines.iter().find(|l| l.starts_with(&json_line)) {
        return printable(&crate::advisor::context::cap(line, 300));
    }
    // A log excerpt: `UNTRUSTED DATA <tag> (log-N: logs of ...): ...`, a fence, its lines, the
    // fence again.
    let label = format!("({id}: ");
    let Some(at) = lines.iter().position(|l| l.contains(&label)) else {
        return "(not in the context as kept)".into();
    };
    let source = lines[at]
        .split_once(&label)
        .and_then(|(_, rest)| rest.split_once("): "))
        .map_or("", |(source, _)| source);
    let Some(fence) = lines.get(at + 1).map(|l| l.trim_end_matches("text")) else {
        return printable(source);
    };
    let body: Vec<&str> = lines[at + 2..]
        .iter()
        .take_while(|l| **l != fence)
        .copied()
        .collect();
    let mut shown = printable(source);
    for line in &body[body.len().saturating_sub(CITED_LINES)..] {
        shown += "\n        ";
        shown += &printable(&crate::advisor::context::cap(line, 200));
    }
    shown
}
