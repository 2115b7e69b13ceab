//! `cargo xtask fuzz [--seconds N] [TARGET...]`: coverage-guided fuzzing of the targets in
//! `fuzz/` (cargo-fuzz, libFuzzer), each for N seconds, then one table.
//!
//! Each run reads the checked-in corpus `fuzz/corpus/TARGET/` as a seed only: libFuzzer writes
//! what it finds into a temporary directory given first, so runs do not litter the repository.
//! A crash is saved under `fuzz/artifacts/TARGET/` (ignored by git) and fails the command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::steps::{Outcome, Summary};
use crate::workspace::{self, Workspace, command_line, find_on_path};

/// Every target in `fuzz/fuzz_targets/`, in the order they run.
pub const TARGETS: [&str; 7] = [
    "client_frame_decode",
    "server_frame_decode",
    "channel_roundtrip",
    "selector_parse",
    "request_path",
    "client_core_schedule",
    "spdy_codec",
];

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// Seconds per target in `cargo xtask test`.
const TEST_SECONDS: u64 = 10;

/// How cargo-fuzz gets the nightly features it needs.
enum Toolchain {
    /// `cargo +nightly fuzz`.
    Nightly,
    /// No nightly toolchain: `cargo fuzz` on stable with `RUSTC_BOOTSTRAP=1`, which unlocks the
    /// `-Z` flags (sanitizers, coverage) cargo-fuzz passes.
    StableBootstrap,
}

/// One target's run.
struct Run {
    target: &'static str,
    seconds: u64,
    execs: Option<u64>,
    corpus: Option<u64>,
    /// The saved crashing input, when the run failed.
    crash: Option<String>,
}

/// `cargo xtask fuzz`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (seconds, targets) = parse_args(args)?;
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask fuzz: installs cargo-fuzz from crates.io when missing (cargo install cargo-fuzz --locked); \
         uses the nightly toolchain when rustup has one, else stable with RUSTC_BOOTSTRAP=1; builds fuzz/ \
         (its own workspace, built into the fuzz-target directory beside the build cache) and runs {} target(s) for {seconds} s each.",
        targets.len()
    );
    let runs = fuzz(&repo, &targets, seconds)?;
    print!("{}", table(&runs));
    fail_on_crash(&runs)
}

/// `cargo xtask test`'s fuzz step: every target briefly.
pub fn test_steps(summary: &mut Summary, repo: &Workspace) {
    summary.step("cargo fuzz (every target briefly)", || {
        let runs = fuzz(repo, &TARGETS, TEST_SECONDS)?;
        print!("{}", table(&runs));
        fail_on_crash(&runs)?;
        let execs: u64 = runs.iter().filter_map(|run| run.execs).sum();
        Ok(Outcome::Ready(format!("{} targets, {TEST_SECONDS} s each, {execs} runs, no crash", runs.len())))
    });
}

fn parse_args(args: &[String]) -> anyhow::Result<(u64, Vec<&'static str>)> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            let value = args.next().context("--seconds needs a number")?;
            seconds = value.parse().with_context(|| format!("--seconds {value:?} is not a number"))?;
        } else if let Some(target) = TARGETS.iter().find(|t| *t == arg) {
            targets.push(*target);
        } else {
            bail!("unknown fuzz target {arg:?} (targets: {})", TARGETS.join(", "));
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    Ok((seconds, targets))
}

