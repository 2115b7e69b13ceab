//! Terminals through the proxy, against kube-sim's real processes (checked in `/proc` and
//! `/_sim/processes`): the orphan exists without the proxy; through it, no process of a
//! session outlives its client, however the client goes and whatever the shell is doing;
//! attach gets no input; refusals reach the client as a channel-3 Status; framing is
//! translated; identity and Origin rules hold. The SIGTERM case, which needs the real binary,
//! is in `terminal_sigterm.rs`.

mod terminal_support;

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::{ProxyProcess, kubeconfig, sim_client};
use kubemux_testkit::wait::poll;
use kubemux_protocol::channel::{self, ChannelProtocol, Decoded, ExecOutcome};
use kubemux_proxy::ProxySettings;
use kubemux_proxy::terminal::{InjectedPanic, TerminalSettings};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use terminal_support::*;

fn settings() -> ProxySettings {
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }
}

async fn demo_sim(users: Vec<User>) -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, users, ..SimConfig::default() }).await.expect("the simulator starts")
}

/// The problem this module solves, shown without the proxy: a TTY shell whose client drops is
/// not ended by anything (reference §4), so it is still running long after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_proxy_a_dropped_tty_exec_leaves_the_shell_running() {
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let (ws, _) = connect(sim.addr(), TOOLBOX_SH, V5, &[]).await.expect("the upgrade");
    let mut term = Terminal::new(ws);
    let pid = term.shell_pid().await;
    term.leave(Departure::TcpDrop).await;

    // Watched for longer than the proxy's promise (5 s) would allow, on a shorter clock: 2 s
    // is already far past the moment the proxy's teardown has ended a shell. This watches an
    // absence (no exit) over a window, which no event can signal: looking repeatedly is the test.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(process_running(pid), "the shell {pid} died with its connection: the orphan did not reproduce");
        assert!(sim_pids(&sim_api).await.contains(&pid), "the shell {pid} left /_sim/processes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.shutdown().await;
}

/// One session of the matrix: a TTY `sh` through the proxy, put in `state`, left by
/// `departure`; every process of it must be gone within 5 s.
async fn one_session(proxy: SocketAddr, sim: &kube::Client, departure: Departure, state: ShellState, round: usize) {
    let (ws, chosen) = connect(proxy, &format!("/clusters/sim{TOOLBOX_SH}"), V5, &[]).await.expect("the upgrade through the proxy");
    assert_eq!(chosen.as_deref(), Some(V5));
    let mut term = Terminal::new(ws);
    term.resize(80, 24).await;
    let pid = term.shell_pid().await;
    term.enter(pid, state).await;
    let members = session_members(pid);
    assert!(members.iter().any(|(p, _)| *p == pid), "the shell leads its session: {members:?}");
    let left = Instant::now();
    term.leave(departure).await;
    assert_session_gone(sim, pid, &members, left, &format!("round {round}, {departure:?}, {state:?}")).await;
}

/// For each way of going away and each state of the shell, 20 times: zero orphans. Rounds run
/// four at a time (32 sessions at once) to keep the test short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_outlives_its_client_20_rounds() {
    const ROUNDS: usize = 20;
    const AT_ONCE: usize = 4;
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    for wave in 0..ROUNDS / AT_ONCE {
        let mut sessions = Vec::new();
        for round in wave * AT_ONCE..(wave + 1) * AT_ONCE {
            for departure in [Departure::CloseFrame, Departure::TcpDrop] {
                for state in ShellState::ALL {
                    sessions.push(one_session(proxy.addr(), &sim_api, departure, state, round));
                }
            }
        }
        futures::future::join_all(sessions).await;
    }

    // Every teardown saw its shell's exit status; none is a suspected orphan. A teardown is
    // counted once it has closed the upstream, a little after its shell is gone: polled.
    let per_departure = (ROUNDS * ShellState::ALL.len()) as f64;
    let metrics = poll("every teardown to be counted", DEADLINE, || async {
        let (_, metrics) = http_get(proxy.addr(), "/metrics").await;
        let counted = ["close_frame", "disconnect"].iter().all(|trigger| {
            let series = format!("kubemux_terminal_teardowns_total{{kind=\"exec\",trigger=\"{trigger}\",outcome=\"status_received\"}}");
            metric(&metrics, &series) == per_departure
        });
        if counted { Ok(metrics) } else { Err(metrics) }
    })
    .await;
    assert!(!metrics.contains("outcome=\"suspected_orphan\""), "{metrics}");
    proxy.stop();
    sim.shutdown().await;
}

