//! The browser client: `cargo xtask wasm` builds the npm package `kubemux` into
//! `wasm-client/pkg/`; the steps here also serve `cargo xtask test` (browser tests in headless
//! Chromium against the fixture) and `cargo xtask bench` (package size, events per second).
//!
//! Everything comes from the package registries this project may use: the wasm32 standard
//! library through rustup, `wasm-bindgen-cli` from crates.io at exactly the version in
//! Cargo.lock, `wasm-opt` from the npm `binaryen` package, Chromium and ChromeDriver from
//! Debian. Nothing is downloaded from GitHub.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};

use crate::steps::{self, Outcome, Summary};
use crate::workspace::{self, Workspace, find_on_path};

const TARGET: &str = "wasm32-unknown-unknown";
/// The npm `binaryen` release whose `wasm-opt` shrinks the module; exact, like everything else.
const BINARYEN: &str = "132.0.0";
/// The same, for reports.
pub const BINARYEN_VERSION: &str = BINARYEN;
/// Features rustc enables for wasm32 by default (Rust ≥ 1.87), which wasm-opt must be told.
const WASM_FEATURES: &[&str] = &["--enable-bulk-memory", "--enable-nontrapping-float-to-int", "--enable-sign-ext", "--enable-mutable-globals", "--enable-reference-types", "--enable-multivalue"];

/// `cargo xtask wasm`.
pub fn run() -> anyhow::Result<()> {
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask wasm: installs what is missing (rustup target {TARGET}; wasm-bindgen-cli from crates.io at \
         the version in Cargo.lock; wasm-pack {WASM_PACK} from crates.io; npm binaryen@{BINARYEN} under {}), then builds \
         the npm package into wasm-client/pkg/ with wasm-pack.\n\
         build cache: {}",
        npm_prefix()?.display(),
        repo.target_dir.display()
    );
    let mut summary = Summary::new("cargo xtask wasm");
    build_steps(&mut summary, &repo);
    summary.finish()
}

/// The steps that end with a built package: used by `wasm`, `test` and `bench`.
pub fn build_steps(summary: &mut Summary, repo: &Workspace) {
    summary.step("wasm32 target", ensure_wasm_target);
    summary.step("wasm-bindgen-cli", || ensure_wasm_bindgen_cli(repo));
    summary.step("wasm-pack", ensure_wasm_pack);
    summary.step("wasm-opt (npm binaryen)", ensure_binaryen);
    summary.step("npm package kubemux", || {
        let sizes = build_package(repo)?;
        Ok(Outcome::Ready(format!("wasm-client/pkg/: {}", sizes.describe())))
    });
}

/// The wasm32 standard library, through rustup.
pub fn ensure_wasm_target() -> anyhow::Result<Outcome> {
    steps::ensure_rust_target(TARGET)
}

/// The wasm-bindgen version locked in Cargo.lock (the crate pins it with `=`).
pub fn locked_wasm_bindgen(repo: &Workspace) -> anyhow::Result<String> {
    let lock = std::fs::read_to_string(repo.root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \"")).and_then(|v| v.strip_suffix('"'))
        {
            return Ok(version.to_owned());
        }
    }
    bail!("Cargo.lock has no wasm-bindgen package (is wasm-client in the workspace?)")
}

