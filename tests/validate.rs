//! `salve validate` and `salve schema`, through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("engine/ has a parent")
        .to_path_buf()
}

fn salve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run salve")
}

fn json_report(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["validate", "--format", "json"];
    all.extend_from_slice(args);
    let out = salve(&all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit code"), report)
}

/// Where a JSON report's diagnostic `d` is: its file's name, line and column.
fn located(d: &Value) -> (String, u64, u64) {
    let file = Path::new(d["file"].as_str().expect("file"));
    (
        file.file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned(),
        d["line"].as_u64().expect("line"),
        d["column"].as_u64().expect("column"),
    )
}

#[test]
fn every_shipped_playbook_and_policy_is_valid() {
    let (code, report) = json_report(&["playbooks/", "policies/"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["errors"], 0);
    assert_eq!(report["warnings"], 0, "{report:#}");
    let names: Vec<&str> = report["playbooks"]
        .as_array()
        .expect("playbooks")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    for expected in [
        "memory-leak-rollback",
        "crash-loop",
        "latency-failover",
        "oom-raise-limit",
        "node-memory-pressure",
        "connection-pool-exhaustion",
        "cost-spike",
        "canary-latency",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let policies = report["policies"].as_array().expect("policies");
    let default = policies
        .iter()
        .find(|p| p["name"] == "default")
        .expect("default policy");
    assert_eq!(default["dryRun"], true, "a first install must be dry-run");
    assert_eq!(default["maxAutonomousRisk"], "medium");
}

#[test]
fn every_shipped_example_points_editors_at_the_schema() {
    for dir in ["playbooks", "policies"] {
        for entry in std::fs::read_dir(repo().join(dir)).expect("list") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let first = text.lines().next().unwrap_or_default();
            let schema = first
                .strip_prefix("# yaml-language-server: $schema=")
                .unwrap_or_else(|| panic!("{} lacks the schema comment", path.display()));
            let target = path.parent().expect("dir").join(schema);
            assert!(
                target.is_file(),
                "{} points at missing {}",
                path.display(),
                target.display()
            );
            let start = text.find("\napiVersion").expect("apiVersion");
            assert!(
                text[..start].lines().count() >= 3,
                "{} needs a comment saying what it is for",
                path.display()
            );
        }
    }
}

/// Every problem in the broken fixtures, with its exact place: the whole list in one run.
#[test]
fn broken_files_list_every_problem_with_file_line_and_column() {
    let (code, report) = json_report(&["tests/fixtures/broken"]);
    assert_eq!(code, 1);
    let expected: &[(&str, u64, u64, &str)] = &[
        (
            "rules.yaml",
            4,
            18,
            "`Rules_Bad` is not a valid playbook name",
        ),
        ("rules.yaml", 8, 5, "sets both `promql` and `schedule`"),
        (
            "rules.yaml",
            9,
            24,
            "Node is cluster-scoped and has no namespace",
        ),
        (
            "rules.yaml",
            11,
            16,
            "`delete_pod` cannot act on a Node target",
        ),
        (
            "rules.yaml",
            11,
            34,
            "risk `none` is below what `delete_pod` can do",
        ),
        ("rules.yaml", 12, 44, "`cordon` has no parameter `replicas`"),
        ("rules.yaml", 13, 23, "missing.wasm` does not exist"),
        ("rules.yaml", 14, 7, "`notify` needs the parameter `url`"),
        ("rules.yaml", 17, 31, "`three` is not a sample"),
        ("rules.yaml", 18, 40, "no step is named `nope`"),
        (
            "duplicate.yml",
            18,
            18,
            "is not a cron schedule: 'FRY' is not a valid day",
        ),
        (
            "duplicate.yml",
            20,
            46,
            "an override can only lower the ceiling",
        ),
        ("duplicate.yml", 23, 7, "unknown kind `Playbok`"),
        (
            "semantics.yaml",
            8,
            22,
            "`*/5 * * *` is not a cron schedule",
        ),
        ("semantics.yaml", 10, 13, "`30 mins` is not a duration"),
        (
            "semantics.yaml",
            15,
            13,
            "`target` has no field `revisonAge`",
        ),
        ("semantics.yaml", 16, 13, "duplicate step name `restart`"),
        ("semantics.yaml", 19, 13, "invalid CEL"),
        (
            "semantics.yaml",
            21,
            13,
            "invalid PromQL: unclosed left parenthesis",
        ),
        (
            "semantics.yaml",
            24,
            16,
            "`cordon` cannot act on a Deployment target",
        ),
        (
            "semantics.yaml",
            29,
            9,
            "duplicate Playbook name `duplicate`",
        ),
        (
            "semantics.yaml",
            33,
            70,
            "unknown template variable `${labels.deploymnet}`",
        ),
        ("shape.yaml", 10, 3, "unknown field `stpes`"),
        ("shape.yaml", 12, 39, "`extreme` is not allowed here"),
        (
            "shape.yaml",
            13,
            16,
            "`rollout_restrat` is not allowed here",
        ),
        ("typo.yaml", 7, 30, "unknown field `windw`"),
        ("typo.yaml", 9, 13, "`1hour` is not a duration"),
        ("syntax.yaml", 4, 5, "invalid YAML"),
    ];
    let found: Vec<(String, u64, u64, String)> = report["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .map(|d| {
            let (file, line, column) = located(d);
            let message = d["message"].as_str().expect("message").to_string();
            (file, line, column, message)
        })
        .collect();
    for (file, line, column, message) in expected {
        assert!(
            found
                .iter()
                .any(|f| f.0 == *file && f.1 == *line && f.2 == *column && f.3.contains(message)),
            "missing {file}:{line}:{column} {message}\nfound: {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "unexpected extras: {found:#?}");
}

#[test]
fn suggestions_and_expectations_reach_the_human_output() {
    let out = salve(&["validate", "tests/fixtures/broken"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.contains("tests/fixtures/broken/shape.yaml:10:3: error: spec: unknown field `stpes`"),
        "{text}"
    );
    assert!(text.contains("help: did you mean `steps`?"), "{text}");
    assert!(
        text.contains("help: did you mean `rollout_restart`?"),
        "{text}"
    );
    assert!(
        text.contains("expected: one of `none`, `low`, `medium`, `high`, `critical`"),
        "{text}"
    );
    assert!(text.contains("help: did you mean `revisionAge`?"), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap_or_default()
            .starts_with("FAILED:"),
        "{text}"
    );
}

#[test]
fn several_documents_in_one_file_all_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = |name: &str| {
        format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  trigger:\n    schedule: {{cron: '0 3 * * *'}}\n  target: {{kind: Deployment, namespace: batch, name: etl}}\n  steps:\n    - {{action: rollout_restart, risk: low}}\n"
        )
    };
    let text = format!("{}---\n{}---\n", doc("nightly-a"), doc("nightly-b"));
    let file = dir.path().join("two.yaml");
    std::fs::write(&file, text).expect("write");
    let (code, report) = json_report(&[file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["documents"], 2);
    assert_eq!(report["playbooks"].as_array().expect("playbooks").len(), 2);

    let out = salve(&["validate", "--verbose", file.to_str().expect("utf-8 path")]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("next fires (UTC): "), "{text}");
    assert!(text.contains("T03:00:00+00:00"), "{text}");
}

#[test]
fn garbage_input_is_an_error_never_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.yaml", Vec::new()),
        ("binary.yaml", vec![0xff, 0xfe, 0x00, 0x80, 0x12]),
        ("scalar.yaml", b"just a string".to_vec()),
        ("list.yaml", b"- 1\n- 2\n".to_vec()),
        ("nested.yaml", nested.into_bytes()),
        ("tabs.yaml", b"kind:\tPlaybook\n\t- x".to_vec()),
        ("kind-number.yaml", b"kind: 42\n".to_vec()),
        (
            "nulls.yaml",
            b"apiVersion:\nkind: Playbook\nmetadata:\nspec:\n".to_vec(),
        ),
        // promql-parser panics on these; Salve must report them, and quietly.
        (
            "promql-out-of-range.yaml",
            b"apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: x}\nspec:\n  trigger:\n    promql: {expr: 'rate(x[1e400]) > 0'}\n  target: {kind: Node, name: n}\n  steps: [{action: cordon, risk: low}]\n".to_vec(),
        ),
    ];
    for (name, bytes) in &cases {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    let out = salve(&[
        "validate",
        "--format",
        "json",
        dir.path().to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let files_with_errors: std::collections::BTreeSet<String> = report["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .map(|d| {
            Path::new(d["file"].as_str().expect("file"))
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // An empty file is simply empty; everything else is reported.
    for (name, _) in cases.iter().filter(|(n, _)| *n != "empty.yaml") {
        assert!(
            files_with_errors.contains(*name),
            "{name} not reported: {report:#}"
        );
    }
}

#[test]
fn a_missing_path_is_reported() {
    let (code, report) = json_report(&["does/not/exist"]);
    assert_eq!(code, 1);
    let message = report["diagnostics"][0]["message"]
        .as_str()
        .expect("message");
    assert!(message.starts_with("cannot read"), "{message}");
}

#[test]
fn committed_schemas_are_up_to_date() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = salve(&["schema", "--out", dir.path().to_str().expect("utf-8 path")]);
    assert!(out.status.success());
    for name in ["playbook.json", "autonomy-policy.json"] {
        let fresh = std::fs::read_to_string(dir.path().join(name)).expect("generated");
        let committed =
            std::fs::read_to_string(repo().join("playbooks/schema").join(name)).unwrap_or_default();
        assert!(
            fresh == committed,
            "playbooks/schema/{name} is stale: run `cargo run -p salve -- schema --out playbooks/schema`"
        );
    }
}

#[test]
fn likely_mistakes_are_warnings_that_do_not_fail_the_set() {
    let (code, report) = json_report(&["tests/fixtures/warnings"]);
    assert_eq!(code, 0, "{report:#}");
    let found: Vec<(u64, u64, &str, &str)> = report["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .map(|d| {
            (
                d["line"].as_u64().expect("line"),
                d["column"].as_u64().expect("column"),
                d["severity"].as_str().expect("severity"),
                d["message"].as_str().expect("message"),
            )
        })
        .collect();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!((found[0].0, found[0].1), (6, 33));
    assert!(found[0].3.contains("`OOMKiled` is not a reason"));
    assert_eq!((found[1].0, found[1].1), (8, 22));
    assert!(found[1].3.contains("no policy allows more than `low`"));
    assert!(found.iter().all(|f| f.2 == "warning"));
    assert_eq!(report["playbooks"].as_array().expect("playbooks").len(), 1);
}

#[test]
fn out_of_range_durations_on_the_command_line_are_usage_errors_not_crashes() {
    let out = salve(&[
        "replay",
        "--playbooks",
        "playbooks",
        "--prometheus",
        "http://127.0.0.1:1",
        "--from",
        "0",
        "--to",
        "0",
        "--step",
        "1e400",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a positive duration"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_test_names_what_a_wasm_step_runs_not_the_step() {
    let guard = crate::built_step("memory-leak-guard");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("leak.yaml");
    let test = |steps: &str| {
        format!(
            "    - name: t\n      series: {{'m{{namespace=\"p\"}}': '1x5'}}\n      expect: {{incident: true, steps: [{steps}]}}\n"
        )
    };
    let text = format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: leak}}\nspec:\n  trigger:\n    promql: {{expr: 'm > 0'}}\n  target: {{kind: Deployment, namespace: p, name: api}}\n  steps:\n    - {{name: logs, action: capture_logs, risk: none}}\n    - name: guard\n      risk: medium\n      wasm: {{module: '{}', grants: [log], allowedActions: [rollout_undo, patch_resources]}}\n  tests:\n{}{}{}",
        guard.display(),
        test("logs, guard/1-rollout_undo, guard/2-patch_resources"),
        test("logs, guard/escalate"),
        test("guard, guard/1-scale"),
    );
    std::fs::write(&file, text).expect("write");
    let out = salve(&["validate", &file.display().to_string()]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 2, "only the third test is wrong: {text}");
    assert!(
        errors[0].contains("spec.tests[2].expect.steps[0]: `guard` is a WASM step"),
        "{text}"
    );
    assert!(
        text.contains("the actions it asks for (`guard/1-<action>`"),
        "{text}"
    );
    assert!(
        errors[1].contains("spec.tests[2].expect.steps[1]: no step is named `guard/1-scale`"),
        "scale is not among its allowed actions: {text}"
    );
}

/// A WASM step's `read` list is checked at load, each problem at its place: `read` without
/// the `get` grant, a kind `get` cannot read (with a suggestion), `Secret`, a kind listed
/// twice, namespaces on a cluster-scoped kind, an empty or badly templated namespace list, and
/// a namespaced kind defaulting to the namespace of a target that has none.
#[test]
fn a_wasm_steps_read_list_is_checked_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo().join("tests/fixtures/wasm/skip.wat"),
        dir.path().join("skip.wasm"),
    )
    .expect("copy the skip fixture");
    let header = |name: &str, target: &str| {
        format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  trigger:\n    promql: {{expr: 'vector(1)'}}\n  target: {target}\n  steps:\n"
        )
    };
    // The README's example: valid.
    let good = format!(
        "{}    - name: triage\n      risk: low\n      wasm:\n        module: skip.wasm\n        grants: [log, get]\n        read:\n          - {{kind: Node}}\n          - {{kind: PodDisruptionBudget}}\n          - {{kind: ConfigMap, namespaces: [shop, \"${{target.namespace}}\"]}}\n",
        header("good", "{kind: Deployment, namespace: shop, name: api}")
    );
    std::fs::write(dir.path().join("good.yaml"), good).expect("write");
    let broken = format!(
        "{}{}",
        header("broken", "{kind: Deployment, namespace: shop, name: api}"),
        [
            "    - name: no-get",                                              // 9
            "      risk: low",                                                 // 10
            "      wasm:",                                                     // 11
            "        module: skip.wasm",                                       // 12
            "        grants: [log]",                                           // 13
            "        read: [{kind: Pod}]",                                     // 14
            "    - name: kinds",                                               // 15
            "      risk: low",                                                 // 16
            "      wasm:",                                                     // 17
            "        module: skip.wasm",                                       // 18
            "        grants: [get]",                                           // 19
            "        read:",                                                   // 20
            "          - {kind: PodDisruptionBudgt}",                          // 21
            "          - {kind: Secret}",                                      // 22
            "          - {kind: Node, namespaces: [shop]}",                    // 23
            "          - {kind: ConfigMap, namespaces: [\"${target.nmae}\"]}", // 24
            "          - {kind: Pod}",                                         // 25
            "          - {kind: Service, namespaces: []}",                     // 26
            "          - {kind: Pod, namespaces: [shop]}",                     // 27
            "",
        ]
        .join("\n")
    );
    std::fs::write(dir.path().join("broken.yaml"), broken).expect("write");
    let node = format!(
        "{}    - name: pods\n      risk: low\n      wasm: {{module: skip.wasm, grants: [get], read: [{{kind: Node}}, {{kind: Pod}}]}}\n",
        header("node", "{kind: Node, name: \"${labels.node}\"}")
    );
    std::fs::write(dir.path().join("node.yaml"), node).expect("write");

    let (code, report) = json_report(&[dir.path().to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{report:#}");
    let found: Vec<(String, u64, u64, String, String)> = report["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .map(|d| {
            let (file, line, column) = located(d);
            let text = |key: &str| d[key].as_str().unwrap_or_default().to_string();
            let hints = format!("{} | {}", text("expected"), text("help"));
            (file, line, column, text("message"), hints)
        })
        .collect();
    let expected: &[(&str, u64, u64, &str, &str)] = &[
        (
            "broken.yaml",
            14,
            9,
            "`read` says what the `get` capability may read, but the step is not granted `get`",
            "`grants` to include `get`",
        ),
        (
            "broken.yaml",
            21,
            20,
            "a step cannot read kind `PodDisruptionBudgt`",
            "did you mean `PodDisruptionBudget`?",
        ),
        (
            "broken.yaml",
            22,
            20,
            "kind `Secret` is never readable by a step, whatever the playbook says",
            "one of `Deployment`, ",
        ),
        (
            "broken.yaml",
            23,
            26,
            "kind `Node` is cluster-scoped: it has no namespaces",
            "no `namespaces` for `Node`",
        ),
        (
            "broken.yaml",
            24,
            44,
            "unknown template variable `${target.nmae}`: expected one of `target.kind`, \
             `target.name`, `target.namespace`",
            "did you mean `name`?",
        ),
        (
            "broken.yaml",
            26,
            41,
            "no namespaces are listed",
            "at least one namespace, or no `namespaces` for the target's namespace",
        ),
        (
            "broken.yaml",
            27,
            20,
            "kind `Pod` is listed twice (also at spec.steps[1].wasm.read[4])",
            "each kind once",
        ),
        (
            "node.yaml",
            11,
            69,
            "kind `Pod` is namespaced, and the Node target has no namespace to read it from",
            "`namespaces`, for example [\"${labels.namespace}\"]",
        ),
    ];
    for (file, line, column, message, detail) in expected {
        assert!(
            found.iter().any(|f| f.0 == *file
                && f.1 == *line
                && f.2 == *column
                && f.3 == *message
                && f.4.contains(detail)),
            "missing {file}:{line}:{column} {message} ({detail})\nfound: {found:#?}"
        );
    }
    assert_eq!(
        found.len(),
        expected.len(),
        "unexpected extras (good.yaml is valid): {found:#?}"
    );
}
