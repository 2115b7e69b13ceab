//! `cargo xtask demo`: the simulator with demo objects and churn, until Ctrl-C.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use crate::workspace::{self, Workspace};

/// What kube-sim prints as its first stdout line, before the URL.
const ANNOUNCEMENT: &str = "kube-sim listening on ";

/// How long the simulator gets to end its processes after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// Builds and runs kube-sim, prints how to reach it, and stops it on Ctrl-C (or SIGTERM).
pub fn run() -> anyhow::Result<()> {
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask demo: installs nothing; builds kube-sim and runs it with demo objects and churn.\n\
         The web app is not part of the demo yet (it comes with a later issue): for now the demo \
         is the simulated cluster, to use with kubectl.\n\
         build cache: {}",
        repo.target_dir.display()
    );
    workspace::run(repo.cargo().args(["build", "--package", "kube-sim", "--bin", "kube-sim"]))?;

    let binary = repo.target_dir.join("debug/kube-sim");
    let kubeconfig = repo.target_dir.join("kube-sim.kubeconfig");
    let mut command = Command::new(&binary);
    command
        .args(["--seed", "demo", "--churn", "2", "--write-kubeconfig"])
        .arg(&kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    println!("$ {}", workspace::command_line(&command));
    let mut sim = command.spawn().with_context(|| format!("starting {}", binary.display()))?;

    let mut stdout = BufReader::new(sim.stdout.take().context("kube-sim's stdout is not piped")?);
    let mut first = String::new();
    stdout.read_line(&mut first).context("reading kube-sim's first line")?;
    let Some(url) = first.trim_end().strip_prefix(ANNOUNCEMENT).map(str::to_owned) else {
        stop(&mut sim)?;
        bail!("kube-sim did not announce its URL; its first line was {first:?}");
    };

    // From here on, Ctrl-C, SIGTERM and the simulator's own exit arrive as values from
    // `wait` below instead of killing this process: so the simulator is always stopped and
    // waited for. Blocked before any other thread starts, so every thread inherits the mask.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        signals.add(signal);
    }
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;

    // Keep draining the simulator's stdout so it never blocks on a full pipe.
    let relay = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            println!("{line}");
        }
    });

    println!(
        "\nkube-sim is running at {url}\n\
         kubeconfig: {kubeconfig}\n\n\
         try:\n  kubectl --kubeconfig {kubeconfig} get pods -A -w\n\n\
         Press Ctrl-C to stop.",
        kubeconfig = kubeconfig.display(),
    );

    let reason = loop {
        match signals.wait().context("waiting for signals")? {
            Signal::SIGCHLD => {
                if let Some(status) = sim.try_wait()? {
                    let _ = relay.join();
                    bail!("kube-sim exited on its own ({status})");
                }
            }
            signal => break signal,
        }
    };
    println!("\n{reason}: stopping kube-sim");
    stop(&mut sim)?;
    let _ = relay.join();
    println!("kube-sim stopped");
    Ok(())
}

/// SIGTERM, then wait up to [`GRACE`] for the simulator to end its own processes, then SIGKILL.
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
    eprintln!("kube-sim did not stop within {GRACE:?} of SIGTERM; killing it");
    sim.kill()?;
    sim.wait()?;
    Ok(())
}
