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
