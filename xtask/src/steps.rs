//! Steps of a command (make sure a tool is there, run the tests) and the summary that ends
//! every command run: one line per step, so a failure on a fresh machine says which step failed
//! and what was skipped.
//!
//! Each `ensure_*` function checks one thing the tests need, installs it when it can, and says
//! what it found or did.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::workspace::{self, find_on_path};

/// How a step that did not fail ended.
pub enum Outcome {
    /// In place (found, installed or done); the text says what.
    Ready(String),
    /// Optional and absent; the text says what goes untested without it.
    Missing(String),
}

enum Status {
    Done(Outcome),
    Failed(String),
    /// An earlier step failed, so this one would prove nothing.
    NotRun,
}

/// The steps of one command run, in order.
pub struct Summary {
    command: &'static str,
    steps: Vec<(&'static str, Status)>,
}

impl Summary {
    /// An empty summary for `command` (e.g. `cargo xtask test`).
    pub fn new(command: &'static str) -> Summary {
        Summary { command, steps: Vec::new() }
    }

    /// Runs `step` unless an earlier step failed, and records how it ended.
    pub fn step(&mut self, name: &'static str, step: impl FnOnce() -> anyhow::Result<Outcome>) {
        let status = if self.failed() {
            Status::NotRun
        } else {
            println!("\n== {name}");
            match step() {
                Ok(outcome) => Status::Done(outcome),
                Err(error) => Status::Failed(format!("{error:#}")),
            }
        };
        self.steps.push((name, status));
    }

    fn failed(&self) -> bool {
        self.steps.iter().any(|(_, status)| matches!(status, Status::Failed(_)))
    }

    /// Prints one line per step and fails when any step failed.
    pub fn finish(self) -> anyhow::Result<()> {
        let mut text = format!("\n== {}: summary\n", self.command);
        for (name, status) in &self.steps {
            let (label, detail) = match status {
                Status::Done(Outcome::Ready(detail)) => ("ok", detail.as_str()),
                Status::Done(Outcome::Missing(detail)) => ("MISSING", detail.as_str()),
                Status::Failed(detail) => ("FAILED", detail.as_str()),
                Status::NotRun => ("not run", "an earlier step failed"),
            };
            let _ = writeln!(text, "  {label:<8} {name}: {detail}");
        }
        print!("{text}");
        if self.failed() {
            bail!("{} failed", self.command);
        }
        println!("{}: all steps passed", self.command);
        Ok(())
    }
}

/// kubectl is optional: tests drive it when it is on `PATH` and say loudly when they skip.
/// Installing it is left to the user (a system-wide binary with cluster credentials is not
/// something a test command should put in place).
pub fn ensure_kubectl() -> anyhow::Result<Outcome> {
    let Some(path) = find_on_path("kubectl") else {
        println!("kubectl is not on PATH: the kubectl compatibility tests will be skipped");
        return Ok(Outcome::Missing("not on PATH; the kubectl compatibility tests skip".to_owned()));
    };
    let version = Command::new(&path)
        .args(["version", "--client"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8_lossy(&output.stdout).lines().next().map(str::to_owned))
        .unwrap_or_else(|| "version unknown".to_owned());
    let found = format!("{} ({version})", path.display());
    println!("found {found}");
    Ok(Outcome::Ready(found))
}

/// A Rust standard library for `target`, through rustup.
pub fn ensure_rust_target(target: &str) -> anyhow::Result<Outcome> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output().context("running rustup")?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|line| line.trim() == target) {
        println!("found the {target} target");
        return Ok(Outcome::Ready("installed".to_owned()));
    }
    println!("installing the {target} target with rustup");
    workspace::run(Command::new("rustup").args(["target", "add", target]))?;
    Ok(Outcome::Ready("installed now".to_owned()))
}

/// Debian's `packages`, installed with apt-get (as root) unless every file in `provides` is
/// there already; says which it found or installed.
pub fn ensure_debian(packages: &[&str], provides: &[&str]) -> anyhow::Result<Outcome> {
    let present = || provides.iter().all(|file| std::path::Path::new(file).exists());
    let names = packages.join(" ");
    if present() {
        println!("found {} (Debian {names})", provides.join(", "));
        return Ok(Outcome::Ready(format!("{names}: found")));
    }
    println!("installing Debian's {names} with apt-get (needs root)");
    workspace::run(Command::new("apt-get").arg("update"))?;
    workspace::run(Command::new("apt-get").args(["install", "-y"]).args(packages))?;
    if !present() {
        bail!("apt-get installed {names} but {} is still missing", provides.join(", "));
    }
    Ok(Outcome::Ready(format!("{names}: installed now")))
}
