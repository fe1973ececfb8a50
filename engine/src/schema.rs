//! The JSON Schema of Salve's documents, generated from the Rust types, and the structural
//! check that uses it.
//!
//! The same schema that editors use (through `# yaml-language-server: $schema=...`) checks every
//! document before it is deserialized, so that *all* shape errors (unknown fields, bad enum
//! values, wrong types, missing fields) are reported in one pass, each at its own line and
//! column, rather than only the first one serde meets.

use std::path::Path;
use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use schemars::generate::SchemaSettings;
use schemars::transform::transform_subschemas;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::playbook::spec::PlaybookDocument;
use crate::policy::spec::PolicyDocument;
use crate::yaml::{Document, push_pointer};

/// The kinds of document Salve reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocumentKind {
    /// `kind: Playbook`.
    Playbook,
    /// `kind: AutonomyPolicy`.
    AutonomyPolicy,
}

impl DocumentKind {
    /// Every kind, in the order their schemas are written.
    pub const ALL: [DocumentKind; 2] = [DocumentKind::Playbook, DocumentKind::AutonomyPolicy];

    /// The `kind:` value.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Playbook => "Playbook",
            DocumentKind::AutonomyPolicy => "AutonomyPolicy",
        }
    }

    /// The file name of the kind's schema under `playbooks/schema/`.
    pub fn schema_file(self) -> &'static str {
        match self {
            DocumentKind::Playbook => "playbook.json",
            DocumentKind::AutonomyPolicy => "autonomy-policy.json",
        }
    }

    /// The kind named by `kind`, if Salve knows it.
    pub fn parse(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The kind's JSON Schema.
    pub fn schema(self) -> &'static Value {
        match self {
            DocumentKind::Playbook => &PLAYBOOK.0,
            DocumentKind::AutonomyPolicy => &POLICY.0,
        }
    }

    fn validator(self) -> &'static Validator {
        match self {
            DocumentKind::Playbook => &PLAYBOOK.1,
            DocumentKind::AutonomyPolicy => &POLICY.1,
        }
    }
}

static PLAYBOOK: LazyLock<(Value, Validator)> = LazyLock::new(build::<PlaybookDocument>);
static POLICY: LazyLock<(Value, Validator)> = LazyLock::new(build::<PolicyDocument>);

fn build<T: JsonSchema>() -> (Value, Validator) {
    let schema = generate::<T>();
    #[allow(clippy::expect_used)] // the schema is generated from our own types: a bug, not input
    let validator = jsonschema::draft202012::new(&schema).expect("generated schema is valid");
    (schema, validator)
}

/// Generates `T`'s schema: draft 2020-12, optional fields not nullable (absent means default).
pub fn generate<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with_transform(not_nullable as fn(&mut Schema))
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// Removes the `null` alternative schemars adds for `Option` fields: an optional field is
/// omitted, not set to null, and a single-branch schema gives precise errors.
fn not_nullable(schema: &mut Schema) {
    transform_subschemas(&mut not_nullable, schema);
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    for keyword in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = object.get_mut(keyword) else {
            continue;
        };
        let is_null = |b: &Value| {
            b.get("type").and_then(Value::as_str) == Some("null")
                || b.get("const") == Some(&Value::Null)
        };
        if !branches.iter().any(is_null) {
            continue;
        }
        branches.retain(|b| !is_null(b));
        if branches.len() == 1 {
            let Some(Value::Object(only)) = branches.pop() else {
                continue;
            };
            object.remove(keyword);
            for (key, value) in only {
                object.entry(key).or_insert(value);
            }
        }
    }
}

/// What the structural check found in a document.
#[derive(Debug, Default)]
pub struct ShapeReport {
    /// Every problem, one diagnostic each.
    pub diagnostics: Vec<Diagnostic>,
    /// JSON pointers of the unknown fields among them.
    pub unknown_fields: Vec<String>,
}

impl ShapeReport {
    /// Whether unknown fields are the only problems, so that the document can still be
    /// compiled without them and its other errors reported in the same pass.
    pub fn only_unknown_fields(&self) -> bool {
        self.diagnostics.len() == self.unknown_fields.len()
    }
}

/// Checks a document against its kind's schema; every problem becomes one diagnostic.
pub fn check(kind: DocumentKind, document: &Document, file: &Path) -> ShapeReport {
    let root = kind.schema();
    let mut report = ShapeReport::default();
    for error in kind.validator().iter_errors(&document.value) {
        if let ValidationErrorKind::AdditionalProperties { unexpected } = error.kind() {
            let parent = error.instance_path().as_str();
            report
                .unknown_fields
                .extend(unexpected.iter().map(|name| push_pointer(parent, name)));
        }
        report
            .diagnostics
            .extend(describe(&error, root, document, file));
    }
    report
}

/// Removes the fields at `pointers` from `value`.
pub fn remove_fields(value: &mut Value, pointers: &[String]) {
    for pointer in pointers {
        let Some((parent, name)) = pointer.rsplit_once('/') else {
            continue;
        };
        let name = name.replace("~1", "/").replace("~0", "~");
        if let Some(Value::Object(map)) = value.pointer_mut(parent) {
            map.remove(&name);
        }
    }
}

