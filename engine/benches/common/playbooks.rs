//! The generated playbook set shared by the benchmarks: `count` distinct, valid playbooks that
//! use the 8 trigger kinds in turn (see BENCHMARKS.md for what each one holds).
//!
//! Included with `#[path = "common/playbooks.rs"] mod playbooks;` by each bench that needs it.

use std::fmt::Write as _;
use std::path::Path;

/// The name of playbook `i` (`pb-0042`).
pub(crate) fn playbook_name(i: usize) -> String {
    format!("pb-{i:04}")
}

/// The file playbook `i` is written to.
pub(crate) fn file_name(i: usize) -> String {
    format!("{}.yaml", playbook_name(i))
}

/// Writes `count` playbooks into `dir`; returns the bytes written.
pub(crate) fn generate(dir: &Path, count: usize) -> usize {
    let mut bytes = 0;
    for i in 0..count {
        let text = playbook_yaml(i, &format!("{}m", 1 + i % 10));
        bytes += text.len();
        std::fs::write(dir.join(file_name(i)), text).expect("write a playbook");
    }
    bytes
}

/// One realistic playbook; `i % 8` picks the trigger kind. `for_` is ignored by the kinds that
/// do not take it (schedule, alert).
pub(crate) fn playbook_yaml(i: usize, for_: &str) -> String {
    let name = playbook_name(i);
    let team = format!("team-{}", i % 12);
    let ns = format!("ns-{}", i % 40);
    let service = format!("svc-{i}");
    let for_line = format!("    for: {for_}\n");
    // (trigger body, target, whether the target is a Pod)
    let (trigger, target, pod) = match i % 8 {
        0 => (
            format!(
                "    promql:\n      expr: 'sum by (namespace, deployment) (rate(http_requests_total{{namespace=\"{ns}\", deployment=~\"{service}.*\", code=~\"5..\"}}[5m])) > {}'\n{for_line}    interval: 30s\n",
                1 + i % 7
            ),
            "{kind: Deployment, namespace: \"${labels.namespace}\", name: \"${labels.deployment}\"}",
            false,
        ),
        1 => (
            format!(
                "    memoryLeak:\n      selector: '{{namespace=\"{ns}\", container=\"{service}\"}}'\n      window: 30m\n      horizon: {}h\n      minGrowthMiBPerMinute: 1\n{for_line}",
                1 + i % 4
            ),
            "{kind: Deployment, namespace: \"${labels.namespace}\", name: \"${owner.name}\"}",
            false,
        ),
        2 => (
            format!(
                "    latency:\n      selector: '{{namespace=\"{ns}\", service=\"{service}\"}}'\n      quantile: 0.{}\n      threshold: {}ms\n      window: 5m\n{for_line}",
                if i.is_multiple_of(2) { "99" } else { "95" },
                100 + 10 * (i % 50)
            ),
            "{kind: Deployment, namespace: \"${labels.namespace}\", name: \"${labels.service}\"}",
            false,
        ),
        3 => (
            format!(
                "    crashLoop:\n      selector: '{{namespace=\"{ns}\"}}'\n      restarts: {}\n      window: 15m\n{for_line}",
                3 + i % 5
            ),
            "{kind: Pod, namespace: \"${labels.namespace}\", name: \"${labels.pod}\"}",
            true,
        ),
        4 => (
            format!(
                "    errorRate:\n      selector: '{{namespace=\"{ns}\", service=\"{service}\"}}'\n      ratio: 0.0{}\n      window: 5m\n{for_line}",
                1 + i % 9
            ),
            "{kind: StatefulSet, namespace: \"${labels.namespace}\", name: \"${labels.service}\"}",
            false,
        ),
        5 => (
            format!(
                "    event:\n      kind: Pod\n      reason: [OOMKilled, BackOff, CrashLoopBackOff]\n      namespaces: [{ns}]\n{for_line}"
            ),
            "{kind: Pod, namespace: \"${labels.namespace}\", name: \"${labels.name}\"}",
            true,
        ),
        6 => (
            "    schedule:\n      cron: \"*/5 * * * *\"\n".to_string(),
            "{kind: Deployment, namespace: \"NS\", name: \"batch-I\"}",
            false,
        ),
        _ => (
            format!(
                "    alert:\n      alertname: HighLoad{i}\n      labels: {{severity: page, team: {team}}}\n"
            ),
            "{kind: Deployment, namespace: \"${labels.namespace}\", name: \"${labels.deployment}\"}",
            false,
        ),
    };
    let target = target
        .replace("NS", &ns)
        .replace("batch-I", &format!("batch-{i}"));
    let when = [
        "target.readyReplicas < target.replicas && incident.age > duration('2m')",
        "signal.value > 0.5 || incident.age > duration('10m')",
        "target.revisionAge < duration('1h')",
        "'critical' in target.labels && target.labels['critical'] == 'true'",
    ][i % 4];
    let mut y = String::with_capacity(3072);
    write!(
        y,
        "# Generated benchmark playbook {i}.\n\
         apiVersion: salve.dev/v1\n\
         kind: Playbook\n\
         metadata:\n  name: {name}\n  labels: {{team: {team}, generated: \"true\"}}\n\
         \x20 annotations:\n    owner: \"{team}@example.com\"\n\
         spec:\n  description: Benchmark playbook {i} for {service} in {ns}.\n\
         \x20 trigger:\n{trigger}\
         \x20 target: {target}\n\
         \x20 cooldown: {}m\n\
         \x20 steps:\n\
         \x20   - name: capture-logs\n      action: capture_logs\n      risk: none\n      params: {{tailLines: {}, since: 10m}}\n\
         \x20   - name: mark\n      action: annotate\n      risk: low\n      params:\n        annotations:\n          salve.dev/incident: \"${{incident.id}}\"\n          salve.dev/playbook: \"${{playbook.name}}\"\n",
        10 + i % 50,
        100 + i % 400,
    )
    .expect("writing to a String cannot fail");
    if pod {
        write!(
            y,
            "\x20   - name: delete\n      action: delete_pod\n      risk: low\n      when: \"{when}\"\n      params: {{gracePeriod: 30s}}\n      timeout: 2m\n"
        )
        .expect("writing to a String cannot fail");
    } else {
        write!(
            y,
            "\x20   - name: restart\n      action: rollout_restart\n      risk: low\n      when: \"{when}\"\n      timeout: 5m\n\
             \x20   - name: scale-up\n      action: scale\n      risk: medium\n      when: \"target.replicas < {max}\"\n      params: {{delta: 1, max: {max}}}\n\
             \x20   - name: settle\n      action: wait_for\n      risk: none\n      params:\n        promql: 'sum(kube_deployment_status_replicas_available{{namespace=\"${{target.namespace}}\", deployment=\"${{target.name}}\"}}) >= 1'\n        timeout: 5m\n",
            max = 10 + i % 20
        )
        .expect("writing to a String cannot fail");
    }
    write!(
        y,
        "\x20   - name: tell\n      action: notify\n      risk: none\n      params:\n        url: https://hooks.example.com/salve/{team}\n        message: \"${{playbook.name}} acted on ${{target.namespace}}/${{target.name}} (incident ${{incident.id}})\"\n\
         \x20 verify:\n    promql: 'sum(rate(http_requests_total{{namespace=\"${{target.namespace}}\", service=~\"${{target.name}}.*\", code=~\"5..\"}}[5m])) < {}'\n    within: 10m\n",
        1 + i % 5
    )
    .expect("writing to a String cannot fail");
    if !pod {
        y.push_str("  rollback:\n    - {name: undo, action: rollout_undo, risk: medium}\n");
    }
    y
}
