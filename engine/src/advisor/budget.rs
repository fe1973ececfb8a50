//! The advisor's hourly budget of calls and tokens, over a rolling hour. Pure: every method
//! takes the time, so tests step through hours without waiting.
//!
//! A call is reserved before it is sent, with an estimate of its prompt's tokens, and settled
//! with what the endpoint reported once it answers; a call that gets no usage back keeps its
//! estimate. A call is refused when the hour already holds `calls_per_hour` calls, or when its
//! estimate would take the hour past `tokens_per_hour`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::BudgetLimits;

/// The window the budget counts over.
pub const WINDOW: Duration = Duration::from_secs(60 * 60);

/// Tokens estimated for `text` when the endpoint reports none: one per four bytes, rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Calls and tokens spent in the last hour.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: BudgetLimits,
    spent: VecDeque<Spend>,
    next_id: u64,
}

#[derive(Debug, Clone, Copy)]
struct Spend {
    id: u64,
    at: Instant,
    tokens: u64,
}

/// A call's place in the budget, to [`Budget::settle`] when it ends.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "settle the reservation with the tokens the call used"]
pub struct Reservation(u64);

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The hour holds its limit of calls.
    Calls {
        /// The limit.
        limit: u32,
        /// When the oldest call leaves the window.
        frees_in: Duration,
    },
    /// The call's estimate does not fit in what is left of the hour's tokens.
    Tokens {
        /// The limit.
        limit: u64,
        /// Tokens used in the last hour.
        used: u64,
        /// The call's estimate.
        needed: u64,
    },
}

impl Budget {
    /// An empty budget.
    pub fn new(limits: BudgetLimits) -> Self {
        Budget {
            limits,
            spent: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Calls and tokens spent in the hour before `now`.
    pub fn usage(&mut self, now: Instant) -> (u32, u64) {
        self.forget_before(now);
        let calls = u32::try_from(self.spent.len()).unwrap_or(u32::MAX);
        (calls, self.spent.iter().map(|s| s.tokens).sum())
    }

    /// Reserves a call at `now` estimated at `estimate` tokens, or says why it does not fit.
    pub fn reserve(&mut self, now: Instant, estimate: u64) -> Result<Reservation, Exhausted> {
        let (calls, used) = self.usage(now);
        if calls >= self.limits.calls_per_hour {
            let frees_in = self.spent.front().map_or(Duration::ZERO, |s| {
                (s.at + WINDOW).saturating_duration_since(now)
            });
            return Err(Exhausted::Calls {
                limit: self.limits.calls_per_hour,
                frees_in,
            });
        }
        if used.saturating_add(estimate) > self.limits.tokens_per_hour {
            return Err(Exhausted::Tokens {
                limit: self.limits.tokens_per_hour,
                used,
                needed: estimate,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.spent.push_back(Spend {
            id,
            at: now,
            tokens: estimate,
        });
        Ok(Reservation(id))
    }

    /// Records what a reserved call used (`None` keeps its estimate). A reservation that has
    /// left the window already is ignored.
    pub fn settle(&mut self, reservation: Reservation, tokens: Option<u64>) {
        if let (Some(tokens), Some(spend)) = (
            tokens,
            self.spent.iter_mut().find(|s| s.id == reservation.0),
        ) {
            spend.tokens = tokens;
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .spent
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) >= WINDOW)
        {
            self.spent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(calls: u32, tokens: u64) -> Budget {
        Budget::new(BudgetLimits {
            calls_per_hour: calls,
            tokens_per_hour: tokens,
        })
    }

    #[test]
    fn calls_are_counted_over_a_rolling_hour() {
        let start = Instant::now();
        let mut budget = budget(2, 1_000_000);
        let minutes = |m: u64| start + Duration::from_secs(m * 60);
        let a = budget.reserve(minutes(0), 10).expect("first");
        budget.settle(a, Some(10));
        let b = budget.reserve(minutes(20), 10).expect("second");
        budget.settle(b, None);
        assert_eq!(
            budget.reserve(minutes(59), 10),
            Err(Exhausted::Calls {
                limit: 2,
                frees_in: Duration::from_secs(60),
            })
        );
        // The first call leaves the window an hour after it was made.
        let c = budget.reserve(minutes(60), 10).expect("third, an hour on");
        budget.settle(c, None);
        assert_eq!(budget.usage(minutes(60)), (2, 20));
        assert_eq!(budget.usage(minutes(200)), (0, 0));
    }

    #[test]
    fn tokens_count_what_the_endpoint_reported_else_the_estimate() {
        let now = Instant::now();
        let mut budget = budget(100, 1000);
        let a = budget.reserve(now, 100).expect("fits");
        budget.settle(a, Some(700));
        let b = budget.reserve(now, 100).expect("fits");
        budget.settle(b, None);
        assert_eq!(budget.usage(now), (2, 800));
        assert_eq!(
            budget.reserve(now, 201),
            Err(Exhausted::Tokens {
                limit: 1000,
                used: 800,
                needed: 201,
            })
        );
        assert!(budget.reserve(now, 200).is_ok(), "exactly the rest fits");
        // A prompt larger than the whole budget never fits.
        assert!(matches!(
            budget.reserve(now + WINDOW * 2, 1001),
            Err(Exhausted::Tokens { used: 0, .. })
        ));
    }

    #[test]
    fn settling_a_forgotten_reservation_is_harmless() {
        let now = Instant::now();
        let mut budget = budget(1, 1000);
        let old = budget.reserve(now, 10).expect("fits");
        let later = now + WINDOW;
        let new = budget
            .reserve(later, 10)
            .expect("the old call left the window");
        budget.settle(old, Some(999));
        budget.settle(new, Some(20));
        assert_eq!(budget.usage(later), (1, 20));
    }

    #[test]
    fn estimates_are_a_quarter_of_the_text_rounded_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcdefgh"), 2);
        assert_eq!(estimate_tokens(&"x".repeat(4001)), 1001);
    }
}
