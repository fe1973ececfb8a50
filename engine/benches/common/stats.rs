//! Timing statistics shared by the benches: nearest-rank percentiles and a Markdown row.

use std::fmt::Write as _;
use std::time::Duration;

/// Timed samples, sorted.
pub(crate) struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    /// Sorts `samples`; there must be at least one.
    pub(crate) fn new(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        Stats { samples }
    }

    /// Nearest-rank percentile.
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let n = self.samples.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.samples[rank.clamp(1, n) - 1]
    }

    /// The arithmetic mean.
    pub(crate) fn mean(&self) -> Duration {
        self.samples.iter().sum::<Duration>() / u32::try_from(self.samples.len()).unwrap_or(1)
    }

    /// A Markdown row `| name | n | min | p50 | p99 | mean | max |`, in µs when the median is
    /// under a millisecond, else in ms.
    pub(crate) fn row(&self, name: &str) -> String {
        let micros = self.percentile(50.0) < Duration::from_millis(1);
        let unit = |d: Duration| {
            if micros {
                format!("{:.1} µs", d.as_secs_f64() * 1e6)
            } else {
                format!("{:.2} ms", d.as_secs_f64() * 1e3)
            }
        };
        let mut row = String::new();
        write!(
            row,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            self.samples.len(),
            unit(self.samples[0]),
            unit(self.percentile(50.0)),
            unit(self.percentile(99.0)),
            unit(self.mean()),
            unit(self.samples[self.samples.len() - 1]),
        )
        .expect("writing to a String cannot fail");
        row
    }
}
