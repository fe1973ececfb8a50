//! The benches' command-line options: `--name value` after `cargo bench --bench NAME --`.

/// The value after `--name`, if it was given.
pub(crate) fn option(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The whole number after `--name`, else `default`.
pub(crate) fn number(name: &str, default: u64) -> u64 {
    option(name).map_or(default, |v| v.parse().expect("a whole number"))
}
