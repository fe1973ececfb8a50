//! The demo's workload: a Deployment `prod/api` whose version 1.5.0 leaks memory, and the
//! metrics it would have — written to the demo's Prometheus as time goes by, so they answer
//! what Salve does: the leak goes on while 1.5.0 runs, and after a rollback to 1.4.0 the
//! restarted container starts small and stays flat.
//!
//! The sandbox has no controllers, so the pod keeps its name across the rollback; the metrics
//! follow the Deployment's pod template, which is what Salve changes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::kube_fake::FakeApiServer;
use crate::prometheus::PlacedSeries;
use crate::prometheus::remote_write;

/// The namespace, Deployment, pod and container of the demo.
pub(super) const NAMESPACE: &str = "prod";
/// The Deployment.
pub(super) const DEPLOYMENT: &str = "api";
/// The container.
pub(super) const CONTAINER: &str = "api";
/// The version that leaks.
pub(super) const LEAKING: &str = "registry.example/api:1.5.0";
/// The version before it.
pub(super) const GOOD: &str = "registry.example/api:1.4.0";

const MIB: f64 = 1024.0 * 1024.0;
/// The container's memory limit.
const LIMIT: f64 = 1024.0 * MIB;
/// Memory of a healthy container.
const STEADY: f64 = 380.0 * MIB;
/// How fast 1.5.0 leaks.
const LEAK_PER_MINUTE: f64 = 9.0 * MIB;
/// Seconds between samples (as a scrape interval).
pub(super) const SCRAPE: i64 = 15;

/// The pod template of `image`.
fn template(image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": DEPLOYMENT}},
        "spec": {"containers": [{
            "name": CONTAINER,
            "image": image,
            "resources": {"limits": {"memory": "1Gi"}, "requests": {"memory": "512Mi"}},
        }]},
    })
}

/// Seeds the sandbox: the Deployment at 1.4.0 (revision 1, a week old), rolled out to 1.5.0
/// (revision 2) at `deployed`, and its pod with some logs. Returns the pod's name.
pub(super) fn seed(fake: &FakeApiServer, deployed: DateTime<Utc>) -> Result<String, String> {
    let fail = |e: crate::kube_fake::Error| format!("cannot seed the sandbox: {e}");
    fake.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": {"app": DEPLOYMENT}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "template": template(GOOD),
        },
        "status": {"replicas": 1, "readyReplicas": 1},
    }))
    .map_err(fail)?;
    fake.roll_out(NAMESPACE, DEPLOYMENT, template(LEAKING))
        .map_err(fail)?;
    // The controller's ReplicaSets, dated as the rollouts were.
    for mut set in fake.list("apps/v1", "ReplicaSet", Some(NAMESPACE)) {
        let leaking = set["spec"]["template"]["spec"]["containers"][0]["image"] == LEAKING;
        let created = if leaking {
            deployed
        } else {
            deployed - chrono::TimeDelta::days(7)
        };
        set["apiVersion"] = json!("apps/v1");
        set["kind"] = json!("ReplicaSet");
        set["metadata"]["creationTimestamp"] =
            json!(created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        fake.insert(set).map_err(fail)?;
    }
    let replica_set = fake
        .list("apps/v1", "ReplicaSet", Some(NAMESPACE))
        .into_iter()
        .find(|set| set["spec"]["template"]["spec"]["containers"][0]["image"] == LEAKING)
        .ok_or("the sandbox made no ReplicaSet for the rollout")?;
    let set_name = replica_set["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hash = replica_set["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or("x")
        .to_string();
    let pod = format!("{set_name}-x2kq9");
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod, "namespace": NAMESPACE,
            "labels": {"app": DEPLOYMENT, "pod-template-hash": hash},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": set_name,
                "uid": replica_set["metadata"]["uid"], "controller": true,
            }],
        },
        "spec": {"nodeName": "node-1", "containers": [{"name": CONTAINER, "image": LEAKING}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": CONTAINER, "ready": true, "restartCount": 0,
                                          "image": LEAKING, "imageID": "", "started": true,
                                          "state": {"running": {}}}]},
    }))
    .map_err(fail)?;
    fake.set_logs(
        NAMESPACE,
        &pod,
        CONTAINER,
        false,
        "level=info msg=\"serving on :8080\" version=1.5.0\n\
         level=info msg=\"cache warmed\" entries=120000\n\
         level=warn msg=\"session cache above soft limit\" entries=410233\n\
         level=warn msg=\"session cache above soft limit\" entries=598112\n",
    );
    Ok(pod)
}

/// The image the Deployment runs now.
fn image(fake: &FakeApiServer) -> Option<String> {
    fake.get("apps/v1", "Deployment", Some(NAMESPACE), DEPLOYMENT)?["spec"]["template"]["spec"]
        ["containers"][0]["image"]
        .as_str()
        .map(str::to_string)
}

/// The container's memory over time: what it would have used.
#[derive(Debug, Clone)]
pub(super) struct Memory {
    pod: String,
    /// The working set at the last sample.
    bytes: f64,
    /// The last sample's time.
    at: i64,
}

impl Memory {
    /// The history up to `now`: healthy 1.4.0 until `deployed`, then 1.5.0 leaking. Written to
    /// Prometheus at `url` (a remote-write receiver).
    pub(super) async fn history(
        url: &str,
        pod: &str,
        since: DateTime<Utc>,
        deployed: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Self, String> {
        let mut memory = Memory {
            pod: pod.to_string(),
            bytes: STEADY,
            at: since.timestamp(),
        };
        let mut points = Vec::new();
        let mut t = since.timestamp();
        while t <= now.timestamp() {
            let leaking = t >= deployed.timestamp();
            memory.advance(t, leaking);
            points.push((t, memory.bytes));
            t += SCRAPE;
        }
        memory.write(url, points).await?;
        Ok(memory)
    }

    /// One scrape at `t`: a leaking version grows, a healthy one stays steady (a container that
    /// was leaking restarts small).
    fn advance(&mut self, t: i64, leaking: bool) {
        let minutes = (t - self.at) as f64 / 60.0;
        self.bytes = if leaking {
            (self.bytes + LEAK_PER_MINUTE * minutes).min(LIMIT)
        } else {
            STEADY
        };
        self.at = t;
    }

    /// Writes every scrape up to `now`, following the image the Deployment runs.
    pub(super) async fn scrape(
        &mut self,
        url: &str,
        fake: &FakeApiServer,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let leaking = image(fake).as_deref() == Some(LEAKING);
        let mut points = Vec::new();
        while self.at + SCRAPE <= now.timestamp() {
            let t = self.at + SCRAPE;
            self.advance(t, leaking);
            points.push((t, self.bytes));
        }
        if points.is_empty() {
            return Ok(());
        }
        self.write(url, points).await
    }

    async fn write(&self, url: &str, points: Vec<(i64, f64)>) -> Result<(), String> {
        let labels = BTreeMap::from([
            ("namespace".to_string(), NAMESPACE.to_string()),
            ("pod".to_string(), self.pod.clone()),
            ("container".to_string(), CONTAINER.to_string()),
        ]);
        let mut limit_labels = labels.clone();
        limit_labels.insert("resource".into(), "memory".into());
        let limits = points.iter().map(|&(t, _)| (t, LIMIT)).collect();
        let series = [
            PlacedSeries {
                name: "container_memory_working_set_bytes".into(),
                labels,
                points,
            },
            PlacedSeries {
                name: "kube_pod_container_resource_limits".into(),
                labels: limit_labels,
                points: limits,
            },
        ];
        remote_write::push(url, &series, ("job", "salve-demo"), Duration::from_secs(10)).await
    }
}
