//! Scenarios: series laid out in time, written as the OpenMetrics text promtool backfills.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use promql_parser::label::{METRIC_NAME, MatchOp};
use promql_parser::parser::Expr;

use super::{Error, Result};
use crate::check::parse_promql;
use crate::playbook::PlaybookTest;
use crate::series::{self, Sample};

/// Series to backfill into a Prometheus: each a metric name with labels and its samples, either
/// one per interval from a common start or at explicit times.
///
/// The start is a unix time in whole seconds. By default it is chosen when the scenario is laid
/// out ([`Scenario::start`]): the longest series then ends at most one interval before "now",
/// on a multiple of the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Seconds between samples.
    interval: i64,
    /// Unix seconds of the first step, if pinned.
    start: Option<i64>,
    /// In the order they were added.
    series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq)]
struct Series {
    name: String,
    /// Without empty values: Prometheus treats `a=""` as no label `a`.
    labels: BTreeMap<String, String>,
    points: Points,
}

#[derive(Debug, Clone, PartialEq)]
enum Points {
    /// One slot per interval from the scenario's start.
    Steps(Vec<Sample>),
    /// Unix seconds and values.
    Raw(Vec<(i64, f64)>),
}

/// A scenario laid out from a start: the OpenMetrics text and the time of its last sample.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Layout {
    /// The OpenMetrics text, ending in `# EOF`.
    pub(super) text: String,
    /// Unix seconds of the latest sample of any series, if there is a sample at all.
    pub(super) last: Option<i64>,
}

impl Scenario {
    /// An empty scenario whose step series have one sample every `interval` (whole seconds).
    pub fn new(interval: Duration) -> Result<Self> {
        if interval.is_zero() || interval.subsec_nanos() != 0 {
            return Err(Error::Interval { interval });
        }
        let interval =
            i64::try_from(interval.as_secs()).map_err(|_| Error::Interval { interval })?;
        Ok(Self {
            interval,
            start: None,
            series: Vec::new(),
        })
    }

    /// The series of a playbook's trigger test, at its interval.
    pub fn from_test(test: &PlaybookTest) -> Result<Self> {
        test.series.iter().try_fold(
            Self::new(test.interval)?,
            |scenario, (selector, samples)| scenario.samples(selector, samples.clone()),
        )
    }

    /// Pins the first step at `unix_seconds` instead of ending the data "now".
    pub fn start_at(mut self, unix_seconds: i64) -> Self {
        self.start = Some(unix_seconds);
        self
    }

    /// Adds a series in promtool's notation: `up{job="api"}` with `1x10`, `0+60x30`, `1 _ stale`.
    pub fn series(self, selector: &str, notation: &str) -> Result<Self> {
        let samples = series::parse(notation).map_err(|source| Error::Notation {
            selector: selector.to_string(),
            source,
        })?;
        self.samples(selector, samples)
    }

    /// Adds a series with one sample slot per interval, from the start.
    pub fn samples(mut self, selector: &str, samples: impl Into<Vec<Sample>>) -> Result<Self> {
        let (name, labels) = parse_selector(selector)?;
        self.series.push(Series {
            name,
            labels,
            points: Points::Steps(samples.into()),
        });
        Ok(self)
    }

    /// Adds samples at explicit times (unix seconds), in any order, to a series.
    pub fn raw(
        mut self,
        selector: &str,
        points: impl IntoIterator<Item = (i64, f64)>,
    ) -> Result<Self> {
        let (name, labels) = parse_selector(selector)?;
        self.series.push(Series {
            name,
            labels,
            points: Points::Raw(points.into_iter().collect()),
        });
        Ok(self)
    }

