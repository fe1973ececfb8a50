//! Durations in a step's config, written as in a playbook: `90s`, `30m`, `1h30m`, `500ms`,
//! `1d`, or a number of seconds.
//!
//! ```
//! use std::time::Duration;
//!
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     #[serde(deserialize_with = "salve_step::duration::deserialize")]
//!     recent: Duration,
//! }
//!
//! let config: Config = serde_json::from_str(r#"{"recent": "1h30m"}"#).unwrap();
//! assert_eq!(config.recent, Duration::from_secs(5400));
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Parses `1h30m`, `90s`, `500ms`, `2d` (units `ms`, `s`, `m`, `h`, `d`, `w`, each at most once,
/// largest first is not required).
pub fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration (like `90s`, `30m`, `1h30m`)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(invalid()),
        };
        let millis = number.checked_mul(millis_per_unit).ok_or_else(invalid)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Deserializes a duration from a string ([`parse`]) or a number of seconds; for
/// `#[serde(deserialize_with = "salve_step::duration::deserialize")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    use serde::de::Error;
    match Value::deserialize(deserializer)? {
        Value::String(text) => parse(&text).map_err(D::Error::custom),
        Value::Number(seconds) => seconds
            .as_f64()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| D::Error::custom(format!("{seconds} is not a number of seconds"))),
        other => Err(D::Error::custom(format!(
            "expected a duration like `30m`, found `{other}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_playbook_durations() {
        let secs = Duration::from_secs;
        assert_eq!(parse("90s"), Ok(secs(90)));
        assert_eq!(parse("1h30m"), Ok(secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1d"), Ok(secs(86_400)));
        for bad in ["", "1", "h", "1x", "-1s", "1.5h", "99999999999999999999w"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserializes_strings_and_seconds() {
        #[derive(Debug, Deserialize)]
        struct Config {
            #[serde(deserialize_with = "deserialize")]
            d: Duration,
        }
        let read = |json: &str| serde_json::from_str::<Config>(json).map(|c| c.d);
        assert_eq!(read(r#"{"d": "2m"}"#).ok(), Some(Duration::from_secs(120)));
        assert_eq!(
            read(r#"{"d": 1.5}"#).ok(),
            Some(Duration::from_millis(1500))
        );
        assert!(read(r#"{"d": -1}"#).is_err());
        assert!(read(r#"{"d": true}"#).is_err());
    }
}
