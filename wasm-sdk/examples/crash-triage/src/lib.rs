//! `crash-triage`: why a container crash-loops, and the one remediation that fits — a higher
//! memory limit, a rollback, or a human. It needs the `get` capability (and `log`).
//!
//! It reads the Pod named by the root signal's `pod` label (in the signal's `namespace`, else
//! the target's) and picks the crashing container: the signal's `container` label, else the
//! first container that restarted, else the first waiting on an image or config error. From
//! that container's status — `state.waiting.reason`, and `lastState.terminated` (`reason`,
//! `exitCode`; `state.terminated` while it is still down) — the first matching row decides:
//!
//! | situation                                                                       | decision                                       |
//! |---------------------------------------------------------------------------------|------------------------------------------------|
//! | no `pod` label; the pod unreadable (gone, not readable by the step)             | escalate                                       |
//! | no status for the named container, or no container restarted                    | escalate                                       |
//! | waiting on an image or config error¹, revision younger than `recentDeploy` (2h) | `rollout_undo`                                 |
//! | the same on an older revision, or one of unknown age                            | escalate: no deploy to undo                    |
//! | last terminated `OOMKilled`, the container has a memory limit                   | `patch_resources`: limit × `limitFactor` (1.5) |
//! | last terminated `OOMKilled`, no memory limit                                    | escalate: the node ran out, not the limit      |
//! | last terminated with `Error` or a non-zero exit code, recent revision           | `rollout_undo`                                 |
//! | the same on an older revision, or one of unknown age                            | escalate: no deploy to blame                   |
//! | anything else: a clean exit, an unknown reason, no termination recorded         | escalate: never guess                          |
//!
//! ¹ `ErrImagePull`, `ImagePullBackOff`, `CreateContainerConfigError`, `InvalidImageName`.
//!
//! A `limitFactor` above 2 is planned at high risk. Its output, for later steps' `when`:
//! `{"verdict": "rollback" | "raise-limit" | "escalate", "reason": <the container's waiting or
//! termination reason, or null>, "exitCode": <n or null>, "restarts": <n or null>}`.
//!
//! ```yaml
//! - name: triage
//!   risk: medium
//!   wasm:
//!     module: steps/crash-triage.wasm
//!     grants: [log, get]
//!     allowedActions: [rollout_undo, patch_resources]
//!     config: {recentDeploy: 2h, limitFactor: 1.5}
//! ```
//!
//! By default Salve lets a step read the target's kind and Pods, in the target's namespace
//! only (a step's `read` list widens it, e.g. `read: [{kind: Pod, namespaces: [other]}]`): a
//! pod elsewhere is refused, and the step escalates with the host's reason.

use std::time::Duration;

use salve_step::{Action, Context, Host, Outcome, Risk};
use serde::Deserialize;
use serde_json::{Value, json};

/// The step's `config`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// A revision younger than this is blamed for a crash or a broken image.
    #[serde(deserialize_with = "salve_step::duration::deserialize")]
    pub recent_deploy: Duration,
    /// How much to multiply an OOMKilled container's memory limit by (above 1).
    pub limit_factor: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            recent_deploy: Duration::from_secs(2 * 3600),
            limit_factor: 1.5,
        }
    }
}

/// Waiting reasons meaning the image or the container's configuration is wrong: the program
/// never started.
const IMAGE_OR_CONFIG: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "InvalidImageName",
];
/// The termination reason of a container killed for going over its memory limit.
const OOM_KILLED: &str = "OOMKilled";
/// Above this factor, raising the limit is planned at high risk (the node may not fit it).
const HIGH_RISK_FACTOR: f64 = 2.0;

/// What the pod says of one of its containers.
#[derive(Debug, Clone, Default, PartialEq)]
struct ContainerStatus {
    name: String,
    restarts: Option<i64>,
    /// `state.waiting.reason`.
    waiting: Option<String>,
    /// The last termination's reason.
    terminated: Option<String>,
    /// The last termination's exit code.
    exit_code: Option<i64>,
    /// Whether the pod's spec gives the container a memory limit.
    memory_limit: bool,
}

