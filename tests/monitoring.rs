//! `deploy/monitoring/`: the PrometheusRule checked and unit-tested by the real `promtool`
//! (Debian's `prometheus` package; `SALVE_PROMTOOL` names another), the Grafana dashboard's
//! shape, and every metric either of them queries is one Salve exposes.

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use promql_parser::parser::Expr;
use salve::metrics::names;
use salve::prometheus::PROMTOOL_ENV;
use serde_json::{Value, json};

const RULE: &str = include_str!("../deploy/monitoring/prometheusrule.yaml");
const DASHBOARD: &str = include_str!("../deploy/monitoring/dashboard.json");
const RUNBOOKS: &str = include_str!("../deploy/monitoring/README.md");

/// Where every alert's runbook lives: a section of deploy/monitoring/README.md.
const RUNBOOK_BASE: &str =
    "https://github.com/salve-dev/salve/blob/main/deploy/monitoring/README.md#";

/// promtool unit tests for the rules in `rules.yml` (annotations stripped: promtool compares
/// them verbatim, and `check rules` already checks their templates). In each test the `bad`
/// instance is broken and the `good` one healthy: an alert must name `bad`, after its `for`,
/// and never `good`.
const UNIT_TESTS: &str = r#"
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="salve", instance="bad"}'
        values: '0x40'
      - series: 'up{job="salve", instance="good"}'
        values: '1x40'
      - series: 'salve_reload_last_successful{job="salve", instance="bad"}'
        values: '1 1 0x40'
      - series: 'salve_reload_last_successful{job="salve", instance="good"}'
        values: '1x40'
      - series: 'salve_circuit_breaker_state{job="salve", instance="bad", state="open"}'
        values: '0 0 1x40'
      - series: 'salve_circuit_breaker_state{job="salve", instance="bad", state="closed"}'
        values: '1 1 0x40'
      - series: 'salve_circuit_breaker_state{job="salve", instance="good", state="open"}'
        values: '0x40'
      - series: 'salve_circuit_breaker_state{job="salve", instance="good", state="closed"}'
        values: '1x40'
      # 80% of the bad instance's evaluations are inconclusive, 10% of the good one's.
      - series: 'salve_evaluations_total{job="salve", instance="bad", playbook="crash-loop"}'
        values: '0+10x40'
      - series: 'salve_evaluations_inconclusive_total{job="salve", instance="bad", playbook="crash-loop"}'
        values: '0+8x40'
      - series: 'salve_evaluations_total{job="salve", instance="good", playbook="crash-loop"}'
        values: '0+10x40'
      - series: 'salve_evaluations_inconclusive_total{job="salve", instance="good", playbook="crash-loop"}'
        values: '0+1x40'
      # Of job salve, one replica leads; of job salve-ha, none after two minutes.
      - series: 'salve_leader{job="salve", instance="bad"}'
        values: '0x40'
      - series: 'salve_leader{job="salve", instance="good"}'
        values: '1x40'
      - series: 'salve_leader{job="salve-ha", instance="a"}'
        values: '1 1 0x40'
      - series: 'salve_leader{job="salve-ha", instance="b"}'
        values: '0x40'
      - series: 'salve_approvals_expired_total{job="salve", instance="bad"}'
        values: '0x5 1x35'
      - series: 'salve_approvals_expired_total{job="salve", instance="good"}'
        values: '0x40'
      - series: 'salve_approvals_pending{job="salve", instance="bad"}'
        values: '1x40'
      - series: 'salve_approvals_pending{job="salve", instance="good"}'
        values: '1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0'
      - series: 'salve_advisor_consultations_total{job="salve", instance="bad", outcome="rejected"}'
        values: '0+9x40'
      - series: 'salve_advisor_consultations_total{job="salve", instance="bad", outcome="advice"}'
        values: '0+1x40'
      - series: 'salve_advisor_rejections_total{job="salve", instance="bad", reason="timeout"}'
        values: '0+9x40'
      - series: 'salve_advisor_consultations_total{job="salve", instance="good", outcome="rejected"}'
        values: '0+1x40'
      - series: 'salve_advisor_consultations_total{job="salve", instance="good", outcome="advice"}'
        values: '0+9x40'
      - series: 'salve_advisor_rejections_total{job="salve", instance="good", reason="timeout"}'
        values: '0+1x40'
    alert_rule_test:
      # Before their `for`, nothing fires.
      - {eval_time: 4m, alertname: SalveDown, exp_alerts: []}
      - {eval_time: 4m, alertname: SalveReloadFailing, exp_alerts: []}
      - {eval_time: 4m, alertname: SalveCircuitBreakerOpen, exp_alerts: []}
      - {eval_time: 4m, alertname: SalveApprovalsExpired, exp_alerts: []}
      - {eval_time: 3m, alertname: SalveNoLeader, exp_alerts: []}
      - eval_time: 10m
        alertname: SalveNoLeader
        exp_alerts:
          - exp_labels: {severity: critical, job: salve-ha}
      - {eval_time: 8m, alertname: SalveEvaluationsInconclusive, exp_alerts: []}
      - {eval_time: 15m, alertname: SalveApprovalsPending, exp_alerts: []}
      - eval_time: 10m
        alertname: SalveDown
        exp_alerts:
          - exp_labels: {severity: critical, job: salve, instance: bad}
      - eval_time: 10m
        alertname: SalveReloadFailing
        exp_alerts:
          - exp_labels: {severity: warning, job: salve, instance: bad}
      - eval_time: 10m
        alertname: SalveCircuitBreakerOpen
        exp_alerts:
          - exp_labels: {severity: warning, job: salve, instance: bad, state: open}
      - eval_time: 25m
        alertname: SalveEvaluationsInconclusive
        exp_alerts:
          - exp_labels: {severity: warning, job: salve, instance: bad}
      - eval_time: 10m
        alertname: SalveApprovalsExpired
        exp_alerts:
          - exp_labels: {severity: warning, job: salve, instance: bad}
      - eval_time: 35m
        alertname: SalveApprovalsPending
        exp_alerts:
          - exp_labels: {severity: info, job: salve, instance: bad}
      - eval_time: 40m
        alertname: SalveAdvisorRejectionsHigh
        exp_alerts:
          - exp_labels: {severity: info, job: salve, instance: bad}
      # Salve's series are there: not absent.
      - {eval_time: 30m, alertname: SalveAbsent, exp_alerts: []}
  - interval: 1m
    input_series:
      - series: 'up{job="salve", instance="good"}'
        values: '1x40'
      - series: 'salve_leader{job="salve", instance="good"}'
        values: '1x40'
      - series: 'salve_reload_last_successful{job="salve", instance="good"}'
        values: '1x40'
      - series: 'salve_circuit_breaker_state{job="salve", instance="good", state="closed"}'
        values: '1x40'
      - series: 'salve_evaluations_total{job="salve", instance="good", playbook="crash-loop"}'
        values: '0+10x40'
      - series: 'salve_evaluations_inconclusive_total{job="salve", instance="good", playbook="crash-loop"}'
        values: '0x40'
      - series: 'salve_approvals_expired_total{job="salve", instance="good"}'
        values: '0x40'
      - series: 'salve_approvals_pending{job="salve", instance="good"}'
        values: '0x40'
    alert_rule_test:
      # A healthy Salve: no alert at all.
      - {eval_time: 40m, alertname: SalveDown, exp_alerts: []}
      - {eval_time: 40m, alertname: SalveAbsent, exp_alerts: []}
      - {eval_time: 40m, alertname: SalveReloadFailing, exp_alerts: []}
      - {eval_time: 40m, alertname: SalveCircuitBreakerOpen, exp_alerts: []}
      - {eval_time: 40m, alertname: SalveNoLeader, exp_alerts: []}
      - {eval_time: 40m, alertname: SalveEvaluationsInconclusive, exp_alerts: []}
      - {eval_time: 40m, alertname: SalveApprovalsExpired, exp_alerts: []}
      - {eval_time: 40m, alertname: SalveApprovalsPending, exp_alerts: []}
      - {eval_time: 40m, alertname: SalveAdvisorRejectionsHigh, exp_alerts: []}
  - interval: 1m
    input_series:
      - series: 'up{job="node-exporter", instance="node"}'
        values: '1x40'
    alert_rule_test:
      # No Salve series at all: absent after 15 minutes, and no job to be down.
      - {eval_time: 10m, alertname: SalveAbsent, exp_alerts: []}
      - eval_time: 20m
        alertname: SalveAbsent
        exp_alerts:
          - exp_labels: {severity: warning}
      - {eval_time: 20m, alertname: SalveDown, exp_alerts: []}
