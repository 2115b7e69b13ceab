//! `cargo xtask test`: the one command that runs every test on any machine, and with
//! `--repeat N` the command that shows which tests flake.

use std::io::{BufRead as _, BufReader};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::steps::{Outcome, Summary, ensure_kubectl};
use crate::workspace::{self, Workspace, find_on_path};
use crate::{fuzz, image, scale_out, wasm, www};

/// The kubectl tests: `#[ignore]`d for a plain `cargo test`, run here with `--ignored`.
const KUBECTL_TESTS: &[(&str, &str)] = &[("kube-sim", "kubectl"), ("kube-sim", "kubectl_tls"), ("kubemux-e2e", "passthrough"), ("kubemux-e2e", "deploy_manifests")];

/// `cargo xtask test [--repeat N] [-- ARGS...]`, after [`parse`].
pub fn run((repeat, passed): (Option<u32>, &[String])) -> anyhow::Result<()> {
    match repeat {
        None => run_once(passed),
        Some(runs) => repeat_runs(runs, passed),
    }
}

/// The command line after `test`: how many runs (`--repeat N`, none without it) and what goes
/// to `cargo test`.
pub fn parse(args: &[String]) -> anyhow::Result<(Option<u32>, &[String])> {
    match args {
        [] => Ok((None, &[])),
        [dashes, passed @ ..] if dashes == "--" => Ok((None, passed)),
        [flag, count, rest @ ..] if flag == "--repeat" => {
            let runs: u32 = count.parse().ok().filter(|n| *n > 0).with_context(|| format!("--repeat takes a whole number of runs, 1 or more (got {count:?})"))?;
            match rest {
                [] => Ok((Some(runs), &[])),
                [dashes, passed @ ..] if dashes == "--" => Ok((Some(runs), passed)),
                [other, ..] => bail!("unexpected argument {other:?} (pass arguments for cargo test after `--`)"),
            }
        }
        [other, ..] => bail!("unexpected argument {other:?} (pass arguments for cargo test after `--`)"),
    }
}

/// Makes sure what the tests need is there, then runs `cargo test --workspace` with `passed`
/// appended, the kubectl tests, and the browser suites.
fn run_once(passed: &[String]) -> anyhow::Result<()> {
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask test: checks for kubectl (optional); installs Debian's haproxy with apt-get if missing (the scale_out test runs 3 proxies behind it); runs cargo test --workspace, then the kubectl tests \
         (among them kubectl kustomize + apply --dry-run=server of deploy/kubernetes) when kubectl is on PATH (required under CI or KUBEMUX_REQUIRE_TOOLS=1); \
         then the fidelity suite (pip installs the Python client into a virtualenv under the build cache, npm ci in tests/fidelity; \
         each skipped without python3 or node unless required); then for the browser \
         client installs what is missing (Debian chromium + chromium-driver with apt-get, rustup target \
         wasm32-unknown-unknown, wasm-bindgen-cli from crates.io at the Cargo.lock version, wasm-pack from crates.io, npm binaryen), \
         builds the npm package with wasm-pack and runs the browser tests in headless Chromium (among them a React page, npm ci in tests/react/ and vite build, and the same consumer built by Vite, webpack and esbuild with a tsc --strict check, npm ci in tests/bundlers/); then builds the container image \
         (static musl kubemux-proxy, podman; skipped without podman or root unless required) and runs it from its \
         unpacked root against a kube-sim (deploy_image); then builds the web app \
         (npm ci, vite build), kubemux-proxy and kube-sim, and runs its Playwright tests (www e2e).\n\
         build cache: {}",
        repo.target_dir.display()
    );
    let mut summary = Summary::new("cargo xtask test");
    summary.step("kubectl", ensure_kubectl);
    summary.step("haproxy (Debian)", scale_out::ensure_haproxy);
    summary.step("cargo test --workspace", || {
        workspace::run(repo.cargo().args(["test", "--workspace"]).args(passed))?;
        Ok(Outcome::Ready("passed".to_owned()))
    });
    summary.step("kubectl tests", || kubectl_tests(&repo, passed, workspace::run));
    summary.step("fidelity suite (kubectl tutorial, Python, client-node)", || crate::fidelity::tests(&repo, &with_ignored(passed), tools_required()));
    summary.step("kubemux-proxy links no simulator", || proxy_links_no_simulator(&repo));
    wasm::test_steps(&mut summary, &repo);
    image::test_steps(&mut summary, &repo, tools_required());
    www::test_steps(&mut summary, &repo);
    fuzz::test_steps(&mut summary, &repo);
    summary.finish()
}

