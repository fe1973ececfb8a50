//! `memory-leak-guard`: what to do about a memory leak — roll back, raise the memory limit, or
//! nothing.
//!
//! It reads the `memory_leak` signal's `growthMiBPerMinute` and `secondsToOOM` and the target's
//! revision age:
//!
//! | situation                                              | decision                          |
//! |--------------------------------------------------------|-----------------------------------|
//! | no usable growth rate nor time to OOM, or no growth    | skip (fail safe)                  |
//! | revision age unknown                                   | skip (cannot blame a deploy)      |
//! | revision younger than `recentDeploy` (default 1h)      | `rollout_undo`                    |
//! | older, growing at most `maxGrowthMiBPerMinute` (20)    | `patch_resources`: limit × `limitFactor` (1.5) |
//! | older, growing faster, or at an unknown rate           | escalate: a bigger limit only delays the OOM |
//!
//! A `limitFactor` above 2 is planned at high risk. Its output, for later steps' `when`:
//! `{"verdict": "rollback" | "raise-limit" | "escalate" | "skip", "growth": <MiB/min or null>,
//! "secondsToOOM": <s or null>, "revisionAgeSeconds": <s or null>}`.
//!
//! ```yaml
//! - name: guard
//!   risk: medium
//!   wasm:
//!     module: steps/memory-leak-guard.wasm
//!     grants: [log]
//!     allowedActions: [rollout_undo, patch_resources]
//!     config: {recentDeploy: 1h, limitFactor: 1.5, maxGrowthMiBPerMinute: 20}
//! ```

use std::time::Duration;

use salve_step::{Action, Context, Host, Outcome, Risk};
use serde::Deserialize;
use serde_json::json;

/// The step's `config`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// A revision younger than this is blamed for the leak.
    #[serde(deserialize_with = "salve_step::duration::deserialize")]
    pub recent_deploy: Duration,
    /// How much to multiply the memory limit by (above 1).
    pub limit_factor: f64,
    /// The fastest growth a higher limit is worth trying for, in MiB per minute.
    #[serde(rename = "maxGrowthMiBPerMinute")]
    pub max_growth_mib_per_minute: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            recent_deploy: Duration::from_secs(3600),
            limit_factor: 1.5,
            max_growth_mib_per_minute: 20.0,
        }
    }
}

/// The name of the signal value holding the working set's growth rate.
const GROWTH: &str = "growthMiBPerMinute";
/// The name of the signal value holding the projected time to OOM.
const SECONDS_TO_OOM: &str = "secondsToOOM";
/// Above this factor, raising the limit is planned at high risk (the node may not fit it).
const HIGH_RISK_FACTOR: f64 = 2.0;

/// Decides rollback, a higher limit or nothing; see the crate docs.
pub fn memory_leak_guard(ctx: &Context, host: &impl Host) -> Result<Outcome, String> {
    let config: Config = ctx.config()?;
    if !(config.limit_factor.is_finite() && config.limit_factor > 1.0) {
        return Err(format!(
            "limitFactor must be a number above 1, not {}",
            config.limit_factor
        ));
    }
    let signal = ctx.root_signal();
    let growth = signal.and_then(|s| s.value_named(GROWTH));
    let seconds_to_oom = signal
        .and_then(|s| s.value_named(SECONDS_TO_OOM))
        .filter(|s| *s >= 0.0);
    let age = ctx.target.revision_age();
    let output = |verdict: &str| {
        json!({
            "verdict": verdict,
            "growth": growth,
            "secondsToOOM": seconds_to_oom,
            "revisionAgeSeconds": age.map(|a| a.as_secs_f64()),
        })
    };
    host.info(&format!(
        "growth {growth:?} MiB/min, OOM in {seconds_to_oom:?} s, revision age {:?}",
        age.map(|a| a.as_secs())
    ));

    let outcome = match (growth, seconds_to_oom, age) {
        (None, None, _) => Outcome::skip(format!(
            "the signal has no usable `{GROWTH}` nor `{SECONDS_TO_OOM}`"
        ))
        .with_output(output("skip")),
        (Some(growth), _, _) if growth <= 0.0 => {
            Outcome::skip(format!("memory is not growing ({growth} MiB/min)"))
                .with_output(output("skip"))
        }
        (_, _, None) => Outcome::skip("the target's revision age is unknown: no deploy to blame")
            .with_output(output("skip")),
        (_, _, Some(age)) if age < config.recent_deploy => {
            Outcome::proceed(vec![Action::rollout_undo()]).with_output(output("rollback"))
        }
        (Some(growth), _, Some(_)) if growth <= config.max_growth_mib_per_minute => {
            let mut raise = Action::raise_memory_limit(config.limit_factor);
            if config.limit_factor > HIGH_RISK_FACTOR {
                raise = raise.with_risk(Risk::High);
            }
            Outcome::proceed(vec![raise]).with_output(output("raise-limit"))
        }
        (growth, _, Some(age)) => Outcome::escalate(format!(
            "a leak of {} on a revision {} min old: a higher limit would only delay the OOM",
            growth.map_or("unknown rate".into(), |g| format!("{g} MiB/min")),
            age.as_secs() / 60
        ))
        .with_output(output("escalate")),
    };
    Ok(outcome)
}

