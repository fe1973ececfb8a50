//! Salve's own metrics (being written).

/// The engine's metrics. Cheap to clone: clones share one registry.
#[derive(Debug, Clone, Default)]
pub struct Metrics {}

impl Metrics {
    /// The metrics in the Prometheus text exposition format (OpenMetrics).
    pub fn encode(&self) -> String {
        String::new()
    }
}