/// A client that stops answering pings is gone: its shell is ended like any other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_torn_down() {
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let terminal = TerminalSettings { ping_interval: Duration::from_millis(200), dead_after: Duration::from_secs(1), ..TerminalSettings::default() };
    let proxy = ProxyProcess::start(ProxySettings { terminal, ..settings() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let (ws, _) = connect(proxy.addr(), &format!("/clusters/sim{TOOLBOX_SH}"), V5, &[]).await.expect("the upgrade");
    let mut term = Terminal::new(ws);
    let pid = term.shell_pid().await;
    term.enter(pid, ShellState::Sleeping).await;
    let members = session_members(pid);
    // From now on the client reads nothing, so it answers no ping: a hung tab. The socket
    // stays open until the end of the test.
    let silent = Instant::now();
    let gone_by = silent + Duration::from_secs(1);
    assert_session_gone(&sim_api, pid, &members, gone_by, "a silent client").await;
    // The teardown is counted once it has closed the upstream too, a little after the shell
    // is gone: `/metrics` pushes nothing, so it is polled.
    let series = "kubemux_terminal_teardowns_total{kind=\"exec\",trigger=\"ping_timeout\",outcome=\"status_received\"}";
    poll("the ping-timeout teardown to be counted", DEADLINE, || async {
        let (_, metrics) = http_get(proxy.addr(), "/metrics").await;
        if metric(&metrics, series) == 1.0 { Ok(()) } else { Err(metrics) }
    })
    .await;
    drop(term);
    proxy.stop();
    sim.shutdown().await;
}

/// The teardowns `/metrics` has counted for exec sessions, by outcome.
async fn exec_teardowns(proxy: SocketAddr, outcome: &str) -> f64 {
    let (_, metrics) = http_get(proxy, "/metrics").await;
    ["close_frame", "disconnect"]
        .iter()
        .map(|trigger| metric(&metrics, &format!("kubemux_terminal_teardowns_total{{kind=\"exec\",trigger=\"{trigger}\",outcome=\"{outcome}\"}}")))
        .sum()
}

/// A client that half-closes stdin (v5 CLOSE) before it goes, as kubectl does at the end of
/// its input and as the browser `Terminal` once did on `close()`, right after its Ctrl-C and
/// one `exit\r` (which the Ctrl-C can swallow when the two arrive together: the flake). A
/// runtime drops stdin after that CLOSE, so had the proxy passed it on, its teardown's
/// keystrokes would have gone nowhere and the shell would live on. Deterministic: the client
/// types no `exit`, so nothing here ends the shell but the teardown (at the prompt, in `sleep`,
/// in a nested shell, in `cat`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_stdin_before_it_goes_leaves_no_shell() {
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let mut sessions = Vec::new();
    for departure in [Departure::CloseFrame, Departure::TcpDrop] {
        for state in ShellState::ALL {
            let (proxy, sim_api) = (proxy.addr(), &sim_api);
            sessions.push(async move {
                let (ws, _) = connect(proxy, &format!("/clusters/sim{TOOLBOX_SH}"), V5, &[]).await.expect("the upgrade through the proxy");
                let mut term = Terminal::new(ws);
                let pid = term.shell_pid().await;
                term.enter(pid, state).await;
                let members = session_members(pid);
                let left = Instant::now();
                // The old browser close with its `exit` lost to the Ctrl-C: stdin closed at once.
                for frame in [&b"\x00\x03"[..], &[255, 0]] {
                    within("a write", term.ws.send(Message::Binary(frame.to_vec().into()))).await.expect("the session takes it");
                }
                term.leave(departure).await;
                assert_session_gone(sim_api, pid, &members, left, &format!("stdin closed first, then {departure:?}, {state:?}")).await;
            });
        }
    }
    futures::future::join_all(sessions).await;
    // Every teardown saw its shell's exit status: a close of the upstream is not counted as one.
    let all = (2 * ShellState::ALL.len()) as f64;
    poll("every teardown counted", DEADLINE, || async {
        match exec_teardowns(proxy.addr(), "status_received").await {
            n if n == all => Ok(()),
            n => Err(format!("{n} of {all} with a status")),
        }
    })
    .await;
    assert_eq!(exec_teardowns(proxy.addr(), "suspected_orphan").await, 0.0);
    proxy.stop();
    sim.shutdown().await;
}

