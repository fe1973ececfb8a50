//! Compiles a [`PolicyDocument`] into a [`Policy`], reporting every problem in one pass.

use std::time::Duration;

use super::spec::PolicyDocument;
use super::{FreezeWindow, Limits, NamespaceOverride, Policy};
use crate::check::Checker;
use crate::playbook::Source;
use crate::playbook::compile::{check_name, digest};

/// Defaults that apply when a policy leaves a setting out.
pub mod defaults {
    use std::time::Duration;

    /// `limits.actionsPerHour`.
    pub const ACTIONS_PER_HOUR: u32 = 30;
    /// `limits.concurrentIncidents`.
    pub const CONCURRENT_INCIDENTS: u32 = 5;
    /// `limits.circuitBreaker.failures`.
    pub const BREAKER_FAILURES: u32 = 3;
    /// `limits.circuitBreaker.reset`.
    pub const BREAKER_RESET: Duration = Duration::from_secs(5 * 60);
    /// `approval.timeout`.
    pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);
}

/// Compiles one policy document. Problems go to `checker`; `None` when there was an error.
pub fn compile(
    document: PolicyDocument,
    index: usize,
    checker: &mut Checker<'_>,
) -> Option<Policy> {
    let spec = &document.spec;
    check_name(
        checker,
        "/metadata/name",
        &document.metadata.name,
        "policy name",
    );

    if spec.max_autonomous_risk == crate::risk::Risk::Critical {
        let d = checker
            .at(
                "/spec/maxAutonomousRisk",
                "a critical step always waits for a human, whatever the ceiling: `critical` acts as `high`",
            )
            .warning();
        checker.push(d);
    }
    let mut overrides = Vec::new();
    for (i, o) in spec.overrides.iter().enumerate() {
        let pointer = format!("/spec/overrides/{i}");
        if o.namespaces.is_empty() {
            checker.error(
                &format!("{pointer}/namespaces"),
                "list at least one namespace",
            );
        }
        if o.max_autonomous_risk > spec.max_autonomous_risk {
            let d = checker
                .at(
                    &format!("{pointer}/maxAutonomousRisk"),
                    format!(
                        "an override can only lower the ceiling: `{}` is above the global `{}` and has no effect",
                        o.max_autonomous_risk, spec.max_autonomous_risk
                    ),
                )
                .warning();
            checker.push(d);
        }
        overrides.push(NamespaceOverride {
            namespaces: o.namespaces.clone(),
            max_autonomous_risk: o.max_autonomous_risk.min(spec.max_autonomous_risk),
        });
    }

    let mut freeze = Vec::new();
    for (i, f) in spec.freeze.iter().enumerate() {
        let pointer = format!("/spec/freeze/{i}");
        let schedule = checker.cron(&format!("{pointer}/schedule"), &f.schedule);
        let duration = checker.duration_or(
            &format!("{pointer}/duration"),
            Some(&f.duration),
            Duration::ZERO,
            true,
        );
        if let Some(schedule) = schedule {
            freeze.push(FreezeWindow {
                cron: f.schedule.clone(),
                schedule,
                duration,
                namespaces: f.namespaces.clone(),
            });
        }
    }

    let limits = spec.limits.as_ref();
    let breaker = limits.and_then(|l| l.circuit_breaker.as_ref());
    let breaker_reset = checker.duration_or(
        "/spec/limits/circuitBreaker/reset",
        breaker.map(|b| &b.reset),
        defaults::BREAKER_RESET,
        true,
    );
    let limits = Limits {
        actions_per_hour: limits
            .and_then(|l| l.actions_per_hour)
            .unwrap_or(defaults::ACTIONS_PER_HOUR),
        concurrent_incidents: limits
            .and_then(|l| l.concurrent_incidents)
            .unwrap_or(defaults::CONCURRENT_INCIDENTS),
        breaker_failures: breaker.map_or(defaults::BREAKER_FAILURES, |b| b.failures),
        breaker_reset,
    };
    for (field, value) in [
        (
            "/spec/limits/concurrentIncidents",
            limits.concurrent_incidents,
        ),
        (
            "/spec/limits/circuitBreaker/failures",
            limits.breaker_failures,
        ),
    ] {
        if value == 0 {
            let d = checker
                .at(field, "0 would stop every remediation")
                .expected("at least 1 (set maxAutonomousRisk: none to stop acting on its own)");
            checker.push(d);
        }
    }
    let approval_timeout = checker.duration_or(
        "/spec/approval/timeout",
        spec.approval.as_ref().map(|a| &a.timeout),
        defaults::APPROVAL_TIMEOUT,
        true,
    );

    let advisor = super::advisor::compile(spec.advisor.as_ref(), checker);

    if checker.has_errors() {
        return None;
    }
    Some(Policy {
        name: document.metadata.name.clone(),
        source: Source {
            file: checker.file().to_path_buf(),
            document: index,
        },
        digest: digest(&document),
        max_autonomous_risk: spec.max_autonomous_risk,
        dry_run: spec.dry_run.unwrap_or(true),
        overrides,
        freeze,
        limits,
        approval_timeout,
        advisor,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::diagnostic::Severity;
    use crate::playbook::load::{Loaded, load_text};

    #[test]
    fn a_critical_ceiling_is_a_warning_that_it_acts_as_high() {
        let text = "apiVersion: salve.dev/v1\nkind: AutonomyPolicy\nmetadata: {name: p}\nspec:\n  maxAutonomousRisk: critical\n";
        let mut loaded = Loaded::default();
        load_text(Path::new("p.yaml"), text, &mut loaded);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        let warning = &loaded.diagnostics[0];
        assert_eq!(warning.severity, Severity::Warning);
        assert!(warning.message.contains("acts as `high`"), "{warning:?}");
        assert_eq!(warning.pos.line, 5);
        assert_eq!(loaded.policies.len(), 1);
    }
}
