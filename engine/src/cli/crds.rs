//! `salve crds`: the CustomResourceDefinitions of Salve's kinds, for `kubectl apply` or for
//! `deploy/` (see [`crate::crd`]).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::{Error, Result, stdout_error};
use crate::crd;

/// `salve crds`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into each of these directories (`salve.dev_playbooks.yaml`, ...)
    /// instead of printing them all as one multi-document YAML stream.
    #[arg(long)]
    out: Vec<PathBuf>,
}

/// Prints or writes the CRDs.
pub(super) fn run(args: CrdsArgs) -> Result<ExitCode> {
    let definitions = crd::definitions();
    if args.out.is_empty() {
        let text = definitions
            .iter()
            .map(crd::to_yaml)
            .collect::<Vec<_>>()
            .join("---\n");
        io::stdout()
            .write_all(text.as_bytes())
            .map_err(stdout_error)?;
        return Ok(ExitCode::SUCCESS);
    }
    for dir in &args.out {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        for definition in &definitions {
            let path = dir.join(crd::file_name(definition));
            std::fs::write(&path, crd::to_yaml(definition))
                .map_err(|source| Error::Write { path, source })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
