//! SIGTERM to the real `kubemux-proxy` binary while terminals are open: every session runs its
//! teardown within the grace period, so no shell (nor anything it started) is left in the
//! container, attach sessions get no input, each client is told why (close 1001), and the
//! process exits cleanly. Twenty rounds, four at a time, each with a fresh proxy process.

mod terminal_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use futures::StreamExt as _;
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{KubeconfigFile, kubeconfig, proxy_binary, sim_client, start_binary};
use tokio::process::Child;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use terminal_support::*;

/// Starts the binary with a 5 s terminal grace.
async fn start_proxy(binary: &Path, kubeconfig: &Path) -> (Child, SocketAddr) {
    // No drain period: this test is about the teardown that follows it (`drain.rs` has the drain).
    start_binary(binary, &["--kubeconfig".as_ref(), kubeconfig.as_os_str(), "--terminal-grace".as_ref(), "5".as_ref(), "--drain-period".as_ref(), "0".as_ref()], "warn", Stdio::inherit()).await
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("the proxy is running");
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}: {status}");
}

/// One proxy process, a shell in each state and an attach session; SIGTERM; nothing left.
async fn one_round(binary: &Path, kubeconfig: &Path, sim: &kube::Client, round: usize) {
    let (mut child, addr) = start_proxy(binary, kubeconfig).await;
    let sessions = futures::future::join_all(ShellState::ALL.map(|state| async move {
        let (ws, _) = connect(addr, &format!("/clusters/sim{TOOLBOX_SH}"), V5, &[]).await.expect("the upgrade");
        let mut term = Terminal::new(ws);
        term.resize(80, 24).await;
        let pid = term.shell_pid().await;
        term.enter(pid, state).await;
        (term, pid, session_members(pid), state)
    }))
    .await;
    let attach = "/clusters/sim/api/v1/namespaces/default/pods/toolbox/attach?container=shell&stdin=true&stdout=true&tty=true";
    let (ws, _) = connect(addr, attach, V5, &[]).await.expect("the attach upgrade");
    let mut attached = Terminal::new(ws);
    attached.read_until("the main process's output", |text| text.contains("main: tick").then_some(())).await;

    sigterm(&child);
    let sent = Instant::now();
    let checks = sessions.into_iter().map(|(term, pid, members, state)| async move {
        let mut ws = term.ws;
        let code = within("the proxy's close", async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await;
        assert_eq!(code, Some(1001), "round {round}, {state:?}: the client is told the proxy is going away");
        assert_session_gone(sim, pid, &members, sent, &format!("round {round}, SIGTERM, {state:?}")).await;
    });
    futures::future::join_all(checks).await;
    drop(attached);

    let status = within("the proxy to exit", child.wait()).await.expect("wait for the proxy");
    assert!(status.success(), "round {round}: the proxy exits cleanly after its teardowns: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_every_shell_20_rounds() {
    const ROUNDS: usize = 20;
    const AT_ONCE: usize = 4;
    let binary = tokio::task::spawn_blocking(proxy_binary).await.expect("the build ran");
    let sim = Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await.expect("the simulator starts");
    let sim_api = sim_client(&sim).await;
    let kubeconfig = KubeconfigFile::new(&kubeconfig(&[("sim", &sim.url(), None)]));

    // The container's main process, started by a first attach; nobody types into it here, so
    // its input count must not move however many proxies are terminated around it.
    let (first_proxy, addr) = start_proxy(&binary, kubeconfig.path()).await;
    let attach = "/clusters/sim/api/v1/namespaces/default/pods/toolbox/attach?container=shell&stdin=true&stdout=true&tty=true";
    let (ws, _) = connect(addr, attach, V5, &[]).await.expect("the attach upgrade");
    let mut attached = Terminal::new(ws);
    attached.read_until("the main process's output", |text| text.contains("main: tick").then_some(())).await;
    drop(attached);
    drop(first_proxy);
    let main = sim_main_process(&sim_api, "default", "toolbox").await.expect("the main process runs");
    let stdin_before = main["stdinBytes"].as_u64().expect("attach entries count stdin bytes");

    for wave in 0..ROUNDS / AT_ONCE {
        let rounds = (wave * AT_ONCE..(wave + 1) * AT_ONCE).map(|round| one_round(&binary, kubeconfig.path(), &sim_api, round));
        futures::future::join_all(rounds).await;
    }

    let main_after = sim_main_process(&sim_api, "default", "toolbox").await.expect("the main process survives");
    assert_eq!(main_after["pid"], main["pid"], "the same main process");
    assert_eq!(main_after["stdinBytes"].as_u64(), Some(stdin_before), "no proxy wrote to the attached process: {main_after}");
    assert!(process_running(main["pid"].as_i64().unwrap() as i32));
    sim.shutdown().await;
}
