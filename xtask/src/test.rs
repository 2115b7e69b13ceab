//! `cargo xtask test`: the one command that runs every test on any machine.

use crate::steps::{Outcome, Summary, ensure_kubectl};
use crate::{fuzz, wasm, www};
use crate::workspace::{self, Workspace};

/// Makes sure what the tests need is there, then runs `cargo test --workspace` with `passed`
/// appended.
pub fn run(passed: &[String]) -> anyhow::Result<()> {
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask test: checks for kubectl (optional); runs cargo test --workspace; then for the browser \
         client installs what is missing (Debian chromium + chromium-driver with apt-get, rustup target \
         wasm32-unknown-unknown, wasm-bindgen-cli from crates.io at the Cargo.lock version, npm binaryen), \
         builds the npm package and runs the browser tests in headless Chromium; then builds the web app \
         (npm ci, vite build), kubemux-proxy and kube-sim, and runs its Playwright tests (www e2e).\n\
         build cache: {}",
        repo.target_dir.display()
    );
    let mut summary = Summary::new("cargo xtask test");
    summary.step("kubectl", ensure_kubectl);
    summary.step("cargo test --workspace", || {
        workspace::run(repo.cargo().args(["test", "--workspace"]).args(passed))?;
        Ok(Outcome::Ready("passed".to_owned()))
    });
    wasm::test_steps(&mut summary, &repo);
    www::test_steps(&mut summary, &repo);
    fuzz::test_steps(&mut summary, &repo);
    summary.finish()
}