/// Why a container is down, as far as its status tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Waiting on an image pull or configuration error.
    ImageOrConfig,
    /// Killed for going over its memory limit.
    OutOfMemory,
    /// Exited with an error.
    Crash,
    /// Nothing to act on: a clean exit, an unknown reason, no termination recorded.
    Unknown,
}

impl ContainerStatus {
    /// Reads a `containerStatuses` entry of `pod`.
    fn read(pod: &Value, status: &Value) -> Self {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let terminated = match &status["lastState"]["terminated"] {
            last @ Value::Object(_) => last,
            _ => &status["state"]["terminated"],
        };
        let name = text(&status["name"]).unwrap_or_default();
        let memory_limit = pod["spec"]["containers"].as_array().is_some_and(|all| {
            all.iter()
                .any(|c| c["name"] == name && !c["resources"]["limits"]["memory"].is_null())
        });
        Self {
            restarts: status["restartCount"].as_i64(),
            waiting: text(&status["state"]["waiting"]["reason"]),
            terminated: text(&terminated["reason"]),
            exit_code: terminated["exitCode"].as_i64(),
            memory_limit,
            name,
        }
    }

    /// Its waiting reason, when that is an image or config error.
    fn image_or_config(&self) -> Option<&str> {
        self.waiting
            .as_deref()
            .filter(|reason| IMAGE_OR_CONFIG.contains(reason))
    }

    /// Why it is down, as far as its status tells.
    fn cause(&self) -> Cause {
        if self.image_or_config().is_some() {
            Cause::ImageOrConfig
        } else if self.terminated.as_deref() == Some(OOM_KILLED) {
            Cause::OutOfMemory
        } else if self.terminated.as_deref() == Some("Error")
            || self.exit_code.is_some_and(|code| code != 0)
        {
            Cause::Crash
        } else {
            Cause::Unknown
        }
    }

    /// The reason that tells what happened: an image or config error, else the last
    /// termination's reason, else the waiting reason.
    fn reason(&self) -> Option<&str> {
        self.image_or_config()
            .or(self.terminated.as_deref())
            .or(self.waiting.as_deref())
    }
}

/// The crashing container of `pod`: the one named `wanted`, else the first that restarted,
/// else the first waiting on an image or config error.
fn crashing(pod: &Value, wanted: Option<&str>) -> Result<ContainerStatus, String> {
    let statuses: Vec<ContainerStatus> = pod["status"]["containerStatuses"]
        .as_array()
        .map(|all| all.iter().map(|s| ContainerStatus::read(pod, s)).collect())
        .unwrap_or_default();
    if statuses.is_empty() {
        return Err("it reports no container statuses".into());
    }
    let found = match wanted {
        Some(wanted) => statuses.iter().find(|s| s.name == wanted),
        None => statuses
            .iter()
            .find(|s| s.restarts.is_some_and(|n| n > 0))
            .or_else(|| statuses.iter().find(|s| s.image_or_config().is_some())),
    };
    found.cloned().ok_or_else(|| match wanted {
        Some(wanted) => format!("it reports no status for container `{wanted}`"),
        None => "none of its containers restarted or waits on an image or config error".into(),
    })
}

/// The step's output, for later steps' `when`.
fn output(verdict: &str, status: Option<&ContainerStatus>) -> Value {
    json!({
        "verdict": verdict,
        "reason": status.and_then(ContainerStatus::reason),
        "exitCode": status.and_then(|s| s.exit_code),
        "restarts": status.and_then(|s| s.restarts),
    })
}

