//! Compiles a playbook's steps and rollback steps: what each runs, its risk against its action's,
//! whether it fits the target kind, its parameters, condition and timeout.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{check_name, defaults};
use crate::action::{Action, ParamType, TargetKind};
use crate::check::{Checker, Scope};
use crate::diagnostic::did_you_mean;
use crate::playbook::spec;
use crate::playbook::{Param, ReadGrant, Step, StepRun, TemplatedJson};
use crate::template::Template;
use crate::wasm::Readable;

/// Where steps are compiled: what they act on, what their templates may use, and the
/// directory module paths are relative to.
pub(super) struct StepContext<'a> {
    /// The target's kind.
    pub target_kind: TargetKind,
    /// What templates may reference.
    pub scope: &'a Scope,
    /// The playbook file's directory.
    pub base: &'a Path,
}

/// Compiles the steps under `base_pointer`. `names` maps every step name seen so far (steps and
/// rollback steps share one namespace) to where it was first defined.
pub(super) fn compile_steps(
    steps: &[spec::Step],
    base_pointer: &str,
    cx: &StepContext<'_>,
    names: &mut BTreeMap<String, String>,
    checker: &mut Checker<'_>,
) -> Vec<Step> {
    steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| {
            compile_step(step, &format!("{base_pointer}/{i}"), cx, names, checker)
        })
        .collect()
}

fn compile_step(
    step: &spec::Step,
    pointer: &str,
    cx: &StepContext<'_>,
    names: &mut BTreeMap<String, String>,
    checker: &mut Checker<'_>,
) -> Option<Step> {
    let target_kind = cx.target_kind;
    let p = |field: &str| format!("{pointer}/{field}");
    let run = match (&step.action, &step.wasm) {
        (Some(action), None) => {
            check_applies(*action, target_kind, &p("action"), checker);
            if step.risk < action.intrinsic_risk() {
                let d = checker
                    .at(
                        &p("risk"),
                        format!("risk `{}` is below what `{action}` can do", step.risk),
                    )
                    .expected(format!("at least `{}`", action.intrinsic_risk()));
                checker.push(d);
            }
            Some(StepRun::Action(*action))
        }
        (None, Some(wasm)) => compile_wasm(wasm, &p("wasm"), cx, checker),
        (Some(_), Some(_)) => {
            let d = checker
                .at_key(
                    &p("wasm"),
                    "a step runs either an `action` or a `wasm` module, not both",
                )
                .expected("exactly one of `action`, `wasm`");
            checker.push(d);
            None
        }
        (None, None) => {
            let d = checker
                .at(pointer, "the step runs nothing")
                .expected("exactly one of `action`, `wasm`");
            checker.push(d);
            None
        }
    };
    let name = step
        .name
        .clone()
        .or_else(|| match (&step.action, &step.wasm) {
            (Some(a), _) => Some(a.as_str().to_string()),
            (_, Some(w)) => Path::new(&w.module)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned()),
            _ => None,
        });
    let name = name.unwrap_or_default();
    if step.name.is_some() {
        check_name(checker, &p("name"), &name, "step name");
    }
    if let Some(first) = names.insert(name.clone(), pointer.to_string()) {
        let where_ = if step.name.is_some() {
            p("name")
        } else {
            pointer.to_string()
        };
        let d = checker
            .at(
                &where_,
                format!(
                    "duplicate step name `{name}` (also at {})",
                    crate::schema::field_path(&first)
                ),
            )
            .expected("step names unique within the playbook; set `name` to tell them apart");
        checker.push(d);
    }
    let when = step
        .when
        .as_ref()
        .and_then(|w| checker.condition(&p("when"), w));
    let timeout = checker.duration_or(
        &p("timeout"),
        step.timeout.as_ref(),
        if step.wasm.is_some() {
            defaults::WASM_STEP_TIMEOUT
        } else {
            defaults::STEP_TIMEOUT
        },
        true,
    );
    let params = match &step.action {
        Some(action) => compile_params(*action, &step.params, &p("params"), cx.scope, checker),
        None => {
            if !step.params.is_empty() {
                let d = checker.at_key(
                    &p("params"),
                    "a `wasm` step takes `wasm.config`, not `params`",
                );
                checker.push(d);
            }
            BTreeMap::new()
        }
    };
    Some(Step {
        name,
        run: run?,
        risk: step.risk,
        when,
        params,
        timeout,
    })
}

