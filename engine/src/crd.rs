//! The CustomResourceDefinitions of Salve's kinds, generated from the same Rust types that
//! read the YAML files, so a `Playbook` or `AutonomyPolicy` kept in the cluster has exactly the
//! schema of one kept in Git.
//!
//! Each kind's `spec` schema is the JSON Schema of its spec type ([`PlaybookSpec`],
//! [`PolicySpec`]), generated as OpenAPI v3 with every subschema inlined and rewritten into a
//! Kubernetes *structural schema* (kube's [`StructuralSchemaRewriter`]): enums of objects become
//! one object of optional members, and any-JSON values (a WASM step's `config`) keep their
//! fields with `x-kubernetes-preserve-unknown-fields`. Two things the API server does not take
//! are removed rather than translated: `additionalProperties: false` (a structural schema prunes
//! unknown fields instead, and `kubectl apply` reports them as `unknown field`) and `const` (a
//! one-value `enum` says the same). The `status` is Salve's report on what it made of the
//! object ([`ResourceStatus`]), written through the status subresource.
//!
//! `salve crds` prints them; the copies in `deploy/` are checked against this module by a test,
//! so they cannot drift from the types.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::schema::{OptionalEnum, StructuralSchemaRewriter};
use schemars::generate::SchemaSettings;
use schemars::transform::transform_subschemas;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::playbook::spec::PlaybookSpec;
use crate::policy::spec::PolicySpec;

/// The API group of every Salve kind.
pub const GROUP: &str = "salve.dev";

/// The version served and stored.
pub const VERSION: &str = "v1";

/// What Salve reports about a `Playbook` or `AutonomyPolicy` object it read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` (the object loaded; `False` with the errors below when it did not) and
    /// `Active` (it is part of the set Salve runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The content digest Salve computed, as `salve validate -v` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Every problem found, each with the field path it is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ResourceError>,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Valid` or `Active`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason code.
    pub reason: String,
    /// For people.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

/// One problem in an object, as `salve validate` reports it for a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceError {
    /// The field it is about, as a JSON pointer under the object (`/spec/steps/0/risk`).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// One of Salve's kinds as a custom resource.
struct Kind {
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    description: &'static str,
    spec: fn() -> JSONSchemaProps,
    status: fn() -> JSONSchemaProps,
    columns: fn() -> Vec<CustomResourceColumnDefinition>,
}

const KINDS: [Kind; 3] = [
    Kind {
        kind: "Playbook",
        plural: "playbooks",
        singular: "playbook",
        short_names: &["pb"],
        description: "A Salve playbook kept in the cluster; its spec is exactly the spec of the \
                      YAML file.",
        spec: props::<PlaybookSpec>,
        status: props::<ResourceStatus>,
        columns: || {
            vec![
                column("Description", "string", ".spec.description", 1),
                column("Valid", "string", VALID, 0),
                column("Active", "string", ACTIVE, 0),
                column("Age", "date", ".metadata.creationTimestamp", 0),
            ]
        },
    },
    Kind {
        kind: "AutonomyPolicy",
        plural: "autonomypolicies",
        singular: "autonomypolicy",
        short_names: &["ap"],
        description: "A Salve autonomy policy kept in the cluster; its spec is exactly the spec \
                      of the YAML file.",
        spec: props::<PolicySpec>,
        status: props::<ResourceStatus>,
        columns: || {
            vec![
                column("Ceiling", "string", ".spec.maxAutonomousRisk", 0),
                column("Dry-Run", "boolean", ".spec.dryRun", 0),
                column("Valid", "string", VALID, 0),
                column("Active", "string", ACTIVE, 0),
                column("Age", "date", ".metadata.creationTimestamp", 0),
            ]
        },
    },
    Kind {
        kind: crate::state::KIND,
        plural: crate::state::PLURAL,
        singular: "salveincident",
        short_names: &["si"],
        description: "One incident as Salve keeps it under leader election: every journal entry \
                      of it, in order, so that the next leader resumes or rolls back what was \
                      in flight. Written by Salve only.",
        spec: props::<crate::state::IncidentSpec>,
        status: props::<crate::state::IncidentState>,
        columns: || {
            vec![
                column("Playbook", "string", ".spec.playbook", 0),
                column("Term", "integer", ".status.term", 0),
                column("Age", "date", ".metadata.creationTimestamp", 0),
            ]
        },
    },
];

const VALID: &str = r#".status.conditions[?(@.type=="Valid")].status"#;
const ACTIVE: &str = r#".status.conditions[?(@.type=="Active")].status"#;

fn column(name: &str, type_: &str, path: &str, priority: i32) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        priority: (priority != 0).then_some(priority),
        ..Default::default()
    }
}

/// Every CRD Salve ships, in a stable order.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    KINDS.iter().map(definition).collect()
}