/// The earliest a client can go: right after the connected frame, before the shell has printed
/// its prompt (or even started). The teardown's Ctrl-C then meets a shell still starting, its
/// `exit` a line read later; every shell must still end, with its status seen. Sessions run
/// eight at a time, so that some start under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_before_the_prompt_leaves_no_shell() {
    const ROUNDS: usize = 4;
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let before = sim_pids(&sim_api).await;
    for round in 0..ROUNDS {
        let mut sessions = Vec::new();
        for (i, departure) in [Departure::CloseFrame, Departure::TcpDrop].into_iter().cycle().take(8).enumerate() {
            let proxy = proxy.addr();
            sessions.push(async move {
                // bash, as the browser starts it; `$0` names the session in `/_sim/processes`.
                let path = format!("/clusters/sim/api/v1/namespaces/default/pods/toolbox/exec?container=shell&command=sh&command=-c&command=exec%20bash&command=early-{round}-{i}&stdin=true&stdout=true&tty=true");
                let (mut ws, _) = connect(proxy, &path, V5, &[]).await.expect("the upgrade through the proxy");
                let connected = within("the connected frame", ws.next()).await;
                assert!(matches!(&connected, Some(Ok(Message::Binary(data))) if data[..] == [1]), "{connected:?}");
                Terminal::new(ws).leave(departure).await;
            });
        }
        futures::future::join_all(sessions).await;
    }
    let all = (ROUNDS * 8) as f64;
    poll("every early teardown to see its shell's status", DEADLINE, || async {
        match (exec_teardowns(proxy.addr(), "status_received").await, exec_teardowns(proxy.addr(), "suspected_orphan").await) {
            (ended, 0.0) if ended == all => Ok(()),
            (ended, orphans) => Err(format!("{ended} of {all} with a status, {orphans} suspected orphans")),
        }
    })
    .await;
    let left: Vec<i32> = sim_pids(&sim_api).await.difference(&before).copied().collect();
    assert!(left.is_empty(), "shells left: {left:?}");
    proxy.stop();
    sim.shutdown().await;
}

/// A panic in a terminal session (in its supervisor, or in the reader of its upstream) stays in
/// that session: its client is closed with 1011, the teardown still ends its shell, the panic
/// is counted, and another session on the same proxy goes on undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_terminal_session_still_ends_its_shell() {
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let hooks = [InjectedPanic::Supervisor(b"panic-in-supervisor".to_vec()), InjectedPanic::UpstreamReader(b"panic-in-reader".to_vec())];
    for hook in hooks {
        let (InjectedPanic::Supervisor(marker) | InjectedPanic::UpstreamReader(marker)) = hook.clone();
        let marker = String::from_utf8(marker).expect("an ASCII marker");
        let terminal = TerminalSettings { inject_panic: Some(hook.clone()), ..TerminalSettings::default() };
        let proxy = ProxyProcess::start(ProxySettings { terminal, ..settings() }, kubeconfig(&[("sim", &sim.url(), None)]));
        let path = format!("/clusters/sim{TOOLBOX_SH}");
        let mut bystander = Terminal::new(connect(proxy.addr(), &path, V5, &[]).await.expect("the upgrade").0);
        let bystander_pid = bystander.shell_pid().await;
        let mut doomed = Terminal::new(connect(proxy.addr(), &path, V5, &[]).await.expect("the upgrade").0);
        let pid = doomed.shell_pid().await;
        let members = session_members(pid);

        // The supervisor reads the marker from the client; the upstream's reader, from the
        // terminal's echo of it.
        let hit = Instant::now();
        doomed.type_text(&marker).await;
        let (_, _, code) = read_to_close(&mut doomed.ws).await;
        assert_eq!(code, Some(1011), "{hook:?}: the client learns of an internal error");
        assert_session_gone(&sim_api, pid, &members, hit, &format!("after a panic ({hook:?})")).await;
        poll("the panic to be counted", DEADLINE, || async {
            let (_, metrics) = http_get(proxy.addr(), "/metrics").await;
            if metric(&metrics, "kubemux_task_panics_total{task=\"terminal\"}") == 1.0 { Ok(()) } else { Err(metrics) }
        })
        .await;

        bystander.type_text("echo still-$((40+2))\r").await;
        bystander.read_until("the other session's output", |text| text.contains("still-42").then_some(())).await;
        assert!(process_running(bystander_pid), "{hook:?}: the other session's shell runs on");
        bystander.leave(Departure::CloseFrame).await;
        proxy.stop();
    }
    sim.shutdown().await;
}

