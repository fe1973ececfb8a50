//! The in-process fake Kubernetes API server, driven only through the real `kube::Client`
//! (typed `Api<K>`), as Salve's actions will drive a cluster.

use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, LogParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
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

/// The revision annotation of a Deployment or ReplicaSet.
fn revision_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str()
}

#[tokio::test]
async fn a_template_change_makes_a_new_revision_and_an_old_template_reuses_its_replica_set()
-> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "prod");
    let sets: Api<ReplicaSet> = Api::namespaced(client, "prod");
    let created = deployments
        .create(&PostParams::default(), &deployment("api", 3))
        .await?;
    let annotations = created.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let first = sets.list(&ListParams::default().labels("app=api")).await?;
    let [first] = first.items.as_slice() else {
        panic!("one ReplicaSet: {first:?}");
    };
    let first = serde_json::to_value(first)?;
    let hash = first["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .expect("a pod-template-hash label")
        .to_owned();
    assert_eq!(first["metadata"]["name"], format!("api-{hash}"));
    assert_eq!(
        first["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(first["spec"]["replicas"], 3);
    assert_eq!(
        first["metadata"]["ownerReferences"][0]["uid"],
        json!(created.metadata.uid)
    );
    assert_eq!(first["metadata"]["ownerReferences"][0]["controller"], true);

    // A new image is revision 2; the old ReplicaSet is scaled to 0.
    let image = |image: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    let v2 = deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Strategic(image("app:2")),
        )
        .await?;
    assert_eq!(revision_of(&serde_json::to_value(&v2)?), Some("2"));
    let all = fake_sets(&fake);
    assert_eq!(all.len(), 2);
    let by_revision = |n: &str| {
        all.iter()
            .find(|rs| revision_of(rs) == Some(n))
            .cloned()
            .unwrap_or_else(|| panic!("revision {n} in {all:#?}"))
    };
    assert_eq!(
        by_revision("1")["metadata"]["name"],
        first["metadata"]["name"]
    );
    assert_eq!(by_revision("1")["spec"]["replicas"], 0);
    assert_eq!(by_revision("2")["spec"]["replicas"], 3);

    // A dry run makes no revision.
    deployments
        .patch(
            "api",
            &PatchParams::default().dry_run(),
            &Patch::Strategic(image("app:9")),
        )
        .await?;
    assert_eq!(fake_sets(&fake).len(), 2);

    // Going back to the first template reuses its ReplicaSet as revision 3.
    fake.roll_out("prod", "api", &first["spec"]["template"])?;
    let all = fake_sets(&fake);
    assert_eq!(all.len(), 2, "no new ReplicaSet: {all:#?}");
    let reused = all
        .iter()
        .find(|rs| rs["metadata"]["name"] == first["metadata"]["name"])
        .expect("the first ReplicaSet");
    assert_eq!(revision_of(reused), Some("3"));
    assert_eq!(
        reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(reused["spec"]["replicas"], 3);
    let stored = fake
        .get("apps/v1", "Deployment", Some("prod"), "api")
        .expect("the deployment");
    assert_eq!(revision_of(&stored), Some("3"));
    assert_eq!(container_of(&stored, "app")["image"], "app:1");

    // Scaling the Deployment scales its current ReplicaSet.
    deployments
        .patch_scale(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await?;
    let reused = fake
        .get(
            "apps/v1",
            "ReplicaSet",
            Some("prod"),
            first["metadata"]["name"].as_str().unwrap_or_default(),
        )
        .expect("the first ReplicaSet");
    assert_eq!(reused["spec"]["replicas"], 5);
    Ok(())
}

fn fake_sets(fake: &FakeApiServer) -> Vec<Value> {
    fake.list("apps/v1", "ReplicaSet", Some("prod"))
}

fn container_of(obj: &Value, name: &str) -> Value {
    obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// A Running pod of `app`, Ready or not.
fn running(name: &str, app: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "prod", "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }},
        ]},
    })
}

fn budget(name: &str, rule: Value) -> Value {
    let mut spec = json!({"selector": {"matchLabels": {"app": "api"}}});
    if let (Some(spec), Some(rule)) = (spec.as_object_mut(), rule.as_object()) {
        spec.extend(rule.clone());
    }
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "prod"},
        "spec": spec,
    })
}