/// `wasm-bindgen` and `wasm-bindgen-test-runner` at exactly the locked version (a different
/// version cannot read the module: the two share an unstable schema).
pub fn ensure_wasm_bindgen_cli(repo: &Workspace) -> anyhow::Result<Outcome> {
    let version = locked_wasm_bindgen(repo)?;
    let wanted = format!("wasm-bindgen {version}");
    let current = find_on_path("wasm-bindgen").and_then(|path| Command::new(path).arg("--version").output().ok());
    let current = current.map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if current.as_deref() == Some(wanted.as_str()) && find_on_path("wasm-bindgen-test-runner").is_some() {
        println!("found {wanted}");
        return Ok(Outcome::Ready(wanted));
    }
    println!("installing wasm-bindgen-cli {version} from crates.io with cargo install (about 3 minutes on 2 cores){}", current.map(|c| format!("; PATH has {c:?}")).unwrap_or_default());
    let install = |locked: bool| {
        let mut command = repo.cargo();
        command.args(["install", "wasm-bindgen-cli", "--version", &version, "--force"]);
        if locked {
            command.arg("--locked");
        }
        // Its own build directory: the CLI is a host tool, not part of this workspace's cache.
        command.env_remove("CARGO_TARGET_DIR");
        workspace::run(&mut command)
    };
    if install(true).is_err() {
        // `--locked` fails when the registry index lacks a version the CLI's own lock file
        // names (seen here with webpki-roots); the unlocked resolution still builds the
        // exact CLI version.
        println!("the locked install failed; installing with a fresh resolution of its dependencies");
        install(false)?;
    }
    Ok(Outcome::Ready(format!("{wanted} installed now")))
}

/// The wasm-pack that builds the package.
const WASM_PACK: &str = "0.15.1";

/// `wasm-pack` at [`WASM_PACK`], from crates.io (its own installer downloads from GitHub).
pub fn ensure_wasm_pack() -> anyhow::Result<Outcome> {
    let wanted = format!("wasm-pack {WASM_PACK}");
    let current = find_on_path("wasm-pack").and_then(|path| Command::new(path).arg("--version").output().ok());
    let current = current.map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if current.as_deref() == Some(wanted.as_str()) {
        println!("found {wanted}");
        return Ok(Outcome::Ready(wanted));
    }
    println!("installing wasm-pack {WASM_PACK} from crates.io with cargo install --locked (about 4 minutes on 2 cores){}", current.map(|c| format!("; PATH has {c:?}")).unwrap_or_default());
    let mut command = Command::new("cargo");
    // Its own build directory: a host tool, not part of this workspace's cache.
    command.args(["install", "wasm-pack", "--version", WASM_PACK, "--locked", "--force"]).env_remove("CARGO_TARGET_DIR");
    workspace::run(&mut command)?;
    Ok(Outcome::Ready(format!("{wanted} installed now")))
}

/// Where the npm tools this project installs live: outside the clone, next to the build cache.
fn npm_prefix() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/kubemux/npm"))
}

fn wasm_opt() -> anyhow::Result<PathBuf> {
    Ok(npm_prefix()?.join("node_modules/.bin/wasm-opt"))
}

/// `wasm-opt` from the npm `binaryen` package (a Node script; no download from GitHub).
pub fn ensure_binaryen() -> anyhow::Result<Outcome> {
    let wasm_opt = wasm_opt()?;
    let version = || Command::new(&wasm_opt).arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let major = BINARYEN.split('.').next().unwrap_or(BINARYEN);
    if let Some(found) = version().filter(|v| v.contains(&format!("version {major}"))) {
        println!("found {found}");
        return Ok(Outcome::Ready(found));
    }
    let prefix = npm_prefix()?;
    std::fs::create_dir_all(&prefix)?;
    println!("installing binaryen@{BINARYEN} from npm into {}", prefix.display());
    let npm = find_on_path("npm").context("npm is not on PATH (it comes with Node.js)")?;
    workspace::run(Command::new(npm).arg("install").arg("--prefix").arg(&prefix).args(["--no-audit", "--no-fund", &format!("binaryen@{BINARYEN}")]))?;
    let found = version().context("wasm-opt does not run after installing binaryen")?;
    Ok(Outcome::Ready(format!("{found} installed now")))
}

/// Debian's Chromium and its matching ChromeDriver, for the browser tests.
pub fn ensure_chromium() -> anyhow::Result<Outcome> {
    let chromium = Path::new("/usr/bin/chromium");
    let driver = Path::new("/usr/bin/chromedriver");
    if !(chromium.exists() && driver.exists()) {
        println!("installing Debian's chromium and chromium-driver with apt-get (needs root)");
        workspace::run(Command::new("apt-get").arg("update"))?;
        workspace::run(Command::new("apt-get").args(["install", "-y", "chromium", "chromium-driver"]))?;
    }
    let version = Command::new(driver).arg("--version").output().context("running chromedriver")?;
    let version = String::from_utf8_lossy(&version.stdout).split(" (").next().unwrap_or_default().trim().to_owned();
    println!("found {version}");
    Ok(Outcome::Ready(version))
}

