//! `salve step`: run a WASM step module by hand, or see what it asks of the host.
//!
//! `salve step run <module> --input incident.json` runs the module's handler once, in the
//! same sandbox as the engine, and prints its checked decision as JSON on stdout; its log
//! lines go to stderr. The input format is documented in [`crate::wasm::StepInput`]'s module
//! (incident, playbook, step, signals, target facts, config, earlier outputs). Exit codes: 0
//! on a decision, 1 when the module is refused or the step fails (the error on stderr), 2
//! when the input cannot be read.
//!
//! Decision JSON: `{"decision": "proceed", "actions": [{"action", "params", "risk"}],
//! "output": ...}`, `{"decision": "skip" | "escalate", "reason": ..., "output": ...}`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{Error, Result};
use crate::action::Action;
use crate::playbook::spec::Capability;
use crate::risk::Risk;
use crate::signal::evaluate::Evaluator;
use crate::wasm::{
    CacheDir, Decision, Grants, Host, HostOptions, Limits, Readable, Services, StepInput, VERSION,
};

/// `salve step` subcommands.
#[derive(Debug, Subcommand)]
pub enum StepCommand {
    /// Run a step module once on an incident read from a JSON file; print its decision.
    Run(Box<RunArgs>),
    /// Print a module's contract version, the capabilities it imports and its exports.
    Inspect {
        /// The component (`.wasm`, or `.wat` text).
        module: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `salve step run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component (`.wasm`, or `.wat` text).
    module: PathBuf,
    /// The incident, as JSON (see the module documentation of `salve::wasm::input`).
    #[arg(long)]
    input: PathBuf,
    /// The step's config, as JSON (replaces the input's `config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Grant a capability (log, query, get, now); repeat for more. Nothing is granted by
    /// default.
    #[arg(long = "grant", value_parser = parse_capability)]
    grants: Vec<Capability>,
    /// Allow an action in the answer (`rollout_undo`); repeat for more. Default: every
    /// action, to see what the step asks for (the engine applies the playbook's list).
    #[arg(long = "allow", value_parser = parse_action)]
    allow: Vec<Action>,
    /// The step's declared risk: no action it asks for is less risky.
    #[arg(long, default_value = "none", value_parser = parse_risk)]
    risk: Risk,
    /// Stop the step after this long.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    timeout: Duration,
    /// Its memory limit (`64MiB`, `512KiB`, bytes).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    memory: usize,
    /// The Prometheus `query` runs against.
    #[arg(long)]
    prometheus: Option<String>,
    /// Let `get` read the Kubernetes API of the current kubeconfig.
    #[arg(long)]
    kube: bool,
    /// A kind `get` may read (`Deployment`); repeat for more.
    #[arg(long = "read-kind")]
    read_kinds: Vec<String>,
    /// A namespace `get` may read from; repeat for more.
    #[arg(long = "read-namespace")]
    read_namespaces: Vec<String>,
    /// Cache compiled modules here (default `$XDG_CACHE_HOME/salve/wasm`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

/// Runs a `salve step` subcommand.
pub(super) fn run(command: StepCommand) -> Result<ExitCode> {
    match command {
        StepCommand::Run(args) => run_step(*args),
        StepCommand::Inspect { module, json } => inspect(&module, json),
    }
}

fn host(cache_dir: Option<PathBuf>) -> Option<Host> {
    let options = HostOptions {
        cache: cache_dir.map_or(CacheDir::Default, CacheDir::At),
        max_instances: 1,
        ..HostOptions::default()
    };
    match Host::new(options) {
        Ok(host) => Some(host),
        Err(error) => {
            eprintln!("salve step: {error}");
            None
        }
    }
}

fn inspect(module: &Path, json: bool) -> Result<ExitCode> {
    let Some(host) = host(None) else {
        return Ok(ExitCode::FAILURE);
    };
    let inspection = match host.inspect(module) {
        Ok(inspection) => inspection,
        Err(error) => {
            eprintln!("salve step: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if json {
        let text = serde_json::to_string_pretty(&inspection)
            .map_err(|e| Error::Internal(e.to_string()))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("module:   {}", module.display());
    match &inspection.contract_version {
        Some(version) if version == VERSION => println!("contract: salve:step@{version}"),
        Some(version) => println!(
            "contract: salve:step@{version} (this Salve supports {VERSION}: it will be refused)"
        ),
        None => println!("contract: none (it does not use salve:step: it will be refused)"),
    }
    let imports: Vec<String> = inspection.imports.iter().map(|i| i.to_string()).collect();
    println!(
        "imports:  {}",
        if imports.is_empty() {
            "nothing".to_string()
        } else {
            imports.join(", ")
        }
    );
    println!("exports:  {}", inspection.exports.join(", "));
    Ok(ExitCode::SUCCESS)
}

fn run_step(args: RunArgs) -> Result<ExitCode> {
    let mut input = match read_input(&args.input, args.config.as_deref()) {
        Ok(input) => input,
        Err(message) => {
            eprintln!("salve step: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    if input.config.is_null() {
        input.config = json!({});
    }
    let Some(host) = host(args.cache_dir) else {
        return Ok(ExitCode::FAILURE);
    };
    let module = match host.load(&args.module) {
        Ok(module) => module,
        Err(error) => {
            eprintln!("salve step: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let allowed = if args.allow.is_empty() {
        Action::ALL.to_vec()
    } else {
        args.allow
    };
    let mut grants = Grants::new(args.grants, allowed, args.risk);
    grants.readable = Readable::each_in(args.read_kinds, args.read_namespaces);
    let limits = Limits {
        timeout: args.timeout,
        memory: args.memory,
        ..Limits::default()
    };
    let runtime = super::current_thread_runtime()?;
    let result = runtime.block_on(async {
        let mut services = Services::default();
        if let Some(url) = &args.prometheus {
            services.prometheus = Some(Evaluator::new(url, Duration::from_secs(10))?);
        }
        if args.kube {
            match kube::Client::try_default().await {
                Ok(client) => services.kube = Some(client),
                Err(error) => eprintln!("salve step: no Kubernetes API ({error}); `get` fails"),
            }
        }
        Ok::<_, Error>(
            host.evaluate(&module, &grants, &limits, input, &services)
                .await,
        )
    })?;
    match result {
        Ok(result) => {
            let mut answer = match result.decision {
                Decision::Proceed(actions) => json!({"decision": "proceed", "actions": actions}),
                Decision::Skip(reason) => json!({"decision": "skip", "reason": reason}),
                Decision::Escalate(reason) => json!({"decision": "escalate", "reason": reason}),
            };
            if let Some(output) = result.output {
                answer["output"] = output;
            }
            let text = serde_json::to_string_pretty(&answer)
                .map_err(|e| Error::Internal(e.to_string()))?;
            println!("{text}");
            eprintln!("salve step: decided in {:?}", result.took);
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            eprintln!("salve step: {}: {failure}", args.module.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn read_input(path: &Path, config: Option<&Path>) -> std::result::Result<StepInput, String> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut input =
        StepInput::from_json(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(config) = config {
        input.config = serde_json::from_str(&read(config)?)
            .map_err(|e| format!("{}: {e}", config.display()))?;
    }
    Ok(input)
}

fn parse_capability(text: &str) -> std::result::Result<Capability, String> {
    serde_json::from_value(json!(text))
        .map_err(|_| format!("`{text}` is not a capability (log, query, get, now)"))
}

fn parse_action(text: &str) -> std::result::Result<Action, String> {
    serde_json::from_value(json!(text.replace('-', "_"))).map_err(|_| {
        let names: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        format!("`{text}` is not an action ({})", names.join(", "))
    })
}

fn parse_risk(text: &str) -> std::result::Result<Risk, String> {
    serde_json::from_value(json!(text))
        .map_err(|_| format!("`{text}` is not a risk (none, low, medium, high, critical)"))
}

/// `64MiB`, `512KiB`, `1GiB`, `65536`.
fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let scale: usize = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` is not a size such as 64MiB, 512KiB or 65536"
            ));
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a positive size such as 64MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("64MB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn capabilities_and_actions_parse_by_their_names() {
        assert_eq!(parse_capability("query"), Ok(Capability::Query));
        assert!(parse_capability("network").is_err());
        assert_eq!(parse_action("rollout-undo"), Ok(Action::RolloutUndo));
        assert_eq!(parse_action("rollout_undo"), Ok(Action::RolloutUndo));
    }
}
