//! Pushing a scenario into a running Prometheus with the remote-write protocol (1.0: a
//! snappy-compressed protobuf `WriteRequest`), for `salve test --prometheus URL`.
//!
//! The Prometheus must accept it: started with `--web.enable-remote-write-receiver`, and, since
//! a test's samples lie in the past, with an out-of-order window longer than the longest test
//! (`storage: {tsdb: {out_of_order_time_window: 1d}}` in its configuration file).

use std::time::Duration;

use prost::Message;

use super::scenario::PlacedSeries;

/// The remote-write endpoint.
pub const PATH: &str = "/api/v1/write";

/// At most this many samples per request, as Prometheus's own senders batch.
const BATCH: usize = 2_000;

#[derive(Clone, PartialEq, Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// Writes `series`, each with the `extra` label added, to the Prometheus at `base_url`.
pub async fn push(
    base_url: &str,
    series: &[PlacedSeries],
    extra: (&str, &str),
    timeout: Duration,
) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let url = format!("{}{PATH}", base_url.trim_end_matches('/'));
    for request in requests(series, extra) {
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .map_err(|e| format!("cannot compress a remote-write request: {e}"))?;
        let response = client
            .post(&url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot write to {url}: {e}"))?;
        let status = response.status();
        if status.is_success() {
            continue;
        }
        let text = response.text().await.unwrap_or_default();
        let hint = if status == reqwest::StatusCode::NOT_FOUND {
            "; start Prometheus with --web.enable-remote-write-receiver"
        } else if text.contains("out of bounds") || text.contains("out of order") {
            "; a test's samples lie in the past: set `storage: {tsdb: {out_of_order_time_window: 1d}}` in Prometheus's configuration"
        } else {
            ""
        };
        return Err(format!(
            "{url} refused the test's series ({status}): {}{hint}",
            text.trim()
        ));
    }
    Ok(())
}

/// The write requests for `series`: labels sorted with `__name__`, samples in time order (in
/// milliseconds), at most [`BATCH`] samples per request.
fn requests(series: &[PlacedSeries], (label, value): (&str, &str)) -> Vec<WriteRequest> {
    let mut requests = Vec::new();
    let mut current = WriteRequest::default();
    let mut samples = 0;
    for placed in series {
        let mut labels: Vec<Label> = placed
            .labels
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain([("__name__", placed.name.as_str()), (label, value)])
            .map(|(name, value)| Label {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        for chunk in placed.points.chunks(BATCH) {
            if samples + chunk.len() > BATCH && !current.timeseries.is_empty() {
                requests.push(std::mem::take(&mut current));
                samples = 0;
            }
            samples += chunk.len();
            current.timeseries.push(TimeSeries {
                labels: labels.clone(),
                samples: chunk
                    .iter()
                    .map(|&(seconds, value)| Sample {
                        value,
                        timestamp: seconds.saturating_mul(1000),
                    })
                    .collect(),
            });
        }
    }
    if !current.timeseries.is_empty() {
        requests.push(current);
    }
    requests
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn series(name: &str, points: usize) -> PlacedSeries {
        PlacedSeries {
            name: name.to_string(),
            labels: BTreeMap::from([("pod".to_string(), "a".to_string())]),
            points: (0..points).map(|i| (i as i64 * 60, i as f64)).collect(),
        }
    }

    #[test]
    fn labels_are_sorted_with_the_name_and_the_scope() {
        let requests = requests(&[series("up", 2)], ("salve_test", "r-1"));
        assert_eq!(requests.len(), 1);
        let names: Vec<&str> = requests[0].timeseries[0]
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["__name__", "pod", "salve_test"]);
        let samples = &requests[0].timeseries[0].samples;
        assert_eq!((samples[1].timestamp, samples[1].value), (60_000, 1.0));
    }

    #[test]
    fn requests_are_batched_and_keep_every_sample_in_order() {
        let all = [series("a", 3_500), series("b", 10)];
        let requests = requests(&all, ("salve_test", "r"));
        assert!(requests.len() >= 2);
        let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for request in &requests {
            let count: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
            assert!(count <= BATCH, "{count}");
            for ts in &request.timeseries {
                let name = ts.labels[0].value.clone();
                seen.entry(name)
                    .or_default()
                    .extend(ts.samples.iter().map(|s| s.timestamp));
            }
        }
        assert_eq!(seen["a"].len(), 3_500);
        assert!(seen["a"].is_sorted());
        assert_eq!(seen["b"].len(), 10);
    }
}
