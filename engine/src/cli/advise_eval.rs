//! `salve advise-eval`: scores the deterministic correlation, runbook retrieval and (given an
//! endpoint) the LLM advisor on the labelled incident scenarios (see
//! [`crate::advisor::eval`]).
//!
//! It is a measurement: it exits 0 whatever the scores, and 2 when the scenarios or the
//! playbooks cannot be read.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{Error, Result, stdout_error};
use crate::advisor::eval::{self, ModelAnswer, Outcome, Report, Score, TOP_K};
use crate::advisor::{ApiKeySource, Client, Config};
use crate::playbook::PlaybookSet;
use crate::playbook::load::load_paths;

/// Arguments of `salve advise-eval`.
#[derive(Debug, Args)]
pub struct AdviseEvalArgs {
    /// The labelled scenarios (a directory of YAML files, or files).
    #[arg(long, default_value = "tests/advise")]
    pub scenarios: PathBuf,
    /// The playbooks retrieval ranks.
    #[arg(long, default_value = "playbooks")]
    pub playbooks: PathBuf,
    /// Print one JSON object (every scenario's outcome and the summary) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also print, under each scenario, the correlation's reason and the candidates.
    #[arg(long, short)]
    pub verbose: bool,
    /// Also ask the model behind this OpenAI-compatible endpoint (its base URL, such as
    /// `https://api.openai.com/v1` or `http://localhost:11434/v1`) about every scenario, with
    /// the context, candidates, schema and checks the engine uses.
    #[arg(long)]
    pub llm_url: Option<reqwest::Url>,
    /// The chat model to ask (with `--llm-url`).
    #[arg(long, requires = "llm_url", default_value = "gpt-4o-mini")]
    pub model: String,
    /// Read the endpoint's API key from this environment variable (with `--llm-url`).
    #[arg(long, requires = "llm_url", conflicts_with = "api_key_file")]
    pub api_key_env: Option<String>,
    /// Read the endpoint's API key from this file (with `--llm-url`).
    #[arg(long, requires = "llm_url")]
    pub api_key_file: Option<PathBuf>,
    /// The longest one question may take, in seconds (with `--llm-url`).
    #[arg(long, requires = "llm_url", default_value_t = 60)]
    pub timeout: u64,
}

