//! `pool-decision`: what to do about an exhausted connection pool — restart the pods, add a
//! replica, or call a human.
//!
//! It reads how full the pool is from the root signal (`poolUtilization`, 0 to 1 — or the
//! value named by `utilizationValue`, such as `value` for a `promql` trigger whose expression
//! is the ratio — or `activeConnections` over `maxConnections`) and how much load there is
//! compared with usual
//! (`loadRatio` on the signal, or the `loadRatioQuery` PromQL, which needs the `query`
//! capability):
//!
//! | situation                                           | decision                              |
//! |-----------------------------------------------------|---------------------------------------|
//! | no pool usage values                                 | escalate                             |
//! | pool below `saturated` (0.9)                         | skip                                 |
//! | load unknown                                         | escalate: leak or demand?            |
//! | load at least `loadIncrease` (1.3) × usual           | `scale` by +1, up to `maxReplicas` (at the cap: escalate) |
//! | usual load                                           | `rollout_restart`: connections are held, not needed (a leak) |
//!
//! Its output: `{"verdict": "restart" | "scale" | "skip" | "escalate", "utilization": ..,
//! "loadRatio": ..}`.
//!
//! ```yaml
//! - name: decide
//!   risk: low
//!   timeout: 5s
//!   wasm:
//!     module: steps/pool-decision.wasm
//!     grants: [log, query]
//!     allowedActions: [rollout_restart, scale]
//!     config:
//!       utilizationValue: value
//!       loadRatioQuery: 'sum(rate(http_requests_total{namespace="${target.namespace}"}[10m])) / sum(rate(http_requests_total{namespace="${target.namespace}"}[10m] offset 1h))'
//! ```

use salve_step::{Action, Context, Host, Outcome, Signal};
use serde::Deserialize;
use serde_json::json;

/// The step's `config`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The pool utilization (0 to 1) at which it counts as exhausted.
    pub saturated: f64,
    /// The load, compared with usual, that counts as more demand.
    pub load_increase: f64,
    /// The most replicas a scale-out may reach.
    pub max_replicas: i64,
    /// The signal value holding the pool's utilization (0 to 1), when not `poolUtilization`.
    pub utilization_value: Option<String>,
    /// PromQL giving the load now over the usual load, when the signal has no `loadRatio`,
    /// e.g. `sum(rate(http_requests_total{app="api"}[5m])) / sum(rate(http_requests_total{app="api"}[5m] offset 1d))`.
    pub load_ratio_query: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            saturated: 0.9,
            load_increase: 1.3,
            max_replicas: 10,
            utilization_value: None,
            load_ratio_query: None,
        }
    }
}

/// How full the pool is, from 0 to 1: the value named `name`, or the connections in use over
/// the most there may be.
fn utilization(signal: &Signal, name: &str) -> Option<f64> {
    signal.value_named(name).or_else(|| {
        let active = signal.value_named("activeConnections")?;
        let max = signal.value_named("maxConnections").filter(|m| *m > 0.0)?;
        Some(active / max)
    })
}

/// Decides restart, scale-out or a human; see the crate docs.
pub fn pool_decision(ctx: &Context, host: &impl Host) -> Result<Outcome, String> {
    let config: Config = ctx.config()?;
    let signal = ctx.root_signal();
    let utilization_value = config
        .utilization_value
        .as_deref()
        .unwrap_or("poolUtilization");
    let utilization = signal.and_then(|s| utilization(s, utilization_value));
    let mut load = signal.and_then(|s| s.value_named("loadRatio"));
    if load.is_none()
        && let Some(expr) = &config.load_ratio_query
    {
        load = match host.query_value(expr) {
            Ok(value) => value.filter(|v| v.is_finite()),
            Err(error) => {
                host.warn(&format!("the load query failed: {error}"));
                None
            }
        };
    }
    let output =
        |verdict: &str| json!({"verdict": verdict, "utilization": utilization, "loadRatio": load});

    let Some(utilization) = utilization else {
        return Ok(Outcome::escalate(format!(
            "the signal has no `{utilization_value}` nor `activeConnections`/`maxConnections`"
        ))
        .with_output(output("escalate")));
    };
    if utilization < config.saturated {
        return Ok(Outcome::skip(format!(
            "the pool is {:.0}% full, below {:.0}%",
            utilization * 100.0,
            config.saturated * 100.0
        ))
        .with_output(output("skip")));
    }
    let Some(load) = load else {
        return Ok(Outcome::escalate(
            "the pool is exhausted and the load is unknown: a leak or more demand?",
        )
        .with_output(output("escalate")));
    };
    host.info(&format!(
        "pool {:.0}% full at {load:.2}x the usual load",
        utilization * 100.0
    ));
    if load < config.load_increase {
        return Ok(Outcome::proceed(vec![Action::rollout_restart()]).with_output(output("restart")));
    }
    match ctx.target.replicas {
        Some(replicas) if replicas < config.max_replicas => {
            Ok(
                Outcome::proceed(vec![Action::scale_by(1).param("max", config.max_replicas)])
                    .with_output(output("scale")),
            )
        }
        Some(replicas) => Ok(Outcome::escalate(format!(
            "more demand ({load:.2}x) but already at {replicas} of at most {} replicas",
            config.max_replicas
        ))
        .with_output(output("escalate"))),
        None => Ok(
            Outcome::escalate("more demand but the replica count is unknown")
                .with_output(output("escalate")),
        ),
    }
}

