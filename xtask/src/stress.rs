//! `cargo xtask stress [--seeds N]`: the randomized lifecycle schedules of
//! `tests/tests/config_lifecycle.rs` (reloads, clients, health ticks, shutdown), many more of
//! them than `cargo xtask test` runs (200).

use anyhow::{Context as _, bail};

use crate::workspace::Workspace;

/// Seeds when `--seeds` is not given.
const DEFAULT_SEEDS: u64 = 5000;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let seeds = match args {
        [] => DEFAULT_SEEDS,
        [flag, n] if flag == "--seeds" => n.parse().with_context(|| format!("--seeds takes a number, not {n:?}"))?,
        _ => bail!("usage: cargo xtask stress [--seeds N]"),
    };
    let workspace = Workspace::locate()?;
    println!("stress: {seeds} randomized lifecycle schedules (tests/tests/config_lifecycle.rs)");
    let status = workspace
        .cargo()
        .args(["test", "-p", "kubemux-e2e", "--test", "config_lifecycle", "randomized", "--", "--nocapture"])
        .env("KUBEMUX_LIFECYCLE_SEEDS", seeds.to_string())
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("a schedule failed: its seed and how to rerun it are printed above");
    }
    println!("stress: {seeds} schedules passed");
    Ok(())
}