fn describe(
    error: &ValidationError<'_>,
    root: &Value,
    document: &Document,
    file: &Path,
) -> Vec<Diagnostic> {
    let pointer = error.instance_path().as_str().to_string();
    let schema_path = error.schema_path().as_str();
    let at_value = |message: String| {
        Diagnostic::error(file, document.spans.value_pos(&pointer), message)
            .field(field_path(&pointer))
    };
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let parent = schema_path.trim_end_matches("/additionalProperties");
            let known: Vec<&str> = root
                .pointer(parent)
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            unexpected
                .iter()
                .map(|name| {
                    let child = push_pointer(&pointer, name);
                    Diagnostic::error(
                        file,
                        document.spans.key_pos(&child),
                        format!("unknown field `{name}`"),
                    )
                    .field(field_path(&pointer))
                    .expected(one_of(&known))
                    .help(did_you_mean(name, known.iter().copied()))
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![at_value(format!("missing required field `{name}`"))]
        }
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<&str> = options
                .as_array()
                .map(|o| o.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![bad_value(error.instance(), &allowed, at_value)]
        }
        ValidationErrorKind::OneOfNotValid { .. } | ValidationErrorKind::AnyOf { .. } => {
            let allowed = const_branches(root.pointer(schema_path));
            if allowed.is_empty() {
                vec![at_value(format!(
                    "{} does not match any allowed form",
                    describe_instance(error.instance())
                ))]
            } else {
                let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
                vec![bad_value(error.instance(), &allowed, at_value)]
            }
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                jsonschema::error::TypeKind::Single(t) => article(&t.to_string()),
                jsonschema::error::TypeKind::Multiple(ts) => format!("one of {ts:?}"),
            };
            vec![
                at_value(format!("found {}", describe_instance(error.instance())))
                    .expected(expected),
            ]
        }
        ValidationErrorKind::Constant { expected_value } => vec![
            at_value(format!("found {}", describe_instance(error.instance())))
                .expected(format!("`{}`", expected_value.as_str().unwrap_or_default())),
        ],
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => {
            vec![
                at_value(format!("{} is too small", error.instance()))
                    .expected(format!("at least {limit}")),
            ]
        }
        _ => vec![at_value(error.to_string())],
    }
}

fn bad_value(
    instance: &Value,
    allowed: &[&str],
    at_value: impl FnOnce(String) -> Diagnostic,
) -> Diagnostic {
    let help = instance
        .as_str()
        .and_then(|s| did_you_mean(s, allowed.iter().copied()));
    at_value(format!(
        "{} is not allowed here",
        describe_instance(instance)
    ))
    .expected(one_of(allowed))
    .help(help)
}

/// The `const` values of a `oneOf`/`anyOf` whose branches are all constants (a documented enum).
fn const_branches(schema: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(branches)) = schema else {
        return Vec::new();
    };
    let consts: Option<Vec<String>> = branches
        .iter()
        .map(|b| b.get("const").and_then(Value::as_str).map(str::to_string))
        .collect();
    consts.unwrap_or_default()
}

fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    format!("one of {}", quoted.join(", "))
}

fn article(type_name: &str) -> String {
    match type_name {
        "object" => "a mapping".into(),
        "array" => "a list".into(),
        "integer" => "a whole number".into(),
        "number" => "a number".into(),
        "boolean" => "true or false".into(),
        "string" => "a string".into(),
        other => other.to_string(),
    }
}

/// A short description of a value for messages: its text when it is a scalar.
pub fn describe_instance(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) if s.chars().count() > 60 => {
            let short: String = s.chars().take(57).collect();
            format!("`{short}...`")
        }
        Value::String(s) => format!("`{s}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// A JSON pointer as a field path people read: `/spec/steps/0/risk` is `spec.steps[0].risk`.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&segment);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_documents;

    fn errors(kind: DocumentKind, text: &str) -> Vec<Diagnostic> {
        let docs = parse_documents(text).expect("valid yaml");
        check(kind, &docs[0], Path::new("t.yaml")).diagnostics
    }

    #[test]
    fn schemas_have_no_nullable_optionals() {
        for kind in DocumentKind::ALL {
            let text = kind.schema().to_string();
            assert!(
                !text.contains("\"null\""),
                "{} schema allows null",
                kind.as_str()
            );
        }
    }

    #[test]
    fn unknown_fields_are_reported_at_their_key_with_a_suggestion() {
        let found = errors(
            DocumentKind::AutonomyPolicy,
            "apiVersion: salve.dev/v1\nkind: AutonomyPolicy\nmetadata: {name: p}\nspec:\n  maxAutonomousRisk: low\n  dryrun: true\n",
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].pos.line, found[0].pos.column), (6, 3));
        assert_eq!(found[0].message, "unknown field `dryrun`");
        assert_eq!(found[0].help.as_deref(), Some("did you mean `dryRun`?"));
    }

    #[test]
    fn bad_enum_values_list_the_allowed_ones() {
        let found = errors(
            DocumentKind::AutonomyPolicy,
            "apiVersion: salve.dev/v1\nkind: AutonomyPolicy\nmetadata: {name: p}\nspec:\n  maxAutonomousRisk: hgih\n",
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].pos.line, found[0].pos.column), (5, 22));
        assert_eq!(
            found[0].expected.as_deref(),
            Some("one of `none`, `low`, `medium`, `high`, `critical`")
        );
        assert_eq!(found[0].help.as_deref(), Some("did you mean `high`?"));
    }

    #[test]
    fn every_problem_is_reported_in_one_pass() {
        let found = errors(
            DocumentKind::AutonomyPolicy,
            "apiVersion: salve.dev/v2\nkind: AutonomyPolicy\nmetadata: {name: p, colour: red}\nspec:\n  dryRun: maybe\n",
        );
        let messages: Vec<_> = found.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(found.len(), 4, "{messages:#?}");
        assert!(messages.contains(&"missing required field `maxAutonomousRisk`"));
        assert!(messages.contains(&"unknown field `colour`"));
    }

    #[test]
    fn field_paths_read_like_yaml() {
        assert_eq!(field_path("/spec/steps/0/risk"), "spec.steps[0].risk");
        assert_eq!(field_path(""), "");
    }
}
