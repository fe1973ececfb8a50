//! Hot reload on a real file system.
//!
//! Every test builds a playbook directory in a temporary directory, starts the real watcher
//! ([`watch`]) on it, changes the files the way a person, an editor, the kubelet or git-sync
//! would, and waits for the [`ReloadOutcome`]s it reports. The periodic resync is set far
//! beyond a test's length, so every reload seen here came from a real inotify event.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use salve::diagnostic::Diagnostic;
use salve::playbook::PlaybookSet;
use salve::playbook::set::SetDiff;
use salve::playbook::watch::{self, ReloadOutcome, Reloader, WatchOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// How long any single expected reload may take to show up.
const PATIENCE: Duration = Duration::from_secs(5);

/// A valid playbook named `name` whose trigger must hold for `for_minutes` minutes: changing
/// the minutes changes the playbook.
fn playbook(name: &str, for_minutes: u32) -> String {
    format!(
        r#"apiVersion: salve.dev/v1
kind: Playbook
metadata: {{name: {name}}}
spec:
  trigger:
    promql: {{expr: 'sum by (namespace, deployment) (rate(x[5m])) > 1'}}
    for: {for_minutes}m
  target: {{kind: Deployment, namespace: "${{labels.namespace}}", name: "${{labels.deployment}}"}}
  steps:
    - {{action: rollout_restart, risk: low}}
"#
    )
}

/// The `for:` of the active playbook `name`, in minutes, if it is in the set.
fn for_minutes(set: &PlaybookSet, name: &str) -> Option<u64> {
    set.playbook(name).map(|p| p.trigger.for_.as_secs() / 60)
}

/// The names of the playbooks in `set`.
fn names(set: &PlaybookSet) -> Vec<String> {
    set.playbooks().map(|p| p.name.clone()).collect()
}

/// Writes a fixture file, creating its directory first.
fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create the parent directory");
    }
    fs::write(path, content).expect("write the file");
}

/// Owned names, to compare with a diff's lists.
fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_string()).collect()
}

/// The real watcher, running on a tokio task over one playbook path.
struct Watcher {
    reloader: Arc<Reloader>,
    outcomes: mpsc::Receiver<ReloadOutcome>,
    options: WatchOptions,
    cancel: CancellationToken,
    task: JoinHandle<watch::Result<()>>,
}

impl Watcher {
    /// Loads `path`, starts watching it, and returns once a file event written to `probe_dir`
    /// has come through as a reload, so that every watch is in place before the test acts.
    async fn start(path: &Path, probe_dir: &Path) -> Self {
        let paths = vec![path.to_path_buf()];
        let (reloader, _warnings) = Reloader::from_paths(paths).expect("the initial set is valid");
        let reloader = Arc::new(reloader);
        let (sender, outcomes) = mpsc::channel(256);
        let cancel = CancellationToken::new();
        let options = WatchOptions {
            resync: Duration::from_secs(3600),
            ..WatchOptions::default()
        };
        let task = tokio::spawn(watch::watch(
            Arc::clone(&reloader),
            options,
            cancel.clone(),
            sender,
        ));
        let mut watcher = Watcher {
            reloader,
            outcomes,
            options,
            cancel,
            task,
        };
        watcher.wait_until_watching(probe_dir).await;
        watcher
    }

    /// Touches a hidden file (never loaded) until a reload answers, then lets any reload the
    /// touches are still owed go by, so they cannot be mistaken for a test's own.
    async fn wait_until_watching(&mut self, probe_dir: &Path) {
        let probe = probe_dir.join(".salve-test-probe");
        let deadline = Instant::now() + PATIENCE;
        let mut touches = 0u32;
        loop {
            touches += 1;
            fs::write(&probe, touches.to_string()).expect("write the probe file");
            match timeout(Duration::from_millis(250), self.outcomes.recv()).await {
                Ok(Some(ReloadOutcome::Unchanged { .. })) => break,
                Ok(Some(other)) => panic!("a probe file changed the set: {other:?}"),
                Ok(None) => self.stopped().await,
                Err(_) => assert!(
                    Instant::now() < deadline,
                    "the watcher never reported a reload for {}",
                    probe.display()
                ),
            }
        }
        self.settle().await;
    }