/// Sizes of the built package, raw and gzipped (`gzip -9`, what a server would send).
pub struct PackageSizes {
    /// `kubemux_bg.wasm` bytes.
    pub wasm: u64,
    /// `kubemux_bg.wasm` gzipped.
    pub wasm_gz: u64,
    /// `kubemux.js` bytes, with the JavaScript snippets it imports (`snippets/`, the crate's
    /// `inline_js`).
    pub js: u64,
    /// The same, each file gzipped.
    pub js_gz: u64,
}

impl PackageSizes {
    /// One line for a summary.
    pub fn describe(&self) -> String {
        format!(
            "{:.1} KiB gzipped (.wasm {:.1} KiB gz / {:.1} KiB raw, JS glue {:.1} KiB gz / {:.1} KiB raw)",
            kib(self.wasm_gz + self.js_gz),
            kib(self.wasm_gz),
            kib(self.wasm),
            kib(self.js_gz),
            kib(self.js)
        )
    }
}

/// Bytes in KiB.
pub fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

/// The package directory.
pub fn pkg_dir(repo: &Workspace) -> PathBuf {
    repo.root.join("wasm-client/pkg")
}

/// Builds the package: wasm-pack (profile `wasm-release`, wasm-bindgen `--target web`), wasm-opt,
/// then the types wasm-bindgen generated (completed by [`complete_types`]), the `kubemux/react`
/// hook, README and package.json.
pub fn build_package(repo: &Workspace) -> anyhow::Result<PackageSizes> {
    let pkg = pkg_dir(repo);
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg).with_context(|| format!("removing the old {}", pkg.display()))?;
    }
    // wasm-pack compiles the crate (profile `wasm-release`) and runs the wasm-bindgen on PATH
    // (`--mode no-install`: it never downloads one; `ensure_wasm_bindgen_cli` installed the
    // locked version). Its wasm-opt is off (the crate's wasm-pack metadata; it would come from
    // GitHub): npm binaryen's runs below. `--no-pack`: the package.json is written whole below,
    // since wasm-pack's cannot carry `exports`, `kubemux/react` or the peer dependency.
    // The types are wasm-bindgen's, from the Rust signatures and their `unchecked_*_type`s and
    // `typescript_custom_section`s.
    workspace::run(
        Command::new(find_on_path("wasm-pack").context("wasm-pack is not on PATH")?)
            .args(["build", "--target", "web", "--out-name", "kubemux", "--no-pack", "--no-gitignore", "--no-opt"])
            .args(["--mode", "no-install", "--profile", "wasm-release", "--out-dir"])
            .arg(&pkg)
            .arg(repo.root.join("wasm-client"))
            .env("CARGO_TARGET_DIR", &repo.target_dir),
    )?;
    let wasm = pkg.join("kubemux_bg.wasm");
    workspace::run(Command::new(wasm_opt()?).args(["-Oz", "--strip-debug", "--strip-producers"]).args(WASM_FEATURES).arg(&wasm).arg("-o").arg(&wasm))?;
    let client = repo.root.join("wasm-client");
    let types = pkg.join("kubemux.d.ts");
    let generated = std::fs::read_to_string(&types).with_context(|| format!("reading {}", types.display()))?;
    std::fs::write(&types, complete_types(&generated)?)?;
    for file in ["react.js", "react.d.ts"] {
        std::fs::copy(client.join("js").join(file), pkg.join(file)).with_context(|| format!("copying js/{file}"))?;
    }
    std::fs::copy(client.join("README.md"), pkg.join("README.md")).context("copying the README")?;
    std::fs::write(pkg.join("package.json"), package_json(&workspace_version(repo)?))?;
    let sizes = package_sizes(&pkg)?;
    println!("built {}: {}", pkg.display(), sizes.describe());
    Ok(sizes)
}

