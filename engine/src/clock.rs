//! Time as the engine sees it: the wall clock, or — for `salve demo` — a clock that runs a
//! chosen number of times faster, so a remediation whose `for`, `verify` and cooldown add up to
//! half an hour plays out in a minute, with every decision still taken at its own time.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

/// A clock: the wall clock, or a scaled one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    scaled: Option<Scaled>,
}

#[derive(Debug, Clone, Copy)]
struct Scaled {
    /// The wall instant at which the clock read `start`.
    origin: Instant,
    start: DateTime<Utc>,
    speed: f64,
}

impl Clock {
    /// The wall clock.
    pub fn wall() -> Self {
        Clock::default()
    }

    /// A clock that reads `start` now and runs `speed` times faster than the wall clock
    /// (a `speed` that is not a positive finite number is taken as 1).
    pub fn scaled(start: DateTime<Utc>, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Clock {
            scaled: Some(Scaled {
                origin: Instant::now(),
                start,
                speed,
            }),
        }
    }

    /// A clock that reads `at` whenever it is asked (`salve test`: a WASM step's `now`, its
    /// queries and its target's revision age at the test's time). Waiting on it never ends.
    pub fn stopped(at: DateTime<Utc>) -> Self {
        Clock {
            scaled: Some(Scaled {
                origin: Instant::now(),
                start: at,
                speed: 0.0,
            }),
        }
    }

    /// How many times faster than the wall clock it runs.
    pub fn speed(&self) -> f64 {
        self.scaled.map_or(1.0, |s| s.speed)
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        match self.scaled {
            None => Utc::now(),
            Some(scaled) => {
                let elapsed = scaled.origin.elapsed().mul_f64(scaled.speed);
                TimeDelta::from_std(elapsed)
                    .ok()
                    .and_then(|elapsed| scaled.start.checked_add_signed(elapsed))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
        }
    }

    /// How long `duration` of this clock's time takes on the wall clock.
    pub fn wall_time(&self, duration: Duration) -> Duration {
        match self.scaled {
            None => duration,
            Some(scaled) => Duration::try_from_secs_f64(duration.as_secs_f64() / scaled.speed)
                .unwrap_or(Duration::MAX),
        }
    }

    /// Sleeps for `duration` of this clock's time.
    pub async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(self.wall_time(duration)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_clock_always_reads_its_time() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let clock = Clock::stopped(at);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), at);
        assert_eq!(clock.wall_time(Duration::from_secs(1)), Duration::MAX);
    }

    #[test]
    fn a_scaled_clock_runs_faster_from_its_start() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let clock = Clock::scaled(start, 60.0);
        assert!(clock.now() >= start);
        assert_eq!(
            clock.wall_time(Duration::from_secs(120)),
            Duration::from_secs(2)
        );
        assert_eq!(Clock::scaled(start, f64::NAN).speed(), 1.0);
        assert_eq!(
            Clock::wall().wall_time(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}
