//! `when:` conditions: CEL expressions (the language Kubernetes uses for validation rules),
//! compiled at load time and checked against the variables a step's context will have.

use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr};
use cel::{IdedExpr, Program};

use crate::diagnostic::did_you_mean;

/// The shape of a value in a condition's context.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// A record with known fields.
    Object(&'static [(&'static str, Shape)]),
    /// A map with any keys (labels, annotations, step outputs).
    Map,
    /// A list.
    List,
    /// A string, number, bool, duration or timestamp.
    Scalar,
}

use Shape::{List, Map, Object, Scalar};

const TARGET: &[(&str, Shape)] = &[
    ("kind", Scalar),
    ("name", Scalar),
    ("namespace", Scalar),
    ("revision", Scalar),
    ("revisionAge", Scalar),
    ("deployedAt", Scalar),
    ("replicas", Scalar),
    ("readyReplicas", Scalar),
    ("node", Scalar),
    ("labels", Map),
    ("annotations", Map),
];

const OWNER: &[(&str, Shape)] = &[("kind", Scalar), ("name", Scalar), ("namespace", Scalar)];

const SIGNAL: &[(&str, Shape)] = &[
    ("kind", Scalar),
    ("value", Scalar),
    ("values", Map),
    ("labels", Map),
    ("firstSeen", Scalar),
    ("activeFor", Scalar),
];

const INCIDENT: &[(&str, Shape)] = &[
    ("id", Scalar),
    ("fingerprint", Scalar),
    ("namespace", Scalar),
    ("startedAt", Scalar),
    ("age", Scalar),
    ("signals", List),
];

const PLAYBOOK: &[(&str, Shape)] = &[("name", Scalar)];

/// The variables every condition may use, with their fields.
pub const CONTEXT: &[(&str, Shape)] = &[
    ("target", Object(TARGET)),
    ("owner", Object(OWNER)),
    ("signal", Object(SIGNAL)),
    ("labels", Map),
    ("incident", Object(INCIDENT)),
    ("steps", Map),
    ("playbook", Object(PLAYBOOK)),
    ("now", Scalar),
];

/// A compiled `when:` condition.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    program: Arc<Program>,
    /// The context variables it reads (`target`, `steps`, ...).
    roots: Vec<String>,
}

/// Why a condition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The expression is not valid CEL.
    #[error("invalid CEL: {0}")]
    Syntax(String),
    /// It uses a variable or field the context will not have.
    #[error("{message}")]
    UnknownName {
        /// What is unknown, and where.
        message: String,
        /// A close known name.
        help: Option<String>,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Condition {
    /// Compiles `source` and checks every variable and field it uses against [`CONTEXT`];
    /// returns every problem found.
    pub fn compile(source: &str) -> std::result::Result<Self, Vec<Error>> {
        let program = Program::compile(source).map_err(|e| {
            let message = e
                .errors
                .iter()
                .map(|e| e.msg.clone())
                .collect::<Vec<_>>()
                .join("; ");
            vec![Error::Syntax(message)]
        })?;
        let mut found = Found::default();
        walk(program.expression(), &mut Vec::new(), &mut found);
        if found.errors.is_empty() {
            let mut roots: Vec<String> = found.roots.into_iter().collect();
            roots.sort();
            roots.dedup();
            Ok(Condition {
                source: source.to_string(),
                program: Arc::new(program),
                roots,
            })
        } else {
            Err(found.errors)
        }
    }

    /// The context variables it reads, each once, sorted.
    pub fn roots(&self) -> impl Iterator<Item = &str> {
        self.roots.iter().map(String::as_str)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled program.
    pub fn program(&self) -> &Program {
        &self.program
    }
}

/// What walking a condition finds: problems, and the context variables it reads.
#[derive(Default)]
struct Found {
    errors: Vec<Error>,
    roots: Vec<String>,
}

fn walk(expr: &IdedExpr, bound: &mut Vec<String>, errors: &mut Found) {
    match &expr.expr {
        Expr::Ident(_) | Expr::Select(_) if path_of(expr).is_some() => {
            if let Some(path) = path_of(expr) {
                check_path(&path, bound, errors);
            }
        }
        Expr::Select(select) => walk(&select.operand, bound, errors),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, bound, errors);
            }
            for arg in &call.args {
                walk(arg, bound, errors);
            }
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, errors);
            walk(&c.accu_init, bound, errors);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            walk(&c.loop_cond, bound, errors);
            walk(&c.loop_step, bound, errors);
            walk(&c.result, bound, errors);
            bound.truncate(before);
        }
        Expr::List(list) => list.elements.iter().for_each(|e| walk(e, bound, errors)),
        Expr::Map(map) => map.entries.iter().for_each(|e| match &e.expr {
            EntryExpr::MapEntry(entry) => {
                walk(&entry.key, bound, errors);
                walk(&entry.value, bound, errors);
            }
            EntryExpr::StructField(field) => walk(&field.value, bound, errors),
        }),
        Expr::Struct(s) => s.entries.iter().for_each(|e| match &e.expr {
            EntryExpr::MapEntry(entry) => walk(&entry.value, bound, errors),
            EntryExpr::StructField(field) => walk(&field.value, bound, errors),
        }),
    }
}