"#;

/// The PrometheusRule's `spec.groups`, parsed as the engine parses YAML.
fn groups() -> Value {
    let rule: Value = serde_saphyr::from_str(RULE).expect("prometheusrule.yaml parses");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["metadata"]["name"], "salve");
    assert!(
        rule["metadata"]["labels"]["release"].is_string(),
        "a `release` label for kube-prometheus-stack's ruleSelector"
    );
    let groups = rule["spec"]["groups"].clone();
    assert!(groups.as_array().is_some_and(|g| !g.is_empty()));
    groups
}

/// Every rule of every group.
fn rules() -> Vec<Value> {
    groups()
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

/// `promtool`: at `SALVE_PROMTOOL` (a path, or a name looked up on `PATH`), else on `PATH`.
fn promtool() -> PathBuf {
    let requested = env::var_os(PROMTOOL_ENV)
        .filter(|r| !r.is_empty())
        .map_or_else(|| PathBuf::from("promtool"), PathBuf::from);
    if requested.components().count() > 1 {
        return requested;
    }
    env::var_os("PATH")
        .and_then(|path| {
            env::split_paths(&path)
                .map(|dir| dir.join(&requested))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{}` is not on PATH: install Debian's `prometheus` package or set {PROMTOOL_ENV}",
                requested.display()
            )
        })
}

/// Runs `promtool ARGS` in `dir`; panics with its output unless it succeeds. Returns stdout.
fn run_promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Writes `groups` as a Prometheus rules file (JSON is YAML) at `dir/rules.yml`.
fn write_rules(dir: &Path, groups: Value) {
    let text = serde_json::to_string_pretty(&json!({ "groups": groups })).expect("serialize");
    fs::write(dir.join("rules.yml"), text).expect("write rules.yml");
}

/// The metric names `expr` selects (Grafana's variables replaced first).
fn selected(expr: &str) -> BTreeSet<String> {
    let expr = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "6h")
        .replace("$playbook", ".*");
    assert!(!expr.contains('$'), "an unknown variable in `{expr}`");
    let parsed = promql_parser::parser::parse(&expr)
        .unwrap_or_else(|e| panic!("`{expr}` is not PromQL: {e}"));
    let mut names = BTreeSet::new();
    collect(&parsed, &mut names);
    names
}

fn collect(expr: &Expr, names: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(a) => {
            collect(&a.expr, names);
            if let Some(param) = &a.param {
                collect(param, names);
            }
        }
        Expr::Unary(u) => collect(&u.expr, names),
        Expr::Binary(b) => {
            collect(&b.lhs, names);
            collect(&b.rhs, names);
        }
        Expr::Paren(p) => collect(&p.expr, names),
        Expr::Subquery(s) => collect(&s.expr, names),
        Expr::VectorSelector(v) => {
            names.insert(name(v.name.as_ref()));
        }
        Expr::MatrixSelector(m) => {
            names.insert(name(m.vs.name.as_ref()));
        }
        Expr::Call(c) => c.args.args.iter().for_each(|arg| collect(arg, names)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn name(name: Option<&String>) -> String {
    name.expect("every selector names its metric").clone()
}

/// The names in `exprs` that Salve does not expose: histogram series are checked by their
/// family's name, and `up` is Prometheus' own.
fn unknown<'a>(exprs: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut unknown = Vec::new();
    for expr in exprs {
        for metric in selected(expr) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| metric.strip_suffix(suffix))
                .unwrap_or(&metric);
            if family != "up" && !names::ALL.contains(&family) {
                unknown.push(format!("{metric} in `{expr}`"));
            }
        }
    }
    unknown
}

/// The dashboard's panels, those inside collapsed rows included, rows themselves left out.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            all.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            all.push(panel);
        }
    }
    all
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("dashboard.json parses")
}

#[test]
fn every_alert_has_a_for_a_severity_and_a_runbook_section() {
    let rules = rules();
    assert!(rules.len() >= 7, "{} rules", rules.len());
    for rule in &rules {
        let alert = rule["alert"].as_str().expect("only alerting rules");
        assert!(rule["for"].is_string(), "{alert}: no `for`");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{alert}: severity `{severity}`"
        );
        for annotation in ["summary", "description", "runbook_url"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|text| !text.is_empty()),
                "{alert}: no {annotation}"
            );
        }
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .expect("runbook_url");
        assert_eq!(
            runbook,
            format!("{RUNBOOK_BASE}{}", alert.to_lowercase()),
            "{alert}: runbook_url"
        );
        assert!(
            RUNBOOKS.contains(&format!("\n### {alert}\n")),
            "deploy/monitoring/README.md has no `### {alert}` section"
        );
    }
}

#[test]
fn the_rules_pass_promtool_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_rules(dir.path(), groups());
    let out = run_promtool(dir.path(), &["check", "rules", "rules.yml"]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules().len())),
        "{out}"
    );
}