/// Attach connects to the container's main process: however the client goes, the proxy writes
/// nothing to it, and the process keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_gets_no_injected_input() {
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let path = "/clusters/sim/api/v1/namespaces/default/pods/toolbox/attach?container=shell&stdin=true&stdout=true&tty=true";
    let attach_teardowns = |metrics: &str| {
        ["close_frame", "disconnect"]
            .iter()
            .map(|t| metric(metrics, &format!("kubemux_terminal_teardowns_total{{kind=\"attach\",trigger=\"{t}\",outcome=\"detached\"}}")))
            .sum::<f64>()
    };
    for departure in [Departure::TcpDrop, Departure::CloseFrame] {
        let (ws, _) = connect(proxy.addr(), path, V5, &[]).await.expect("the attach upgrade");
        let mut term = Terminal::new(ws);
        // The main process prints a tick every second: attached once one arrives.
        term.read_until("the main process's output", |text| text.contains("main: tick").then_some(())).await;
        // `/_sim/processes` and `/metrics` push nothing: polls.
        let main = poll("the main process in /_sim/processes", DEADLINE, || async {
            sim_main_process(&sim_api, "default", "toolbox").await.ok_or_else(|| "no attach process listed".to_owned())
        })
        .await;
        let pid = main["pid"].as_i64().expect("a pid") as i32;
        let before = main["stdinBytes"].as_u64().expect("attach entries count stdin bytes");

        // What the user types counts (so the counter is live)…
        term.type_text("hello\n").await;
        poll("the typed bytes to arrive", DEADLINE, || async {
            match sim_main_process(&sim_api, "default", "toolbox").await.and_then(|m| m["stdinBytes"].as_u64()) {
                Some(n) if n == before + 6 => Ok(()),
                other => Err(format!("stdinBytes {other:?}, want {}", before + 6)),
            }
        })
        .await;
        let (_, metrics) = http_get(proxy.addr(), "/metrics").await;
        let teardowns = attach_teardowns(&metrics);
        term.leave(departure).await;
        poll("the attach teardown to finish", DEADLINE, || async {
            match attach_teardowns(&http_get(proxy.addr(), "/metrics").await.1) {
                n if n > teardowns => Ok(()),
                n => Err(format!("{n} attach teardowns")),
            }
        })
        .await;

        // …and nothing else was written: no Ctrl-C, no `exit`, no Ctrl-D.
        let after = sim_main_process(&sim_api, "default", "toolbox").await.expect("the main process still runs");
        assert_eq!(after["pid"], json!(pid), "{departure:?}: the same main process");
        assert_eq!(after["stdinBytes"].as_u64(), Some(before + 6), "{departure:?}: the proxy injected input: {after}");
        assert!(process_running(pid), "{departure:?}: the main process must survive a detach");
    }
    proxy.stop();
    sim.shutdown().await;
}

/// The JSON of the only channel-3 frame, and the close code.
async fn status_and_close(ws: &mut Ws) -> (Value, Option<u16>) {
    let (statuses, _, code) = read_to_close(ws).await;
    assert_eq!(statuses.len(), 1, "exactly one status: {statuses:?}");
    (serde_json::from_slice(&statuses[0]).expect("the status is JSON"), code)
}

