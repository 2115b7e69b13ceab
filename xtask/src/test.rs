//! `cargo xtask test`: the one command that runs every test on any machine.

use crate::steps::{Outcome, Summary, ensure_kubectl};
use crate::workspace::{self, Workspace};

/// Makes sure what the tests need is there, then runs `cargo test --workspace` with `passed`
/// appended.
pub fn run(passed: &[String]) -> anyhow::Result<()> {
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask test: installs nothing so far (every test needs only the Rust toolchain); \
         checks for kubectl (optional); runs cargo test --workspace.\n\
         build cache: {}",
        repo.target_dir.display()
    );
    let mut summary = Summary::new("cargo xtask test");
    summary.step("kubectl", ensure_kubectl);
    summary.step("cargo test --workspace", || {
        workspace::run(repo.cargo().args(["test", "--workspace"]).args(passed))?;
        Ok(Outcome::Ready("passed".to_owned()))
    });
    summary.finish()
}