#[test]
fn the_alerts_fire_on_broken_series_and_stay_quiet_on_healthy_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut groups = groups();
    for group in groups.as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            rule.as_object_mut().expect("rule").remove("annotations");
        }
    }
    write_rules(dir.path(), groups);
    fs::write(dir.path().join("tests.yml"), UNIT_TESTS).expect("write tests.yml");
    let out = run_promtool(dir.path(), &["test", "rules", "tests.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert is exercised.
    for rule in rules() {
        let alert = rule["alert"].as_str().expect("alert");
        assert!(
            UNIT_TESTS.contains(&format!("alertname: {alert},"))
                && UNIT_TESTS.contains(&format!("alertname: {alert}\n")),
            "{alert} has no firing and no quiet unit test"
        );
    }
}

#[test]
fn every_metric_the_rules_and_the_dashboard_query_is_exposed() {
    let rules = rules();
    let rule_exprs: Vec<&str> = rules
        .iter()
        .map(|rule| rule["expr"].as_str().expect("expr"))
        .collect();
    let dashboard = dashboard();
    let mut dashboard_exprs: Vec<&str> = panels(&dashboard)
        .into_iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str())
        .collect();
    for variable in dashboard["templating"]["list"].as_array().expect("list") {
        if let Some(definition) = variable["definition"].as_str() {
            let inner = definition
                .strip_prefix("label_values(")
                .and_then(|d| d.split_once(','))
                .map_or(definition, |(metric, _)| metric);
            dashboard_exprs.push(inner);
        }
    }
    assert!(!dashboard_exprs.is_empty());
    let missing = unknown(rule_exprs.into_iter().chain(dashboard_exprs));
    assert!(missing.is_empty(), "not in names::ALL: {missing:#?}");

    // The check itself catches a misspelt family and a misspelt histogram series.
    assert_eq!(
        unknown(["rate(salve_evaluation_total[5m])"]).len(),
        1,
        "a misspelt counter"
    );
    assert_eq!(
        unknown(["histogram_quantile(0.5, rate(salve_wasm_step_seconds_bucket[5m]))"]).len(),
        1,
        "a misspelt histogram"
    );
}

#[test]
fn the_dashboard_has_a_title_the_datasource_and_a_query_on_every_panel() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables = dashboard["templating"]["list"].as_array().expect("list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(
        variable("playbook")["definition"],
        "label_values(salve_evaluations_total, playbook)"
    );
    assert_eq!(variable("playbook")["datasource"]["uid"], "${datasource}");

    let panels = panels(&dashboard);
    assert!(panels.len() >= 12, "{} panels", panels.len());
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no target");
        for target in targets {
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: a target without an expr"
            );
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
}