/// The upstream's refusals reach the client after the upgrade, as the Status on channel 3 and
/// then close 1000 — a browser cannot read an HTTP error body (§2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_arrive_as_a_channel_3_status_then_close_1000() {
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));

    // No such pod: the API server's 404.
    let (mut ws, chosen) = connect(proxy.addr(), "/clusters/sim/api/v1/namespaces/default/pods/nope/exec?command=sh&stdout=true", V5, &[]).await.expect("accepted first");
    assert_eq!(chosen.as_deref(), Some(V5));
    let (status, code) = status_and_close(&mut ws).await;
    assert_eq!((status["code"].as_u64(), status["reason"].as_str()), (Some(404), Some("NotFound")), "{status}");
    assert_eq!(code, Some(1000));

    // No such cluster.
    let (mut ws, _) = connect(proxy.addr(), "/clusters/elsewhere/api/v1/namespaces/default/pods/toolbox/exec?command=sh&stdout=true", V5, &[]).await.expect("accepted first");
    let (status, code) = status_and_close(&mut ws).await;
    assert_eq!(status["code"].as_u64(), Some(404), "{status}");
    assert!(status["message"].as_str().unwrap_or_default().contains("elsewhere"), "{status}");
    assert_eq!(code, Some(1000));

    // A binary the image lacks: the runtime's InternalError, which shell fallback keys on.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "no-bash", "namespace": "default", "annotations": {"kube-sim/missing-binaries": "bash"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}});
    let pods: Api<Pod> = Api::namespaced(sim_api.clone(), "default");
    pods.create(&Default::default(), &serde_json::from_value(pod).unwrap()).await.expect("create the pod");
    let bash = "/clusters/sim/api/v1/namespaces/default/pods/no-bash/exec?command=bash&stdin=true&stdout=true&tty=true";
    let (mut ws, _) = connect(proxy.addr(), bash, V5, &[]).await.expect("accepted first");
    let (status, code) = status_and_close(&mut ws).await;
    assert_eq!((status["code"].as_u64(), status["reason"].as_str()), (Some(500), Some("InternalError")), "{status}");
    assert_eq!(code, Some(1000));
    // The same pod's sh works: the fallback a Terminal makes.
    let sh = "/clusters/sim/api/v1/namespaces/default/pods/no-bash/exec?command=sh&command=-c&command=echo%20fallback&stdout=true";
    let (mut ws, _) = connect(proxy.addr(), sh, V5, &[]).await.expect("the upgrade");
    let (statuses, frames, code) = read_to_close(&mut ws).await;
    let stdout: Vec<u8> = frames.iter().filter_map(|m| match m { Message::Binary(d) if d.first() == Some(&1) => Some(d[1..].to_vec()), _ => None }).flatten().collect();
    assert_eq!(String::from_utf8_lossy(&stdout), "fallback\n");
    assert_eq!(ExecOutcome::parse(&statuses[0]), Ok(ExecOutcome::Success));
    assert_eq!(code, Some(1000));

    // A base64 client gets the same Status, in its own framing.
    let (mut ws, chosen) = connect(proxy.addr(), "/clusters/sim/api/v1/namespaces/default/pods/nope/exec?command=sh&stdout=true", "v4.base64.channel.k8s.io", &[]).await.expect("accepted first");
    assert_eq!(chosen.as_deref(), Some("v4.base64.channel.k8s.io"));
    let message = within("the status", ws.next()).await.expect("a message").expect("a clean socket");
    let Message::Text(text) = message else { panic!("base64 protocols are text: {message:?}") };
    let Ok(Decoded::Data { channel: 3, payload }) = channel::decode(ChannelProtocol::V4Base64, text.as_bytes()) else { panic!("a channel-3 frame: {text}") };
    let status: Value = serde_json::from_slice(&payload).expect("JSON");
    assert_eq!(status["code"].as_u64(), Some(404), "{status}");

    let (_, metrics) = http_get(proxy.addr(), "/metrics").await;
    assert_eq!(metric(&metrics, "kubemux_terminal_dial_failures_total{code=\"404\"}"), 3.0, "{metrics}");
    proxy.stop();
    sim.shutdown().await;
}

