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
pub const SECTIONS: &[(&str, SectionFn)] =
    &[("proxy", proxy_section), ("terminal", terminal_section), ("forward", forward_section), ("bytes", bytes_section), ("client", client_section), ("paint", paint_section)];

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
    let fixture = browser_bench(repo, "bench client")?;
    let sizes = wasm::package_sizes(&wasm::pkg_dir(repo))?;
    let report = wasm::page(repo, &fixture, "bench")?;
    let number = |key: &str| report_field(&report, key);
    let (chromium, cores) = (chromium_version(), cores());
    let (burst, burst_pods, pods, pod_bytes) = (number("burst")?, number("burstPods")?, number("pods")?, number("plainSnapshot.podBytes")?);
    let stable = report.contains("\"kubemuxSnapshot.snapshotStable\":true");

    // One row per goal: plain, kubemux, kubemux ÷ plain, the goal, and whether it is met.
    let mut rows = Vec::new();
    let mut compare = |measure: String, plain_key: &str, kubemux_key: &str, scale: f64, unit: &str| -> anyhow::Result<()> {
        let (plain, kubemux) = (number(plain_key)? * scale, number(kubemux_key)? * scale);
        let ratio = kubemux / plain;
        rows.push(vec![measure, format!("{plain:.1} {unit}"), format!("{kubemux:.1} {unit}"), format!("{ratio:.2}×"), "≤ 1.0×".to_owned(), met(ratio <= 1.0)]);
        Ok(())
    };
    compare(
        format!("main-thread CPU per event, burst of {burst:.0} writes over {burst_pods:.0} pods, `onChange` only"),
        "bursts.changesOnly.plain.usPerEvent",
        "bursts.changesOnly.kubemux.usPerEvent",
        1.0,
        "µs",
    )?;
    compare("main-thread CPU per event, the same with `onEvent`".to_owned(), "bursts.withEvents.plain.usPerEvent", "bursts.withEvents.kubemux.usPerEvent", 1.0, "µs")?;
    compare(format!("{pods:.0} pods ({:.1} KB each): `watch()` → synced", pod_bytes / 1000.0), "plainSnapshot.syncMs", "kubemuxSnapshot.syncMs", 1.0, "ms")?;
    compare(
        format!("memory held per object, {pods:.0} pods synced (JS heap after `gc()` + wasm memory growth)"),
        "plainSnapshot.bytesPerObject",
        "kubemuxSnapshot.bytesPerObject",
        1.0 / 1024.0,
        "KiB",
    )?;
    let (plain_read, kubemux_read) = (number("plainSnapshot.snapshotMs")?, number("kubemuxSnapshot.snapshotMs")?);
    rows.push(vec![
        format!("reading the list of {pods:.0} (plain: `Array.from(map.values())`; kubemux: `getSnapshot()`)"),
        format!("{plain_read:.2} ms"),
        format!("{kubemux_read:.2} ms"),
        format!("{:.2}×", kubemux_read / plain_read),
        String::new(),
        String::new(),
    ]);
    let (plain_again, kubemux_again) = (number("plainSnapshot.snapshotAgainMs")?, number("kubemuxSnapshot.snapshotAgainMs")?);
    rows.push(vec![
        "reading it again, nothing changed".to_owned(),
        format!("{plain_again:.2} ms"),
        format!("{kubemux_again:.3} ms{}", if stable { ", the same array" } else { ", a new array" }),
        format!("{:.3}×", kubemux_again / plain_again),
        "O(1): the same array".to_owned(),
        met(stable),
    ]);
    rows.push(vec![
        format!("one `items()` on {pods:.0} objects (a fresh copy)"),
        format!("{plain_read:.2} ms"),
        format!("{:.1} ms", number("kubemuxSnapshot.itemsMs")?),
        String::new(),
        String::new(),
        String::new(),
    ]);
    for (label, key) in [("onChange only", "changesOnly"), ("with onEvent", "withEvents")] {
        rows.push(vec![
            format!("events/s delivered in the burst, {label} (the proxy and simulator send them; not a goal)"),
            format!("{:.0}", number(&format!("bursts.{key}.plain.eventsPerSecond"))?),
            format!("{:.0}", number(&format!("bursts.{key}.kubemux.eventsPerSecond"))?),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    rows.push(vec![
        "package, gzipped (.wasm + JS glue)".to_owned(),
        String::new(),
        format!("{:.1} KiB", wasm::kib(sizes.wasm_gz + sizes.js_gz)),
        String::new(),
        "< 100 KiB".to_owned(),
        met(wasm::kib(sizes.wasm_gz + sizes.js_gz) < 100.0),
    ]);
    rows.push(vec![
        "`kubemux_bg.wasm`".to_owned(),
        String::new(),
        format!("{:.1} KiB raw, {:.1} KiB gzipped", wasm::kib(sizes.wasm), wasm::kib(sizes.wasm_gz)),
        String::new(),
        String::new(),
        String::new(),
    ]);
    rows.push(vec![
        "`kubemux.js` (glue) and `snippets/`".to_owned(),
        String::new(),
        format!("{:.1} KiB raw, {:.1} KiB gzipped", wasm::kib(sizes.js), wasm::kib(sizes.js_gz)),
        String::new(),
        String::new(),
        String::new(),
    ]);
    Ok(Section {
        key: "client",
        title: "Browser client (`kubemux` npm package) against plain JavaScript".to_owned(),
        method: format!(
            "One run of `tests/browser/bench.html` in headless {chromium} on a {cores}-core machine, through the real proxy \
             and simulator (`kubemux-fixture`, release build: kube-sim and kubemux-proxy in one process, on loopback), with \
             no DevTools connection. Both clients in the same page, one after the other: the package, and a plain-JavaScript \
             client of the same protocol (a raw `WebSocket`, `JSON.parse` per frame, a `Map` keyed by namespace/name), the \
             client a developer would write instead. Main-thread CPU per event: the time spent in the sockets' `message` \
             listeners (the page wraps every listener added to a WebSocket; both clients parse, apply and call the \
             application back there), in a page served cross-origin isolated so that `performance.now()` has microseconds, \
             divided by the events received; a burst is {burst:.0} writes to kube-sim's store round-robin over {burst_pods:.0} pods, \
             after a warm-up of 2000. Snapshot: `watch()` to `synced` on {pods:.0} pods, the plain client first as a warm-up \
             of the proxy's upstream watch and of the JIT, then each client once; the package's memory is read on its \
             first snapshot, while its wasm memory holds nothing else. Chromium shares the 2 cores with the proxy and \
             simulator, so read the ratios, not the absolute figures.\n\nSize: the files `cargo xtask wasm` writes to \
             `wasm-client/pkg/` (profile `wasm-release`: opt-level z, LTO, one codegen unit, panic=abort; then `wasm-opt -Oz` \
             from npm binaryen {}), gzipped with `gzip -9`.",
            wasm_opt_version()
        ),
        columns: ["measure", "plain JavaScript", "kubemux", "kubemux ÷ plain", "goal", "met"].map(str::to_owned).to_vec(),
        rows,
    })
}

/// A table of 10,000 pods drawn the web app's way, fed by the package and by the plain client
/// (`tests/browser/paint.html`): first paint, and the frames during a burst of writes.
fn paint_section(repo: &Workspace) -> anyhow::Result<Section> {
    let fixture = browser_bench(repo, "bench paint")?;
    let report = wasm::page(repo, &fixture, "paint")?;
    let number = |key: &str| report_field(&report, key);
    let (pods, writes, visible) = (number("pods")?, number("writes")?, number("visible")?);
    let mut rows = Vec::new();
    for (measure, key, goal) in [
        (format!("first paint of {pods:.0} pods: `watch()` → the table drawn with all of them, synced"), "firstPaintMs", true),
        (format!("frame during a burst of {writes:.0} writes over all {pods:.0} pods: median"), "frameMedianMs", true),
        ("the same frames: 95th percentile".to_owned(), "frameP95Ms", false),
    ] {
        let (plain, kubemux) = (number(&format!("plain.{key}"))?, number(&format!("kubemux.{key}"))?);
        let ratio = kubemux / plain;
        let (goal, met) = if goal { ("≤ 1.0×".to_owned(), met(ratio <= 1.0)) } else { (String::new(), String::new()) };
        rows.push(vec![measure, format!("{plain:.2} ms"), format!("{kubemux:.2} ms"), format!("{ratio:.2}×"), goal, met]);
    }
    rows.push(vec![
        "frames drawn per second during the burst (not a goal: the events' own cost is in the client section)".to_owned(),
        format!("{:.1}", number("plain.framesPerSecond")?),
        format!("{:.1}", number("kubemux.framesPerSecond")?),
        String::new(),
        String::new(),
        String::new(),
    ]);
    Ok(Section {
        key: "paint",
        title: "The web app's table of 10,000 pods: the package against plain JavaScript".to_owned(),
        method: format!(
            "One run of `tests/browser/paint.html` in headless {} on a {}-core machine, through the real proxy and simulator \
             (`kubemux-fixture`, release build), the same drawing code for both clients, the way the web app (`www/`) draws \
             its pods table: every change schedules one animation frame, which reads the whole list (kubemux: \
             `getSnapshot()`; the plain client of the client section: `Array.from(map.values())`) and draws the {visible:.0} \
             rows a window shows with its overscan, redrawing a row only when its object is not the one it shows. First \
             paint: from `watch()` to the browser's next frame after the first frame that drew all {pods:.0} pods once \
             synced. Frame: the time inside the animation-frame callback (reading the list and drawing) while the burst's \
             events arrive. Each client runs once as a warm-up, then once measured.",
            chromium_version(),
            cores()
        ),
        columns: ["measure", "plain JavaScript", "kubemux", "kubemux ÷ plain", "goal", "met"].map(str::to_owned).to_vec(),
        rows,
    })
}

/// What a browser bench needs: Chromium, the package built, and the release fixture (its path).
fn browser_bench(repo: &Workspace, name: &'static str) -> anyhow::Result<std::path::PathBuf> {
    let mut steps = Summary::new(name);
    steps.step("chromium + chromedriver (Debian)", wasm::ensure_chromium);
    wasm::build_steps(&mut steps, repo);
    steps.finish()?;
    wasm::build_fixture_release(repo)
}

/// `Chromium 156.0.…` as Debian's chromium tells it, or nothing.
fn chromium_version() -> String {
    let output = std::process::Command::new("/usr/bin/chromium").arg("--version").output().ok();
    output.map(|o| String::from_utf8_lossy(&o.stdout).split(" built").next().unwrap_or_default().trim().to_owned()).unwrap_or_default()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn met(yes: bool) -> String {
    if yes { "met" } else { "not met" }.to_owned()
}

fn wasm_opt_version() -> String {
    wasm::BINARYEN_VERSION.to_owned()
}

/// A number from the page's flat JSON report (`{"events":20000,...}`); xtask has no JSON
/// parser and needs none for this.
fn report_field(report: &str, key: &str) -> anyhow::Result<f64> {
    let pattern = format!("\"{key}\":");
    let start = report.find(&pattern).with_context(|| format!("the report has no {key}: {report}"))? + pattern.len();
    let digits: String = report[start..].chars().take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')).collect();
    digits.parse().with_context(|| format!("{key} is not a number in {report}"))
}