    /// Lets the reloads still owed for earlier events go by (they must not change the set),
    /// until none has come for several debounce windows.
    async fn settle(&mut self) {
        let quiet = self.options.debounce * 6;
        let deadline = Instant::now() + PATIENCE;
        while let Ok(Some(outcome)) = timeout(quiet, self.outcomes.recv()).await {
            assert!(
                Instant::now() < deadline,
                "reloads never stopped: the watcher reloads with nothing changed"
            );
            assert!(
                matches!(outcome, ReloadOutcome::Unchanged { .. }),
                "a late reload changed the set: {}",
                describe(&outcome)
            );
        }
    }

    /// The active set.
    fn active(&self) -> Arc<PlaybookSet> {
        self.reloader.active().load_full()
    }

    /// The next reload outcome, whatever it is.
    async fn next(&mut self) -> ReloadOutcome {
        match timeout(PATIENCE, self.outcomes.recv()).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => self.stopped().await,
            Err(_) => panic!("no reload within {PATIENCE:?}"),
        }
    }

    /// Fails the test with the reason the watcher ended early.
    async fn stopped(&mut self) -> ! {
        let ended = timeout(PATIENCE, &mut self.task).await;
        panic!("the watcher stopped unasked: {ended:?}");
    }

    /// The next reload that was not `Unchanged` (events that did not change the set, such as
    /// a temporary file appearing, are skipped).
    async fn next_change(&mut self) -> ReloadOutcome {
        loop {
            match self.next().await {
                ReloadOutcome::Unchanged { .. } => {}
                outcome => return outcome,
            }
        }
    }

    /// The next applied reload: its generation and diff. Panics on a rejected one.
    async fn next_applied(&mut self) -> (u64, SetDiff) {
        match self.next_change().await {
            ReloadOutcome::Applied {
                generation, diff, ..
            } => (generation, diff),
            outcome => panic!("expected an applied reload, got {}", describe(&outcome)),
        }
    }

    /// Reads reloads until the active set satisfies `done`; returns every diff applied on the
    /// way and how many reloads (of any kind) it took. Panics on a rejected reload.
    async fn until(&mut self, done: impl Fn(&PlaybookSet) -> bool) -> (Vec<SetDiff>, usize) {
        let mut diffs = Vec::new();
        let mut reloads = 0;
        while !done(&self.active()) {
            let outcome = self.next().await;
            reloads += 1;
            match outcome {
                ReloadOutcome::Applied { diff, .. } => diffs.push(diff),
                ReloadOutcome::Unchanged { .. } => {}
                ReloadOutcome::Rejected { .. } => {
                    panic!("unexpected rejection: {}", describe(&outcome))
                }
            }
        }
        (diffs, reloads)
    }

    /// Cancels the watcher and checks that it stopped cleanly.
    async fn stop(mut self) {
        self.cancel.cancel();
        timeout(PATIENCE, &mut self.task)
            .await
            .expect("the watcher stops when cancelled")
            .expect("the watcher task does not panic")
            .expect("the watcher ends without error");
    }
}