/// Subprotocols are chosen in the client's order among the five, the token protocol is never
/// chosen, and the framing is translated to whatever the client speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocols_are_negotiated_and_translated() {
    let sim = demo_sim(vec![]).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let exit3 = "/clusters/sim/api/v1/namespaces/default/pods/toolbox/exec?command=sh&command=-c&command=echo%20hi%3B%20exit%203&stdout=true";
    let ok = "/clusters/sim/api/v1/namespaces/default/pods/toolbox/exec?command=sh&command=-c&command=echo%20hi&stdout=true";

    // v4.base64 over a v5 upstream: text frames, the status base64-encoded.
    let (mut ws, chosen) = connect(proxy.addr(), exit3, "v4.base64.channel.k8s.io", &[]).await.expect("the upgrade");
    assert_eq!(chosen.as_deref(), Some("v4.base64.channel.k8s.io"));
    let (_, frames, code) = read_to_close(&mut ws).await;
    let texts: Vec<String> = frames
        .iter()
        .map(|m| match m {
            Message::Text(t) => t.to_string(),
            other => panic!("base64 protocols are text only: {other:?}"),
        })
        .collect();
    assert_eq!(texts[0], "1", "the connected frame, reframed");
    assert!(texts.contains(&"1aGkK".to_owned()), "stdout \"hi\\n\": {texts:?}");
    let last = texts.last().expect("a status");
    let Ok(Decoded::Data { channel: 3, payload }) = channel::decode(ChannelProtocol::V4Base64, last.as_bytes()) else { panic!("{texts:?}") };
    assert_eq!(ExecOutcome::parse(&payload), Ok(ExecOutcome::ExitCode(3)));
    assert_eq!(code, Some(1000));

    // No subprotocol at all is `channel.k8s.io`: binary, and no status on success.
    let (mut ws, chosen) = connect(proxy.addr(), ok, "", &[]).await.expect("the upgrade");
    assert_eq!(chosen, None);
    let (statuses, frames, code) = read_to_close(&mut ws).await;
    assert!(statuses.is_empty(), "pre-v4 protocols send nothing on success: {statuses:?}");
    assert!(frames.contains(&Message::Binary(b"\x01hi\n".to_vec().into())), "{frames:?}");
    assert_eq!(code, Some(1000));
    // …and the failure as plain text.
    let (mut ws, _) = connect(proxy.addr(), exit3, "channel.k8s.io", &[]).await.expect("the upgrade");
    let (statuses, _, _) = read_to_close(&mut ws).await;
    assert!(String::from_utf8_lossy(&statuses[0]).contains("exit code 3"), "{statuses:?}");

    // The client's order wins; the token protocol is never echoed.
    for (offered, wanted) in [
        ("v4.channel.k8s.io, v5.channel.k8s.io", "v4.channel.k8s.io"),
        ("v5.channel.k8s.io, v4.channel.k8s.io", V5),
        ("v4.base64.channel.k8s.io, v4.channel.k8s.io", "v4.base64.channel.k8s.io"),
    ] {
        let (_, chosen) = connect(proxy.addr(), ok, offered, &[]).await.expect("the upgrade");
        assert_eq!(chosen.as_deref(), Some(wanted), "offered {offered}");
    }
    let (_, chosen) = connect(proxy.addr(), ok, "base64url.bearer.authorization.k8s.io.dG9rZW4, v5.channel.k8s.io", &[]).await.expect("the upgrade");
    assert_eq!(chosen.as_deref(), Some(V5));
    let refused = connect(proxy.addr(), ok, "v3.channel.k8s.io", &[]).await.expect_err("no supported protocol");
    assert_eq!(refused.status, 400, "{refused:?}");
    // Origin is checked before the upgrade.
    let refused = connect(proxy.addr(), ok, V5, &[("origin", "https://evil.example")]).await.expect_err("a foreign origin");
    assert_eq!(refused.status, 403, "{refused:?}");
    proxy.stop();
    sim.shutdown().await;
}

