//! The `salve` binary: parse arguments, set up logging, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use salve::cli::{self, Cli};

/// The static (musl) build's allocator: musl's own serializes threads (see engine/Cargo.toml).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    salve::check::quiet_caught_parser_panics();
    salve::telemetry::init_with(cli.log_format, cli.default_log_filter());
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            let mut message = format!("salve: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
