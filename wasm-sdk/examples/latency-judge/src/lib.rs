//! `latency-judge`: judges a canary by its p99 latency against the stable track's, and rolls
//! the canary back when it is clearly worse. It needs the `query` capability (and `log`).
//!
//! The two expressions come from the config (`canary`, `stable`), or are built from a latency
//! histogram and a track label:
//!
//! ```text
//! histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{namespace="<target's>",track="canary"}[5m])))
//! ```
//!
//! The canary is clearly worse when its p99 is above `maxRatio` (1.2) times the stable's *and*
//! at least `minDifferenceSeconds` (0.05) slower, so noise at tiny latencies does not roll it
//! back. Then it asks for `rollout_undo`; when it is not, it skips; when either track has no
//! data (no traffic, a NaN, a failed query) it escalates: no data is not a pass.
//!
//! Its output: `{"verdict": "rollback" | "pass" | "no-data", "canaryP99": <s or null>,
//! "stableP99": <s or null>}`.
//!
//! ```yaml
//! - name: judge
//!   risk: medium
//!   wasm:
//!     module: steps/latency-judge.wasm
//!     grants: [log, query]
//!     allowedActions: [rollout_undo]
//!     config: {metric: http_request_duration_seconds_bucket, trackLabel: track, maxRatio: 1.2}
//! ```

use salve_step::{Action, Context, Host, Outcome};
use serde::Deserialize;
use serde_json::json;

/// The step's `config`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The canary's p99 latency in seconds, as PromQL (overrides the built expression).
    pub canary: Option<String>,
    /// The stable track's p99 latency in seconds, as PromQL (overrides the built expression).
    pub stable: Option<String>,
    /// The latency histogram's bucket series.
    pub metric: String,
    /// The label telling the tracks apart.
    pub track_label: String,
    /// Its value on the canary's series.
    pub canary_value: String,
    /// Its value on the stable track's series.
    pub stable_value: String,
    /// The rate window.
    pub window: String,
    /// The quantile to compare.
    pub quantile: f64,
    /// How many times slower than the stable track the canary may be.
    pub max_ratio: f64,
    /// How much slower, in seconds, the canary must be before it counts as worse.
    pub min_difference_seconds: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            canary: None,
            stable: None,
            metric: "http_request_duration_seconds_bucket".into(),
            track_label: "track".into(),
            canary_value: "canary".into(),
            stable_value: "stable".into(),
            window: "5m".into(),
            quantile: 0.99,
            max_ratio: 1.2,
            min_difference_seconds: 0.05,
        }
    }
}

impl Config {
    /// The canary's and the stable track's expressions.
    fn expressions(&self, namespace: Option<&str>) -> (String, String) {
        let build = |track: &str| {
            let mut matchers = Vec::new();
            if let Some(namespace) = namespace {
                matchers.push(format!("namespace=\"{}\"", escape(namespace)));
            }
            matchers.push(format!("{}=\"{}\"", self.track_label, escape(track)));
            format!(
                "histogram_quantile({}, sum by (le) (rate({}{{{}}}[{}])))",
                self.quantile,
                self.metric,
                matchers.join(","),
                self.window
            )
        };
        (
            self.canary
                .clone()
                .unwrap_or_else(|| build(&self.canary_value)),
            self.stable
                .clone()
                .unwrap_or_else(|| build(&self.stable_value)),
        )
    }
}

