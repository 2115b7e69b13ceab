//! `cargo xtask demo`: the web app served by `kubemux-demo` (the proxy with embedded
//! simulated clusters), until Ctrl-C.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use crate::steps::{Outcome, Summary};
use crate::workspace::{self, Workspace};
use crate::{wasm, www};

/// What the proxy prints as its first stdout line, before the URL.
const ANNOUNCEMENT: &str = "kubemux-proxy listening on ";

/// How long the proxy gets to end its terminals and simulators after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(15);

/// Builds the package, the web app and the proxy, runs the demo, prints its URL, and stops it
/// (and every process it started) on Ctrl-C or SIGTERM.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let listen = match args {
        [] => "127.0.0.1:8080".to_owned(),
        [flag, address] if flag == "--listen" => address.clone(),
        _ => bail!("usage: cargo xtask demo [--listen ADDRESS] (default 127.0.0.1:8080)"),
    };
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask demo: installs what is missing (rustup target wasm32-unknown-unknown; wasm-bindgen-cli from \
         crates.io at the version in Cargo.lock; wasm-pack from crates.io; npm binaryen for wasm-opt; the web app's npm packages), builds the \
         npm package kubemux, the web app and kubemux-demo, then runs it: the proxy over two simulated \
         clusters embedded in it, the web app served on {listen}.\n\
         build cache: {}",
        repo.target_dir.display()
    );
    let mut summary = Summary::new("cargo xtask demo (build)");
    summary.step("node + npm", www::ensure_node);
    wasm::build_steps(&mut summary, &repo);
    summary.step("web app (www/dist)", || www::build(&repo));
    summary.step("kubemux-demo", || {
        workspace::run(repo.cargo().args(["build", "--package", "kubemux-demo", "--bin", "kubemux-demo"]))?;
        Ok(Outcome::Ready("built".to_owned()))
    });
    summary.finish()?;

    let binary = repo.target_dir.join("debug/kubemux-demo");
    let mut command = Command::new(&binary);
    command
        .args(["--listen", &listen, "--static"])
        .arg(repo.root.join("www/dist"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    println!("$ {}", workspace::command_line(&command));
    let mut proxy = command.spawn().with_context(|| format!("starting {}", binary.display()))?;

    let mut stdout = BufReader::new(proxy.stdout.take().context("the proxy's stdout is not piped")?);
    let mut first = String::new();
    stdout.read_line(&mut first).context("reading the proxy's first line")?;
    let Some(url) = first.trim_end().strip_prefix(ANNOUNCEMENT).map(str::to_owned) else {
        stop(&mut proxy)?;
        bail!("kubemux-demo did not start (is {listen} free? `cargo xtask demo --listen 127.0.0.1:PORT` picks another); its first line was {first:?}");
    };

    // From here on, Ctrl-C, SIGTERM and the simulator's own exit arrive as values from
    // `wait` below instead of killing this process: so the simulator is always stopped and
    // waited for. Blocked before any other thread starts, so every thread inherits the mask.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        signals.add(signal);
    }
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;

    // Keep draining the proxy's stdout so it never blocks on a full pipe.
    let relay = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            println!("{line}");
        }
    });

    println!(
        "\nThe kubemux demo is running: open {url}/ in a browser.\n\
         Clusters: demo and staging (simulated, with churn), and demo-viewer (the demo cluster as a user \
         restricted to the demo namespace, so one panel shows a 403), from the config file named above: \
         edit it while the demo runs to add a cluster (README, Configuration).\n\n\
         Press Ctrl-C to stop."
    );

    let reason = loop {
        match signals.wait().context("waiting for signals")? {
            Signal::SIGCHLD => {
                if let Some(status) = proxy.try_wait()? {
                    let _ = relay.join();
                    bail!("kubemux-demo exited on its own ({status})");
                }
            }
            signal => break signal,
        }
    };
    println!("\n{reason}: stopping the demo");
    stop(&mut proxy)?;
    let _ = relay.join();
    println!("demo stopped: the proxy, its simulators and every process they started have ended");
    Ok(())
}

/// SIGTERM, then wait up to [`GRACE`] for the proxy to end its terminals and simulators, then
/// SIGKILL.
fn stop(sim: &mut Child) -> anyhow::Result<()> {
    if sim.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = Pid::from_raw(i32::try_from(sim.id()).context("process id out of range")?);
    // It may have exited since `try_wait`; it is not reaped yet, so the pid is still ours.
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if sim.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("kubemux-demo did not stop within {GRACE:?} of SIGTERM; killing it");
    sim.kill()?;
    sim.wait()?;
    Ok(())
}
