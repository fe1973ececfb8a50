//! Write a Salve remediation step as one Rust function, build it into a WebAssembly
//! component, and test it natively.
//!
//! A step is asked once per incident, when its playbook reaches it. It reads the incident's
//! [`Context`] (signals, target, its `config`, earlier steps' outputs), may ask the [`Host`]
//! for what the playbook grants it (`log`, `query`, `get`, `now`), and answers with an
//! [`Outcome`]: proceed with [`Action`]s, skip, or escalate to a human. It never touches the
//! cluster itself: the host gates and runs the actions it asks for under the risk ceiling,
//! like any playbook step. The contract is `wit/step.wit` (`salve:step@0.1.0`).
//!
//! # A complete step
//!
//! ```
//! use std::time::Duration;
//!
//! use salve_step::{Action, Context, FakeHost, Host, Outcome, Signal, Target};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! /// The step's `config` in the playbook.
//! #[derive(Deserialize)]
//! #[serde(default, deny_unknown_fields, rename_all = "camelCase")]
//! struct Config {
//!     /// A revision younger than this is to blame.
//!     #[serde(deserialize_with = "salve_step::duration::deserialize")]
//!     recent_deploy: Duration,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Self {
//!         Self { recent_deploy: Duration::from_secs(3600) }
//!     }
//! }
//!
//! /// Rolls back a leaking Deployment when its revision is recent.
//! pub fn blame_the_deploy(ctx: &Context, host: &impl Host) -> Result<Outcome, String> {
//!     let config: Config = ctx.config()?;
//!     let Some(age) = ctx.target.revision_age() else {
//!         return Ok(Outcome::skip("the revision's age is unknown"));
//!     };
//!     let growth = ctx.root_signal().and_then(|s| s.value_named("growthMiBPerMinute"));
//!     host.info(&format!("revision {}s old, growing {growth:?} MiB/min", age.as_secs()));
//!     let outcome = if age < config.recent_deploy {
//!         Outcome::proceed(vec![Action::rollout_undo()])
//!     } else {
//!         Outcome::escalate("the leak predates the last deploy")
//!     };
//!     Ok(outcome.with_output(json!({"growth": growth})))
//! }
//!
//! // The component's `handler` export, generated for wasm32 only.
//! salve_step::export!(blame_the_deploy);
//!
//! // A native unit test (`cargo test`), with a fake host:
//! let ctx = Context::default()
//!     .with_signal(Signal::new(None).with_value("growthMiBPerMinute", 12.0))
//!     .with_target(
//!         Target::new("Deployment", Some("prod"), "api")
//!             .with_revision_age(Duration::from_secs(600)),
//!     );
//! let host = FakeHost::new();
//! let outcome = blame_the_deploy(&ctx, &host).unwrap();
//! assert_eq!(outcome.actions(), [Action::rollout_undo()]);
//! assert_eq!(outcome.output, Some(json!({"growth": 12.0})));
//! assert_eq!(host.logs().len(), 1);
//! ```
//!
//! # Building and testing
//!
//! A step is a crate with `crate-type = ["cdylib", "rlib"]` depending on `salve-step` (and
//! `serde` for its config). `cargo test` runs its unit tests natively against a [`FakeHost`].
//! To build the component, for `wasm32-unknown-unknown` with rustup's component linker and no
//! WASI imports:
//!
//! ```text
//! rustup target add wasm32-unknown-unknown
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-component-ld \
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=--wasi-adapter=none" \
//!   cargo build --release --target wasm32-unknown-unknown -p my-step
//! ```
//!
//! `wasm-sdk/build.sh` does this for every example (small: `opt-level=s`, LTO, stripped) and
//! writes `playbooks/steps/<name>.wasm`. The component imports only the capabilities the step
//! calls (when it takes `&impl Host`, see [`export!`]), so the host, and whoever reviews the
//! playbook, sees what it needs before it runs.
//!
//! A step that panics traps: the step fails and the plan rolls back. Return an `Err` instead
//! for errors, and [`Outcome::skip`] or [`Outcome::escalate`] when the data is not good enough
//! to act on.

mod context;
pub mod duration;
mod host;
mod outcome;

#[cfg(target_arch = "wasm32")]
mod guest;

pub use context::{Context, Signal, StepOutput, Target};
#[cfg(target_arch = "wasm32")]
pub use guest::WasmHost;
pub use host::{FakeHost, Host, Level, Sample};
pub use outcome::{Action, ActionKind, Decision, Outcome, Risk};

// The generated code names the runtime and the bindings by absolute paths from this crate, so
// they resolve in the step's crate where `export!` expands.
extern crate self as salve_step;

/// Makes a function the step's `handler` export.
///
/// The function is `fn(&Context, &impl Host) -> Result<Outcome, String>`. For `wasm32` this
/// generates the component's export, calling it with the real host; natively it only checks
/// the function's type, so the crate's unit tests build.
///
/// Prefer `&impl Host` to `&dyn Host` (which works too): a generic step calls the imports it
/// uses and no others, so its component imports only those capabilities. A `&dyn Host` makes
/// the compiler keep the whole vtable, and the component then imports all four (`log`,
/// `query`, `get`, `now`), which the playbook would have to grant.
///
/// ```
/// use salve_step::{Context, Host, Outcome};
///
/// fn step(_ctx: &Context, _host: &impl Host) -> Result<Outcome, String> {
///     Ok(Outcome::skip("nothing to do"))
/// }
///
/// salve_step::export!(step);
/// ```
#[macro_export]
macro_rules! export {
    ($step:path) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SalveStep;

            impl $crate::__private::Guest for __SalveStep {
                fn evaluate(
                    context: $crate::__private::WitContext,
                ) -> ::core::result::Result<$crate::__private::WitOutcome, ::std::string::String>
                {
                    $crate::__private::evaluate(context, |ctx, host| $step(ctx, host))
                }
            }

            $crate::__private::bindings::__export_step!(
                __SalveStep with_types_in $crate::__private::bindings
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: fn(
            &$crate::Context,
            &$crate::FakeHost,
        ) -> ::core::result::Result<$crate::Outcome, ::std::string::String> =
            |ctx, host| $step(ctx, host);
    };
}

/// What [`export!`] expands to; not part of the API.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private {
    /// The bindings generated from `wit/step.wit`.
    pub mod bindings {
        wit_bindgen::generate!({
            path: "wit",
            world: "step",
            pub_export_macro: true,
            export_macro_name: "__export_step",
            default_bindings_module: "::salve_step::__private::bindings",
            runtime_path: "::salve_step::__private::rt",
        });
    }

    pub use crate::guest::evaluate;
    pub use bindings::exports::salve::step::handler::Guest;
    pub use bindings::salve::step::types::{Context as WitContext, Outcome as WitOutcome};
    pub use wit_bindgen::rt;
}