salve_step::export!(memory_leak_guard);

#[cfg(test)]
mod tests {
    use salve_step::{Decision, FakeHost, Signal, Target};

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn context(growth: Option<f64>, to_oom: Option<f64>, age: Option<Duration>) -> Context {
        let mut signal = Signal::new(None);
        if let Some(growth) = growth {
            signal = signal.with_value(GROWTH, growth);
        }
        if let Some(to_oom) = to_oom {
            signal = signal.with_value(SECONDS_TO_OOM, to_oom);
        }
        let mut target = Target::new("Deployment", Some("prod"), "api");
        if let Some(age) = age {
            target = target.with_revision_age(age);
        }
        Context::default().with_signal(signal).with_target(target)
    }

    fn decide(ctx: &Context) -> Outcome {
        memory_leak_guard(ctx, &FakeHost::new()).expect("a decision")
    }

    fn verdict(outcome: &Outcome) -> &str {
        outcome
            .output
            .as_ref()
            .and_then(|o| o["verdict"].as_str())
            .unwrap_or_default()
    }

    #[test]
    fn a_recent_deploy_is_rolled_back() {
        let outcome = decide(&context(Some(50.0), Some(600.0), Some(10 * MINUTE)));
        assert_eq!(outcome.actions(), [Action::rollout_undo()]);
        assert_eq!(
            outcome.output,
            Some(
                json!({"verdict": "rollback", "growth": 50.0, "secondsToOOM": 600.0,
                        "revisionAgeSeconds": 600.0})
            )
        );
    }

    #[test]
    fn an_old_deploy_growing_slowly_gets_a_higher_limit() {
        let outcome = decide(&context(Some(5.0), None, Some(48 * 60 * MINUTE)));
        assert_eq!(outcome.actions(), [Action::raise_memory_limit(1.5)]);
        assert_eq!(verdict(&outcome), "raise-limit");
    }

    #[test]
    fn a_large_factor_is_planned_at_high_risk() {
        let ctx = context(Some(5.0), None, Some(48 * 60 * MINUTE))
            .with_config(json!({"limitFactor": 3, "recentDeploy": "30m"}));
        let outcome = decide(&ctx);
        assert_eq!(outcome.actions()[0].risk, Some(Risk::High));
    }

    #[test]
    fn the_recent_deploy_window_comes_from_config() {
        let ctx =
            context(Some(5.0), None, Some(90 * MINUTE)).with_config(json!({"recentDeploy": "2h"}));
        assert_eq!(decide(&ctx).actions(), [Action::rollout_undo()]);
    }

    #[test]
    fn the_fastest_growth_worth_a_higher_limit_comes_from_config() {
        // Spelt like the signal's `growthMiBPerMinute`, as the playbooks write it.
        let ctx = context(Some(30.0), None, Some(48 * 60 * MINUTE))
            .with_config(json!({"maxGrowthMiBPerMinute": 40}));
        assert_eq!(decide(&ctx).actions(), [Action::raise_memory_limit(1.5)]);
    }

    #[test]
    fn an_old_deploy_growing_fast_or_at_an_unknown_rate_escalates() {
        for growth in [Some(80.0), None] {
            let outcome = decide(&context(growth, Some(300.0), Some(48 * 60 * MINUTE)));
            assert!(
                matches!(outcome.decision, Decision::Escalate(_)),
                "{growth:?}"
            );
            assert_eq!(verdict(&outcome), "escalate");
        }
    }

    #[test]
    fn no_usable_values_skip() {
        let day = Some(24 * 60 * MINUTE);
        for ctx in [
            context(None, None, day),
            context(Some(f64::NAN), Some(-1.0), day),
            context(Some(0.0), Some(600.0), day),
            context(Some(5.0), Some(600.0), None),
            Context::default(),
        ] {
            let outcome = decide(&ctx);
            assert!(matches!(outcome.decision, Decision::Skip(_)), "{ctx:?}");
            assert_eq!(verdict(&outcome), "skip");
        }
    }

    #[test]
    fn a_bad_config_fails_the_step() {
        let host = FakeHost::new();
        let ctx = context(Some(5.0), None, None);
        for config in [
            json!({"limitFactor": 0.5}),
            json!({"recentDeploy": "soon"}),
            json!({"factor": 2}),
        ] {
            assert!(
                memory_leak_guard(&ctx.clone().with_config(config.clone()), &host).is_err(),
                "{config}"
            );
        }
    }

    #[test]
    fn it_logs_what_it_saw() {
        let host = FakeHost::new();
        memory_leak_guard(&context(Some(5.0), None, None), &host).expect("a decision");
        assert_eq!(host.logs().len(), 1);
    }
}
