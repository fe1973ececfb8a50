//! `salve trigger`: rehearse a playbook through a running Salve's API — the real diagnosis, plan
//! and gate verdicts, every step a server-side dry run — and, with `--wait`, print how it went.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{Result, current_thread_runtime, parse_duration};
use crate::api::client::Client;

/// `salve trigger`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// The playbook to rehearse (its name in the active set).
    playbook: String,
    /// A label of the signal to rehearse with, `NAME=VALUE` (repeat it): what the playbook's
    /// target templates read, such as `namespace=shop` and `deployment=api`.
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The Salve's API, such as `http://salve.salve-system:9464` (default: `$SALVE_SERVER`).
    #[arg(long, env = "SALVE_SERVER")]
    server: String,
    /// The file holding the bearer token (its first word), as for `salve approve`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Wait for the rehearsal to end, then print its timeline.
    #[arg(long)]
    wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "5m", value_parser = parse_duration, requires = "wait")]
    timeout: Duration,
}

fn parse_label(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

/// Runs `salve trigger`.
pub(super) fn run(args: TriggerArgs) -> Result<ExitCode> {
    let token = match args
        .token_file
        .as_deref()
        .map(super::approvals::read_token)
        .transpose()
    {
        Ok(token) => token,
        Err(message) => {
            eprintln!("salve trigger: {message}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    let runtime = current_thread_runtime()?;
    let started = runtime.block_on(async {
        let client = Client::new(&args.server, token)?;
        let triggered = client.trigger(&args.playbook, labels).await?;
        Ok::<_, crate::api::client::Error>((client, triggered))
    });
    let (client, triggered) = match started {
        Ok(started) => started,
        Err(e) => {
            eprintln!("salve trigger: {}", crate::diagnostic::chain(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let id = triggered.incident;
    println!(
        "rehearsing {} as incident {id}: every step a dry run; its timeline: salve incidents {id} --server {}",
        args.playbook, args.server
    );
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let began = Instant::now();
    let ended = runtime.block_on(async {
        loop {
            let one = client.incident(&id).await?;
            if one
                .timeline
                .iter()
                .any(|e| e.kind == crate::journal::Kind::IncidentResolved.as_str())
            {
                return Ok(true);
            }
            if began.elapsed() >= args.timeout {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    match ended {
        Ok(true) => super::incidents::run_remote(&args.server, Some(&id)),
        Ok(false) => {
            eprintln!(
                "salve trigger: the rehearsal {id} has not ended after {:?}",
                args.timeout
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            let e: crate::api::client::Error = e;
            eprintln!("salve trigger: {}", crate::diagnostic::chain(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}
