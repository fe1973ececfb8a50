//! The journal under a crash: a writer killed with SIGKILL loses nothing it was told is written,
//! and the journal opens and takes writes again. (A power loss is what `synchronous = FULL`'s
//! fsync before `append` returns is for; a test cannot pull the plug.)

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use chrono::Utc;
use salve::journal::{Journal, Kind, Record};
use serde_json::json;

/// Where the child writer puts its journal; set only in the child.
const CHILD_JOURNAL: &str = "SALVE_TEST_JOURNAL_CHILD";

/// Run as a child process by the crash test: appends entries as fast as it can and prints
/// each sequence number once `append` has returned, until it is killed.
#[test]
#[ignore = "a child process of a_killed_writer_loses_no_acknowledged_entry"]
fn journal_writer_child() {
    let Some(path) = std::env::var_os(CHILD_JOURNAL) else {
        return;
    };
    let journal = Journal::open(Path::new(&path)).expect("open the journal");
    for n in 0.. {
        let seq = journal
            .append(&Record {
                at: Utc::now(),
                kind: Kind::SignalFiring,
                playbook: "crash".into(),
                incident: Some(format!("inc-{}", n % 7)),
                detail: json!({"n": n, "labels": {"pod": format!("p-{n}")}}),
            })
            .expect("append");
        println!("{seq}");
    }
}

#[test]
fn a_killed_writer_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "journal::journal_writer_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_JOURNAL, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the writer");
    let mut acknowledged = Vec::new();
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in lines.map_while(Result::ok) {
        if let Ok(seq) = line.trim().parse::<i64>() {
            acknowledged.push(seq);
        }
        if acknowledged.len() == 200 {
            // SIGKILL: no destructor, no flush, mid-write most likely.
            child.kill().expect("kill the writer");
            break;
        }
    }
    let _ = child.wait();
    assert_eq!(acknowledged.len(), 200, "the writer wrote");

    let journal = Journal::open(&path).expect("the journal opens after the crash");
    let last = journal.last_seq().expect("last");
    let stored: Vec<i64> = journal
        .since(0)
        .expect("every entry reads back")
        .iter()
        .map(|e| e.seq)
        .collect();
    for seq in &acknowledged {
        assert!(
            stored.contains(seq),
            "entry {seq} was acknowledged, then lost"
        );
    }
    assert!(last >= acknowledged[acknowledged.len() - 1]);
    // And the journal is still writable.
    journal
        .append(&Record {
            at: Utc::now(),
            kind: Kind::IncidentResolved,
            playbook: "crash".into(),
            incident: Some("inc-0".into()),
            detail: json!({}),
        })
        .expect("append after the crash");
}

/// `salve` with `args`: exit code, stdout and stderr.
fn salve(args: &[&str]) -> (Option<i32>, String, String) {
    crate::run(Command::new(env!("CARGO_BIN_EXE_salve")).args(args))
}

#[test]
fn a_person_answers_an_approval_once_from_the_command_line() {
    use salve::approval::{Approvals, Ask};
    use salve::risk::Risk;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    let approvals = Approvals::new(std::sync::Arc::new(Journal::open(&path).expect("open")));
    let ask = |step: &str| Ask {
        incident: "inc-1".into(),
        playbook: "memory-leak-rollback".into(),
        step: step.into(),
        risk: Risk::High,
        reason: "risk high is above the policy's ceiling medium".into(),
        situation: String::new(),
        plan: json!({}),
        evidence: json!({}),
    };
    let hour = std::time::Duration::from_secs(3600);
    let first = approvals
        .request(ask("rollback"), Utc::now(), hour)
        .expect("ask");
    let second = approvals
        .request(ask("scale"), Utc::now(), hour)
        .expect("ask");
    let journal = path.to_str().expect("UTF-8 path");

    let (code, listed, _) = salve(&["approvals", "--journal", journal]);
    assert_eq!(code, Some(0));
    assert!(
        listed.contains(&first.id) && listed.contains("2 waiting"),
        "{listed}"
    );

    let (code, out, err) = salve(&["approve", &first.id, "--journal", journal, "--by", "alice"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("approved by alice: step `rollback`"), "{out}");
    let (code, _, err) = salve(&["reject", &first.id, "--journal", journal, "--by", "bob"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no longer pending: approved by alice"),
        "{err}"
    );
    let (code, _, err) = salve(&["approve", "apr-0000", "--journal", journal]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no approval request `apr-0000`"), "{err}");

    // Two people answering at the same moment: exactly one answer counts.
    let racers: Vec<_> = ["approve", "reject"]
        .iter()
        .map(|verb| {
            Command::new(env!("CARGO_BIN_EXE_salve"))
                .args([verb, second.id.as_str(), "--journal", journal, "--by", verb])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start")
        })
        .collect();
    let codes: Vec<Option<i32>> = racers
        .into_iter()
        .map(|mut c| c.wait().expect("wait").code())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
    let (_, timeline, _) = salve(&["incidents", "--journal", journal, "inc-1"]);
    assert_eq!(timeline.matches(" ASK ").count(), 2, "{timeline}");
    assert_eq!(
        timeline.matches("APPROVED").count() + timeline.matches("REJECTED").count(),
        2,
        "{timeline}"
    );
}
