//! The demo web app: `cargo xtask www` builds it (the npm package first, then `npm ci` and
//! `vite build` into `www/dist/`); `cargo xtask test` runs its browser tests (`www e2e`):
//! `tests/e2e-browser/`, Node's test runner driving Debian's Chromium with `playwright-core`,
//! against two kube-sim processes and `kubemux-proxy --static www/dist`.
//!
//! npm packages come from the npm registry at the versions in each folder's package-lock.json;
//! Chromium comes from Debian. No browser is ever downloaded by npm.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::steps::{Outcome, Summary};
use crate::wasm;
use crate::workspace::{self, Workspace, find_on_path};

/// Vite 8 needs Node.js 20.19 or newer.
const NODE_MIN: (u32, u32) = (20, 19);

/// `cargo xtask www`.
pub fn run() -> anyhow::Result<()> {
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask www: builds the npm package kubemux (as cargo xtask wasm does), installs the web app's npm \
         packages when they are missing or out of date (npm ci in www/), then builds it with vite into www/dist/.\n\
         build cache: {}",
        repo.target_dir.display()
    );
    let mut summary = Summary::new("cargo xtask www");
    summary.step("node + npm", ensure_node);
    wasm::build_steps(&mut summary, &repo);
    summary.step("web app (www/dist)", || build(&repo));
    summary.finish()
}

/// `cargo xtask test`'s `www e2e` steps. They run after `wasm::test_steps`, which installed
/// Chromium and built the npm package this app depends on.
pub fn test_steps(summary: &mut Summary, repo: &Workspace) {
    summary.step("node + npm", ensure_node);
    summary.step("chromium (Debian)", wasm::ensure_chromium);
    summary.step("web app (www/dist)", || build(repo));
    let binaries = std::cell::OnceCell::new();
    summary.step("kubemux-proxy + kube-sim binaries", || {
        let built = build_binaries(repo)?;
        let shown = format!("{} and {}", built.0.display(), built.1.display());
        let _ = binaries.set(built);
        Ok(Outcome::Ready(shown))
    });
    summary.step("www e2e (playwright-core, headless Chromium)", || {
        let (proxy, sim) = binaries.get().context("no binaries")?;
        browser_tests(repo, proxy, sim)
    });
}

/// Node.js and npm on PATH, new enough for Vite.
pub fn ensure_node() -> anyhow::Result<Outcome> {
    let node = find_on_path("node").context("node is not on PATH: install Node.js 20.19 or newer (it brings npm)")?;
    find_on_path("npm").context("npm is not on PATH (it comes with Node.js)")?;
    let output = Command::new(&node).arg("--version").output().context("running node --version")?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let mut parts = version.trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < NODE_MIN {
        bail!("node {version} is too old: the web app's build (Vite) needs Node.js {}.{} or newer", NODE_MIN.0, NODE_MIN.1);
    }
    println!("found node {version}");
    Ok(Outcome::Ready(format!("node {version}")))
}

/// `npm ci` in `dir` when its packages are missing or older than its lock file; says which.
pub fn npm_packages(dir: &Path) -> anyhow::Result<String> {
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let shown = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match (modified(&installed), modified(&lock)) {
        (Some(installed), Some(lock)) if installed >= lock => {
            println!("found the npm packages of {shown}/ (node_modules is newer than package-lock.json)");
            return Ok("found".to_owned());
        }
        (None, _) => println!("installing the npm packages of {shown}/ with npm ci (node_modules is missing)"),
        _ => println!("installing the npm packages of {shown}/ with npm ci (package-lock.json changed)"),
    }
    let npm = find_on_path("npm").context("npm is not on PATH")?;
    workspace::run(
        Command::new(npm)
            .current_dir(dir)
            .args(["ci", "--no-audit", "--no-fund"])
            // playwright-core never downloads browsers; this keeps any other package from trying.
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
    )?;
    Ok("installed now".to_owned())
}

