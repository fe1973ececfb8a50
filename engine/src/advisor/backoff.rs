//! How long to wait before trying a call again: exponential backoff with jitter, or what the
//! endpoint asked for in `Retry-After`.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff with "equal jitter": the wait before retry `n` (from 0) is half of
/// `base * 2^n` (capped at `max`) plus a random part of the other half, so waits grow, never
/// collapse to zero, and many clients retrying at once spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait's ceiling.
    pub base: Duration,
    /// No wait is longer.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
        }
    }
}

impl Backoff {
    /// The wait before retry `retry` (0 for the first), with `jitter` in `[0, 1]` choosing
    /// where in the upper half it falls.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let ceiling = self
            .base
            .checked_mul(2u32.saturating_pow(retry))
            .unwrap_or(self.max)
            .min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A random fraction in `[0, 1)` for [`Backoff::delay`] (from the standard library's randomly
/// seeded hasher: jitter needs spread, not cryptographic quality).
pub fn jitter() -> f64 {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (random >> 11) as f64 / (1u64 << 53) as f64
}

/// A `Retry-After` header given in seconds (`Retry-After: 2`). The HTTP-date form, and
/// anything unreadable, gives `None` (the backoff applies instead).
pub fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_within_their_jitter_band() {
        let backoff = Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(4),
        };
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(backoff.delay(0, 0.0)), 250);
        assert_eq!(ms(backoff.delay(0, 1.0)), 500);
        assert_eq!(ms(backoff.delay(1, 0.0)), 500);
        assert_eq!(ms(backoff.delay(1, 0.5)), 750);
        assert_eq!(ms(backoff.delay(2, 1.0)), 2000);
        assert_eq!(ms(backoff.delay(3, 1.0)), 4000);
        assert_eq!(ms(backoff.delay(10, 1.0)), 4000, "capped");
        assert_eq!(ms(backoff.delay(u32::MAX, 0.0)), 2000, "no overflow");
        assert_eq!(ms(backoff.delay(0, 7.0)), 500, "jitter is clamped");
    }

    #[test]
    fn jitter_is_a_fraction_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)), "{draws:?}");
        assert!(draws.iter().any(|j| *j != draws[0]), "{draws:?}");
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        assert_eq!(retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after("-1"), None);
        assert_eq!(retry_after("1.5"), None);
    }
}
