//! A client of the API, for `salve incidents|approvals|approve|reject --server URL` and
//! `salve trigger`.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::approvals::{AnswerBody, ApprovalList};
use super::incidents::{IncidentList, IncidentTimeline};
use super::trigger::{TriggerBody, Triggered};
use crate::approval::Approval;

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL is not usable.
    #[error("`{url}` is not an http(s) URL")]
    Url {
        /// What was given.
        url: String,
    },
    /// The request could not be made or its answer read.
    #[error("cannot reach salve at {url}")]
    Request {
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error.
    #[error("{message} (HTTP {status})")]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its `error`, or the body when it is not the API's JSON error.
        message: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The API of one Salve.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client of the Salve at `base` (`http://salve:9464`), sending `token` as a bearer
    /// token when answering approvals.
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Url { url: base.into() });
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|source| Error::Request {
                url: base.into(),
                source,
            })?;
        Ok(Client {
            base: base.to_string(),
            http,
            token,
        })
    }

    /// Every incident.
    pub async fn incidents(&self) -> Result<IncidentList> {
        self.get("/api/v1/incidents").await
    }

    /// Incident `id` with its timeline.
    pub async fn incident(&self, id: &str) -> Result<IncidentTimeline> {
        self.get(&format!("/api/v1/incidents/{}", segment(id)))
            .await
    }

    /// The approval requests waiting.
    pub async fn approvals(&self) -> Result<ApprovalList> {
        self.get("/api/v1/approvals").await
    }

    /// Approves request `id`, or rejects it when `rejection` is given.
    pub async fn answer(&self, id: &str, rejection: Option<String>) -> Result<Approval> {
        let verb = if rejection.is_some() {
            "reject"
        } else {
            "approve"
        };
        let url = format!("{}/api/v1/approvals/{}/{verb}", self.base, segment(id));
        let mut request = self.http.post(&url).json(&AnswerBody {
            reason: rejection.unwrap_or_default(),
        });
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        decode(url, request.send().await).await
    }

    /// Rehearses `playbook` as if its trigger had fired with `labels` (every step a dry run).
    pub async fn trigger(
        &self,
        playbook: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Triggered> {
        let url = format!(
            "{}/api/v1/playbooks/{}/trigger",
            self.base,
            segment(playbook)
        );
        let mut request = self.http.post(&url).json(&TriggerBody { labels });
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        decode(url, request.send().await).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        decode(url.clone(), self.http.get(&url).send().await).await
    }
}

/// An id as one path segment (ids are `inc-...`/`apr-...`; anything else is escaped).
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn decode<T: DeserializeOwned>(
    url: String,
    sent: reqwest::Result<reqwest::Response>,
) -> Result<T> {
    let fail = |url: &str| {
        let url = url.to_string();
        move |source| Error::Request { url, source }
    };
    let response = sent.map_err(fail(&url))?;
    let status = response.status();
    let body = response.bytes().await.map_err(fail(&url))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(Error::Refused { status, message });
    }
    serde_json::from_slice(&body).map_err(|e| Error::Refused {
        status,
        message: format!("the answer from {url} is not what salve sends: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(segment("apr-0a1b"), "apr-0a1b");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
        assert!(Client::new("salve:9464", None).is_err());
        assert!(Client::new("http://salve:9464/", None).is_ok());
    }
}