    /// The spacing of step samples.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval.unsigned_abs())
    }

    /// How many sample slots the longest step series has.
    pub fn steps(&self) -> usize {
        self.series
            .iter()
            .map(|s| match &s.points {
                Points::Steps(samples) => samples.len(),
                Points::Raw(_) => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// Unix seconds of the first step: the pinned start, or else the latest multiple of the
    /// interval that lets the longest step series end no later than `now`.
    pub fn start(&self, now: SystemTime) -> i64 {
        if let Some(start) = self.start {
            return start;
        }
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let span = i64::try_from(self.steps().saturating_sub(1))
            .unwrap_or(i64::MAX)
            .saturating_mul(self.interval);
        now.saturating_sub(span).div_euclid(self.interval) * self.interval
    }

    /// The scenario as OpenMetrics text with its first step at `start`, the way promtool wants
    /// it: one `# TYPE` per metric family, families together, each series' samples together and
    /// in time order, times in seconds, and `# EOF` at the end. Missing and stale samples are
    /// not written.
    pub fn to_openmetrics(&self, start: i64) -> Result<String> {
        self.layout(start).map(|layout| layout.text)
    }

    /// The scenario's series with their first step at `start`, grouped by metric name, each
    /// with its samples in time order (unix seconds). Missing and stale samples are left out.
    pub fn place(&self, start: i64) -> Result<Vec<PlacedSeries>> {
        type Values = BTreeMap<i64, f64>;
        let mut families: BTreeMap<&str, BTreeMap<&BTreeMap<String, String>, Values>> =
            BTreeMap::new();
        for series in &self.series {
            let points = families
                .entry(&series.name)
                .or_default()
                .entry(&series.labels)
                .or_default();
            let mut put = |timestamp: i64, value: f64| match points.insert(timestamp, value) {
                None => Ok(()),
                Some(_) => Err(Error::DuplicateSample {
                    series: selector_text(&series.name, &series.labels),
                    timestamp,
                }),
            };
            match &series.points {
                Points::Steps(samples) => {
                    let mut timestamp = start;
                    for sample in samples {
                        if let Sample::Value(value) = sample {
                            put(timestamp, *value)?;
                        }
                        timestamp = timestamp.saturating_add(self.interval);
                    }
                }
                Points::Raw(raw) => {
                    for &(timestamp, value) in raw {
                        put(timestamp, value)?;
                    }
                }
            }
        }
        Ok(families
            .into_iter()
            .flat_map(|(name, series)| {
                series
                    .into_iter()
                    .filter(|(_, points)| !points.is_empty())
                    .map(move |(labels, points)| PlacedSeries {
                        name: name.to_string(),
                        labels: labels.clone(),
                        points: points.into_iter().collect(),
                    })
            })
            .collect())
    }

    /// [`to_openmetrics`](Self::to_openmetrics), with the time of the last sample.
    pub(super) fn layout(&self, start: i64) -> Result<Layout> {
        let placed = self.place(start)?;
        let mut text = String::new();
        let mut last = None;
        let mut family = None;
        for series in &placed {
            // `unknown`: a scenario does not say what its metrics are, and backfilling keeps no
            // metadata anyway. Unlike `counter`, it puts no demands on the sample names.
            if family != Some(&series.name) {
                let _ = writeln!(text, "# TYPE {} unknown", series.name);
                family = Some(&series.name);
            }
            let selector = selector_text(&series.name, &series.labels);
            for &(timestamp, value) in &series.points {
                let _ = writeln!(text, "{selector} {} {timestamp}", number(value));
                last = last.max(Some(timestamp));
            }
        }
        text.push_str("# EOF\n");
        Ok(Layout { text, last })
    }
}

/// One series of a scenario, placed in time.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedSeries {
    /// The metric name.
    pub name: String,
    /// The labels, without the name.
    pub labels: BTreeMap<String, String>,
    /// (unix seconds, value), in time order.
    pub points: Vec<(i64, f64)>,
}

/// `name{a="x",b="y"}`, or just `name`, with values escaped as OpenMetrics (and PromQL) want.
fn selector_text(name: &str, labels: &BTreeMap<String, String>) -> String {
    let mut text = name.to_string();
    if labels.is_empty() {
        return text;
    }
    text.push('{');
    for (i, (label, value)) in labels.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{label}=\"");
        for c in value.chars() {
            match c {
                '\\' => text.push_str(r"\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str(r"\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    text.push('}');
    text
}

/// A value as OpenMetrics spells it: `NaN`, `+Inf`, `-Inf`, or the shortest decimal that reads
/// back as the same `f64`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value == 0.0 || (1e-4..1e16).contains(&value.abs()) {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

/// The metric name and labels of a selector made of `=` matchers only.
fn parse_selector(selector: &str) -> Result<(String, BTreeMap<String, String>)> {
    let bad = |reason: String| Error::Selector {
        selector: selector.to_string(),
        reason,
    };
    let Expr::VectorSelector(vector) = parse_promql(selector).map_err(bad)? else {
        return Err(bad(
            "expected a series selector like `metric{label=\"value\"}`".into(),
        ));
    };
    if vector.offset.is_some() || vector.at.is_some() {
        return Err(bad("a series cannot have `offset` or `@`".into()));
    }
    if !vector.matchers.or_matchers.is_empty() {
        return Err(bad("a series cannot have `or` between matchers".into()));
    }
    let mut name = vector.name.clone();
    let mut labels = BTreeMap::new();
    for matcher in &vector.matchers.matchers {
        if !matches!(matcher.op, MatchOp::Equal) {
            return Err(bad(format!(
                "only `=` matchers name a series; `{matcher}` matches many"
            )));
        }
        if matcher.name == METRIC_NAME {
            if name.as_ref().is_some_and(|n| *n != matcher.value) {
                return Err(bad("it has two metric names".into()));
            }
            name = Some(matcher.value.clone());
        } else if !is_name(&matcher.name, false) {
            return Err(bad(format!(
                "`{}` is not a label name OpenMetrics accepts",
                matcher.name
            )));
        } else if labels
            .insert(matcher.name.clone(), matcher.value.clone())
            .is_some()
        {
            return Err(bad(format!("label `{}` is set twice", matcher.name)));
        }
    }
    let Some(name) = name else {
        return Err(bad("a series needs a metric name".into()));
    };
    if !is_name(&name, true) {
        return Err(bad(format!(
            "`{name}` is not a metric name OpenMetrics accepts"
        )));
    }
    labels.retain(|_, value: &mut String| !value.is_empty());
    Ok((name, labels))
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, with `:` too in metric names.
fn is_name(text: &str, metric: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (metric && c == ':')
            || (!first && c.is_ascii_digit())
    };
    let mut chars = text.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn minute() -> Scenario {
        Scenario::new(Duration::from_secs(60)).expect("a valid interval")
    }

    fn text(scenario: &Scenario, start: i64) -> String {
        scenario.to_openmetrics(start).expect("lays out")
    }

    #[test]
    fn writes_each_step_at_start_plus_interval_times_its_index() {
        let scenario = minute().series(r#"up{job="api"}"#, "1x2").expect("valid");
        assert_eq!(
            text(&scenario, 600),
            "# TYPE up unknown\n\
             up{job=\"api\"} 1 600\n\
             up{job=\"api\"} 1 660\n\
             up{job=\"api\"} 1 720\n\
             # EOF\n"
        );
    }

    #[test]
    fn groups_families_and_keeps_each_series_together_and_in_time_order() {
        let scenario = minute()
            .series(r#"b{x="2"}"#, "1 2")
            .and_then(|s| s.series("a", "7"))
            .and_then(|s| s.series(r#"b{x="1"}"#, "3"))
            .and_then(|s| s.raw(r#"b{x="2"}"#, [(30, 9.0), (-30, 8.0)]))
            .expect("valid");
        assert_eq!(
            text(&scenario, 0),
            "# TYPE a unknown\n\
             a 7 0\n\
             # TYPE b unknown\n\
             b{x=\"1\"} 3 0\n\
             b{x=\"2\"} 8 -30\n\
             b{x=\"2\"} 1 0\n\
             b{x=\"2\"} 9 30\n\
             b{x=\"2\"} 2 60\n\
             # EOF\n"
        );
    }

    #[test]
    fn escapes_label_values_and_sorts_labels() {
        let scenario = minute()
            .series(r#"m{z="plain", a="q\"uote \\ back\nline é"}"#, "1")
            .expect("valid");
        assert_eq!(
            text(&scenario, 0),
            "# TYPE m unknown\n\
             m{a=\"q\\\"uote \\\\ back\\nline é\",z=\"plain\"} 1 0\n\
             # EOF\n"
        );
    }

    #[test]
    fn spells_nan_and_infinities_as_openmetrics_does() {
        let scenario = minute()
            .series(
                "m",
                "NaN +Inf -Inf Inf 1.5 0 -0.25 1e300 1.5e-7 123456789012",
            )
            .expect("valid");
        let values: Vec<String> = text(&scenario, 0)
            .lines()
            .filter(|l| l.starts_with("m "))
            .map(|l| l.split(' ').nth(1).expect("a value").to_string())
            .collect();
        assert_eq!(
            values,
            [
                "NaN",
                "+Inf",
                "-Inf",
                "+Inf",
                "1.5",
                "0",
                "-0.25",
                "1e300",
                "1.5e-7",
                "123456789012"
            ]
        );
        for value in &values[4..] {
            let parsed: f64 = value.parse().expect("a Rust float reads it back");
            assert_eq!(number(parsed), *value);
        }
    }

    #[test]
    fn missing_samples_leave_gaps_and_stale_stops_the_series_until_its_next_value() {
        let scenario = minute().series("m", "1 _ 3 stale _ 6").expect("valid");
        assert_eq!(
            text(&scenario, 0),
            "# TYPE m unknown\nm 1 0\nm 3 120\nm 6 300\n# EOF\n"
        );
        let layout = scenario.layout(0).expect("lays out");
        assert_eq!(layout.last, Some(300));
    }

    #[test]
    fn a_series_with_no_value_writes_nothing_not_even_its_type() {
        let scenario = minute().series("m", "_x3 stale").expect("valid");
        let layout = scenario.layout(0).expect("lays out");
        assert_eq!(layout.text, "# EOF\n");
        assert_eq!(layout.last, None);
    }

    #[test]
    fn the_default_start_ends_the_longest_series_within_one_interval_before_now() {
        let scenario = minute()
            .series("a", "1x9")
            .and_then(|s| s.series("b", "1x2"))
            .expect("valid");
        assert_eq!(scenario.steps(), 10);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_030);
        let start = scenario.start(now);
        assert_eq!(start % 60, 0);
        let last = start + 9 * 60;
        assert!(last <= 1_000_000_030 && last > 1_000_000_030 - 60, "{last}");
        assert_eq!(scenario.clone().start_at(5).start(now), 5);
    }

    #[test]
    fn empty_label_values_are_no_label_and_the_name_may_be_a_matcher() {
        let scenario = minute()
            .series(r#"{__name__="up", job="api", gone=""}"#, "1")
            .expect("valid");
        assert_eq!(
            text(&scenario, 0),
            "# TYPE up unknown\nup{job=\"api\"} 1 0\n# EOF\n"
        );
    }

    #[test]
    fn two_samples_at_one_time_are_an_error_not_a_silent_drop() {
        let scenario = minute()
            .series("m", "1 2")
            .and_then(|s| s.raw("m", [(60, 5.0)]))
            .expect("valid");
        let err = scenario.to_openmetrics(0).expect_err("a duplicate");
        assert!(
            matches!(&err, Error::DuplicateSample { series, timestamp: 60 } if series == "m"),
            "{err:?}"
        );
    }

    #[rstest]
    #[case(r#"up{job=~"a.*"}"#, "only `=` matchers")]
    #[case(r#"up{job!="a"}"#, "only `=` matchers")]
    #[case(r#"{job="a"}"#, "needs a metric name")]
    #[case("rate(up[5m])", "expected a series selector")]
    #[case("up offset 5m", "`offset`")]
    #[case(r#"up{job="a" or job="b"}"#, "`or`")]
    #[case(r#"{__name__="a", __name__="b"}"#, "two metric names")]
    #[case(r#"up{job="a", job="b"}"#, "set twice")]
    #[case(r#"{"some.metric"}"#, "not a metric name")]
    #[case("up{", "")]
    fn rejects_selectors_that_do_not_name_one_series(
        #[case] selector: &str,
        #[case] expected: &str,
    ) {
        let err = minute().series(selector, "1").expect_err("rejected");
        let message = err.to_string();
        assert!(matches!(err, Error::Selector { .. }), "{message}");
        assert!(message.contains(expected), "{message}");
    }

    #[test]
    fn rejects_bad_notation_with_the_series_named() {
        let err = minute().series("up", "1xq").expect_err("rejected");
        assert!(err.to_string().contains("`up`"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[rstest]
    #[case(Duration::ZERO)]
    #[case(Duration::from_millis(1500))]
    #[case(Duration::from_millis(500))]
    fn rejects_intervals_that_are_not_whole_seconds(#[case] interval: Duration) {
        assert!(matches!(
            Scenario::new(interval),
            Err(Error::Interval { .. })
        ));
    }
}