/// The file name a CRD is written under in `deploy/` (`salve.dev_playbooks.yaml`, as
/// controller-gen names them).
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// The CRD as the YAML document `salve crds` writes.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let mut text =
        String::from("# Generated by `salve crds` from Salve's Rust types: do not edit.\n");
    // A CRD is plain data; serializing it cannot fail.
    text.push_str(&serde_saphyr::to_string(crd).unwrap_or_default());
    text
}

fn definition(kind: &Kind) -> CustomResourceDefinition {
    let object = JSONSchemaProps {
        type_: Some("object".into()),
        description: Some(kind.description.into()),
        required: Some(vec!["spec".into()]),
        properties: Some(BTreeMap::from([
            ("spec".to_string(), (kind.spec)()),
            ("status".to_string(), (kind.status)()),
        ])),
        ..Default::default()
    };
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{}.{GROUP}", kind.plural)),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "salve".to_string(),
            )])),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.into(),
            scope: "Namespaced".into(),
            names: CustomResourceDefinitionNames {
                kind: kind.kind.into(),
                list_kind: Some(format!("{}List", kind.kind)),
                plural: kind.plural.into(),
                singular: Some(kind.singular.into()),
                short_names: Some(kind.short_names.iter().map(|s| s.to_string()).collect()),
                categories: Some(vec!["salve".into()]),
            },
            versions: vec![CustomResourceDefinitionVersion {
                name: VERSION.into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(object),
                }),
                // `status: {}` turns the status subresource on (`null` would leave it off).
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(json!({}))),
                    scale: None,
                }),
                additional_printer_columns: Some((kind.columns)()),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

/// `T`'s schema as a structural OpenAPI v3 schema.
fn props<T: JsonSchema>() -> JSONSchemaProps {
    // Generated from our own types: a failure here is a bug the tests below show at once.
    serde_json::from_value(schema_of::<T>()).unwrap_or_default()
}

/// `T`'s schema as JSON, before it is read as [`JSONSchemaProps`].
fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .with_transform(OptionalEnum)
        .with_transform(StructuralSchemaRewriter)
        .with_transform(for_kubernetes as fn(&mut Schema))
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Value::Object(root) = &mut schema {
        // The generator's bookkeeping, not part of a CRD.
        root.remove("$schema");
        root.remove("definitions");
        root.remove("title");
    }
    schema
}

/// The formats the API server knows; others are dropped rather than warned about on apply.
const FORMATS: [&str; 6] = ["int32", "int64", "float", "double", "byte", "date-time"];