/// Reads the crash-looping pod and decides; see the crate docs.
pub fn crash_triage(ctx: &Context, host: &impl Host) -> Result<Outcome, String> {
    let config: Config = ctx.config()?;
    if !(config.limit_factor.is_finite() && config.limit_factor > 1.0) {
        return Err(format!(
            "limitFactor must be a number above 1, not {}",
            config.limit_factor
        ));
    }
    let escalate = |why: String| Outcome::escalate(why).with_output(output("escalate", None));
    let signal = ctx.root_signal();
    let label = |name: &str| signal.and_then(|s| s.label(name));
    let Some(pod) = label("pod") else {
        return Ok(escalate(
            "the signal has no `pod` label: no pod to read".into(),
        ));
    };
    let Some(namespace) = label("namespace").or(ctx.target.namespace.as_deref()) else {
        return Ok(escalate(format!(
            "no namespace for pod `{pod}`: neither the signal nor the target has one"
        )));
    };
    let object = match host.get("Pod", Some(namespace), pod) {
        Ok(object) => object,
        Err(error) => {
            let why = format!("cannot read pod {namespace}/{pod}: {error}");
            host.warn(&why);
            return Ok(escalate(why));
        }
    };
    let status = match crashing(&object, label("container")) {
        Ok(status) => status,
        Err(why) => return Ok(escalate(format!("pod {namespace}/{pod}: {why}"))),
    };
    let age = ctx.target.revision_age();
    let container = status.name.as_str();
    let reason = status.reason().unwrap_or("no reason given");
    let exit_code = status.exit_code.map_or("none".into(), |c| c.to_string());
    host.info(&format!(
        "container `{container}` of pod {namespace}/{pod}: {} restarts, {reason}, exit code \
         {exit_code}; revision age {:?} s",
        status.restarts.unwrap_or(0),
        age.map(|a| a.as_secs())
    ));
    let revision = age.map_or("a revision of unknown age".into(), |age| {
        format!("a revision {} min old", age.as_secs() / 60)
    });
    let recent = age.is_some_and(|age| age < config.recent_deploy);
    let decided =
        |outcome: Outcome, verdict: &str| outcome.with_output(output(verdict, Some(&status)));
    let why = match (status.cause(), recent) {
        (Cause::ImageOrConfig | Cause::Crash, true) => {
            return Ok(decided(
                Outcome::proceed(vec![Action::rollout_undo()]),
                "rollback",
            ));
        }
        (Cause::OutOfMemory, _) if status.memory_limit => {
            let mut raise =
                Action::raise_memory_limit(config.limit_factor).param("container", container);
            if config.limit_factor > HIGH_RISK_FACTOR {
                raise = raise.with_risk(Risk::High);
            }
            return Ok(decided(Outcome::proceed(vec![raise]), "raise-limit"));
        }
        (Cause::ImageOrConfig, false) => format!(
            "container `{container}` waits on {reason} on {revision}: the image or its config \
             broke with no recent deploy to undo"
        ),
        (Cause::OutOfMemory, _) => format!(
            "container `{container}` was OOMKilled with no memory limit: the node ran out of \
             memory, a limit cannot be raised"
        ),
        (Cause::Crash, false) => format!(
            "container `{container}` crashes ({reason}, exit code {exit_code}) on {revision}: \
             no recent deploy to blame"
        ),
        (Cause::Unknown, _) => format!(
            "container `{container}` restarts ({reason}, exit code {exit_code}) for no cause \
             this step knows: not guessing"
        ),
    };
    Ok(decided(Outcome::escalate(why), "escalate"))
}

salve_step::export!(crash_triage);