fn fuzz(repo: &Workspace, targets: &[&'static str], seconds: u64) -> anyhow::Result<Vec<Run>> {
    ensure_cargo_fuzz(repo)?;
    let toolchain = toolchain()?;
    let dir = repo.root.join("fuzz");
    workspace::run(cargo_fuzz(repo, &toolchain, &dir).arg("build"))?;
    targets.iter().map(|target| run_target(repo, &toolchain, &dir, target, seconds)).collect()
}

fn ensure_cargo_fuzz(repo: &Workspace) -> anyhow::Result<()> {
    if let Some(path) = find_on_path("cargo-fuzz") {
        println!("found {}", path.display());
        return Ok(());
    }
    println!("cargo-fuzz is not on PATH: installing it from crates.io");
    workspace::run(repo.cargo().args(["install", "cargo-fuzz", "--locked"]))
}

fn toolchain() -> anyhow::Result<Toolchain> {
    let output = Command::new("rustup").args(["toolchain", "list"]).output();
    let listed = output.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if listed.is_some_and(|list| list.lines().any(|line| line.starts_with("nightly"))) {
        println!("using the nightly toolchain (cargo +nightly fuzz)");
        return Ok(Toolchain::Nightly);
    }
    println!(
        "no nightly toolchain in `rustup toolchain list`: fuzzing on stable with RUSTC_BOOTSTRAP=1 \
         (`rustup toolchain install nightly` to use nightly instead)"
    );
    Ok(Toolchain::StableBootstrap)
}

/// `cargo fuzz` in `fuzz/`, under the toolchain, building into `fuzz-target` beside the
/// shared build cache: sanitizer builds share nothing with ordinary ones, but a fresh clone
/// (CI) should not spend minutes rebuilding kube-sim's dependencies with sanitizers.
fn cargo_fuzz(repo: &Workspace, toolchain: &Toolchain, dir: &Path) -> Command {
    let mut command = Command::new("cargo");
    let target_dir = repo.target_dir.with_file_name("fuzz-target");
    command.current_dir(dir).env("CARGO_TARGET_DIR", target_dir).env_remove("RUSTUP_TOOLCHAIN");
    match toolchain {
        Toolchain::Nightly => {
            command.arg("+nightly");
        }
        Toolchain::StableBootstrap => {
            command.env("RUSTC_BOOTSTRAP", "1");
        }
    }
    command.arg("fuzz");
    command
}

fn run_target(repo: &Workspace, toolchain: &Toolchain, dir: &Path, target: &'static str, seconds: u64) -> anyhow::Result<Run> {
    let work = std::env::temp_dir().join(format!("kubemux-fuzz-{}-{target}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let seed: PathBuf = dir.join("corpus").join(target);
    let mut command = cargo_fuzz(repo, toolchain, dir);
    command
        .args(["run", target])
        .arg(&work)
        .arg(&seed)
        .args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"]);
    println!("\n== fuzz {target}\n$ {}", command_line(&command));
    let output = command.output().with_context(|| format!("starting cargo fuzz run {target}"))?;
    let _ = std::fs::remove_dir_all(&work);
    let log = String::from_utf8_lossy(&output.stderr);
    let execs = log.lines().find_map(|line| line.strip_prefix("stat::number_of_executed_units:")).and_then(|n| n.trim().parse().ok());
    let corpus = log.lines().rev().find_map(|line| line.split("corp: ").nth(1)?.split('/').next()?.parse().ok());
    let crash = (!output.status.success()).then(|| {
        for line in log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev() {
            eprintln!("  {line}");
        }
        log.lines()
            .find_map(|line| line.split("Test unit written to ").nth(1))
            .map_or_else(|| format!("no artifact ({})", output.status), str::to_owned)
    });
    Ok(Run { target, seconds, execs, corpus, crash })
}

fn table(runs: &[Run]) -> String {
    let number = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let mut text = format!("\n{:<22} {:>7} {:>12} {:>8} {:>7}\n", "target", "seconds", "runs", "corpus", "crashes");
    for run in runs {
        let crashes = if run.crash.is_some() { 1 } else { 0 };
        text += &format!("{:<22} {:>7} {:>12} {:>8} {:>7}\n", run.target, run.seconds, number(run.execs), number(run.corpus), crashes);
    }
    text
}

fn fail_on_crash(runs: &[Run]) -> anyhow::Result<()> {
    let crashed: Vec<String> = runs.iter().filter_map(|run| Some(format!("{}: {}", run.target, run.crash.as_ref()?))).collect();
    if !crashed.is_empty() {
        bail!(
            "fuzzing found a crash (reproduce with `cargo +nightly fuzz run TARGET ARTIFACT` in fuzz/):\n  {}",
            crashed.join("\n  ")
        );
    }
    Ok(())
}
