//! The advisor's circuit breaker: after `failures` consecutive failed calls it opens and every
//! call is refused locally for `reset`; then it half-opens and lets one trial call through; the
//! trial's success closes it, its failure opens it again. Pure: every method takes the time.
//!
//! What counts as a failure is the client's call: a timeout, a connection error, a 5xx or 429
//! that outlasted the retries, a malformed answer. An answer the endpoint gave on purpose (a
//! 400, a 401) proves it is up and counts as a success here.

use std::time::{Duration, Instant};

use super::config::BreakerSettings;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through; this many have failed in a row.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Calls are refused until `until`.
    Open {
        /// When it half-opens.
        until: Instant,
        /// The consecutive failures that opened it.
        failures: u32,
    },
    /// One trial call may go through.
    HalfOpen {
        /// Whether the trial is under way (further calls are refused meanwhile).
        trial: bool,
    },
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The breaker is open.
    Open {
        /// When it half-opens.
        until: Instant,
        /// The consecutive failures that opened it.
        failures: u32,
    },
    /// It is half-open and its one trial call is under way.
    TrialUnderWay,
}

/// The circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    reset: Duration,
    state: State,
}

impl Breaker {
    /// A closed breaker that opens after `settings.failures` consecutive failures (at least
    /// one) for `settings.reset`.
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            threshold: settings.failures.max(1),
            reset: settings.reset,
            state: State::Closed { failures: 0 },
        }
    }

    /// Where it stands at `now` (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Instant) -> State {
        match self.state {
            State::Open { until, .. } if now >= until => State::HalfOpen { trial: false },
            state => state,
        }
    }

    /// Lets a call through at `now`, or refuses it. A call let through must end in
    /// [`Breaker::succeeded`], [`Breaker::failed`] or [`Breaker::abandoned`].
    pub fn allow(&mut self, now: Instant) -> Result<(), Refusal> {
        match self.state(now) {
            State::Closed { .. } => Ok(()),
            State::Open { until, failures } => Err(Refusal::Open { until, failures }),
            State::HalfOpen { trial: true } => Err(Refusal::TrialUnderWay),
            State::HalfOpen { trial: false } => {
                self.state = State::HalfOpen { trial: true };
                Ok(())
            }
        }
    }

    /// A call succeeded: the breaker closes.
    pub fn succeeded(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// A call failed at `now`: a failed trial, or the threshold reached, opens the breaker.
    pub fn failed(&mut self, now: Instant) {
        let failures = match self.state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen { .. } => self.threshold,
            // A call let through before the breaker opened, ending now: it stays open.
            State::Open { .. } => return,
        };
        self.state = if failures >= self.threshold {
            State::Open {
                until: now + self.reset,
                failures,
            }
        } else {
            State::Closed { failures }
        };
    }

    /// A call ended without telling anything about the endpoint (it was cancelled): a
    /// half-open breaker's trial slot is freed for the next call.
    pub fn abandoned(&mut self) {
        if self.state == (State::HalfOpen { trial: true }) {
            self.state = State::HalfOpen { trial: false };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, reset_secs: u64) -> Breaker {
        Breaker::new(BreakerSettings {
            failures,
            reset: Duration::from_secs(reset_secs),
        })
    }

    #[test]
    fn it_opens_after_consecutive_failures_only() {
        let now = Instant::now();
        let mut b = breaker(3, 300);
        for _ in 0..2 {
            b.allow(now).expect("closed");
            b.failed(now);
        }
        b.allow(now).expect("closed");
        b.succeeded();
        assert_eq!(
            b.state(now),
            State::Closed { failures: 0 },
            "a success resets the count"
        );
        for _ in 0..3 {
            b.allow(now).expect("closed");
            b.failed(now);
        }
        let until = now + Duration::from_secs(300);
        assert_eq!(b.state(now), State::Open { until, failures: 3 });
        assert_eq!(
            b.allow(now + Duration::from_secs(299)),
            Err(Refusal::Open { until, failures: 3 })
        );
    }

    #[test]
    fn half_open_lets_one_trial_through_and_its_outcome_decides() {
        let now = Instant::now();
        let mut b = breaker(1, 60);
        b.allow(now).expect("closed");
        b.failed(now);
        let later = now + Duration::from_secs(60);
        assert_eq!(b.state(later), State::HalfOpen { trial: false });
        b.allow(later).expect("the trial");
        assert_eq!(b.allow(later), Err(Refusal::TrialUnderWay));
        // The trial fails: open for another `reset`.
        b.failed(later);
        let until = later + Duration::from_secs(60);
        assert_eq!(b.allow(later), Err(Refusal::Open { until, failures: 1 }));
        // The next trial succeeds: closed.
        b.allow(until).expect("the second trial");
        b.succeeded();
        assert_eq!(b.state(until), State::Closed { failures: 0 });
        b.allow(until).expect("closed");
    }

    #[test]
    fn an_abandoned_trial_frees_the_slot() {
        let now = Instant::now();
        let mut b = breaker(1, 1);
        b.allow(now).expect("closed");
        b.failed(now);
        let later = now + Duration::from_secs(1);
        b.allow(later).expect("the trial");
        b.abandoned();
        b.allow(later).expect("another trial");
        // Abandoning a call while closed changes nothing.
        b.succeeded();
        b.abandoned();
        assert_eq!(b.state(later), State::Closed { failures: 0 });
    }

    #[test]
    fn a_late_failure_does_not_extend_an_open_breaker() {
        let now = Instant::now();
        let mut b = breaker(1, 10);
        b.allow(now).expect("closed");
        b.allow(now).expect("closed");
        b.failed(now);
        b.failed(now + Duration::from_secs(5));
        let until = now + Duration::from_secs(10);
        assert_eq!(b.state(now), State::Open { until, failures: 1 });
    }
}