impl Drop for Watcher {
    /// A failing test still stops its watcher through the one shutdown path.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// An outcome, with any diagnostics rendered the way an operator reads them.
fn describe(outcome: &ReloadOutcome) -> String {
    match outcome {
        ReloadOutcome::Rejected { diagnostics, .. } => render(diagnostics),
        other => format!("{other:?}"),
    }
}

/// Diagnostics as `file:line:column: error: ...` lines.
fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every name the diffs added, changed and removed, merged.
fn merged(diffs: &[SetDiff]) -> SetDiff {
    let mut all = SetDiff::default();
    for diff in diffs {
        all.added.extend(diff.added.iter().cloned());
        all.changed.extend(diff.changed.iter().cloned());
        all.removed.extend(diff.removed.iter().cloned());
    }
    for list in [&mut all.added, &mut all.changed, &mut all.removed] {
        list.sort();
        list.dedup();
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_one_playbook_changes_only_it_and_keeps_the_others_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["alpha", "beta", "gamma"] {
        write(&dir.path().join(format!("{name}.yaml")), &playbook(name, 1));
    }
    let mut watcher = Watcher::start(dir.path(), dir.path()).await;
    let before = watcher.active();
    assert_eq!(names(&before), strings(&["alpha", "beta", "gamma"]));

    fs::write(dir.path().join("beta.yaml"), playbook("beta", 2)).expect("edit beta.yaml");
    let (generation, diff) = watcher.next_applied().await;

    assert_eq!(generation, before.generation() + 1);
    assert_eq!(diff.changed, strings(&["beta"]), "{diff:?}");
    assert!(diff.added.is_empty() && diff.removed.is_empty(), "{diff:?}");
    assert_eq!(diff.unchanged, 2);
    let after = watcher.active();
    assert_eq!(after.generation(), generation);
    assert_eq!(for_minutes(&after, "beta"), Some(2));
    for name in ["alpha", "gamma"] {
        let old = before.playbook(name).expect("in the old set");
        let new = after.playbook(name).expect("in the new set");
        assert!(
            Arc::ptr_eq(old, new),
            "{name} was rebuilt by an edit to beta"
        );
    }
    let old_beta = before.playbook("beta").expect("in the old set");
    let new_beta = after.playbook("beta").expect("in the new set");
    assert!(!Arc::ptr_eq(old_beta, new_beta));
    watcher.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_a_file_adds_its_playbook_and_deleting_one_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("alpha.yaml"), &playbook("alpha", 1));
    let mut watcher = Watcher::start(dir.path(), dir.path()).await;

    fs::write(dir.path().join("beta.yaml"), playbook("beta", 1)).expect("create beta.yaml");
    let (_, diff) = watcher.next_applied().await;
    assert_eq!(diff.added, strings(&["beta"]), "{diff:?}");
    assert!(
        diff.changed.is_empty() && diff.removed.is_empty(),
        "{diff:?}"
    );
    let with_beta = watcher.active();
    assert_eq!(names(&with_beta), strings(&["alpha", "beta"]));

    fs::remove_file(dir.path().join("alpha.yaml")).expect("delete alpha.yaml");
    let (_, diff) = watcher.next_applied().await;
    assert_eq!(diff.removed, strings(&["alpha"]), "{diff:?}");
    assert!(diff.added.is_empty() && diff.changed.is_empty(), "{diff:?}");
    let without_alpha = watcher.active();
    assert_eq!(names(&without_alpha), strings(&["beta"]));
    assert!(Arc::ptr_eq(
        with_beta.playbook("beta").expect("beta before"),
        without_alpha.playbook("beta").expect("beta after"),
    ));
    watcher.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editors_write_and_rename_is_one_change_and_its_temporary_file_is_never_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alpha.yaml");
    write(&file, &playbook("alpha", 1));
    write(&dir.path().join("beta.yaml"), &playbook("beta", 1));
    let mut watcher = Watcher::start(dir.path(), dir.path()).await;

    // vim's swap-file style and the `write to x.tmp, rename over x` style of most editors.
    for (minutes, temporary) in [(2, ".alpha.yaml.swp"), (3, "alpha.yaml.tmp")] {
        let before = watcher.active();
        let temporary = dir.path().join(temporary);
        // The temporary file holds a second `alpha`: loading it would be a duplicate name.
        fs::write(&temporary, playbook("alpha", minutes)).expect("write the temporary file");
        let seen = watcher.next().await;
        assert!(
            matches!(seen, ReloadOutcome::Unchanged { .. }),
            "{} was loaded: {}",
            temporary.display(),
            describe(&seen)
        );

        fs::rename(&temporary, &file).expect("rename over alpha.yaml");
        let (generation, diff) = watcher.next_applied().await;
        assert_eq!(generation, before.generation() + 1);
        assert_eq!(diff.changed, strings(&["alpha"]), "{diff:?}");
        assert!(diff.added.is_empty() && diff.removed.is_empty(), "{diff:?}");
        let after = watcher.active();
        assert_eq!(for_minutes(&after, "alpha"), Some(u64::from(minutes)));
        let alpha = after.playbook("alpha").expect("alpha");
        assert_eq!(alpha.source.file, file);
        assert!(Arc::ptr_eq(
            before.playbook("beta").expect("beta before"),
            after.playbook("beta").expect("beta after"),
        ));
    }
    watcher.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_change_is_rejected_with_its_location_and_the_previous_set_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alpha.yaml");
    write(&file, &playbook("alpha", 1));
    write(&dir.path().join("beta.yaml"), &playbook("beta", 1));
    let mut watcher = Watcher::start(dir.path(), dir.path()).await;
    let before = watcher.active();

    let invalid = playbook("alpha", 2).replace("risk: low", "risk: extreme");
    let line = invalid
        .lines()
        .position(|l| l.contains("risk: extreme"))
        .expect("the risk line")
        + 1;
    fs::write(&file, &invalid).expect("write an invalid risk");
    let diagnostics = match watcher.next_change().await {
        ReloadOutcome::Rejected { diagnostics, .. } => diagnostics,
        outcome => panic!("expected a rejection, got {outcome:?}"),
    };
    let located = format!("{}:{line}:", file.display());
    assert!(
        diagnostics
            .iter()
            .any(|d| d.is_error() && d.file == file && d.to_string().starts_with(&located)),
        "no error at {located}:\n{}",
        render(&diagnostics)
    );
    let still = watcher.active();
    assert!(
        Arc::ptr_eq(&before, &still),
        "a rejected change replaced the set"
    );
    assert_eq!(still.generation(), before.generation());
    assert_eq!(for_minutes(&still, "alpha"), Some(1));

    fs::write(&file, playbook("alpha", 3)).expect("fix the risk");
    let (generation, diff) = watcher.next_applied().await;
    assert_eq!(generation, before.generation() + 1);
    assert_eq!(diff.changed, strings(&["alpha"]), "{diff:?}");
    let fixed = watcher.active();
    assert_eq!(for_minutes(&fixed, "alpha"), Some(3));
    assert!(Arc::ptr_eq(
        before.playbook("beta").expect("beta before"),
        fixed.playbook("beta").expect("beta after"),
    ));
    watcher.stop().await;
}

/// A ConfigMap volume as the kubelet writes it: the keys in a hidden timestamped directory,
/// `..data` pointing at it, and one top-level symlink per key through `..data`.
struct ConfigMapVolume {
    dir: PathBuf,
    current: String,
}

impl ConfigMapVolume {
    fn create(dir: &Path, timestamp: &str, files: &[(&str, String)]) -> Self {
        let current = format!("..{timestamp}");
        for (key, content) in files {
            write(&dir.join(&current).join(key), content);
        }
        symlink(&current, dir.join("..data")).expect("link ..data");
        for (key, _) in files {
            symlink(Path::new("..data").join(key), dir.join(key)).expect("link a key");
        }
        ConfigMapVolume {
            dir: dir.to_path_buf(),
            current,
        }
    }