/// Runs `salve advise-eval`.
pub(super) fn run(args: AdviseEvalArgs) -> Result<ExitCode> {
    let set = match PlaybookSet::from_loaded(load_paths(std::slice::from_ref(&args.playbooks))) {
        Ok(set) => set,
        Err(diagnostics) => {
            for diagnostic in diagnostics.iter().filter(|d| d.is_error()) {
                eprintln!("{diagnostic}");
            }
            eprintln!(
                "salve advise-eval: the playbooks in {} do not load",
                args.playbooks.display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let scenarios = match eval::load(std::slice::from_ref(&args.scenarios), &set) {
        Ok(scenarios) => scenarios,
        Err(error) => {
            eprintln!("salve advise-eval: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut report = eval::score(&scenarios, &set);
    if let Some(url) = &args.llm_url {
        let mut config = Config::new(url.clone(), args.model.clone());
        config.api_key = match (&args.api_key_env, &args.api_key_file) {
            (Some(var), _) => Some(ApiKeySource::Env(var.clone())),
            (None, Some(file)) => Some(ApiKeySource::File(file.clone())),
            (None, None) => None,
        };
        config.timeout = Duration::from_secs(args.timeout);
        config.budget.calls_per_hour = u32::MAX;
        config.budget.tokens_per_hour = u64::MAX;
        let client = Client::new(config).map_err(|e| Error::Internal(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        runtime.block_on(eval::ask_model(&mut report, &scenarios, &set, &client));
    }
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report.to_json())
            .map_err(|e| stdout_error(e.into()))?;
        writeln!(out).map_err(stdout_error)?;
    } else {
        table(&mut out, &report, args.verbose).map_err(stdout_error)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn mark(hit: bool) -> &'static str {
    if hit { "✓" } else { "✗" }
}

/// One line per scenario, then the summary.
fn table(out: &mut impl Write, report: &Report, verbose: bool) -> io::Result<()> {
    let with_llm = report.outcomes.iter().any(|o| o.llm.is_some());
    let mut header = vec![
        "SCENARIO".to_string(),
        "CATEGORY".into(),
        "ROOT".into(),
        "CORRELATION".into(),
        "PLAYBOOK".into(),
        "RANK".into(),
        format!("RETRIEVED (TOP {TOP_K})"),
        "CANDIDATES".into(),
    ];
    if with_llm {
        header.extend(["LLM ROOT".into(), "LLM PLAYBOOK".into()]);
    }
    let rows: Vec<Vec<String>> = report.outcomes.iter().map(|o| row(o, with_llm)).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| {
                let pad = width.saturating_sub(cell.chars().count());
                format!("{cell}{}", " ".repeat(pad))
            })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(&header))?;
    for (outcome, cells) in report.outcomes.iter().zip(&rows) {
        writeln!(out, "{}", line(cells))?;
        if verbose {
            writeln!(out, "    correlation: {}", outcome.correlation.reason)?;
            writeln!(out, "    candidates: {}", outcome.candidates.join(", "))?;
        }
    }

    let summary = report.summary();
    writeln!(out)?;
    writeln!(
        out,
        "{} scenarios, {} playbooks ranked lexically",
        summary.scenarios, report.playbooks
    )?;
    let mut scores: Vec<(String, Score)> = vec![
        (
            "correlation (deterministic root)".into(),
            summary.correlation,
        ),
        ("retrieval top-1".into(), summary.top1),
        (format!("retrieval top-{TOP_K}"), summary.top3),
        (
            format!("candidate recall (triggers + top-{TOP_K})"),
            summary.candidate_recall,
        ),
    ];
    if let Some(score) = summary.llm_root {
        scores.push(("llm root cause".into(), score));
    }
    if let Some(score) = summary.llm_playbook {
        scores.push(("llm playbook".into(), score));
    }
    let width = scores.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, score) in &scores {
        writeln!(
            out,
            "  {name:<width$}  {:>5}  {:>5.1}%",
            format!("{}/{}", score.hits, score.total),
            score.percent()
        )?;
    }
    writeln!(
        out,
        "by category (correlation, top-{TOP_K}, candidate recall):"
    )?;
    let width = summary
        .categories
        .iter()
        .map(|c| c.category.as_str().len())
        .max()
        .unwrap_or(0);
    for c in &summary.categories {
        let mut text = format!(
            "  {:<width$}  {:>5}  {:>5}  {:>5}",
            c.category.as_str(),
            fraction(c.correlation),
            fraction(c.top3),
            fraction(c.candidate_recall),
        );
        if let Some(llm) = c.llm_root {
            text.push_str(&format!("  llm {:>5}", fraction(llm)));
        }
        writeln!(out, "{text}")?;
    }
    Ok(())
}

fn fraction(score: Score) -> String {
    format!("{}/{}", score.hits, score.total)
}

fn row(o: &Outcome, with_llm: bool) -> Vec<String> {
    let id = |i: usize| format!("sig-{}", i + 1);
    let retrieved: Vec<String> = o
        .retrieved
        .iter()
        .map(|r| {
            if r.name == o.expect.playbook {
                format!("✓{}", r.name)
            } else {
                r.name.clone()
            }
        })
        .collect();
    let mut cells = vec![
        o.scenario.clone(),
        o.category.to_string(),
        id(o.expect.root_cause),
        format!(
            "{} {}",
            id(o.correlation.root),
            mark(o.correlation_correct())
        ),
        o.expect.playbook.clone(),
        o.expected_rank.map_or("-".into(), |r| r.to_string()),
        retrieved.join(" "),
        format!("{} {}", mark(o.candidate_recall()), o.candidates.len()),
    ];
    if with_llm {
        match &o.llm {
            None => cells.extend([String::new(), String::new()]),
            Some(ModelAnswer {
                rejected: Some(reason),
                ..
            }) => cells.extend([format!("✗ {reason}"), "-".into()]),
            Some(llm) => {
                cells.push(llm.root_cause.map_or("- ✗".into(), |root| {
                    format!("{} {}", id(root), mark(o.llm_root_correct() == Some(true)))
                }));
                cells.push(llm.playbook.as_deref().map_or("- ✗".into(), |playbook| {
                    format!(
                        "{playbook} {}",
                        mark(o.llm_playbook_correct() == Some(true))
                    )
                }));
            }
        }
    }
    cells
}
