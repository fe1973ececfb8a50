//! `salve demo`, the README's run command: a real Prometheus, the sandbox API server and the
//! bundled playbooks; the leak after the deploy is detected, rolled back and verified.

use std::path::PathBuf;
use std::time::Duration;

use salve::demo::{self, Options};
use salve::executor::Finish;
use salve::journal::Kind;

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_detects_the_leak_rolls_back_and_verifies() {
    let options = Options {
        playbooks: vec![PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../playbooks"
        ))],
        speed: 60.0,
        journal: None,
        limit: Duration::from_secs(60 * 60),
    };
    let mut out = Vec::new();
    let report = demo::run(options, &mut out).await.expect("the demo runs");
    let printed = String::from_utf8(out).expect("utf-8");
    assert_eq!(report.finish, Some(Finish::Remediated), "{printed}");
    let kinds: Vec<Kind> = report.timeline.iter().map(|e| e.record.kind).collect();
    let position = |kind: Kind| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("no {kind:?} in {printed}"))
    };
    // Detect, diagnose, plan, gate, execute, verify — in that order.
    let order = [
        Kind::IncidentOpened,
        Kind::Diagnosed,
        Kind::Planned,
        Kind::GateVerdict,
        Kind::StepStarted,
        Kind::VerifyPassed,
        Kind::RemediationFinished,
    ]
    .map(position);
    assert!(order.is_sorted(), "{printed}");
    let undo = report
        .timeline
        .iter()
        .find(|e| {
            e.record.kind == Kind::StepSucceeded && e.record.detail["action"] == "rollout_undo"
        })
        .unwrap_or_else(|| panic!("no rollback in {printed}"));
    assert_eq!(undo.record.detail["before"]["revision"], 2, "{undo:?}");
    assert!(
        kinds.contains(&Kind::IncidentResolved),
        "the leak stopped: {printed}"
    );
    // The trigger's `for: 2m` holds before the incident opens.
    let detect = report.time_to_detect.expect("MTTD");
    assert!(detect >= Duration::from_secs(120), "{detect:?}");
    assert!(report.time_to_recover.expect("MTTR") > detect);
    assert!(
        printed.contains("EXECUTE   rollout_undo Deployment prod/api"),
        "{printed}"
    );
    assert!(printed.contains("outcome: remediated; MTTD"), "{printed}");
}