#[cfg(test)]
mod tests {
    use salve_step::{Decision, FakeHost, Signal, Target};

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A pod `api-1` whose `app` container (limit 256Mi) restarted 5 times with this status,
    /// and a healthy `proxy` sidecar.
    fn pod(app_status: Value) -> Value {
        let mut app = json!({"name": "app", "restartCount": 5});
        app.as_object_mut()
            .expect("an object")
            .extend(app_status.as_object().expect("an object").clone());
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api-1", "namespace": "shop"},
            "spec": {"containers": [
                {"name": "proxy", "image": "envoy:1"},
                {"name": "app", "image": "api:2",
                 "resources": {"limits": {"memory": "256Mi"}}},
            ]},
            "status": {"containerStatuses": [
                {"name": "proxy", "restartCount": 0, "state": {"running": {}}},
                app,
            ]},
        })
    }

    fn terminated(reason: &str, exit_code: i64) -> Value {
        json!({
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"reason": reason, "exitCode": exit_code}},
        })
    }

    fn waiting(reason: &str) -> Value {
        json!({"restartCount": 0, "state": {"waiting": {"reason": reason}}})
    }

    /// A crash-loop signal on pod shop/api-1 of Deployment shop/api, deployed `age` ago.
    fn context(age: Option<Duration>) -> Context {
        let signal = Signal::new(Some(6.0))
            .with_label("namespace", "shop")
            .with_label("pod", "api-1");
        let mut target = Target::new("Deployment", Some("shop"), "api");
        if let Some(age) = age {
            target = target.with_revision_age(age);
        }
        Context::default().with_signal(signal).with_target(target)
    }

    fn host(pod: Value) -> FakeHost {
        FakeHost::new().with_object("Pod", Some("shop"), "api-1", pod)
    }

    fn decide(ctx: &Context, host: &FakeHost) -> Outcome {
        crash_triage(ctx, host).expect("a decision")
    }

    fn verdict(outcome: &Outcome) -> &str {
        outcome
            .output
            .as_ref()
            .and_then(|o| o["verdict"].as_str())
            .unwrap_or_default()
    }

    fn escalation(outcome: &Outcome) -> &str {
        match &outcome.decision {
            Decision::Escalate(reason) => reason,
            other => panic!("expected an escalation, got {other:?}"),
        }
    }

    #[test]
    fn an_oom_kill_raises_the_crashing_containers_memory_limit() {
        let host = host(pod(terminated("OOMKilled", 137)));
        let outcome = decide(&context(Some(10 * MINUTE)), &host);
        assert_eq!(
            outcome.actions(),
            [Action::raise_memory_limit(1.5).param("container", "app")]
        );
        assert_eq!(
            outcome.output,
            Some(
                json!({"verdict": "raise-limit", "reason": "OOMKilled", "exitCode": 137,
                        "restarts": 5})
            )
        );
        assert_eq!(host.logs().len(), 1);
    }

    #[test]
    fn a_large_factor_is_planned_at_high_risk() {
        let ctx = context(Some(DAY)).with_config(json!({"limitFactor": 3}));
        let outcome = decide(&ctx, &host(pod(terminated("OOMKilled", 137))));
        assert_eq!(outcome.actions()[0].risk, Some(Risk::High));
        assert_eq!(outcome.actions()[0].params["memoryLimitFactor"], "3");
    }

    #[test]
    fn an_oom_kill_without_a_limit_escalates() {
        let mut pod = pod(terminated("OOMKilled", 137));
        pod["spec"]["containers"][1]["resources"] = json!({});
        let outcome = decide(&context(Some(DAY)), &host(pod));
        assert!(escalation(&outcome).contains("no memory limit"));
        assert_eq!(outcome.output.expect("an output")["reason"], "OOMKilled");
    }

    #[test]
    fn a_crash_on_a_recent_revision_is_rolled_back() {
        for (reason, code) in [("Error", 1), ("ContainerCannotRun", 128), ("Error", 0)] {
            let outcome = decide(
                &context(Some(30 * MINUTE)),
                &host(pod(terminated(reason, code))),
            );
            assert_eq!(
                outcome.actions(),
                [Action::rollout_undo()],
                "{reason} {code}"
            );
            assert_eq!(verdict(&outcome), "rollback");
        }
    }

    #[test]
    fn a_crash_on_an_old_revision_or_one_of_unknown_age_escalates() {
        for age in [Some(3 * 60 * MINUTE), None] {
            let outcome = decide(&context(age), &host(pod(terminated("Error", 1))));
            assert!(escalation(&outcome).contains("no recent deploy"), "{age:?}");
            assert_eq!(
                outcome.output,
                Some(
                    json!({"verdict": "escalate", "reason": "Error", "exitCode": 1,
                            "restarts": 5})
                )
            );
        }
    }

    #[test]
    fn an_image_or_config_error_on_a_recent_revision_is_rolled_back() {
        for reason in IMAGE_OR_CONFIG {
            let host = host(pod(waiting(reason)));
            let outcome = decide(&context(Some(5 * MINUTE)), &host);
            assert_eq!(outcome.actions(), [Action::rollout_undo()], "{reason}");
            assert_eq!(outcome.output.expect("an output")["reason"], reason);
        }
    }

    #[test]
    fn an_image_or_config_error_on_an_old_revision_escalates() {
        for age in [Some(DAY), None] {
            let outcome = decide(&context(age), &host(pod(waiting("ImagePullBackOff"))));
            assert!(escalation(&outcome).contains("ImagePullBackOff"), "{age:?}");
        }
    }

    #[test]
    fn an_image_error_comes_before_an_older_termination() {
        let status = json!({
            "state": {"waiting": {"reason": "CreateContainerConfigError"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        });
        let outcome = decide(&context(Some(MINUTE)), &host(pod(status)));
        assert_eq!(outcome.actions(), [Action::rollout_undo()]);
    }

    #[test]
    fn a_clean_exit_or_an_unknown_state_escalates() {
        for status in [
            terminated("Completed", 0),
            json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}}}),
            json!({}),
        ] {
            let outcome = decide(&context(Some(MINUTE)), &host(pod(status.clone())));
            assert!(escalation(&outcome).contains("not guessing"), "{status}");
            assert_eq!(verdict(&outcome), "escalate");
        }
    }

    #[test]
    fn a_container_still_down_is_read_from_its_current_state() {
        let status = json!({"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}});
        let outcome = decide(&context(None), &host(pod(status)));
        assert_eq!(verdict(&outcome), "raise-limit");
    }

    #[test]
    fn the_signals_container_is_the_one_looked_at() {
        let ctx = context(Some(MINUTE));
        let named = |container: &str| {
            let mut ctx = ctx.clone();
            ctx.signals[0] = ctx.signals[0].clone().with_label("container", container);
            ctx
        };
        let host = host(pod(terminated("OOMKilled", 137)));
        // The healthy sidecar, named by the signal: nothing to act on.
        let outcome = decide(&named("proxy"), &host);
        assert!(escalation(&outcome).contains("`proxy`"));
        let outcome = decide(&named("app"), &host);
        assert_eq!(verdict(&outcome), "raise-limit");
        let outcome = decide(&named("gone"), &host);
        assert!(escalation(&outcome).contains("no status for container `gone`"));
    }

    #[test]
    fn a_pod_that_cannot_be_read_or_has_no_status_escalates() {
        let no_pod_label = Context::default().with_signal(Signal::new(None));
        let outcome = decide(&no_pod_label, &FakeHost::new());
        assert!(escalation(&outcome).contains("no `pod` label"));
        assert_eq!(
            outcome.output,
            Some(
                json!({"verdict": "escalate", "reason": null, "exitCode": null,
                        "restarts": null})
            )
        );

        let empty = FakeHost::new();
        let outcome = decide(&context(Some(MINUTE)), &empty);
        assert!(escalation(&outcome).starts_with("cannot read pod shop/api-1: "));
        assert_eq!(empty.logs()[0].0, salve_step::Level::Warn);

        let mut healthy = pod(json!({}));
        healthy["status"]["containerStatuses"][1]["restartCount"] = json!(0);
        for object in [json!({"kind": "Pod", "status": {}}), healthy] {
            let outcome = decide(&context(Some(MINUTE)), &host(object));
            assert_eq!(verdict(&outcome), "escalate");
            assert!(escalation(&outcome).starts_with("pod shop/api-1: "));
        }
    }

    #[test]
    fn the_namespace_falls_back_to_the_targets() {
        let mut ctx = context(Some(MINUTE));
        ctx.signals[0].labels.remove("namespace");
        let outcome = decide(&ctx, &host(pod(terminated("Error", 2))));
        assert_eq!(verdict(&outcome), "rollback");
        ctx.target.namespace = None;
        let outcome = decide(&ctx, &FakeHost::new());
        assert!(escalation(&outcome).contains("no namespace"));
    }

    #[test]
    fn the_recent_deploy_window_comes_from_config() {
        let ctx = context(Some(3 * 60 * MINUTE)).with_config(json!({"recentDeploy": "4h"}));
        let outcome = decide(&ctx, &host(pod(terminated("Error", 1))));
        assert_eq!(outcome.actions(), [Action::rollout_undo()]);
    }

    #[test]
    fn a_bad_config_fails_the_step() {
        let host = host(pod(terminated("Error", 1)));
        for config in [
            json!({"limitFactor": 1}),
            json!({"recentDeploy": "soon"}),
            json!({"factor": 2}),
        ] {
            let ctx = context(None).with_config(config.clone());
            assert!(crash_triage(&ctx, &host).is_err(), "{config}");
        }
    }
}