salve_step::export!(pool_decision);

#[cfg(test)]
mod tests {
    use salve_step::{Decision, FakeHost, Target};
    use serde_json::Value;

    use super::*;

    const LOAD: &str = "load_ratio";

    fn context(signal: Signal, replicas: Option<i64>) -> Context {
        let mut target = Target::new("Deployment", Some("prod"), "api");
        if let Some(replicas) = replicas {
            target = target.with_replicas(replicas, replicas);
        }
        Context::default().with_signal(signal).with_target(target)
    }

    fn verdict(outcome: &Outcome) -> Value {
        outcome
            .output
            .as_ref()
            .map_or(Value::Null, |o| o["verdict"].clone())
    }

    fn decide(ctx: &Context) -> Outcome {
        pool_decision(ctx, &FakeHost::new()).expect("a decision")
    }

    fn exhausted(load: f64) -> Signal {
        Signal::new(None)
            .with_value("poolUtilization", 1.0)
            .with_value("loadRatio", load)
    }

    #[test]
    fn the_utilization_may_be_another_value_of_the_signal() {
        let signal = Signal::new(Some(0.97))
            .with_value("value", 0.97)
            .with_value("loadRatio", 1.0);
        let ctx = context(signal, Some(3));
        assert!(matches!(decide(&ctx).decision, Decision::Escalate(_)));
        let ctx = ctx.with_config(json!({"utilizationValue": "value"}));
        assert_eq!(decide(&ctx).actions(), [Action::rollout_restart()]);
    }

    #[test]
    fn usual_load_means_held_connections_and_a_restart() {
        let outcome = decide(&context(exhausted(1.0), Some(3)));
        assert_eq!(outcome.actions(), [Action::rollout_restart()]);
        assert_eq!(verdict(&outcome), "restart");
    }

    #[test]
    fn more_demand_adds_one_replica_up_to_the_cap() {
        let outcome = decide(&context(exhausted(2.0), Some(3)));
        assert_eq!(outcome.actions(), [Action::scale_by(1).param("max", 10)]);
        let ctx = context(exhausted(2.0), Some(4)).with_config(json!({"maxReplicas": 4}));
        let outcome = decide(&ctx);
        assert!(matches!(outcome.decision, Decision::Escalate(_)));
        let outcome = decide(&context(exhausted(2.0), None));
        assert!(matches!(outcome.decision, Decision::Escalate(_)));
    }

    #[test]
    fn the_load_can_come_from_a_query() {
        let signal = Signal::new(None)
            .with_value("activeConnections", 50.0)
            .with_value("maxConnections", 50.0);
        let ctx = context(signal, Some(2)).with_config(json!({"loadRatioQuery": LOAD}));
        let host = FakeHost::new().with_query_value(LOAD, 1.8);
        let outcome = pool_decision(&ctx, &host).expect("a decision");
        assert_eq!(verdict(&outcome), "scale");
        assert_eq!(host.queries(), [LOAD]);

        let host = FakeHost::new().with_query_error(LOAD, "prometheus is down");
        let outcome = pool_decision(&ctx, &host).expect("a decision");
        assert!(matches!(outcome.decision, Decision::Escalate(_)));
        assert_eq!(host.logs().len(), 1);
    }

    #[test]
    fn a_pool_with_room_is_left_alone() {
        let signal = Signal::new(None).with_value("poolUtilization", 0.5);
        assert_eq!(verdict(&decide(&context(signal, Some(3)))), "skip");
    }

    #[test]
    fn missing_values_escalate() {
        for signal in [
            Signal::new(None),
            Signal::new(None)
                .with_value("activeConnections", 5.0)
                .with_value("maxConnections", 0.0),
            Signal::new(None).with_value("poolUtilization", 1.0),
        ] {
            let outcome = decide(&context(signal, Some(3)));
            assert!(
                matches!(outcome.decision, Decision::Escalate(_)),
                "{outcome:?}"
            );
        }
        assert_eq!(verdict(&decide(&Context::default())), "escalate");
    }
}
