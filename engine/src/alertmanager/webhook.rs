//! The JSON body Alertmanager's `webhook_configs` receiver POSTs (payload version "4").
//!
//! Unknown fields are ignored: Alertmanager adds fields over versions, and the version number
//! is what says the shape changed. Fields Salve does not need default when absent, and a
//! `null` where a map, list or string belongs (Go marshals a nil map or slice as `null`) reads
//! as empty.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use super::{Error, Result};

/// The only payload version Salve reads; Alertmanager has sent it since its webhook took its
/// current shape.
pub const VERSION: &str = "4";

/// Whether an alert (or, for a whole notification, any of its alerts) is firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Active. (Ordered before `Resolved`: for one occurrence, resolved is the later state.)
    Firing,
    /// No longer active since its `endsAt`.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`, as in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One notification: a group of alerts that share a route and its `group_by` labels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// The payload format version; always [`VERSION`] once parsed.
    pub version: String,
    /// Identifies the group of alerts (the route and its grouping labels).
    #[serde(default, deserialize_with = "nullable")]
    pub group_key: String,
    /// How many alerts the receiver's `max_alerts` left out of `alerts`.
    #[serde(default, deserialize_with = "nullable")]
    pub truncated_alerts: u64,
    /// `firing` when at least one alert fires, else `resolved`.
    pub status: Status,
    /// The name of the receiver in Alertmanager's configuration.
    #[serde(default, deserialize_with = "nullable")]
    pub receiver: String,
    /// The labels the group is keyed by.
    #[serde(default, deserialize_with = "nullable")]
    pub group_labels: BTreeMap<String, String>,
    /// The labels every alert of the group has.
    #[serde(default, deserialize_with = "nullable")]
    pub common_labels: BTreeMap<String, String>,
    /// The annotations every alert of the group has.
    #[serde(default, deserialize_with = "nullable")]
    pub common_annotations: BTreeMap<String, String>,
    /// Where the sending Alertmanager is reachable.
    #[serde(default, rename = "externalURL", deserialize_with = "nullable")]
    pub external_url: String,
    /// The alerts.
    #[serde(deserialize_with = "nullable")]
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Whether it fires.
    pub status: Status,
    /// Its labels (`alertname` among them); they identify it.
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Its annotations (summary, description, runbook, ...).
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    /// When it started firing.
    #[serde(deserialize_with = "timestamp")]
    pub starts_at: DateTime<Utc>,
    /// When it stopped firing: set on resolved alerts. Alertmanager sends Go's zero time
    /// (`0001-01-01T00:00:00Z`) for a firing alert, whatever `endsAt` it holds itself; that,
    /// like an absent field, reads as `None`.
    #[serde(default, deserialize_with = "optional_timestamp")]
    pub ends_at: Option<DateTime<Utc>>,
    /// The page of the rule that produced it, if any.
    #[serde(default, rename = "generatorURL", deserialize_with = "nullable")]
    pub generator_url: String,
    /// Alertmanager's hash of its labels (16 hex digits).
    #[serde(default, deserialize_with = "nullable")]
    pub fingerprint: String,
}

/// Just the version, read first so a payload of another version is reported as such rather
/// than as whatever field it lacks.
#[derive(Deserialize)]
struct Versioned {
    #[serde(default)]
    version: Option<String>,
}

impl Webhook {
    /// Parses a request body: JSON of this shape, with version [`VERSION`].
    pub fn parse(body: &[u8]) -> Result<Self> {
        let versioned: Versioned =
            serde_json::from_slice(body).map_err(|source| Error::Payload { source })?;
        if let Some(version) = versioned.version
            && version != VERSION
        {
            return Err(Error::Version { version });
        }
        serde_json::from_slice(body).map_err(|source| Error::Payload { source })
    }
}

/// A value that may also be `null`, which reads as the type's default.
fn nullable<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An RFC 3339 time, as Go writes it (with up to nine fractional digits).
fn timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_time(&text).map_err(serde::de::Error::custom)
}

/// An RFC 3339 time where Go's zero time, `null` and an empty string mean "none".
fn optional_timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => {
            let time = parse_time(&text).map_err(serde::de::Error::custom)?;
            Ok((time != go_zero_time()).then_some(time))
        }
    }
}

fn parse_time(text: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| format!("`{text}` is not an RFC 3339 time ({e})"))
}