fn check_applies(action: Action, kind: TargetKind, pointer: &str, checker: &mut Checker<'_>) {
    if let Some(kinds) = action.target_kinds()
        && !kinds.contains(&kind)
    {
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let d = checker
            .at(pointer, format!("`{action}` cannot act on a {kind} target"))
            .expected(format!("a target of kind {}", names.join(", ")));
        checker.push(d);
    }
}

fn compile_wasm(
    wasm: &spec::WasmStep,
    pointer: &str,
    cx: &StepContext<'_>,
    checker: &mut Checker<'_>,
) -> Option<StepRun> {
    let (target_kind, base, scope) = (cx.target_kind, cx.base, cx.scope);
    let module = base.join(&wasm.module);
    let module_pointer = format!("{pointer}/module");
    let mut bytes = Vec::new();
    if Path::new(&wasm.module).extension().and_then(|e| e.to_str()) != Some("wasm") {
        let d = checker
            .at(
                &module_pointer,
                format!("`{}` is not a .wasm file", wasm.module),
            )
            .expected("a path to a compiled component ending in .wasm");
        checker.push(d);
    } else if !checker.file_exists(&module) {
        let d = checker
            .at(
                &module_pointer,
                format!("module `{}` does not exist", module.display()),
            )
            .expected("a path relative to the playbook file");
        checker.push(d);
    } else {
        match checker.read_file(&module, crate::wasm::MAX_MODULE_BYTES) {
            Err(e) => {
                let d = checker
                    .at(
                        &module_pointer,
                        format!("cannot read module `{}`: {e}", module.display()),
                    )
                    .expected("a readable compiled component");
                checker.push(d);
            }
            Ok(read) => {
                // It must compile, fit the contract and want only what it is granted.
                if let Err(reason) = crate::wasm::check_module(&module, &read, &wasm.grants) {
                    let d = checker
                        .at(&module_pointer, reason)
                        .expected("a component built with wasm-sdk against salve:step@0.1.0");
                    checker.push(d);
                }
                bytes = read;
            }
        }
    }
    for (i, action) in wasm.allowed_actions.iter().enumerate() {
        check_applies(
            *action,
            target_kind,
            &format!("{pointer}/allowedActions/{i}"),
            checker,
        );
    }
    let config = templated_json(
        wasm.config.as_ref().unwrap_or(&Value::Null),
        &format!("{pointer}/config"),
        scope,
        checker,
    );
    let read = match &wasm.read {
        None => Some(None),
        Some(read) => {
            compile_read(read, &wasm.grants, &format!("{pointer}/read"), cx, checker).map(Some)
        }
    };
    Some(StepRun::Wasm {
        module,
        digest: crate::wasm::digest_hex(&bytes),
        bytes: bytes.into(),
        config: config?,
        grants: wasm.grants.clone(),
        allowed_actions: wasm.allowed_actions.clone(),
        read: read?,
    })
}