#[tokio::test]
async fn an_eviction_a_budget_forbids_is_429_and_leaves_the_pod() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    let pods: Api<Pod> = Api::namespaced(client, "prod");
    fake.insert(running("api-1", "api", true))?;
    fake.insert(running("api-2", "api", true))?;
    fake.insert(budget("api", json!({"minAvailable": 2})))?;

    let err = pods
        .evict("api-1", &EvictParams::default())
        .await
        .expect_err("the budget forbids it");
    let kube::Error::Api(status) = err else {
        panic!("an API error: {err:?}");
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert_eq!(
        status.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let cause = &status.details.expect("details").causes[0];
    assert_eq!(
        cause.message,
        "The disruption budget api needs 2 healthy pods and has 2 currently"
    );
    assert!(
        fake.get("v1", "Pod", Some("prod"), "api-1").is_some(),
        "the pod stays"
    );

    // A budget of one available pod lets one go, not two.
    fake.insert(budget("api", json!({"minAvailable": 1})))?;
    let dry = EvictParams {
        post_options: PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        ..EvictParams::default()
    };
    pods.evict("api-1", &dry).await?;
    assert!(
        fake.get("v1", "Pod", Some("prod"), "api-1").is_some(),
        "a dry run evicts nothing"
    );
    let done = pods.evict("api-1", &EvictParams::default()).await?;
    assert_eq!(done.code, 201);
    assert!(fake.get("v1", "Pod", Some("prod"), "api-1").is_none());
    let err = pods
        .evict("api-2", &EvictParams::default())
        .await
        .expect_err("the last healthy pod stays");
    assert_eq!(api_error(err).0, 429);

    // A pod that is not Ready may go while the budget is met; a missing pod is a 404.
    fake.insert(running("api-3", "api", false))?;
    pods.evict("api-3", &EvictParams::default()).await?;
    let err = pods
        .evict("api-1", &EvictParams::default())
        .await
        .expect_err("gone");
    assert_eq!(api_error(err), (404, "NotFound".into()));
    let eviction = fake.requests().pop().expect("a request");
    assert_eq!(
        (eviction.method.as_str(), eviction.path.as_str()),
        ("POST", "/api/v1/namespaces/prod/pods/api-1/eviction")
    );
    Ok(())
}

#[tokio::test]
async fn pod_logs_are_the_seeded_text_with_the_real_server_s_checks() -> anyhow::Result<()> {
    let (fake, client) = FakeApiServer::start().await?;
    let pods: Api<Pod> = Api::namespaced(client, "prod");
    let mut two = running("api-1", "api", true);
    two["spec"]["containers"] =
        json!([{"name": "app", "image": "app:1"}, {"name": "proxy", "image": "p:1"}]);
    fake.insert(two)?;
    fake.insert(running("db-1", "db", true))?;
    fake.set_logs("prod", "api-1", "app", false, "one\ntwo\nthree\n");
    fake.set_logs("prod", "api-1", "app", true, "out of memory\n");

    let app = |tail: Option<i64>, previous: bool| LogParams {
        container: Some("app".into()),
        tail_lines: tail,
        previous,
        ..LogParams::default()
    };
    assert_eq!(
        pods.logs("api-1", &app(None, false)).await?,
        "one\ntwo\nthree\n"
    );
    assert_eq!(
        pods.logs("api-1", &app(Some(2), false)).await?,
        "two\nthree\n"
    );
    assert_eq!(
        pods.logs("api-1", &app(None, true)).await?,
        "out of memory\n"
    );
    // One container needs no name; an unseeded one has an empty log.
    assert_eq!(pods.logs("db-1", &LogParams::default()).await?, "");

    let err = pods
        .logs("api-1", &LogParams::default())
        .await
        .expect_err("which container?");
    let kube::Error::Api(status) = err else {
        panic!("an API error: {err:?}");
    };
    assert_eq!(status.code, 400);
    assert_eq!(
        status.message,
        "a container name must be specified for pod api-1, choose one of: [app proxy]"
    );
    let proxy = LogParams {
        container: Some("proxy".into()),
        previous: true,
        ..LogParams::default()
    };
    let err = pods
        .logs("api-1", &proxy)
        .await
        .expect_err("no previous instance");
    assert_eq!(api_error(err).0, 400);
    let err = pods
        .logs("nope", &LogParams::default())
        .await
        .expect_err("no pod");
    assert_eq!(api_error(err), (404, "NotFound".into()));
    Ok(())
}

#[tokio::test]
async fn events_of_both_apis_are_created_listed_and_watched() -> anyhow::Result<()> {
    let (_fake, client) = FakeApiServer::start().await?;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "prod");
    let modern: Api<Event> = Api::namespaced(client, "prod");
    let within = Duration::from_secs(5);
    let mut core_watch = core
        .watch(&WatchParams::default().timeout(10), "0")
        .await?
        .boxed();
    let mut modern_watch = modern
        .watch(&WatchParams::default().timeout(10), "0")
        .await?
        .boxed();

    let oom: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "api-1.oom", "namespace": "prod"},
        "involvedObject": {"kind": "Pod", "name": "api-1", "namespace": "prod"},
        "reason": "OOMKilling", "type": "Warning", "message": "Memory cgroup out of memory",
    }))?;
    core.create(&PostParams::default(), &oom).await?;
    let backoff: Event = serde_json::from_value(json!({
        "metadata": {"name": "api-1.backoff", "namespace": "prod"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "regarding": {"kind": "Pod", "name": "api-1", "namespace": "prod"},
        "reason": "BackOff", "type": "Warning", "action": "Restarting",
        "reportingController": "kubelet", "reportingInstance": "n1",
        "note": "Back-off restarting failed container",
    }))?;
    modern.create(&PostParams::default(), &backoff).await?;

    let warnings = core
        .list(&ListParams::default().fields("reason=OOMKilling,involvedObject.name=api-1"))
        .await?;
    assert_eq!(warnings.items.len(), 1);
    assert_eq!(modern.list(&ListParams::default()).await?.items.len(), 1);
    let seen = tokio::time::timeout(within, core_watch.try_next()).await??;
    assert!(
        matches!(seen, Some(WatchEvent::Added(e)) if e.reason.as_deref() == Some("OOMKilling"))
    );
    let seen = tokio::time::timeout(within, modern_watch.try_next()).await??;
    assert!(matches!(seen, Some(WatchEvent::Added(e)) if e.reason.as_deref() == Some("BackOff")));
    Ok(())
}
