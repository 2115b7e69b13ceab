//! `cargo xtask bench [SECTION...]`: runs benchmark sections and writes each one's table into
//! `BENCHMARKS.md`, replacing only that section, so sections measured on different runs (or
//! added by other parts of the project) live side by side.
//!
//! Adding a section: write `fn(&Workspace) -> anyhow::Result<Section>` and list it in
//! [`SECTIONS`] with a short key. A section owns the text between its markers
//! `<!-- bench:KEY -->` and `<!-- /bench:KEY -->` in BENCHMARKS.md; text outside markers is kept.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};

use crate::steps::{Outcome, Summary};
use crate::wasm;
use crate::workspace::Workspace;

/// One section of BENCHMARKS.md: a heading, a paragraph saying how it was measured, a table.
pub struct Section {
    /// Marker key (`client`, `proxy`, …); also what `cargo xtask bench KEY` selects.
    pub key: &'static str,
    /// Heading text.
    pub title: String,
    /// How and where it was measured (one paragraph of Markdown).
    pub method: String,
    /// Column headings.
    pub columns: Vec<String>,
    /// Rows of cells, as many as `columns`.
    pub rows: Vec<Vec<String>>,
}

impl Section {
    /// The section as Markdown, markers included.
    pub fn markdown(&self) -> String {
        let mut text = format!("<!-- bench:{} -->\n## {}\n\n{}\n\n", self.key, self.title, self.method.trim());
        text.push_str(&table(&self.columns, &self.rows));
        let _ = writeln!(text, "<!-- /bench:{} -->", self.key);
        text
    }
}

/// A Markdown table.
pub fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let mut text = format!("| {} |\n|{}\n", columns.join(" | "), " --- |".repeat(columns.len()));
    for row in rows {
        let _ = writeln!(text, "| {} |", row.join(" | "));
    }
    text
}

/// Measures one section.
pub type SectionFn = fn(&Workspace) -> anyhow::Result<Section>;

/// The sections `cargo xtask bench` knows, in the order they appear in BENCHMARKS.md when new.
pub const SECTIONS: &[(&str, SectionFn)] = &[("proxy", proxy_section), ("terminal", terminal_section), ("forward", forward_section), ("bytes", bytes_section), ("client", client_section)];

/// The multiplexer against `kubectl proxy` and a direct watch on kube-sim, with one raw client:
/// one stream, fan-out, 10k-pod snapshots, memory per idle connection, added latency
/// (`tests/bench/mux.rs`; needs kubectl, and fails without it: the comparison is the point).
fn proxy_section(repo: &Workspace) -> anyhow::Result<Section> {
    if let Outcome::Missing(why) = crate::steps::ensure_kubectl()? {
        bail!("kubectl is required to compare kubemux-proxy with `kubectl proxy`: {why}");
    }
    program_section(repo, "proxy", "Multiplexed watches (`kubemux-proxy` against `kubectl proxy`)", "kubemux-bench-mux")
}

/// Terminals: keystroke echo and stdout throughput through the proxy against a direct exec
/// (`tests/bench/terminal.rs`).
fn terminal_section(repo: &Workspace) -> anyhow::Result<Section> {
    program_section(repo, "terminal", "Terminals (`kubemux-proxy` exec)", "kubemux-bench-terminal")
}

/// Forwards: connect latency and echo throughput against `kubectl port-forward` to the same
/// pod, and recovery after pod restarts (`tests/bench/forward.rs`; needs kubectl).
fn forward_section(repo: &Workspace) -> anyhow::Result<Section> {
    crate::steps::ensure_kubectl()?;
    program_section(repo, "forward", "Port-forwards (`kubemux-proxy` forwards)", "kubemux-bench-forward")
}

/// Bytes to the browser per MODIFIED pod event on a status-churn workload: the raw watch, today's
/// frames, and what projection, deltas and deflate would send (`tests/bench/bytes.rs`).
fn bytes_section(repo: &Workspace) -> anyhow::Result<Section> {
    program_section(repo, "bytes", "Bytes per event (`kubemux-proxy` watch frames)", "kubemux-bench-bytes")
}

/// Builds and runs a measuring program of the tests crate (release), which prints
/// tab-separated `columns`, `row` and `method` lines.
fn program_section(repo: &Workspace, key: &'static str, title: &str, binary: &str) -> anyhow::Result<Section> {
    crate::workspace::run(repo.cargo().args(["build", "--release", "-p", "kubemux-proxy", "-p", "kubemux-e2e", "--bin", "kubemux-proxy", "--bin", binary]))?;
    let program = repo.target_dir.join("release").join(binary);
    let output = std::process::Command::new(&program).stderr(std::process::Stdio::inherit()).output().with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", program.display(), output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut section = Section { key, title: title.to_owned(), method: String::new(), columns: Vec::new(), rows: Vec::new() };
    for line in text.lines() {
        let mut cells = line.split('\t');
        match cells.next() {
            Some("columns") => section.columns = cells.map(str::to_owned).collect(),
            Some("row") => section.rows.push(cells.map(str::to_owned).collect()),
            Some("method") => section.method = cells.collect::<Vec<_>>().join(" "),
            _ => {}
        }
    }
    if section.columns.is_empty() || section.rows.is_empty() {
        bail!("{binary} printed no table:\n{text}");
    }
    Ok(section)
}

