//! `salve demo`: the pipeline end to end on a laptop (see [`crate::demo`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{Error, Result};
use crate::demo::{self, Options};
use crate::executor::Finish;

/// `salve demo`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The playbooks to run (the bundled ones).
    #[arg(long, default_value = "playbooks", num_args = 1..)]
    playbooks: Vec<PathBuf>,
    /// How many times faster than the wall clock the demo's time runs.
    #[arg(long, default_value_t = 30.0)]
    speed: f64,
    /// Keep the demo's journal in this file, for `salve incidents` afterwards.
    #[arg(long)]
    journal: Option<PathBuf>,
}

/// Runs the demo; exit 1 when the incident was not remediated.
pub(super) fn run(args: DemoArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let options = Options {
        playbooks: args.playbooks,
        speed: args.speed,
        journal: args.journal,
        limit: Duration::from_secs(90 * 60),
    };
    let mut out = std::io::stdout();
    match runtime.block_on(demo::run(options, &mut out)) {
        Ok(report) if report.finish == Some(Finish::Remediated) => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::FAILURE),
        Err(reason) => {
            eprintln!("salve demo: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}
