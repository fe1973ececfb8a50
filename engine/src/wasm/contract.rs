//! What a component asks of the host and offers it, read from its type before anything runs:
//! the capabilities it imports, the contract version it was built against, its exports.

use std::fmt;

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::playbook::spec::Capability;

/// The contract's package, as it appears in import and export names (`salve:step/log@0.1.0`).
pub(super) const PACKAGE: &str = "salve:step";

/// The contract version this Salve implements.
pub const VERSION: &str = "0.1.0";

/// The interface a step must export.
pub(super) const HANDLER: &str = "handler";

/// The interface holding the contract's data types; it has no functions, so it is no
/// capability.
const TYPES: &str = "types";

/// What a component imports and exports, and which contract version it was built against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// The `salve:step` version of its `handler` export (or of its imports, when it exports
    /// none), if it names one.
    pub contract_version: Option<String>,
    /// What it imports, in the order it declares them (the contract's `types` interface,
    /// which holds no functions, is left out).
    pub imports: Vec<Import>,
    /// The names it exports.
    pub exports: Vec<String>,
}

/// One import of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Import {
    /// A capability of the contract (`salve:step/query@0.1.0`): it works only when granted.
    Capability(Capability),
    /// Anything else (WASI, say): linked as functions that trap when called.
    Other(String),
}

impl fmt::Display for Import {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Import::Capability(capability) => f.write_str(capability_name(*capability)),
            Import::Other(name) => write!(f, "{name} (not Salve's: calling it traps)"),
        }
    }
}

impl Inspection {
    /// The capabilities it imports.
    pub fn capabilities(&self) -> impl Iterator<Item = Capability> + '_ {
        self.imports.iter().filter_map(|import| match import {
            Import::Capability(capability) => Some(*capability),
            Import::Other(_) => None,
        })
    }
}

/// A capability's name, as in the playbook's `grants` and the contract's interface names.
pub fn capability_name(capability: Capability) -> &'static str {
    match capability {
        Capability::Log => "log",
        Capability::Query => "query",
        Capability::Get => "get",
        Capability::Now => "now",
    }
}

/// The capability an interface of the contract stands for.
fn capability(interface: &str) -> Option<Capability> {
    Some(match interface {
        "log" => Capability::Log,
        "query" => Capability::Query,
        "get" => Capability::Get,
        "now" => Capability::Now,
        _ => return None,
    })
}

/// Why a component does not fit the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// It was built against another version of the contract.
    #[error("built against {PACKAGE}@{found}; this Salve supports {VERSION}")]
    Version {
        /// The version it names.
        found: String,
    },
    /// It does not export the handler.
    #[error(
        "it does not export `{PACKAGE}/{HANDLER}@{VERSION}` (it exports: {}); is it a Salve step?",
        if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
    )]
    NoHandler {
        /// What it exports instead.
        exports: Vec<String>,
    },
    /// It imports an interface of the contract that does not exist.
    #[error("it imports `{name}`, which {PACKAGE}@{VERSION} does not define")]
    UnknownInterface {
        /// The import's name.
        name: String,
    },
}

/// A name of the contract split up: `salve:step/log@0.1.0` is (`log`, `0.1.0`); `None` for
/// names of other packages.
fn contract_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(match rest.split_once('@') {
        Some((interface, version)) => (interface, version),
        None => (rest, ""),
    })
}

/// Reads what `component` imports and exports.
pub(super) fn inspect(engine: &Engine, component: &Component) -> Inspection {
    let ty = component.component_type();
    let mut imports = Vec::new();
    let mut import_version = None;
    for (name, _) in ty.imports(engine) {
        match contract_name(name) {
            Some((interface, version)) => {
                import_version.get_or_insert_with(|| version.to_string());
                match capability(interface) {
                    Some(capability) => imports.push(Import::Capability(capability)),
                    None if interface == TYPES => {}
                    None => imports.push(Import::Other(name.to_string())),
                }
            }
            None => imports.push(Import::Other(name.to_string())),
        }
    }
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let handler_version = exports.iter().find_map(|name| match contract_name(name) {
        Some((HANDLER, version)) => Some(version.to_string()),
        _ => None,
    });
    Inspection {
        contract_version: handler_version.or(import_version),
        imports,
        exports,
    }
}

/// Checks that every name of the contract the component uses has this Salve's version, that
/// it imports only interfaces the contract defines, and that it exports the handler.
pub(super) fn check(engine: &Engine, component: &Component) -> Result<Inspection, Mismatch> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| (name, true))
        .chain(ty.exports(engine).map(|(name, _)| (name, false)));
    for (name, imported) in names {
        let Some((interface, version)) = contract_name(name) else {
            continue;
        };
        if version != VERSION {
            let found = if version.is_empty() {
                "(no version)".to_string()
            } else {
                version.to_string()
            };
            return Err(Mismatch::Version { found });
        }
        if imported && interface != TYPES && capability(interface).is_none() {
            return Err(Mismatch::UnknownInterface {
                name: name.to_string(),
            });
        }
    }
    let inspection = inspect(engine, component);
    let handler = format!("{PACKAGE}/{HANDLER}@{VERSION}");
    if !inspection.exports.contains(&handler) {
        return Err(Mismatch::NoHandler {
            exports: inspection.exports.clone(),
        });
    }
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_names_split_into_interface_and_version() {
        assert_eq!(
            contract_name("salve:step/log@0.1.0"),
            Some(("log", "0.1.0"))
        );
        assert_eq!(contract_name("salve:step/now"), Some(("now", "")));
        assert_eq!(contract_name("wasi:cli/environment@0.2.0"), None);
        assert_eq!(contract_name("salve:stepper/log@0.1.0"), None);
    }

    #[test]
    fn every_capability_has_an_interface() {
        for capability_ in [
            Capability::Log,
            Capability::Query,
            Capability::Get,
            Capability::Now,
        ] {
            assert_eq!(capability(capability_name(capability_)), Some(capability_));
        }
    }
}