/// `cargo xtask bench [KEY...]`: every section, or the named ones.
pub fn run(keys: &[String]) -> anyhow::Result<()> {
    let repo = Workspace::locate()?;
    for key in keys {
        if !SECTIONS.iter().any(|(k, _)| k == key) {
            bail!("unknown benchmark section {key:?}; known: {}", SECTIONS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "));
        }
    }
    println!("cargo xtask bench: runs benchmark sections and writes them into BENCHMARKS.md; each section installs what it needs and says so.");
    let mut summary = Summary::new("cargo xtask bench");
    for (key, section) in SECTIONS {
        if !keys.is_empty() && !keys.iter().any(|k| k == key) {
            continue;
        }
        summary.step(key, || {
            let section = section(&repo)?;
            let text = section.markdown();
            println!("\n{text}");
            write_section(&repo, &section)?;
            Ok(Outcome::Ready("written to BENCHMARKS.md".to_owned()))
        });
    }
    summary.finish()
}

/// Replaces (or appends) one section of BENCHMARKS.md.
pub fn write_section(repo: &Workspace, section: &Section) -> anyhow::Result<()> {
    let path = repo.root.join("BENCHMARKS.md");
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) => "# Benchmarks\n\nWritten by `cargo xtask bench`; each section is replaced when its benchmark runs again.\n".to_owned(),
    };
    let start = format!("<!-- bench:{} -->", section.key);
    let end = format!("<!-- /bench:{} -->\n", section.key);
    let new = match (old.find(&start), old.find(&end)) {
        (Some(s), Some(e)) if e > s => format!("{}{}{}", &old[..s], section.markdown(), &old[e + end.len()..]),
        _ => format!("{}\n{}", old.trim_end_matches('\n').to_owned() + "\n", section.markdown()),
    };
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))
}

/// The browser client: package size and events per second applied in headless Chromium.
fn client_section(repo: &Workspace) -> anyhow::Result<Section> {
    let mut steps = Summary::new("bench client");
    steps.step("chromium + chromedriver (Debian)", wasm::ensure_chromium);
    wasm::build_steps(&mut steps, repo);
    steps.finish()?;
    let sizes = wasm::package_sizes(&wasm::pkg_dir(repo))?;
    let fixture = wasm::build_fixture(repo)?;
    let report = wasm::page(repo, &fixture, "bench")?;
    let number = |key: &str| report_field(&report, key);
    let (events, cache_only, with_objects) = (number("events")?, number("cacheOnlyPerSecond")?, number("withObjectsPerSecond")?);
    let chromium = std::process::Command::new("/usr/bin/chromium").arg("--version").output().ok();
    let chromium = chromium.map(|o| String::from_utf8_lossy(&o.stdout).split(" built").next().unwrap_or_default().trim().to_owned()).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    Ok(Section {
        key: "client",
        title: "Browser client (`kubemux` npm package)".to_owned(),
        method: format!(
            "Size: the files `cargo xtask wasm` writes to `wasm-client/pkg/` (profile `wasm-release`: opt-level z, LTO, one \
             codegen unit, panic=abort; then `wasm-opt -Oz` from npm binaryen {}), gzipped with `gzip -9`. Target: under 100 KiB \
             gzipped for the .wasm plus its JS glue.\n\nSpeed: `tests/browser/bench.html` in headless {chromium} on a {cores}-core \
             machine: a fixture WebSocket answers one watch with {events} `ADDED`/`MODIFIED` frames over 1000 pods, then `synced`; \
             time from the first applied event to `synced`, after one warm-up burst. \"cache only\" applies each event to the \
             subscription's cache and calls `onChange`; \"with objects\" also hands every object to JavaScript through `onEvent`. \
             The sender is the fixture (a debug build) on the same 2 cores: when the two figures are close, it was the \
             limit, so read them as lower bounds.",
            wasm_opt_version()
        ),
        columns: ["measure", "value"].map(str::to_owned).to_vec(),
        rows: vec![
            vec!["package, gzipped (.wasm + JS glue)".to_owned(), format!("{:.1} KiB", wasm::kib(sizes.wasm_gz + sizes.js_gz))],
            vec!["`kubemux_bg.wasm`".to_owned(), format!("{:.1} KiB raw, {:.1} KiB gzipped", wasm::kib(sizes.wasm), wasm::kib(sizes.wasm_gz))],
            vec!["`kubemux.js` (glue)".to_owned(), format!("{:.1} KiB raw, {:.1} KiB gzipped", wasm::kib(sizes.js), wasm::kib(sizes.js_gz))],
            vec!["events applied per second, cache only".to_owned(), format!("{cache_only:.0}")],
            vec!["events applied per second, with objects to JS".to_owned(), format!("{with_objects:.0}")],
        ],
    })
}

fn wasm_opt_version() -> String {
    wasm::BINARYEN_VERSION.to_owned()
}

/// A number from the page's flat JSON report (`{"events":20000,...}`); xtask has no JSON
/// parser and needs none for this.
fn report_field(report: &str, key: &str) -> anyhow::Result<f64> {
    let pattern = format!("\"{key}\":");
    let start = report.find(&pattern).with_context(|| format!("the report has no {key}: {report}"))? + pattern.len();
    let digits: String = report[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    digits.parse().with_context(|| format!("{key} is not a number in {report}"))
}
