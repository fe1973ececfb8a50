//! promtool's expanding notation for test series: `1e9+5e4x240`, `0 1 _ 3 stale`, `5x10`.
//!
//! - `a+bxn` is `a a+b a+2b ... a+nb` (n+1 samples); `a-bxn` counts down.
//! - `axn` is `a` repeated n+1 times.
//! - `_` is a missing sample, `_xn` is n missing samples.
//! - `stale` is a staleness marker.

use std::fmt;

/// One sample slot of a test series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// A value.
    Value(f64),
    /// No sample at this step.
    Missing,
    /// A staleness marker: the series ends here.
    Stale,
}

/// Why a series does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{token}` is not a sample: {reason}")]
pub struct Error {
    /// The offending token.
    pub token: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The most samples one series may expand to, so a typo like `1x1e9` cannot exhaust memory.
pub const MAX_SAMPLES: usize = 100_000;

/// Expands `text` into samples.
pub fn parse(text: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for token in text.split_whitespace() {
        expand(token, &mut samples)?;
        if samples.len() > MAX_SAMPLES {
            return Err(Error {
                token: token.to_string(),
                reason: "the series expands to more than 100000 samples",
            });
        }
    }
    if samples.is_empty() {
        return Err(Error {
            token: text.to_string(),
            reason: "a series needs at least one sample",
        });
    }
    Ok(samples)
}

fn expand(token: &str, out: &mut Vec<Sample>) -> Result<()> {
    let bad = |reason| Error {
        token: token.to_string(),
        reason,
    };
    match token {
        "_" => {
            out.push(Sample::Missing);
            return Ok(());
        }
        "stale" => {
            out.push(Sample::Stale);
            return Ok(());
        }
        _ => {}
    }
    let Some((head, count)) = token.rsplit_once('x') else {
        out.push(Sample::Value(
            number(token).ok_or(bad("expected a number, `_` or `stale`"))?,
        ));
        return Ok(());
    };
    let count: usize = count
        .parse()
        .map_err(|_| bad("expected a whole number of steps after `x`"))?;
    if count > MAX_SAMPLES {
        return Err(bad("the series expands to more than 100000 samples"));
    }
    if head == "_" {
        out.extend(std::iter::repeat_n(Sample::Missing, count));
        return Ok(());
    }
    let (start, step) = split_increment(head).ok_or(bad(
        "expected `a+bxn`, `a-bxn` or `axn` with numbers a and b",
    ))?;
    out.extend((0..=count).map(|i| Sample::Value(start + step * i as f64)));
    Ok(())
}

/// `a+b` or `a-b` (either may use exponents, `1e+9-5e-1`), or just `a` with a step of 0.
fn split_increment(head: &str) -> Option<(f64, f64)> {
    let bytes = head.as_bytes();
    let split = (1..bytes.len())
        .rev()
        .find(|&i| matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    match split {
        None => Some((number(head)?, 0.0)),
        Some(i) => {
            let start = number(&head[..i])?;
            let step = number(&head[i + 1..])?;
            Some((start, if bytes[i] == b'-' { -step } else { step }))
        }
    }
}

fn number(text: &str) -> Option<f64> {
    match text {
        "Inf" | "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            None
        }
        _ => text.parse().ok(),
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sample::Value(v) => write!(f, "{v}"),
            Sample::Missing => f.write_str("_"),
            Sample::Stale => f.write_str("stale"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn values(text: &str) -> Vec<String> {
        parse(text)
            .expect("parses")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[rstest]
    #[case("1+2x3", &["1", "3", "5", "7"])]
    #[case("1-2x4", &["1", "-1", "-3", "-5", "-7"])]
    #[case("5x2", &["5", "5", "5"])]
    #[case("0 1 _ 3 stale", &["0", "1", "_", "3", "stale"])]
    #[case("_x3 1", &["_", "_", "_", "1"])]
    #[case("1e+3+1e-1x1", &["1000", "1000.1"])]
    fn expands_like_promtool(#[case] text: &str, #[case] expected: &[&str]) {
        assert_eq!(values(text), expected);
    }

    #[test]
    fn the_leak_example_has_241_samples_rising_by_5e4() {
        let samples = parse("1e9+5e4x240").expect("parses");
        assert_eq!(samples.len(), 241);
        assert_eq!(samples[240], Sample::Value(1e9 + 5e4 * 240.0));
    }

    #[rstest]
    #[case("abc")]
    #[case("1+2xy")]
    #[case("1+zx3")]
    #[case("")]
    #[case("1x999999999")]
    fn rejects_what_promtool_rejects(#[case] text: &str) {
        assert!(parse(text).is_err(), "{text}");
    }
}