/// A PromQL string literal's content.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Compares the tracks' latency; see the crate docs.
pub fn latency_judge(ctx: &Context, host: &impl Host) -> Result<Outcome, String> {
    let config: Config = ctx.config()?;
    let (canary_expr, stable_expr) = config.expressions(ctx.target.namespace.as_deref());
    let read = |expr: &str| match host.query_value(expr) {
        Ok(value) => value.filter(|v| v.is_finite()),
        Err(error) => {
            host.warn(&format!("`{expr}` failed: {error}"));
            None
        }
    };
    let (canary, stable) = (read(&canary_expr), read(&stable_expr));
    let output =
        |verdict: &str| json!({"verdict": verdict, "canaryP99": canary, "stableP99": stable});
    let (Some(canary), Some(stable)) = (canary, stable) else {
        let missing = if canary.is_none() {
            "canary"
        } else {
            "stable track"
        };
        return Ok(Outcome::escalate(format!(
            "no latency data for the {missing}: cannot judge the canary"
        ))
        .with_output(output("no-data")));
    };
    host.info(&format!("p99: canary {canary:.3}s, stable {stable:.3}s"));
    let worse =
        canary > stable * config.max_ratio && canary - stable >= config.min_difference_seconds;
    Ok(if worse {
        Outcome::proceed(vec![Action::rollout_undo()]).with_output(output("rollback"))
    } else {
        Outcome::skip(format!(
            "the canary's p99 {canary:.3}s is within {}x of the stable's {stable:.3}s",
            config.max_ratio
        ))
        .with_output(output("pass"))
    })
}

salve_step::export!(latency_judge);

#[cfg(test)]
mod tests {
    use salve_step::{Decision, FakeHost, Sample, Target};

    use super::*;

    const CANARY: &str = r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{namespace="prod",track="canary"}[5m])))"#;
    const STABLE: &str = r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{namespace="prod",track="stable"}[5m])))"#;

    fn context() -> Context {
        Context::default().with_target(Target::new("Deployment", Some("prod"), "api-canary"))
    }

    fn judge(host: &FakeHost) -> Outcome {
        latency_judge(&context(), host).expect("a decision")
    }

    #[test]
    fn a_clearly_slower_canary_is_rolled_back() {
        let host = FakeHost::new()
            .with_query_value(CANARY, 0.9)
            .with_query_value(STABLE, 0.3);
        let outcome = judge(&host);
        assert_eq!(outcome.actions(), [Action::rollout_undo()]);
        assert_eq!(
            outcome.output,
            Some(json!({"verdict": "rollback", "canaryP99": 0.9, "stableP99": 0.3}))
        );
        assert_eq!(host.queries(), [CANARY, STABLE]);
    }

    #[test]
    fn a_canary_within_the_margins_passes() {
        for (canary, stable) in [(0.32, 0.3), (0.012, 0.005)] {
            let host = FakeHost::new()
                .with_query_value(CANARY, canary)
                .with_query_value(STABLE, stable);
            let outcome = judge(&host);
            assert!(
                matches!(outcome.decision, Decision::Skip(_)),
                "{canary} {stable}"
            );
        }
    }

    #[test]
    fn no_data_escalates() {
        let hosts = [
            FakeHost::new()
                .with_query(CANARY, vec![])
                .with_query_value(STABLE, 0.3),
            FakeHost::new()
                .with_query_value(CANARY, f64::NAN)
                .with_query_value(STABLE, 0.3),
            FakeHost::new()
                .with_query_value(CANARY, 0.9)
                .with_query_error(STABLE, "prometheus is down"),
            FakeHost::new()
                .with_query(CANARY, vec![Sample::new(0.9), Sample::new(0.1)])
                .with_query_value(STABLE, 0.3),
        ];
        for host in hosts {
            let outcome = judge(&host);
            assert!(
                matches!(outcome.decision, Decision::Escalate(_)),
                "{outcome:?}"
            );
            assert_eq!(outcome.output.expect("an output")["verdict"], "no-data");
        }
    }

    #[test]
    fn expressions_come_from_config_when_given() {
        let ctx = context().with_config(json!({"canary": "c", "stable": "s", "maxRatio": 2}));
        let host = FakeHost::new()
            .with_query_value("c", 0.5)
            .with_query_value("s", 0.3);
        let outcome = latency_judge(&ctx, &host).expect("a decision");
        assert!(matches!(outcome.decision, Decision::Skip(_)));
        assert_eq!(host.queries(), ["c", "s"]);
    }

    #[test]
    fn label_values_are_escaped() {
        let config = Config {
            canary_value: r#"can"ary"#.into(),
            ..Config::default()
        };
        let (canary, _) = config.expressions(None);
        assert!(canary.contains(r#"{track="can\"ary"}"#), "{canary}");
    }
}