/// The production proxy's dependency tree (normal and build edges, as the binary links them)
/// holds no kube-sim: the simulators are `kubemux-demo`'s.
fn proxy_links_no_simulator(repo: &Workspace) -> anyhow::Result<Outcome> {
    let output = repo
        .cargo()
        .args(["tree", "--package", "kubemux-proxy", "--edges", "normal,build", "--prefix", "none", "--format", "{p}"])
        .output()
        .context("running cargo tree")?;
    if !output.status.success() {
        bail!("cargo tree -p kubemux-proxy failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    if let Some(line) = tree.lines().find(|line| line.split_whitespace().next() == Some("kube-sim")) {
        bail!("kubemux-proxy depends on the simulator ({line}); only kubemux-demo and the tests may");
    }
    Ok(Outcome::Ready(format!("{} crates in its tree, none of them kube-sim", tree.lines().count())))
}

/// Whether a missing tool fails the run instead of skipping its tests.
fn tools_required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") || std::env::var_os("KUBEMUX_REQUIRE_TOOLS").is_some_and(|v| v == "1")
}

/// `passed` with `--ignored` among the test binary's arguments.
fn with_ignored(passed: &[String]) -> Vec<String> {
    let mut args = passed.to_vec();
    match args.iter().position(|a| a == "--") {
        Some(dashes) => args.insert(dashes + 1, "--ignored".to_owned()),
        None => args.extend(["--".to_owned(), "--ignored".to_owned()]),
    }
    args
}

/// The kubectl tests, when kubectl is on PATH or must be: a skip is said, never silent.
fn kubectl_tests(repo: &Workspace, passed: &[String], mut run: impl FnMut(&mut Command) -> anyhow::Result<()>) -> anyhow::Result<Outcome> {
    let required = tools_required();
    if find_on_path("kubectl").is_none() && !required {
        return Ok(Outcome::Missing("skipped: kubectl not on PATH (required under CI or KUBEMUX_REQUIRE_TOOLS=1)".to_owned()));
    }
    for (package, test) in KUBECTL_TESTS {
        let mut command = repo.cargo();
        command.args(["test", "--package", package, "--test", test]).args(with_ignored(passed));
        if required {
            command.env("KUBEMUX_REQUIRE_TOOLS", "1");
        }
        run(&mut command)?;
    }
    let names: Vec<String> = KUBECTL_TESTS.iter().map(|(package, test)| format!("{package} --test {test}")).collect();
    Ok(Outcome::Ready(format!("passed ({})", names.join(", "))))
}

/// One failure of a repeated run.
struct Failure {
    run: u32,
    suite: String,
    test: String,
}

/// `--repeat N`: builds everything once, then runs every suite `runs` times, going on after a
/// failure; reports each failure (run, suite, test) and a count, and fails if any run did.
fn repeat_runs(runs: u32, passed: &[String]) -> anyhow::Result<()> {
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask test --repeat {runs}: installs and builds what the tests need once (as cargo xtask test does), \
         then runs the Rust suites (cargo test --workspace --no-fail-fast, the kubectl tests) and the browser \
         suites (wasm-bindgen tests, the plain pages, www e2e) {runs} times, and lists every failure.\n\
         build cache: {}",
        repo.target_dir.display()
    );
    let mut setup = Summary::new("cargo xtask test --repeat: setup");
    setup.step("kubectl", ensure_kubectl);
    setup.step("build the Rust tests", || {
        workspace::run(repo.cargo().args(["test", "--workspace", "--no-run"]))?;
        Ok(Outcome::Ready("built".to_owned()))
    });
    setup.step("chromium + chromedriver (Debian)", wasm::ensure_chromium);
    setup.step("haproxy (Debian)", scale_out::ensure_haproxy);
    wasm::build_steps(&mut setup, &repo);
    let fixture = std::cell::OnceCell::new();
    setup.step("fixture server", || {
        let binary = wasm::build_fixture(&repo)?;
        let shown = binary.display().to_string();
        let _ = fixture.set(binary);
        Ok(Outcome::Ready(shown))
    });
    setup.step("node + npm", www::ensure_node);
    setup.step("web app (www/dist)", || www::build(&repo));
    let binaries = std::cell::OnceCell::new();
    setup.step("kubemux-proxy + kube-sim binaries", || {
        let built = www::build_binaries(&repo)?;
        let shown = format!("{} and {}", built.0.display(), built.1.display());
        let _ = binaries.set(built);
        Ok(Outcome::Ready(shown))
    });
    setup.finish()?;
    let fixture = fixture.get().context("no fixture binary")?;
    let (proxy, sim) = binaries.get().context("no binaries")?;

    let mut failures: Vec<Failure> = Vec::new();
    let mut failed_runs = 0;
    for run in 1..=runs {
        println!("\n== run {run} of {runs}");
        let before = failures.len();
        let mut note = |suite: &str, outcome: anyhow::Result<Vec<(String, String)>>| match outcome {
            Ok(tests) => failures.extend(tests.into_iter().map(|(suite, test)| Failure { run, suite, test })),
            Err(error) => failures.push(Failure { run, suite: suite.to_owned(), test: format!("{error:#}") }),
        };
        let mut rust = repo.cargo();
        rust.args(["test", "--workspace", "--no-fail-fast"]).args(passed);
        note("cargo test --workspace", failed_tests(&mut rust));
        let mut kubectl_failed = Vec::new();
        let skipped = kubectl_tests(&repo, passed, |command| {
            kubectl_failed.extend(failed_tests(command)?);
            Ok(())
        });
        note("kubectl tests", skipped.map(|_| kubectl_failed));
        note("browser tests (wasm-bindgen-test)", wasm::browser_tests_with(&repo, fixture, |command| failed_tests(command.arg("--no-fail-fast"))));
        for page in ["pods", "terminal"] {
            note(&format!("{page} page"), wasm::page(&repo, fixture, page).map(|_| Vec::new()));
        }
        note("www e2e", www::browser_tests(&repo, proxy, sim).map(|_| Vec::new()));
        if failures.len() > before {
            failed_runs += 1;
        }
    }

    println!("\n== cargo xtask test --repeat {runs}: summary");
    for Failure { run, suite, test } in &failures {
        println!("  FAILED   run {run}: {suite}: {test}");
    }
    if failures.is_empty() {
        println!("cargo xtask test --repeat {runs}: every suite passed in all {runs} runs");
        Ok(())
    } else {
        bail!("{} failure(s) in {failed_runs} of {runs} runs", failures.len())
    }
}