/// Completes wasm-bindgen's `kubemux.d.ts` where wasm-bindgen cannot: it has no generic exports
/// (wasm-bindgen#4451), so the type parameter of `Subscription<T>` and of `Mux.watch<T>()` is
/// added here (the signatures already name `T`: `unchecked_return_type = "T[]"`, …), and the
/// option objects that may be omitted are marked so (a `JsValue` parameter is required in
/// wasm-bindgen's types, and an `Option` would drop its `?` once its type is given); and the
/// `[Symbol.dispose]` members are dropped, since they do not compile for a consumer whose `lib`
/// lacks `esnext.disposable` (e.g. `es2022` with `skipLibCheck: false`). Each edit must match
/// exactly once, so a wasm-bindgen that writes otherwise fails the build here instead of
/// shipping wrong types.
fn complete_types(generated: &str) -> anyhow::Result<String> {
    let mut types = generated.to_owned();
    for (from, to) in [
        ("export class Subscription {", "export class Subscription<T = KubeObject> {"),
        ("    watch(request: WatchRequest, handlers: WatchHandlers<T>): Subscription<T>;", "    watch<T = KubeObject>(request: WatchRequest, handlers?: WatchHandlers<T>): Subscription<T>;"),
        // The option objects may be omitted (`undefined` reads as no options).
        ("    constructor(url: string, options: MuxOptions);", "    constructor(url: string, options?: MuxOptions);"),
    ] {
        let found = types.matches(from).count();
        anyhow::ensure!(found == 1, "kubemux.d.ts as wasm-bindgen wrote it has {found} lines `{}`, not one: update complete_types", from.trim());
        types = types.replacen(from, to, 1);
    }
    let disposers = types.matches("    [Symbol.dispose](): void;\n").count();
    anyhow::ensure!(disposers == 3, "kubemux.d.ts as wasm-bindgen wrote it has {disposers} `[Symbol.dispose]` lines, not one per class (3): update complete_types");
    Ok(types.replace("    [Symbol.dispose](): void;\n", ""))
}

/// The version every crate shares (`[workspace.package]`), which the npm package follows.
fn workspace_version(repo: &Workspace) -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(repo.root.join("Cargo.toml"))?;
    let section = manifest.split("[workspace.package]").nth(1).context("no [workspace.package] in Cargo.toml")?;
    section.lines().find_map(|line| line.trim().strip_prefix("version = \"").and_then(|v| v.strip_suffix('"'))).map(str::to_owned).context("no version in [workspace.package]")
}

fn package_json(version: &str) -> String {
    format!(
        r#"{{
  "name": "kubemux",
  "version": "{version}",
  "description": "Many live Kubernetes watches over one WebSocket: live object lists, automatic reconnect and resume, per-watch errors. Rust compiled to WebAssembly.",
  "license": "Apache-2.0",
  "repository": {{ "type": "git", "url": "https://example.invalid/kubemux" }},
  "keywords": ["kubernetes", "watch", "websocket", "webassembly", "multiplexer"],
  "type": "module",
  "main": "kubemux.js",
  "module": "kubemux.js",
  "types": "kubemux.d.ts",
  "exports": {{
    ".": {{ "types": "./kubemux.d.ts", "default": "./kubemux.js" }},
    "./react": {{ "types": "./react.d.ts", "default": "./react.js" }},
    "./kubemux_bg.wasm": "./kubemux_bg.wasm"
  }},
  "files": ["kubemux.js", "kubemux_bg.wasm", "snippets/", "kubemux.d.ts", "react.js", "react.d.ts", "README.md"],
  "peerDependencies": {{ "react": ">=18" }},
  "peerDependenciesMeta": {{ "react": {{ "optional": true }} }},
  "sideEffects": false
}}
"#
    )
}