/// A WASM step's `read` list (at `pointer`): kinds `get` can read, each once, never `Secret`,
/// with namespaces only for namespaced kinds (the target's when none are listed); `None` when
/// any of it is wrong (each reported at its place).
fn compile_read(
    read: &[spec::ReadGrant],
    grants: &[spec::Capability],
    pointer: &str,
    cx: &StepContext<'_>,
    checker: &mut Checker<'_>,
) -> Option<Vec<ReadGrant>> {
    let mut ok = true;
    if !grants.contains(&spec::Capability::Get) {
        let d = checker
            .at_key(
                pointer,
                "`read` says what the `get` capability may read, but the step is not granted `get`",
            )
            .expected("`grants` to include `get`");
        checker.push(d);
        ok = false;
    }
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    let mut compiled = Vec::new();
    for (i, grant) in read.iter().enumerate() {
        let at = format!("{pointer}/{i}");
        let kind = grant.kind.as_str();
        let Some(namespaced) = readable_kind(kind, &format!("{at}/kind"), checker) else {
            ok = false;
            continue;
        };
        if let Some(first) = seen.insert(kind, at.clone()) {
            let d = checker
                .at(
                    &format!("{at}/kind"),
                    format!(
                        "kind `{kind}` is listed twice (also at {})",
                        crate::schema::field_path(&first)
                    ),
                )
                .expected("each kind once, with all the namespaces it may be read from");
            checker.push(d);
            ok = false;
        }
        let namespaces = match (&grant.namespaces, namespaced) {
            (Some(_), false) => {
                let d = checker
                    .at_key(
                        &format!("{at}/namespaces"),
                        format!("kind `{kind}` is cluster-scoped: it has no namespaces"),
                    )
                    .expected(format!("no `namespaces` for `{kind}`"));
                checker.push(d);
                ok = false;
                None
            }
            (None, false) => None,
            (Some(namespaces), true) if namespaces.is_empty() => {
                let d = checker
                    .at(&format!("{at}/namespaces"), "no namespaces are listed")
                    .expected(
                        "at least one namespace, or no `namespaces` for the target's namespace",
                    );
                checker.push(d);
                ok = false;
                None
            }
            (Some(namespaces), true) => Some(
                namespaces
                    .iter()
                    .enumerate()
                    .filter_map(|(j, namespace)| {
                        let template =
                            checker.template(&format!("{at}/namespaces/{j}"), namespace, cx.scope);
                        ok &= template.is_some();
                        template
                    })
                    .collect(),
            ),
            (None, true) if !cx.target_kind.is_namespaced() => {
                let d = checker
                    .at(
                        &at,
                        format!(
                            "kind `{kind}` is namespaced, and the {} target has no namespace to \
                             read it from",
                            cx.target_kind
                        ),
                    )
                    .expected("`namespaces`, for example [\"${labels.namespace}\"]");
                checker.push(d);
                ok = false;
                None
            }
            (None, true) => Some(vec![
                Template::parse("${target.namespace}").expect("a well-formed template"),
            ]),
        };
        compiled.push(ReadGrant {
            kind: kind.to_string(),
            namespaces,
        });
    }
    ok.then_some(compiled)
}