/// Runs a `cargo test` whose output (stdout and stderr, in order) is shown as it comes and
/// read for the verdicts: `(suite, test)` for every `test … FAILED` (libtest) or `test … FAIL`
/// (wasm-bindgen-test-runner), the suite being the
/// last `Running …` cargo announced. A cargo that fails with no failed test (a build error) is
/// an error.
fn failed_tests(command: &mut Command) -> anyhow::Result<Vec<(String, String)>> {
    let (reader, writer) = std::io::pipe().context("a pipe for cargo's output")?;
    command.stdout(writer.try_clone()?).stderr(writer);
    let line = workspace::command_line(command);
    println!("$ {line}");
    let mut child = command.spawn().with_context(|| format!("starting `{line}`"))?;
    // The child holds the writing ends now; ours (kept by `command`) would hold the pipe open.
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut suite = String::from("?");
    let mut failed = Vec::new();
    for text in BufReader::new(reader).lines() {
        let text = text.context("reading cargo's output")?;
        println!("{text}");
        let trimmed = text.trim();
        if let Some(running) = trimmed.strip_prefix("Running ") {
            suite = running.split(" (").next().unwrap_or(running).to_owned();
        } else if let Some(doc) = trimmed.strip_prefix("Doc-tests ") {
            suite = format!("doc-tests {doc}");
        } else if let Some(test) = trimmed.strip_prefix("test ").and_then(|t| t.strip_suffix(" ... FAILED").or_else(|| t.strip_suffix(" ... FAIL"))) {
            failed.push((suite.clone(), test.to_owned()));
        }
    }
    let status = child.wait().with_context(|| format!("waiting for `{line}`"))?;
    if !status.success() && failed.is_empty() {
        bail!("`{line}` failed ({status}) with no failed test: see its output");
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(parse(&[]).unwrap(), (None, &[][..]));
        let args = strings(&["--", "selectors"]);
        assert_eq!(parse(&args).unwrap(), (None, &args[1..]));
        let args = strings(&["--repeat", "5", "--", "--", "--nocapture"]);
        assert_eq!(parse(&args).unwrap(), (Some(5), &args[3..]));
        assert!(parse(&strings(&["--repeat", "0"])).is_err());
        assert!(parse(&strings(&["--repeat"])).is_err());
        assert!(parse(&strings(&["selectors"])).is_err());
    }

    #[test]
    fn failed_tests_are_named_with_their_suite() {
        let script = "echo '     Running tests/a.rs (target/a)' >&2; echo 'test one ... ok'; echo 'test two ... FAILED'; \
                      echo '     Running tests/b.rs (target/b)' >&2; echo 'test three ... FAIL'; exit 101";
        let failed = failed_tests(Command::new("sh").args(["-c", script])).unwrap();
        assert_eq!(failed, [("tests/a.rs".to_owned(), "two".to_owned()), ("tests/b.rs".to_owned(), "three".to_owned())]);
        let error = failed_tests(Command::new("sh").args(["-c", "echo 'error[E0425]: nope' >&2; exit 101"])).unwrap_err();
        assert!(format!("{error}").contains("with no failed test"), "{error}");
        assert!(failed_tests(Command::new("sh").args(["-c", "echo 'test one ... ok'"])).unwrap().is_empty());
    }

    #[test]
    fn ignored_goes_to_the_test_binary() {
        assert_eq!(with_ignored(&[]), ["--", "--ignored"]);
        assert_eq!(with_ignored(&strings(&["exec"])), ["exec", "--", "--ignored"]);
        assert_eq!(with_ignored(&strings(&["--", "--nocapture"])), ["--", "--ignored", "--nocapture"]);
    }
}