/// Go's `time.Time{}`: what Alertmanager writes for "no time".
fn go_zero_time() -> DateTime<Utc> {
    // 0001-01-01T00:00:00Z is 62,135,596,800 seconds before the Unix epoch.
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification captured from the real Alertmanager 0.25 (Debian's
    /// `prometheus-alertmanager`) for an alert posted to it without `endsAt`.
    const FIRING: &str = include_str!("testdata/firing.json");
    /// The same alert's resolved notification, after it was posted again with `endsAt` = now.
    const RESOLVED: &str = include_str!("testdata/resolved.json");

    fn time(text: &str) -> DateTime<Utc> {
        parse_time(text).expect("a valid time")
    }

    #[test]
    fn a_real_firing_notification_parses_with_no_end() {
        let webhook = Webhook::parse(FIRING.as_bytes()).expect("parses");
        assert_eq!(webhook.version, "4");
        assert_eq!(webhook.status, Status::Firing);
        assert_eq!(webhook.receiver, "salve");
        assert_eq!(webhook.truncated_alerts, 0);
        assert_eq!(webhook.external_url, "http://vm:18993");
        assert_eq!(webhook.common_labels["severity"], "critical");
        assert_eq!(webhook.alerts.len(), 1);
        let alert = &webhook.alerts[0];
        assert_eq!(alert.status, Status::Firing);
        assert_eq!(alert.labels["alertname"], "KubePodCrashLooping");
        assert_eq!(alert.annotations["summary"], "crash");
        assert_eq!(alert.starts_at, time("2026-11-25T20:23:07.046034161Z"));
        assert_eq!(alert.ends_at, None, "Go's zero time means no end");
        assert_eq!(alert.generator_url, "http://prom/graph");
        assert_eq!(alert.fingerprint, "2a6792fa6fd9c402");
    }

    #[test]
    fn a_real_resolved_notification_parses_with_its_end() {
        let webhook = Webhook::parse(RESOLVED.as_bytes()).expect("parses");
        assert_eq!(webhook.status, Status::Resolved);
        let alert = &webhook.alerts[0];
        assert_eq!(alert.status, Status::Resolved);
        assert_eq!(alert.ends_at, Some(time("2026-11-25T20:23:09.053Z")));
    }

    #[test]
    fn unknown_fields_nulls_and_missing_optional_fields_are_tolerated() {
        let body = r#"{"version":"4","status":"firing","receiver":null,"groupLabels":null,
            "someFutureField":{"x":[1,2]},
            "alerts":[{"status":"firing","labels":{"alertname":"A"},"annotations":null,
                       "startsAt":"2024-01-01T00:00:00+02:00","silencedBy":[]}]}"#;
        let webhook = Webhook::parse(body.as_bytes()).expect("parses");
        assert_eq!(webhook.receiver, "");
        assert!(webhook.group_labels.is_empty());
        let alert = &webhook.alerts[0];
        assert_eq!(alert.starts_at, time("2023-12-31T22:00:00Z"));
        assert_eq!(alert.ends_at, None);
        assert_eq!(alert.fingerprint, "");
    }

    #[test]
    fn another_version_is_refused_before_its_shape_is_checked() {
        let error = Webhook::parse(br#"{"version":"5","messages":[]}"#).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "unsupported webhook payload version \"5\": Salve reads version \"4\", the format of \
             Alertmanager's webhook_configs"
        );
    }

    #[test]
    fn every_truncation_and_byte_flip_of_a_real_payload_is_refused_or_parsed_without_panic() {
        let whole = FIRING.trim_end().as_bytes();
        for end in 0..whole.len() {
            assert!(Webhook::parse(&whole[..end]).is_err(), "{end}");
        }
        for at in 0..whole.len() {
            for byte in [b'"', b'{', b'}', b'0', 0xff] {
                let mut flipped = whole.to_vec();
                flipped[at] = byte;
                let _ = Webhook::parse(&flipped);
            }
        }
    }

    #[rstest::rstest]
    #[case::not_json("alerts", "expected value at line 1 column 1")]
    #[case::no_version(
        r#"{"status":"firing","alerts":[]}"#,
        "missing field `version` at line 1 column 31"
    )]
    #[case::version_a_number(
        r#"{"version":4,"status":"firing","alerts":[]}"#,
        "invalid type: integer `4`, expected a string at line 1 column 12"
    )]
    #[case::bad_status(
        r#"{"version":"4","status":"pending","alerts":[]}"#,
        "unknown variant `pending`, expected `firing` or `resolved` at line 1 column 33"
    )]
    #[case::no_alerts(r#"{"version":"4","status":"firing"}"#, "missing field `alerts`")]
    #[case::bad_time(
        r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"yesterday"}]}"#,
        "`yesterday` is not an RFC 3339 time"
    )]
    #[case::label_not_a_string(
        r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":1},"startsAt":"2024-01-01T00:00:00Z"}]}"#,
        "invalid type: integer `1`, expected a string at line 1 column 77"
    )]
    #[case::truncated("{\"version\":\"4\",\"status\":\"fir", "EOF while parsing a string")]
    fn a_bad_payload_says_what_is_wrong_and_where(#[case] body: &str, #[case] expected: &str) {
        let error = Webhook::parse(body.as_bytes()).expect_err("refused");
        let Error::Payload { source } = &error else {
            panic!("not a payload error: {error:?}");
        };
        assert!(source.to_string().contains(expected), "{source}");
        assert_eq!(
            error.to_string(),
            "the body is not an Alertmanager webhook payload"
        );
    }
}
