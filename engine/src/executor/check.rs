//! Waiting on PromQL: the `verify` check after a plan's steps and the `wait_for` action. Both
//! ask Prometheus at intervals whether an expression returns anything, until it does or the
//! time is up. A query that fails is not a "no": it is noted, and the wait goes on; when time
//! runs out the last reason is the one reported. No Prometheus at all means nothing can hold.

use std::time::Duration;

use crate::clock::Clock;
use crate::signal::evaluate::Evaluator;

/// How a wait ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Waited {
    /// The expression returned something after this long.
    Held(Duration),
    /// It did not within the time (why: empty result, or the last query error).
    TimedOut(String),
}

/// Waits until `promql` returns a non-empty result, asking every `interval`, for at most
/// `within`.
pub async fn until_holds(
    prometheus: Option<&Evaluator>,
    clock: &Clock,
    promql: &str,
    within: Duration,
    interval: Duration,
) -> Waited {
    let Some(prometheus) = prometheus else {
        return Waited::TimedOut("no Prometheus to ask".into());
    };
    let start = clock.now();
    let deadline = chrono::TimeDelta::from_std(within)
        .ok()
        .and_then(|within| start.checked_add_signed(within))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let interval = interval.max(Duration::from_millis(50));
    let elapsed = || (clock.now() - start).to_std().unwrap_or_default();
    loop {
        let reason = match prometheus.instant(promql, clock.now()).await {
            Ok(samples) if !samples.is_empty() => return Waited::Held(elapsed()),
            Ok(_) => format!("`{promql}` returned nothing"),
            Err(error) => error,
        };
        let now = clock.now();
        if now >= deadline {
            return Waited::TimedOut(format!(
                "not within {}: {reason}",
                crate::check::format_duration(within)
            ));
        }
        let left = (deadline - now).to_std().unwrap_or_default();
        clock.sleep(interval.min(left)).await;
    }
}
