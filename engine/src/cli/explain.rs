//! `salve explain <incident>`: the full reasoning trail of one incident.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Result;

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
    let _ = args;
    Ok(ExitCode::SUCCESS)
}