/// `www/`: npm packages, then the type check and `vite build` (`npm run build`).
pub fn build(repo: &Workspace) -> anyhow::Result<Outcome> {
    let pkg = wasm::pkg_dir(repo);
    if !pkg.join("kubemux.js").exists() {
        bail!("{} has no built package: run cargo xtask wasm first", pkg.display());
    }
    let www = repo.root.join("www");
    let packages = npm_packages(&www)?;
    let npm = find_on_path("npm").context("npm is not on PATH")?;
    workspace::run(Command::new(npm).current_dir(&www).args(["run", "build"]))?;
    let dist = www.join("dist");
    let index = dist.join("index.html");
    if !index.exists() {
        bail!("vite build wrote no {}", index.display());
    }
    Ok(Outcome::Ready(format!("www/dist/ built ({} KiB; npm packages {packages})", wasm::kib(dir_size(&dist)?) as u64)))
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

/// `cargo build` of the proxy and the simulator; their paths.
pub fn build_binaries(repo: &Workspace) -> anyhow::Result<(PathBuf, PathBuf)> {
    workspace::run(repo.cargo().args(["build", "--package", "kubemux-proxy", "--bin", "kubemux-proxy", "--package", "kube-sim", "--bin", "kube-sim"]))?;
    let debug = repo.target_dir.join("debug");
    Ok((debug.join("kubemux-proxy"), debug.join("kube-sim")))
}

/// Counts from the TAP summary of Node's test runner (`# pass N`, …).
#[derive(Default)]
struct TapCounts {
    pass: u32,
    fail: u32,
    skipped: u32,
    skip_reasons: Vec<String>,
}

/// `node --test` in `tests/e2e-browser/`, its output shown as it comes.
pub fn browser_tests(repo: &Workspace, proxy: &Path, sim: &Path) -> anyhow::Result<Outcome> {
    let dir = repo.root.join("tests/e2e-browser");
    npm_packages(&dir)?;
    let node = find_on_path("node").context("node is not on PATH")?;
    let mut command = Command::new(node);
    command
        .current_dir(&dir)
        .args(["--test", "--test-concurrency=1", "--test-reporter=tap"])
        .env("KUBEMUX_PROXY_BIN", proxy)
        .env("KUBE_SIM_BIN", sim)
        .env("KUBEMUX_WWW_DIST", repo.root.join("www/dist"))
        .env("KUBEMUX_ARTIFACTS", repo.root.join("tests/artifacts"))
        .env("CHROMIUM", "/usr/bin/chromium")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    println!("$ {}", workspace::command_line(&command));
    let mut child = command.spawn().context("starting node --test")?;
    let mut counts = TapCounts::default();
    for line in BufReader::new(child.stdout.take().context("node's stdout")?).lines() {
        let line = line.context("reading node's output")?;
        println!("{line}");
        let count = |prefix: &str| line.strip_prefix(prefix).and_then(|n| n.trim().parse::<u32>().ok());
        if let Some(n) = count("# pass ") {
            counts.pass = n;
        } else if let Some(n) = count("# fail ") {
            counts.fail = n;
        } else if let Some(n) = count("# skipped ") {
            counts.skipped = n;
        } else if let Some((_, reason)) = line.split_once(" # SKIP ") {
            counts.skip_reasons.push(reason.trim().to_owned());
        }
    }
    let status = child.wait().context("waiting for node --test")?;
    let artifacts = repo.root.join("tests/artifacts");
    if !status.success() || counts.fail > 0 {
        bail!("browser tests failed ({status}): {} passed, {} failed; screenshots in {}", counts.pass, counts.fail, artifacts.display());
    }
    if counts.pass == 0 {
        bail!("node --test ran no browser test");
    }
    let mut detail = format!("{} passed; screenshots in {}", counts.pass, artifacts.display());
    if counts.skipped > 0 {
        detail.push_str(&format!("; {} SKIPPED: {}", counts.skipped, counts.skip_reasons.join("; ")));
    }
    Ok(Outcome::Ready(detail))
}