    /// The kubelet's atomic update: write the new timestamped directory, point `..data_tmp` at
    /// it, rename that over `..data`, link any new key, then remove the old directory.
    fn update(&mut self, timestamp: &str, files: &[(&str, String)]) {
        let next = format!("..{timestamp}");
        for (key, content) in files {
            write(&self.dir.join(&next).join(key), content);
        }
        let data_tmp = self.dir.join("..data_tmp");
        symlink(&next, &data_tmp).expect("link ..data_tmp");
        fs::rename(&data_tmp, self.dir.join("..data")).expect("rename ..data_tmp over ..data");
        for (key, _) in files {
            let visible = self.dir.join(key);
            if visible.symlink_metadata().is_err() {
                symlink(Path::new("..data").join(key), visible).expect("link a new key");
            }
        }
        fs::remove_dir_all(self.dir.join(&self.current)).expect("remove the old directory");
        self.current = next;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_mount_update_is_applied_once_through_the_data_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut volume = ConfigMapVolume::create(
        dir.path(),
        "2026_11_25_10_00_00.1",
        &[
            ("alpha.yaml", playbook("alpha", 1)),
            ("beta.yaml", playbook("beta", 1)),
        ],
    );
    let mut watcher = Watcher::start(dir.path(), dir.path()).await;
    let before = watcher.active();
    assert_eq!(names(&before), strings(&["alpha", "beta"]));

    volume.update(
        "2026_11_25_10_05_00.2",
        &[
            ("alpha.yaml", playbook("alpha", 2)),
            ("beta.yaml", playbook("beta", 1)),
        ],
    );
    let (_, diff) = watcher.next_applied().await;
    assert_eq!(diff.changed, strings(&["alpha"]), "{diff:?}");
    assert!(diff.added.is_empty() && diff.removed.is_empty(), "{diff:?}");
    let after = watcher.active();
    assert_eq!(names(&after), strings(&["alpha", "beta"]));
    assert_eq!(for_minutes(&after, "alpha"), Some(2));
    // Loaded through the top-level symlinks, not from the hidden directories.
    for playbook in after.playbooks() {
        assert_eq!(
            playbook.source.file,
            dir.path().join(format!("{}.yaml", playbook.name))
        );
    }
    assert!(Arc::ptr_eq(
        before.playbook("beta").expect("beta before"),
        after.playbook("beta").expect("beta after"),
    ));

    // A second update, after the first one's directory was removed, with a new key.
    volume.update(
        "2026_11_25_10_10_00.3",
        &[
            ("alpha.yaml", playbook("alpha", 2)),
            ("beta.yaml", playbook("beta", 2)),
            ("gamma.yaml", playbook("gamma", 1)),
        ],
    );
    let (diffs, _) = watcher
        .until(|set| for_minutes(set, "beta") == Some(2) && set.playbook("gamma").is_some())
        .await;
    let all = merged(&diffs);
    assert_eq!(all.changed, strings(&["beta"]), "{diffs:?}");
    assert_eq!(all.added, strings(&["gamma"]), "{diffs:?}");
    assert!(all.removed.is_empty(), "{diffs:?}");
    watcher.stop().await;
}

/// A git-sync root: each revision checked out in `.worktrees/<sha>`, `current` pointing at one.
struct GitSyncRoot {
    root: PathBuf,
    current: String,
}

impl GitSyncRoot {
    fn create(root: &Path, sha: &str, files: &[(&str, String)]) -> Self {
        let worktree = Self::checkout(root, sha, files);
        symlink(worktree, root.join("current")).expect("link current");
        GitSyncRoot {
            root: root.to_path_buf(),
            current: sha.to_string(),
        }
    }