/// `a.b.c` as `["a", "b", "c"]` when the expression is a chain of selections on a name.
fn path_of(expr: &IdedExpr) -> Option<Vec<&str>> {
    let mut segments = Vec::new();
    let mut current = expr;
    loop {
        match &current.expr {
            Expr::Ident(name) => {
                segments.push(name.as_str());
                segments.reverse();
                return Some(segments);
            }
            Expr::Select(select) => {
                segments.push(select.field.as_str());
                current = &select.operand;
            }
            _ => return None,
        }
    }
}

fn check_path(path: &[&str], bound: &[String], found: &mut Found) {
    let Some((root, fields)) = path.split_first() else {
        return;
    };
    if bound.iter().any(|b| b == root) {
        return;
    }
    found.roots.push((*root).to_string());
    let errors = &mut found.errors;
    let Some(mut shape) = lookup(CONTEXT, root) else {
        errors.push(Error::UnknownName {
            message: format!("unknown variable `{root}`"),
            help: did_you_mean(root, CONTEXT.iter().map(|(n, _)| *n)),
        });
        return;
    };
    for (depth, field) in fields.iter().enumerate() {
        let parent = path[..=depth].join(".");
        match shape {
            Object(members) => match lookup(members, field) {
                Some(next) => shape = next,
                None => {
                    errors.push(Error::UnknownName {
                        message: format!("`{parent}` has no field `{field}`"),
                        help: did_you_mean(field, members.iter().map(|(n, _)| *n)),
                    });
                    return;
                }
            },
            Map => return,
            List | Scalar => {
                errors.push(Error::UnknownName {
                    message: format!("`{parent}` is a value, not a record: it has no `{field}`"),
                    help: None,
                });
                return;
            }
        }
    }
}

fn lookup(members: &[(&str, Shape)], name: &str) -> Option<Shape> {
    members.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(source: &str) -> Vec<String> {
        match Condition::compile(source) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn accepts_known_fields_maps_and_macro_variables() {
        for ok in [
            "target.revisionAge < duration('1h')",
            "labels.namespace == 'prod' && target.labels['app'] == 'api'",
            "signal.values.growthMiBPerMinute > 20.0",
            "incident.signals.exists(s, s.kind == 'memory_leak')",
            "has(target.annotations.owner)",
            "steps['capture-logs'].status == 'succeeded'",
        ] {
            assert_eq!(messages(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn unknown_fields_and_variables_are_errors_with_suggestions() {
        let err = Condition::compile("target.revisonAge < duration('1h') && tagret.name == ''")
            .expect_err("two unknown names");
        assert_eq!(err.len(), 2);
        assert_eq!(
            err[0],
            Error::UnknownName {
                message: "`target` has no field `revisonAge`".into(),
                help: Some("did you mean `revisionAge`?".into()),
            }
        );
        assert!(
            matches!(&err[1], Error::UnknownName { message, .. } if message == "unknown variable `tagret`")
        );
    }

    #[test]
    fn fields_of_scalars_are_errors() {
        assert_eq!(
            messages("target.name.first == 'a'"),
            ["`target.name` is a value, not a record: it has no `first`"]
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        let found = messages("target.replicas >");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("invalid CEL"), "{found:?}");
    }

    #[test]
    fn compiled_conditions_evaluate() {
        let condition = Condition::compile("labels.namespace == 'prod'").expect("compiles");
        let mut context = cel::Context::default();
        let labels = std::collections::HashMap::from([("namespace", "prod")]);
        context
            .add_variable("labels", labels)
            .expect("add variable");
        assert_eq!(
            condition.program().execute(&context),
            Ok(cel::Value::Bool(true))
        );
    }
}
