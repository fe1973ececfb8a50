//! The resource types the fake serves: their group/version, kind, plural, scope and
//! subresources, and a decode check against the k8s-openapi types for the built-in kinds.

use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, policy};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes an object as its typed k8s-openapi resource, to reject what the real server would.
pub(crate) type DecodeCheck = fn(&Value) -> Result<(), serde_json::Error>;

/// A resource type the fake API server serves, like one entry of the real server's discovery.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// `v1` for the core group, else `group/version` (`apps/v1`).
    pub api_version: String,
    /// The kind of one object (`Deployment`).
    pub kind: String,
    /// The plural resource name in URLs (`deployments`).
    pub plural: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the resource has a `status` subresource (writes to the main resource then keep
    /// the stored status, and writes to `/status` change only the status).
    pub status: bool,
    /// Whether the resource has a `scale` subresource (`spec.replicas`, `autoscaling/v1` Scale).
    pub scale: bool,
    /// Decodes an object as the typed resource, to reject what the real server would.
    pub(crate) decode: Option<DecodeCheck>,
}

impl ResourceType {
    /// A custom resource type (no typed decode check), e.g. Salve's own CRDs.
    pub fn custom(api_version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status: true,
            scale: false,
            decode: None,
        }
    }

    /// The group (`""` for core).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// The name the real server uses in messages: `pods`, `deployments.apps`.
    pub(crate) fn qualified(&self) -> String {
        match self.group() {
            "" => self.plural.clone(),
            g => format!("{}.{g}", self.plural),
        }
    }
}

fn decode<K: DeserializeOwned>(v: &Value) -> Result<(), serde_json::Error> {
    K::deserialize(v).map(drop)
}

fn builtin<K: k8s_openapi::Resource + DeserializeOwned>(
    namespaced: bool,
    status: bool,
    scale: bool,
) -> ResourceType {
    ResourceType {
        api_version: K::API_VERSION.into(),
        kind: K::KIND.into(),
        plural: K::URL_PATH_SEGMENT.into(),
        namespaced,
        status,
        scale,
        decode: Some(decode::<K>),
    }
}

/// The built-in resource types the fake serves.
pub(crate) fn builtins() -> Vec<ResourceType> {
    vec![
        builtin::<core::v1::Pod>(true, true, false),
        builtin::<core::v1::Node>(false, true, false),
        builtin::<core::v1::Namespace>(false, true, false),
        builtin::<core::v1::Service>(true, true, false),
        builtin::<core::v1::ConfigMap>(true, false, false),
        builtin::<core::v1::Secret>(true, false, false),
        builtin::<core::v1::Event>(true, false, false),
        builtin::<core::v1::ServiceAccount>(true, false, false),
        builtin::<core::v1::PersistentVolumeClaim>(true, true, false),
        builtin::<apps::v1::Deployment>(true, true, true),
        builtin::<apps::v1::StatefulSet>(true, true, true),
        builtin::<apps::v1::ReplicaSet>(true, true, true),
        builtin::<apps::v1::DaemonSet>(true, true, false),
        builtin::<apps::v1::ControllerRevision>(true, false, false),
        builtin::<batch::v1::Job>(true, true, false),
        builtin::<batch::v1::CronJob>(true, true, false),
        builtin::<policy::v1::PodDisruptionBudget>(true, true, false),
        builtin::<coordination::v1::Lease>(true, false, false),
        builtin::<autoscaling::v2::HorizontalPodAutoscaler>(true, true, false),
        builtin::<k8s_openapi::api::events::v1::Event>(true, false, false),
    ]
}