    /// Writes a worktree for `sha`; returns the relative target git-sync links to.
    fn checkout(root: &Path, sha: &str, files: &[(&str, String)]) -> PathBuf {
        let worktree = Path::new(".worktrees").join(sha);
        for (name, content) in files {
            write(&root.join(&worktree).join("playbooks").join(name), content);
        }
        worktree
    }

    /// git-sync's flip: check the new revision out, point a temporary symlink at it and
    /// rename that over `current`. Returns the old worktree, which git-sync deletes next.
    fn flip(&mut self, sha: &str, files: &[(&str, String)]) -> PathBuf {
        let worktree = Self::checkout(&self.root, sha, files);
        let temporary = self.root.join("tmp-link");
        symlink(worktree, &temporary).expect("link the temporary symlink");
        fs::rename(&temporary, self.root.join("current")).expect("rename over current");
        let old = self.worktree();
        self.current = sha.to_string();
        old
    }

    /// The worktree `current` points at.
    fn worktree(&self) -> PathBuf {
        self.root.join(".worktrees").join(&self.current)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_git_sync_flip_is_applied_and_the_watch_follows_it_to_the_next_flip() {
    const SHA1: &str = "1111111111111111111111111111111111111111";
    const SHA2: &str = "2222222222222222222222222222222222222222";
    const SHA3: &str = "3333333333333333333333333333333333333333";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut root = GitSyncRoot::create(
        dir.path(),
        SHA1,
        &[
            ("alpha.yaml", playbook("alpha", 1)),
            ("beta.yaml", playbook("beta", 1)),
        ],
    );
    let watched = dir.path().join("current").join("playbooks");
    let mut watcher = Watcher::start(&watched, &watched).await;
    let before = watcher.active();

    // The flip alone is seen (through the watch on the symlink's directory), before the old
    // worktree's deletion makes any event of its own.
    let old = root.flip(
        SHA2,
        &[
            ("alpha.yaml", playbook("alpha", 2)),
            ("beta.yaml", playbook("beta", 1)),
        ],
    );
    let (_, diff) = watcher.next_applied().await;
    assert_eq!(diff.changed, strings(&["alpha"]), "{diff:?}");
    assert!(diff.added.is_empty() && diff.removed.is_empty(), "{diff:?}");
    let flipped = watcher.active();
    assert_eq!(for_minutes(&flipped, "alpha"), Some(2));
    assert!(Arc::ptr_eq(
        before.playbook("beta").expect("beta before"),
        flipped.playbook("beta").expect("beta after"),
    ));

    fs::remove_dir_all(old).expect("delete the old worktree");
    // Only a watch re-aimed at the new worktree can see a change made inside it (once the
    // reloads owed for the old worktree's deletion are done, so none can pick it up by chance).
    watcher.settle().await;
    fs::write(
        root.worktree().join("playbooks").join("beta.yaml"),
        playbook("beta", 2),
    )
    .expect("edit beta.yaml in the new worktree");
    let (_, diff) = watcher.next_applied().await;
    assert_eq!(diff.changed, strings(&["beta"]), "{diff:?}");

    // The second flip the way git-sync runs it: flip, then delete the old worktree at once.
    let old = root.flip(
        SHA3,
        &[
            ("alpha.yaml", playbook("alpha", 3)),
            ("beta.yaml", playbook("beta", 2)),
            ("gamma.yaml", playbook("gamma", 1)),
        ],
    );
    fs::remove_dir_all(old).expect("delete the old worktree");
    let (_, diff) = watcher.next_applied().await;
    assert_eq!(diff.changed, strings(&["alpha"]), "{diff:?}");
    assert_eq!(diff.added, strings(&["gamma"]), "{diff:?}");
    assert!(diff.removed.is_empty(), "{diff:?}");
    let flipped_again = watcher.active();
    assert_eq!(for_minutes(&flipped_again, "alpha"), Some(3));
    assert_eq!(names(&flipped_again), strings(&["alpha", "beta", "gamma"]));
    watcher.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_writes_is_debounced_into_few_reloads() {
    const WRITES: u32 = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alpha.yaml");
    write(&file, &playbook("alpha", 1));
    let mut watcher = Watcher::start(dir.path(), dir.path()).await;

    for minutes in 2..2 + WRITES {
        fs::write(&file, playbook("alpha", minutes)).expect("write alpha.yaml");
    }
    let last = u64::from(1 + WRITES);
    let (diffs, reloads) = watcher
        .until(|set| for_minutes(set, "alpha") == Some(last))
        .await;

    assert!(
        reloads < WRITES as usize / 2,
        "{reloads} reloads for {WRITES} writes"
    );
    assert!(!diffs.is_empty());
    let active = watcher.active();
    assert_eq!(names(&active), strings(&["alpha"]));
    assert_eq!(active.generation(), diffs.len() as u64);
    watcher.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_watcher_does_not_reload_on_its_own_reads() {
    // A reload reads every file, and reading produces access events: a watcher that reacted
    // to those would reload forever, burning CPU and flooding the log.
    let dir = tempfile::tempdir().expect("tempdir");
    let alpha = dir.path().join("alpha.yaml");
    write(&alpha, &playbook("alpha", 1));
    let mut watcher = Watcher::start(dir.path(), dir.path()).await;
    write(&alpha, &playbook("alpha", 2));
    watcher.next_applied().await;
    let quiet = timeout(Duration::from_millis(500), watcher.outcomes.recv()).await;
    assert!(
        quiet.is_err(),
        "reloaded with nothing changed: {:?}",
        quiet.ok().flatten().as_ref().map(describe)
    );
    watcher.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuilt_wasm_module_reloads_its_playbook_and_a_broken_one_is_rejected() {
    let guard = crate::built_step("memory-leak-guard");
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("steps/guard.wasm");
    fs::create_dir_all(module.parent().expect("steps/")).expect("mkdir steps/");
    fs::copy(&guard, &module).expect("copy the guard");
    let with_step = playbook("alpha", 1).replace(
        "    - {action: rollout_restart, risk: low}\n",
        "    - name: guard\n      risk: medium\n      wasm: {module: steps/guard.wasm, grants: [log], allowedActions: [rollout_undo]}\n",
    );
    write(&dir.path().join("alpha.yaml"), &with_step);
    write(&dir.path().join("beta.yaml"), &playbook("beta", 1));
    let mut watcher = Watcher::start(dir.path(), dir.path()).await;
    let before = watcher.active();

    // A broken build: rejected, naming the module; the checked module keeps running.
    fs::write(&module, b"\0asm garbage").expect("break the module");
    let diagnostics = match watcher.next_change().await {
        ReloadOutcome::Rejected { diagnostics, .. } => diagnostics,
        outcome => panic!("expected a rejection, got {}", describe(&outcome)),
    };
    let text = render(&diagnostics);
    assert!(
        text.contains("guard.wasm") && text.contains("not a valid WebAssembly component"),
        "{text}"
    );
    assert!(Arc::ptr_eq(&before, &watcher.active()));

    // A new valid build (here the smallest step there is, as WAT text): alpha changes, and
    // its step now holds the new bytes; beta is untouched.
    let skip =
        fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/wasm/skip.wat"))
            .expect("the skip fixture");
    fs::write(&module, &skip).expect("rebuild the module");
    let (_, diff) = watcher.next_applied().await;
    assert_eq!(diff.changed, strings(&["alpha"]), "{diff:?}");
    let after = watcher.active();
    let step_bytes = |set: &PlaybookSet| match &set.playbook("alpha").expect("alpha").steps[0].run {
        salve::playbook::StepRun::Wasm { bytes, .. } => bytes.to_vec(),
        other => panic!("a WASM step, not {other:?}"),
    };
    assert_eq!(step_bytes(&after), skip);
    assert_ne!(step_bytes(&before), skip);
    assert!(Arc::ptr_eq(
        before.playbook("beta").expect("beta before"),
        after.playbook("beta").expect("beta after"),
    ));
    watcher.stop().await;
}

/// Reads `child`'s stderr on a thread, line by line, into a channel.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; the lines seen, for the failure message.
fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    patience: Duration,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + patience;
    let mut seen = String::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(()),
            Ok(line) => seen.push_str(&format!("{line}\n")),
            Err(_) => break,
        }
    }
    Err(format!("no line with {needle:?}; saw:\n{seen}"))
}

/// Sends `signal` (`HUP`, `TERM`) to the process.
fn send(signal: &str, child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// The daemon convention: SIGHUP reloads (for file systems that send no events, or an operator
/// who wants a reload now) instead of killing the process, and SIGTERM stops it cleanly.
#[test]
fn sighup_reloads_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.yaml");
    write(&file, &playbook("a", 5));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["watch"])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start salve watch");
    let lines = stderr_lines(&mut child);
    // A change reloads: proof that the watcher (and so its SIGHUP handler) is up.
    let mut applied = Err(String::new());
    for minutes in 6..20 {
        write(&file, &playbook("a", minutes));
        applied = wait_for_line(&lines, "playbook set reloaded", Duration::from_millis(500));
        if applied.is_ok() {
            break;
        }
    }
    let outcome = applied.and_then(|()| {
        send("HUP", &child);
        wait_for_line(&lines, "SIGHUP: reloading", PATIENCE)
    });
    let alive = child.try_wait().expect("try_wait").is_none();
    send("TERM", &child);
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    outcome.unwrap_or_else(|seen| panic!("{seen}"));
    assert!(alive, "SIGHUP killed salve watch");
    let status = status.expect("salve watch did not stop within 5s of SIGTERM");
    assert!(
        status.success(),
        "salve watch exited with {status} on SIGTERM"
    );
}