/// Rewrites what JSON Schema says one way and a CRD another (see the module doc).
fn for_kubernetes(schema: &mut Schema) {
    transform_subschemas(&mut for_kubernetes, schema);
    if schema.as_bool() == Some(true) {
        schema.ensure_object();
    }
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if object.get("additionalProperties") == Some(&Value::Bool(false)) {
        object.remove("additionalProperties");
    }
    object.remove("nullable");
    // One type per node: of a value that may be an object or a scalar (the advisor's
    // `apiKey`, whose scalar form is only read to be refused), the object.
    if let Some(Value::Array(types)) = object.get("type") {
        let one = types
            .iter()
            .find(|t| *t == "object")
            .or_else(|| types.iter().find(|t| *t != "null"))
            .cloned();
        match one {
            Some(one) => object.insert("type".into(), one),
            None => object.remove("type"),
        };
    }
    if let Some(value) = object.remove("const") {
        object.insert("enum".into(), json!([value]));
    }
    if let Some(format) = object.get("format").and_then(Value::as_str)
        && !FORMATS.contains(&format)
    {
        object.remove("format");
    }
    // Any JSON at all (`true`, or an object with no type): keep it whole.
    let typed = ["type", "anyOf", "oneOf", "allOf", "enum"]
        .iter()
        .any(|k| object.contains_key(*k))
        || object.contains_key("x-kubernetes-int-or-string");
    if !typed {
        object.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn deploy() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
    }

    /// Every keyword of the generated schema survives being read as `JSONSchemaProps`: a
    /// keyword the API server does not know would be dropped silently there.
    #[test]
    fn every_keyword_is_one_the_api_server_knows() {
        for schema in [
            schema_of::<PlaybookSpec>(),
            schema_of::<PolicySpec>(),
            schema_of::<ResourceStatus>(),
            schema_of::<crate::state::IncidentSpec>(),
            schema_of::<crate::state::IncidentState>(),
        ] {
            let props: JSONSchemaProps = serde_json::from_value(schema.clone()).expect("props");
            let back = serde_json::to_value(&props).expect("json");
            let mut lost = Vec::new();
            differences(&schema, &back, "", &mut lost);
            assert!(lost.is_empty(), "lost in JSONSchemaProps: {lost:#?}");
        }
    }

    /// Where `b` differs from `a`, numbers compared by value (`0` and `0.0` are the same).
    fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (l, r) = (x.get(key), y.get(key));
                    match (l, r) {
                        (Some(l), Some(r)) => differences(l, r, &format!("{path}/{key}"), out),
                        _ => out.push(format!("{path}/{key}")),
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (l, r)) in x.iter().zip(y).enumerate() {
                    differences(l, r, &format!("{path}/{i}"), out);
                }
            }
            (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
            _ if a == b => {}
            _ => out.push(path.to_string()),
        }
    }

    /// The API server's structural-schema rules: every node has a type (or keeps unknown
    /// fields, or is int-or-string), `properties` and `additionalProperties` never together,
    /// nothing left of `$ref`, `oneOf`/`anyOf` branches without types of their own.
    fn check_structural(node: &JSONSchemaProps, path: &str, problems: &mut Vec<String>) {
        let open = node.x_kubernetes_preserve_unknown_fields == Some(true)
            || node.x_kubernetes_int_or_string == Some(true);
        if node.type_.is_none() && !open {
            problems.push(format!("{path}: no type"));
        }
        if node.properties.is_some() && node.additional_properties.is_some() {
            problems.push(format!("{path}: properties and additionalProperties"));
        }
        if node.ref_path.is_some() {
            problems.push(format!("{path}: $ref"));
        }
        for branch in node.one_of.iter().chain(&node.any_of).flatten() {
            if branch.type_.is_some() || branch.description.is_some() {
                problems.push(format!("{path}: a oneOf/anyOf branch with a type"));
            }
        }
        for (name, child) in node.properties.iter().flatten() {
            check_structural(child, &format!("{path}.{name}"), problems);
        }
        if let Some(
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items),
        ) = &node.items
        {
            check_structural(items, &format!("{path}[]"), problems);
        }
        if let Some(
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(values),
        ) = &node.additional_properties
        {
            check_structural(values, &format!("{path}{{}}"), problems);
        }
    }

    #[test]
    fn schemas_are_structural() {
        for crd in definitions() {
            let version = &crd.spec.versions[0];
            let root = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("a schema");
            let mut problems = Vec::new();
            check_structural(root, &crd.spec.names.kind, &mut problems);
            assert!(problems.is_empty(), "{problems:#?}");
            // `status: {}` (not null) is what turns the status subresource on.
            let status = version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref());
            assert_eq!(
                status.map(|s| &s.0),
                Some(&json!({})),
                "{}",
                crd.spec.names.kind
            );
            // A spec or status without properties would mean the generation fell back to a
            // default.
            for part in ["spec", "status"] {
                let schema = &root.properties.as_ref().expect("properties")[part];
                assert!(
                    schema.properties.as_ref().is_some_and(|p| !p.is_empty()),
                    "{} {part}",
                    crd.spec.names.kind
                );
            }
        }
    }

    /// Every bundled playbook and policy, applied as a custom resource, passes its CRD's
    /// schema (as far as JSON Schema reads it: the `x-kubernetes-*` keywords are the API
    /// server's own), and a wrong value does not.
    #[test]
    fn bundled_documents_pass_their_crd_schema() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut checked = 0;
        for (dir, crd_kind) in [("playbooks", "Playbook"), ("policies", "AutonomyPolicy")] {
            let crd = definitions()
                .into_iter()
                .find(|c| c.spec.names.kind == crd_kind)
                .expect("the kind's CRD");
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("json");
            let validator =
                jsonschema::draft4::new(&schema["openAPIV3Schema"]).expect("a valid schema");
            for entry in std::fs::read_dir(root.join(dir)).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.extension().is_none_or(|e| e != "yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read");
                let object: Value = serde_saphyr::from_str(&text).expect("yaml");
                let errors: Vec<String> = validator
                    .iter_errors(&object)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
                checked += 1;
                let mut wrong = object.clone();
                wrong["spec"]["maxAutonomousRisk"] = json!("extreme");
                assert!(!validator.is_valid(&wrong), "{}", path.display());
            }
        }
        assert!(checked >= 10, "only {checked} documents checked");
    }

    /// The CRDs shipped in `deploy/` are exactly what `salve crds` generates: regenerate them
    /// with `cargo run -p salve -- crds --out deploy/crds --out deploy/helm/salve/crds`.
    #[test]
    fn shipped_crds_are_generated() {
        let kustomization =
            std::fs::read_to_string(deploy().join("crds/kustomization.yaml")).unwrap_or_default();
        for crd in definitions() {
            assert!(
                kustomization.contains(&format!("- {}\n", file_name(&crd))),
                "deploy/crds/kustomization.yaml does not list {}",
                file_name(&crd)
            );
        }
        for dir in [deploy().join("crds"), deploy().join("helm/salve/crds")] {
            for crd in definitions() {
                let path = dir.join(file_name(&crd));
                let shipped = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    shipped == to_yaml(&crd),
                    "{} is not what `salve crds` generates: run `cargo run -p salve -- crds \
                     --out deploy/crds --out deploy/helm/salve/crds`",
                    path.display()
                );
            }
        }
    }
}
