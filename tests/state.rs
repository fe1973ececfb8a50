//! Incidents kept in the cluster (`salve::state`), through the real `kube::Client` against the
//! fake API server: concurrent appends conflict and are retried, never overwritten; a retried
//! entry is not added twice; an older leader's term is fenced.

use salve::kube_fake::{FakeApiServer, ResourceType};
use salve::state::{Error, IncidentStore, KIND, PLURAL, StateEntry};
use serde_json::json;

async fn store() -> (FakeApiServer, IncidentStore) {
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    fake.register(ResourceType::custom("salve.dev/v1", KIND, PLURAL, true));
    (fake, IncidentStore::new(client, "salve-system"))
}

fn entry(writer: &str, seq: usize, kind: &str) -> StateEntry {
    StateEntry {
        id: format!("{writer}/{seq}"),
        at: "2026-11-26T08:00:00Z".into(),
        kind: kind.into(),
        detail: json!({"step": format!("s{seq}")}),
    }
}

/// Twelve writers append at once to one incident (created by whichever comes first): every
/// entry lands exactly once — each conflict was read again and retried. Rounds repeat (on new
/// incidents) until one shows a conflict, so the retry path is known to have run.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_are_retried_never_overwritten() {
    let (fake, store) = store().await;
    let mut raced = false;
    for round in 0..20 {
        let incident = format!("inc-{round}");
        let puts_before = puts(&fake);
        let writes = (0..12).map(|n| {
            let (store, incident) = (store.clone(), incident.clone());
            tokio::spawn(async move {
                store
                    .append(&incident, "heal", &entry("a", n, "step_started"), 1)
                    .await
            })
        });
        for write in futures_util::future::join_all(writes).await {
            write.expect("task").expect("appended");
        }
        let state = store.read(&incident).await.expect("read").expect("stored");
        let mut ids: Vec<String> = state.entries.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        let mut wanted: Vec<String> = (0..12).map(|n| format!("a/{n}")).collect();
        wanted.sort();
        assert_eq!(ids, wanted, "every entry exactly once");
        if puts(&fake) - puts_before > 12 {
            raced = true;
            break;
        }
    }
    assert!(raced, "no round had a conflict: the retry path never ran");
}

/// The status replaces the fake has seen.
fn puts(fake: &FakeApiServer) -> usize {
    fake.requests().iter().filter(|r| r.method == "PUT").count()
}

/// An entry already stored (a retry after an answer was lost) is not added again.
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_entry_is_stored_once() {
    let (_fake, store) = store().await;
    let planned = entry("a", 1, "planned");
    store
        .append("inc-1", "heal", &planned, 1)
        .await
        .expect("first");
    store
        .append("inc-1", "heal", &planned, 1)
        .await
        .expect("again");
    let state = store.read("inc-1").await.expect("read").expect("stored");
    assert_eq!(state.entries, vec![planned]);
    assert_eq!(state.term, 1);
}

/// Once a newer leader (term 2) wrote an incident, the older one (term 1) can write nothing
/// more to it: its append is refused and the state is as the newer leader left it.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_term_is_fenced() {
    let (_fake, store) = store().await;
    store
        .append("inc-1", "heal", &entry("old", 1, "step_started"), 1)
        .await
        .expect("the old leader writes");
    store
        .append("inc-1", "heal", &entry("new", 1, "rollback_started"), 2)
        .await
        .expect("the new leader writes");
    let refused = store
        .append("inc-1", "heal", &entry("old", 2, "step_succeeded"), 1)
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Fenced {
                recorded: 2,
                ours: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    let state = store.read("inc-1").await.expect("read").expect("stored");
    let kinds: Vec<&str> = state.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["step_started", "rollback_started"]);
    assert_eq!(state.term, 2);
}
