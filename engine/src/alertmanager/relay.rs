//! Under leader election, the webhook of a replica that does not lead relays each payload to
//! the one that does. Alertmanager posts to a Service, which picks any replica; only the
//! leader remediates, so an alert that reached a follower alone would open an incident nobody
//! acts on. The follower applies the payload to its own store too (its evaluation stays warm
//! for a failover), then posts it, unchanged and with the same `Authorization`, to the address
//! the leader writes on the Lease ([`crate::lease::ADDRESS`]), marked as relayed so that it
//! goes no further. When that fails, the webhook answers 503 and Alertmanager retries (a
//! payload applied twice is applied once: alerts are kept by fingerprint).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;

use crate::lease::Leadership;

/// The header that marks a relayed payload (its value: the relaying replica's identity).
pub const RELAYED: &str = "x-salve-relayed";

/// How long the leader may take to answer a relayed payload.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Relays a follower's webhook payloads to the leader.
#[derive(Clone)]
pub struct Relay {
    leases: Api<Lease>,
    lease: String,
    identity: String,
    leadership: watch::Receiver<Leadership>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("lease", &self.lease)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Where a payload went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed {
    /// Nowhere: this replica leads.
    Leading,
    /// To the leader `holder`.
    To {
        /// The leader's identity.
        holder: String,
    },
}

impl Relay {
    /// Relays for candidate `identity` on Lease `namespace/lease`, whose elector publishes
    /// `leadership`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        lease: &str,
        identity: impl Into<String>,
        leadership: watch::Receiver<Leadership>,
    ) -> Self {
        Relay {
            leases: Api::namespaced(client, namespace),
            lease: lease.into(),
            identity: identity.into(),
            leadership,
            http: reqwest::Client::new(),
        }
    }

    /// Posts `body` (with `authorization`, if any) to the leader's webhook, unless this replica
    /// leads; `Err(why)` when there is no leader to relay to or it did not take the payload.
    pub async fn relay(
        &self,
        body: Bytes,
        authorization: Option<&HeaderValue>,
    ) -> Result<Relayed, String> {
        if self
            .leadership
            .borrow()
            .may_act(tokio::time::Instant::now())
        {
            return Ok(Relayed::Leading);
        }
        let lease = self
            .leases
            .get_opt(&self.lease)
            .await
            .map_err(|e| format!("cannot read the Lease {}: {e}", self.lease))?;
        let holder = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| *h != self.identity)
            .ok_or_else(|| "no other replica leads now".to_string())?;
        let address = lease
            .as_ref()
            .and_then(|l| l.metadata.annotations.as_ref())
            .and_then(|a| a.get(crate::lease::ADDRESS))
            .ok_or_else(|| {
                format!(
                    "the leader {holder} does not say where its API is (the Lease has no {})",
                    crate::lease::ADDRESS
                )
            })?;
        let mut request = self
            .http
            .post(format!("http://{address}{}", super::WEBHOOK_PATH))
            .timeout(TIMEOUT)
            .header(RELAYED, &self.identity)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization.as_bytes());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("the leader {holder} at {address}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "the leader {holder} at {address} answered {}",
                response.status()
            ));
        }
        Ok(Relayed::To { holder })
    }
}
