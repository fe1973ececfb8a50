//! The in-process fake Kubernetes API server, driven only through the real `kube::Client`
//! (typed `Api<K>`), as Salve's actions will drive a cluster.

use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use salve::kube_fake::FakeApiServer;
use serde_json::{Value, json};

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "prod", "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": "app:1",
                     "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}}},
                    {"name": "proxy", "image": "proxy:1"},
                ]},
            },
        },
    }))
    .expect("a valid Deployment")
}

fn pod(name: &str, app: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "prod", "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running"},
    }))
    .expect("a valid Pod")
}

fn api_error(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

fn container(d: &Deployment, name: &str) -> Value {
    let v = serde_json::to_value(d).expect("serializes");
    v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn create_get_list_by_label_and_delete() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "prod");
    let created = pods
        .create(&PostParams::default(), &pod("api-1", "api", "n1"))
        .await?;
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert!(meta.resource_version.is_some());
    assert!(
        created.status.is_none(),
        "a create drops status, as the real server does"
    );
    pods.create(&PostParams::default(), &pod("db-1", "db", "n2"))
        .await?;
    fake.insert(pod("api-2", "api", "n2"))?;

    let got = pods.get("api-1").await?;
    assert_eq!(got.metadata.uid, created.metadata.uid);

    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    };
    assert_eq!(
        names(pods.list(&ListParams::default().labels("app=api")).await?),
        ["api-1", "api-2"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName=n2"))
                .await?
        ),
        ["api-2", "db-1"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("metadata.name=db-1"))
                .await?
        ),
        ["db-1"]
    );
    let all: Api<Pod> = Api::all(client.clone());
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 3);
    assert_eq!(
        Api::<Pod>::namespaced(client, "dev")
            .list(&ListParams::default())
            .await?
            .items
            .len(),
        0
    );

    pods.delete("api-1", &DeleteParams::default()).await?;
    assert!(fake.get("v1", "Pod", Some("prod"), "api-1").is_none());
    let requests = fake.requests();
    let list = requests
        .iter()
        .find(|r| r.param("labelSelector").is_some())
        .expect("a list");
    assert_eq!(list.path, "/api/v1/namespaces/prod/pods");
    Ok(())
}

#[tokio::test]
async fn not_found_and_already_exists_are_api_errors() -> anyhow::Result<()> {
    let (_fake, client) = FakeApiServer::start().await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "prod");
    let err = deployments.get("missing").await.expect_err("404");
    assert_eq!(api_error(err), (404, "NotFound".into()));
    let err = deployments
        .delete("missing", &DeleteParams::default())
        .await
        .expect_err("404");
    assert_eq!(api_error(err), (404, "NotFound".into()));

    deployments
        .create(&PostParams::default(), &deployment("api", 2))
        .await?;
    let err = deployments
        .create(&PostParams::default(), &deployment("api", 2))
        .await;
    assert_eq!(
        api_error(err.expect_err("409")),
        (409, "AlreadyExists".into())
    );

    let nodes: Api<Node> = Api::all(client);
    let err = nodes.get("n1").await.expect_err("404");
    assert_eq!(api_error(err), (404, "NotFound".into()));
    let bad = serde_json::from_value::<Node>(json!({"metadata": {"name": "Not_A_Name"}}))?;
    let err = nodes
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("422");
    assert_eq!(api_error(err), (422, "Invalid".into()));
    Ok(())
}

#[tokio::test]
async fn merge_and_strategic_merge_patch_container_resources() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "prod");
    let before = deployments
        .create(&PostParams::default(), &deployment("api", 2))
        .await?;
    assert_eq!(before.metadata.generation, Some(1));

    let memory = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "resources": {"limits": {"memory": "2Gi"}}},
    ]}}}});
    let pp = PatchParams::default();
    let after = deployments
        .patch("api", &pp, &Patch::Strategic(&memory))
        .await?;
    let app = container(&after, "app");
    assert_eq!(
        app["resources"]["limits"],
        json!({"memory": "2Gi", "cpu": "500m"})
    );
    assert_eq!(
        app["image"], "app:1",
        "the container keeps its other fields"
    );
    assert_eq!(container(&after, "proxy")["image"], "proxy:1");
    assert_eq!(after.metadata.generation, Some(2));
    assert_ne!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    let last = fake.requests().pop().expect("a request");
    assert_eq!(
        last.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );

    // A merge patch replaces the list whole, as RFC 7386 says.
    let after = deployments
        .patch("api", &pp, &Patch::Merge(&memory))
        .await?;
    assert_eq!(container(&after, "proxy"), Value::Null);
    assert_eq!(container(&after, "app")["image"], Value::Null);
    assert_eq!(after.metadata.generation, Some(3));

    // A metadata-only change does not bump generation.
    let labels = json!({"metadata": {"labels": {"team": "web"}}});
    let after = deployments
        .patch("api", &pp, &Patch::Merge(&labels))
        .await?;
    assert_eq!(after.metadata.generation, Some(3));
    Ok(())
}