/// Measures the package's shipped files.
pub fn package_sizes(pkg: &Path) -> anyhow::Result<PackageSizes> {
    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).with_context(|| format!("{} is missing", path.display()));
    let mut scripts = vec![pkg.join("kubemux.js")];
    snippet_files(&pkg.join("snippets"), &mut scripts)?;
    let (mut js, mut js_gz) = (0, 0);
    for script in &scripts {
        js += size(script)?;
        js_gz += gzipped(script)?;
    }
    let wasm = pkg.join("kubemux_bg.wasm");
    Ok(PackageSizes { wasm: size(&wasm)?, wasm_gz: gzipped(&wasm)?, js, js_gz })
}

/// Every file under `dir` (wasm-bindgen's `snippets/<crate>-<hash>/inline<N>.js`), if it exists.
fn snippet_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            snippet_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn gzipped(file: &Path) -> anyhow::Result<u64> {
    let output = Command::new("gzip").arg("-9c").arg(file).output().context("running gzip")?;
    if !output.status.success() {
        bail!("gzip {} failed", file.display());
    }
    Ok(output.stdout.len() as u64)
}

/// Builds the fixture binary (`tests/src/bin/kubemux-fixture.rs`); returns its path.
pub fn build_fixture(repo: &Workspace) -> anyhow::Result<PathBuf> {
    workspace::run(repo.cargo().args(["build", "--package", "kubemux-e2e", "--bin", "kubemux-fixture"]))?;
    Ok(repo.target_dir.join("debug/kubemux-fixture"))
}

/// [`build_fixture`] in release, for the bench page: the proxy and simulator it runs are the
/// sender of what the page measures, and a debug build would pace them.
pub fn build_fixture_release(repo: &Workspace) -> anyhow::Result<PathBuf> {
    workspace::run(repo.cargo().args(["build", "--release", "--package", "kubemux-e2e", "--bin", "kubemux-fixture"]))?;
    Ok(repo.target_dir.join("release/kubemux-fixture"))
}

/// A running fixture server; ended (by its process id) when dropped.
pub struct Fixture {
    child: Child,
    /// Its base URL, from its first line of output.
    pub url: String,
}

impl Fixture {
    /// Starts `kubemux-fixture serve` and reads its URL.
    pub fn start(binary: &Path, repo: &Workspace) -> anyhow::Result<Fixture> {
        let mut command = Command::new(binary);
        command.arg("serve").arg("--pkg").arg(pkg_dir(repo)).arg("--pages").arg(repo.root.join("tests/browser")).stdin(Stdio::null()).stdout(Stdio::piped());
        println!("$ {}", workspace::command_line(&command));
        let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().context("the fixture's stdout")?).read_line(&mut line);
        let url = line.trim().to_owned();
        let fixture = Fixture { child, url };
        if read.is_err() || !fixture.url.starts_with("http://") {
            bail!("the fixture did not print its URL (got {line:?})");
        }
        println!("fixture at {}", fixture.url);
        Ok(fixture)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `wasm-bindgen-test` suites of `wasm-client` in headless Chromium, against a fixture.
pub fn browser_tests(repo: &Workspace, fixture_binary: &Path) -> anyhow::Result<Outcome> {
    browser_tests_with(repo, fixture_binary, workspace::run)?;
    Ok(Outcome::Ready("passed in headless Chromium".to_owned()))
}

/// The same, with `run` running the `cargo test` (`cargo xtask test --repeat` reads its output).
pub fn browser_tests_with<T>(repo: &Workspace, fixture_binary: &Path, run: impl FnOnce(&mut Command) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let fixture = Fixture::start(fixture_binary, repo)?;
    let runner = find_on_path("wasm-bindgen-test-runner").context("wasm-bindgen-test-runner is not on PATH")?;
    // No `-q`: the runner rejects `--quiet`.
    let outcome = run(repo
        .cargo()
        .args(["test", "--package", "kubemux-client", "--target", TARGET])
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", runner)
        .env("CHROMEDRIVER", "/usr/bin/chromedriver")
        .env("WASM_BINDGEN_TEST_TIMEOUT", "300")
        .env("KUBEMUX_FIXTURE", &fixture.url));
    drop(fixture);
    outcome
}

/// Opens a page of `tests/browser/` that imports the built package, through the fixture's
/// `page` mode; returns the page's report (the line after `RESULT `).
pub fn page(repo: &Workspace, fixture_binary: &Path, name: &str) -> anyhow::Result<String> {
    page_from(repo, fixture_binary, name, &repo.root.join("tests/browser"))
}

/// [`page`] with the pages served from `pages` (a bundler's output, say).
fn page_from(repo: &Workspace, fixture_binary: &Path, name: &str, pages: &Path) -> anyhow::Result<String> {
    let mut command = Command::new(fixture_binary);
    // The bench pages run for minutes (bursts of 20,000 events through a slow client).
    let timeout = if matches!(name, "bench" | "paint") { "900" } else { "120" };
    command.args(["page", "--page", name, "--timeout", timeout, "--pkg"]).arg(pkg_dir(repo)).arg("--pages").arg(pages).stdout(Stdio::piped());
    println!("$ {}", workspace::command_line(&command));
    let output = command.output().context("running the fixture")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("the {name} page failed ({}): {stdout}", output.status);
    }
    stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).map(str::to_owned).context("the page printed no RESULT")
}