/// Whether `kind` (at `pointer`) is namespaced, if a step can read it; otherwise reports why
/// not: `Secret` is never readable, other kinds are not ones Salve reads.
fn readable_kind(kind: &str, pointer: &str, checker: &mut Checker<'_>) -> Option<bool> {
    let namespaced = Readable::namespaced(kind);
    if namespaced.is_none() {
        let kinds: Vec<&str> = Readable::supported_kinds().collect();
        let expected = format!(
            "one of {}",
            kinds
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let d = if kind.eq_ignore_ascii_case("secret") || kind.eq_ignore_ascii_case("secrets") {
            checker.at(
                pointer,
                format!("kind `{kind}` is never readable by a step, whatever the playbook says"),
            )
        } else {
            checker
                .at(pointer, format!("a step cannot read kind `{kind}`"))
                .help(did_you_mean(kind, kinds.iter().copied()))
        };
        checker.push(d.expected(expected));
    }
    namespaced
}

fn compile_params(
    action: Action,
    params: &BTreeMap<String, Value>,
    pointer: &str,
    scope: &Scope,
    checker: &mut Checker<'_>,
) -> BTreeMap<String, Param> {
    let known = action.params();
    let names: Vec<&str> = known.iter().map(|p| p.name).collect();
    for required in known.iter().filter(|p| p.required) {
        if !params.contains_key(required.name) {
            let d = checker
                .at(
                    pointer,
                    format!("`{action}` needs the parameter `{}`", required.name),
                )
                .expected(required.ty.expected());
            checker.push(d);
        }
    }
    let mut out = BTreeMap::new();
    for (name, value) in params {
        let at = crate::yaml::push_pointer(pointer, name);
        let Some(param) = known.iter().find(|p| p.name == name) else {
            let expected = if names.is_empty() {
                format!("`{action}` takes no parameters")
            } else {
                format!(
                    "one of {}",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let d = checker
                .at_key(&at, format!("`{action}` has no parameter `{name}`"))
                .expected(expected)
                .help(did_you_mean(name, names.iter().copied()));
            checker.push(d);
            continue;
        };
        let mismatch = |checker: &mut Checker<'_>| {
            let d = checker
                .at(
                    &at,
                    format!("found {}", crate::schema::describe_instance(value)),
                )
                .expected(param.ty.expected());
            checker.push(d);
        };
        let compiled = match (param.ty, value) {
            (ParamType::String, Value::String(s)) => {
                checker.template(&at, s, scope).map(Param::Text)
            }
            (ParamType::Promql, Value::String(s)) => {
                checker.templated_promql(&at, s, scope).map(Param::Text)
            }
            (ParamType::Duration, Value::String(s)) => {
                checker.duration(&at, s);
                Some(Param::Value(value.clone()))
            }
            (ParamType::Quantity, Value::String(s)) => {
                if !is_quantity(s) {
                    mismatch(checker);
                }
                Some(Param::Value(value.clone()))
            }
            (ParamType::Count, Value::Number(n)) if n.is_u64() => Some(Param::Value(value.clone())),
            (ParamType::Bool, Value::Bool(_)) => Some(Param::Value(value.clone())),
            (ParamType::StringMap, Value::Object(map)) if map.values().all(Value::is_string) => {
                templated_json(value, &at, scope, checker).map(Param::Json)
            }
            _ => {
                mismatch(checker);
                None
            }
        };
        if let Some(compiled) = compiled {
            out.insert(name.clone(), compiled);
        }
    }
    out
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix.
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        text.strip_suffix(suffix).is_some_and(|number| {
            !number.is_empty()
                && number
                    .parse::<f64>()
                    .is_ok_and(|n| n.is_finite() && n >= 0.0)
                && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        })
    })
}

/// `value` with each of its strings (at any depth) that holds a `${...}` template parsed
/// against `scope`; `None` when one does not parse (each reported at its place).
fn templated_json(
    value: &Value,
    pointer: &str,
    scope: &Scope,
    checker: &mut Checker<'_>,
) -> Option<TemplatedJson> {
    let mut found = Vec::new();
    templated_strings(value, String::new(), &mut found);
    let mut templates = Vec::new();
    let mut ok = true;
    for (here, text) in found {
        match checker.template(&format!("{pointer}{here}"), text, scope) {
            Some(template) => templates.push((here, template)),
            None => ok = false,
        }
    }
    ok.then(|| TemplatedJson {
        value: value.clone(),
        templates,
    })
}

/// The strings of `value` holding `${`, with their JSON pointers below `here`.
fn templated_strings<'a>(value: &'a Value, here: String, found: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(text) if text.contains("${") => found.push((here, text)),
        Value::Object(map) => {
            for (key, v) in map {
                templated_strings(v, crate::yaml::push_pointer(&here, key), found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                templated_strings(v, format!("{here}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_every_kind_a_step_can_read() {
        let schema = crate::schema::generate::<spec::ReadGrant>();
        let described = schema["properties"]["kind"]["description"]
            .as_str()
            .expect("`kind` is described");
        for kind in Readable::supported_kinds() {
            assert!(
                described.contains(&format!("`{kind}`")),
                "{kind}: {described}"
            );
        }
    }

    #[test]
    fn quantities_follow_kubernetes() {
        for ok in ["512Mi", "1Gi", "250m", "2", "0.5", "1.5Gi"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Mi", "-1Gi", "1GB", "abc", "1e3Mi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