#[tokio::test]
async fn json_patch_and_a_stale_replace() -> anyhow::Result<()> {
    let (_fake, client) = FakeApiServer::start().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "prod");
    let v1 = deployments
        .create(&PostParams::default(), &deployment("api", 2))
        .await?;

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "app:2"},
    ]))?;
    let v2 = deployments
        .patch("api", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await?;
    assert_eq!(container(&v2, "app")["image"], "app:2");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/replicas", "value": 9}]))?;
    let err = deployments
        .patch("api", &PatchParams::default(), &Patch::Json::<()>(failing))
        .await;
    assert_eq!(api_error(err.expect_err("422")).0, 422);

    // Replacing from the first version (an old resourceVersion) loses the race.
    let err = deployments
        .replace("api", &PostParams::default(), &v1)
        .await
        .expect_err("409");
    assert_eq!(api_error(err), (409, "Conflict".into()));
    let mut fresh = v2.clone();
    fresh.spec.as_mut().expect("spec").replicas = Some(4);
    let v3 = deployments
        .replace("api", &PostParams::default(), &fresh)
        .await?;
    assert_eq!(v3.spec.and_then(|s| s.replicas), Some(4));
    assert_eq!(v3.metadata.uid, v1.metadata.uid);
    Ok(())
}

#[tokio::test]
async fn scale_subresource_sets_spec_replicas() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "prod");
    let mut seeded = serde_json::to_value(deployment("api", 3))?;
    seeded["status"] = json!({"replicas": 3, "readyReplicas": 3});
    fake.insert(seeded)?;

    let scale = deployments.get_scale("api").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    let status = scale.status.expect("status");
    assert_eq!(
        (status.replicas, status.selector.as_deref()),
        (3, Some("app=api"))
    );

    let patch = json!({"spec": {"replicas": 5}});
    let scale = deployments
        .patch_scale("api", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
    let stored = fake
        .get_typed::<Deployment>(Some("prod"), "api")?
        .expect("stored");
    assert_eq!(stored.spec.and_then(|s| s.replicas), Some(5));
    assert_eq!(
        stored.status.and_then(|s| s.ready_replicas),
        Some(3),
        "status is kept"
    );
    assert_eq!(
        fake.requests().pop().map(|r| r.path),
        Some("/apis/apps/v1/namespaces/prod/deployments/api/scale".to_owned())
    );

    let negative = json!({"spec": {"replicas": -1}});
    let err = deployments
        .patch_scale("api", &PatchParams::default(), &Patch::Merge(&negative))
        .await
        .expect_err("422");
    assert_eq!(api_error(err), (422, "Invalid".into()));
    Ok(())
}

#[tokio::test]
async fn dry_run_answers_with_the_would_be_object_and_changes_nothing() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "prod");
    fake.insert(deployment("api", 2))?;
    let rv = fake.resource_version();

    let dry = PatchParams::default().dry_run();
    let patch = json!({"spec": {"replicas": 7}});
    let answer = deployments
        .patch("api", &dry, &Patch::Strategic(&patch))
        .await?;
    assert_eq!(answer.spec.and_then(|s| s.replicas), Some(7));
    let scale = deployments
        .patch_scale("api", &dry, &Patch::Merge(&patch))
        .await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(7));
    let created = deployments
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &deployment("new", 1),
        )
        .await?;
    assert_eq!(created.metadata.name.as_deref(), Some("new"));
    deployments
        .delete("api", &DeleteParams::default().dry_run())
        .await?;

    assert_eq!(fake.resource_version(), rv, "nothing was written");
    let stored = fake
        .get_typed::<Deployment>(Some("prod"), "api")?
        .expect("still there");
    assert_eq!(stored.spec.and_then(|s| s.replicas), Some(2));
    assert!(
        fake.get("apps/v1", "Deployment", Some("prod"), "new")
            .is_none()
    );
    let writes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert_eq!(writes.len(), 4);
    assert!(
        writes[..3].iter().all(|r| r.param("dryRun") == Some("All")),
        "{writes:?}"
    );
    Ok(())
}

#[tokio::test]
async fn watches_see_added_then_modified() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "prod");
    fake.insert(deployment("api", 2))?;
    let scale_to = |n: i32| json!({"spec": {"replicas": n}});
    let within = Duration::from_secs(5);

    // The raw watch API.
    let mut events = deployments
        .watch(&WatchParams::default().timeout(10), "0")
        .await?
        .boxed();
    let first = tokio::time::timeout(within, events.try_next()).await??;
    assert!(
        matches!(first, Some(WatchEvent::Added(d)) if d.metadata.name.as_deref() == Some("api"))
    );
    deployments
        .patch("api", &PatchParams::default(), &Patch::Merge(scale_to(4)))
        .await?;
    let next = tokio::time::timeout(within, events.try_next()).await??;
    assert!(
        matches!(next, Some(WatchEvent::Modified(d)) if d.spec.as_ref().and_then(|s| s.replicas) == Some(4))
    );

    // kube::runtime's watcher: list, then watch from the list's resourceVersion.
    let mut stream = watcher(deployments.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(within, stream.next()).await? {
        match event? {
            watcher::Event::InitApply(d) => seen.push(("init", d.spec.and_then(|s| s.replicas))),
            watcher::Event::InitDone => {
                deployments
                    .patch("api", &PatchParams::default(), &Patch::Merge(scale_to(6)))
                    .await?;
            }
            watcher::Event::Apply(d) => {
                seen.push(("apply", d.spec.and_then(|s| s.replicas)));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(seen, [("init", Some(4)), ("apply", Some(6))]);
    Ok(())
}