/// The session runs as the client's identity: the token subprotocol (browsers), else
/// `Authorization` (header clients), else the proxy's own credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_run_as_the_clients_identity() {
    let sim = demo_sim(vec![User::parse("admin:admin-token:*").unwrap()]).await;
    // The proxy itself has no credentials for this cluster.
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let path = "/clusters/sim/api/v1/namespaces/default/pods/toolbox/exec?command=sh&command=-c&command=echo%20ok&stdout=true";
    let stdout_and_status = |frames: &[Message], statuses: &[Vec<u8>]| {
        let out: Vec<u8> = frames.iter().filter_map(|m| match m { Message::Binary(d) if d.first() == Some(&1) => Some(d[1..].to_vec()), _ => None }).flatten().collect();
        (String::from_utf8_lossy(&out).into_owned(), statuses.first().map(|s| ExecOutcome::parse(s)))
    };

    let (mut ws, _) = connect(proxy.addr(), path, V5, &[]).await.expect("accepted first");
    let (status, code) = status_and_close(&mut ws).await;
    assert_eq!(status["code"].as_u64(), Some(401), "the proxy's (anonymous) identity is refused: {status}");
    assert_eq!(code, Some(1000));

    // base64url("admin-token") without padding.
    let protocols = format!("{V5}, base64url.bearer.authorization.k8s.io.YWRtaW4tdG9rZW4");
    let (mut ws, chosen) = connect(proxy.addr(), path, &protocols, &[]).await.expect("the upgrade");
    assert_eq!(chosen.as_deref(), Some(V5));
    let (statuses, frames, _) = read_to_close(&mut ws).await;
    assert_eq!(stdout_and_status(&frames, &statuses), ("ok\n".to_owned(), Some(Ok(ExecOutcome::Success))));

    let (mut ws, _) = connect(proxy.addr(), path, V5, &[("authorization", "Bearer admin-token")]).await.expect("the upgrade");
    let (statuses, frames, _) = read_to_close(&mut ws).await;
    assert_eq!(stdout_and_status(&frames, &statuses), ("ok\n".to_owned(), Some(Ok(ExecOutcome::Success))));
    proxy.stop();
    sim.shutdown().await;
}

/// kube-rs's own exec through the proxy (v5 end to end, stdin CLOSE included), with the base
/// path `/clusters/sim`: a Kubernetes client needs nothing special to use the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_exec_through_the_proxy() {
    let sim = demo_sim(vec![]).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let config = kube::Config::new(format!("{}/clusters/sim", proxy.http_url()).parse().unwrap());
    let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");

    let params = AttachParams::default().container("shell").stdin(true).stdout(true).stderr(false);
    let mut process = within("exec to start", pods.exec("toolbox", ["sh", "-c", "read line; echo \"got $line\"; exit 7"], &params)).await.expect("exec starts");
    let mut stdin = process.stdin().expect("stdin");
    let mut stdout = process.stdout().expect("stdout");
    let status = process.take_status().expect("a status");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"ping\n").await.expect("write stdin");
    let mut out = String::new();
    within("stdout to end", stdout.read_to_string(&mut out)).await.expect("read stdout");
    assert_eq!(out, "got ping\n");
    let status = serde_json::to_value(within("the status", status).await.expect("a status")).unwrap();
    assert_eq!(status["details"]["causes"], json!([{"reason": "ExitCode", "message": "7"}]), "{status}");

    // `cat` ends when the client closes stdin (v5 CLOSE, passed through; kube sends it when
    // the stdin writer is shut down).
    let mut process = within("exec to start", pods.exec("toolbox", ["cat"], &params)).await.expect("exec starts");
    let mut stdin = process.stdin().expect("stdin");
    let mut stdout = process.stdout().expect("stdout");
    let status = process.take_status().expect("a status");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"echoed\n").await.expect("write stdin");
    let mut echoed = [0u8; 7];
    within("cat's echo", stdout.read_exact(&mut echoed)).await.expect("read stdout");
    assert_eq!(&echoed, b"echoed\n");
    tokio::io::AsyncWriteExt::shutdown(&mut stdin).await.expect("EOF");
    let mut rest = String::new();
    within("cat to end on EOF", stdout.read_to_string(&mut rest)).await.expect("read stdout");
    assert_eq!(rest, "");
    let status = serde_json::to_value(within("the status", status).await.expect("a status")).unwrap();
    assert_eq!(status["status"], "Success", "{status}");
    proxy.stop();
    sim.shutdown().await;
}