/// `npm run SCRIPT` in `dir`.
fn npm_run(dir: &Path, script: &str) -> anyhow::Result<()> {
    let npm = find_on_path("npm").context("npm is not on PATH: install Node.js 20.19 or newer (it brings npm)")?;
    workspace::run(Command::new(npm).current_dir(dir).args(["run", script]))
}

/// `cargo xtask test`'s browser steps, after the package is built.
pub fn test_steps(summary: &mut Summary, repo: &Workspace) {
    summary.step("chromium + chromedriver (Debian)", ensure_chromium);
    build_steps(summary, repo);
    let fixture = std::cell::OnceCell::new();
    summary.step("fixture server", || {
        let binary = build_fixture(repo)?;
        let shown = binary.display().to_string();
        let _ = fixture.set(binary);
        Ok(Outcome::Ready(shown))
    });
    summary.step("browser tests (wasm-bindgen-test, headless Chromium)", || browser_tests(repo, fixture.get().context("no fixture binary")?));
    summary.step("plain-page test (pods.html imports the package)", || {
        let report = page(repo, fixture.get().context("no fixture binary")?, "pods")?;
        Ok(Outcome::Ready(format!("the page listed the simulator's pods: {report}")))
    });
    summary.step("terminal page (the browser closes; the shell must end)", || {
        let report = page(repo, fixture.get().context("no fixture binary")?, "terminal")?;
        Ok(Outcome::Ready(format!("no shell left behind: {report}")))
    });
    let bundlers = repo.root.join("tests/bundlers");
    summary.step("TypeScript consumer (tsc --strict against the package's types)", || {
        let installed = crate::www::npm_packages(&bundlers)?;
        npm_run(&bundlers, "types")?;
        Ok(Outcome::Ready(format!("npm packages {installed}; tests/bundlers/src/typed.ts type-checks")))
    });
    summary.step("bundled consumers (Vite, webpack, esbuild) in headless Chromium", || {
        let mut shown = Vec::new();
        for bundler in ["vite", "webpack", "esbuild"] {
            npm_run(&bundlers, bundler)?;
            page_from(repo, fixture.get().context("no fixture binary")?, &format!("{bundler}/pods"), &bundlers.join("dist"))?;
            shown.push(bundler);
        }
        Ok(Outcome::Ready(format!("each bundle listed the simulator's pods: {}", shown.join(", "))))
    });
    summary.step("React page (kubemux/react's useWatch in an app built with Vite)", || {
        let app = repo.root.join("tests/react");
        let installed = crate::www::npm_packages(&app)?;
        npm_run(&app, "build")?;
        page_from(repo, fixture.get().context("no fixture binary")?, "react", &app.join("dist"))?;
        Ok(Outcome::Ready(format!("npm packages {installed}; a pod created, relabelled and deleted appeared, changed and vanished in the rendered rows")))
    });
}
