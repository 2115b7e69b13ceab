//! `exec` against real processes: through kube's `Api::exec`, through a raw v5 WebSocket
//! (the status channel's exact shape), and the orphan of `exec-portforward-protocol.md` §4: a
//! TTY shell survives its client's TCP connection dropping, exactly as on a real cluster, and
//! only the simulator's shutdown ends it.

mod common;

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use kube_sim::Seed;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use common::{Http, Ws, within};

const V5: &str = "v5.channel.k8s.io";

#[tokio::test]
async fn kube_exec_gives_stdout_and_the_exit_code() {
    let sim = common::start(Seed::Demo).await;
    let pods = Api::<Pod>::namespaced(common::kube_client(&sim).await, "default");
    let params = AttachParams::default().stdin(false).stdout(true).stderr(true);
    let mut process = within("exec to start", pods.exec("toolbox", ["sh", "-c", "echo hi; echo oops >&2; exit 3"], &params)).await.expect("exec starts");

    let mut stdout = process.stdout().expect("stdout requested");
    let mut stderr = process.stderr().expect("stderr requested");
    let status = process.take_status().expect("a status future");
    let (mut out, mut err) = (String::new(), String::new());
    within("stdout to end", stdout.read_to_string(&mut out)).await.expect("read stdout");
    within("stderr to end", stderr.read_to_string(&mut err)).await.expect("read stderr");
    assert_eq!((out.as_str(), err.as_str()), ("hi\n", "oops\n"));

    // Compared as JSON: the Status as sent on channel 3 (reference §3.7), whatever type kube
    // decodes it into.
    let status = serde_json::to_value(within("the exit status", status).await.expect("a status")).expect("a Status serialises");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("exit code 3"), "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"], json!([{"reason": "ExitCode", "message": "3"}]), "{status}");
    within("the session to end", process.join()).await.expect("a clean end");
    sim.shutdown().await;
}

#[tokio::test]
async fn kube_exec_with_stdin_and_exit_zero() {
    let sim = common::start(Seed::Demo).await;
    let pods = Api::<Pod>::namespaced(common::kube_client(&sim).await, "default");
    let params = AttachParams::default().stdin(true).stdout(true).stderr(false);
    let mut process = within("exec to start", pods.exec("toolbox", ["sh", "-c", "read line; echo \"got $line\""], &params)).await.expect("exec starts");
    let mut stdin = process.stdin().expect("stdin requested");
    let mut stdout = process.stdout().expect("stdout requested");
    let status = process.take_status().expect("a status future");
    stdin.write_all(b"ping\n").await.expect("write stdin");
    let mut out = String::new();
    within("stdout to end", stdout.read_to_string(&mut out)).await.expect("read stdout");
    assert_eq!(out, "got ping\n");
    let status = serde_json::to_value(within("the exit status", status).await.expect("a status")).expect("a Status serialises");
    assert_eq!(status["status"], "Success", "{status}");
    sim.shutdown().await;
}

/// The v5 frames: an empty "connected" frame on stdout, the output, then exactly one Status on
/// channel 3 (reference `exec-portforward-protocol.md` §3.5 and §3.7), then the close.
#[tokio::test]
async fn raw_v5_exec_frames_and_status() {
    let sim = common::start(Seed::Demo).await;
    let path = "/api/v1/namespaces/default/pods/toolbox/exec?command=sh&command=-c&command=echo%20hi%3B%20exit%203&stdout=true&stderr=true";
    let mut ws = common::websocket(&sim, path, V5).await.expect("the upgrade");
    let frames = read_until_closed(&mut ws).await;
    assert_eq!(frames.first().map(Vec::as_slice), Some(&[1u8][..]), "the first frame is the empty stdout frame: {frames:?}");
    let stdout: Vec<u8> = frames.iter().filter(|f| f[0] == 1).flat_map(|f| f[1..].to_vec()).collect();
    assert_eq!(stdout, b"hi\n");
    let statuses: Vec<&Vec<u8>> = frames.iter().filter(|f| f[0] == 3).collect();
    assert_eq!(statuses.len(), 1, "exactly one status: {frames:?}");
    assert_eq!(frames.last(), Some(statuses[0]), "the status is the last frame");
    let mut status: Value = serde_json::from_slice(&statuses[0][1..]).expect("the status is JSON");
    // The message text varies by path (reference §3.7); it must name the code.
    let message = status["message"].take();
    assert!(message.as_str().is_some_and(|m| m.contains("exit code 3")), "{message}");
    assert_eq!(
        status,
        json!({"metadata": {}, "status": "Failure", "message": null, "reason": "NonZeroExitCode",
               "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}})
    );
    sim.shutdown().await;
}

/// Every binary message until the server closes, as `[channel, payload…]`.
async fn read_until_closed(ws: &mut Ws) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    within("the session to end", async {
        while let Some(message) = ws.next().await {
            match message.expect("a clean WebSocket") {
                Message::Binary(data) => {
                    assert!(!data.is_empty(), "v5 frames always carry a channel byte");
                    frames.push(data.to_vec());
                }
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("v5 servers send binary frames only, got {other:?}"),
            }
        }
    })
    .await;
    frames
}

/// Reads stdout frames until their text contains `needle`.
async fn wait_for_output(ws: &mut Ws, needle: &str) {
    let mut seen = String::new();
    within(&format!("{needle:?} in the terminal"), async {
        while !seen.contains(needle) {
            match ws.next().await.expect("the session is open").expect("a clean WebSocket") {
                Message::Binary(data) if data.first() == Some(&1) => seen.push_str(&String::from_utf8_lossy(&data[1..])),
                Message::Binary(data) if data.first() == Some(&3) => panic!("the shell ended: {}", String::from_utf8_lossy(&data[1..])),
                _ => {}
            }
        }
    })
    .await;
}

#[tokio::test]
async fn tty_shell_outlives_a_dropped_connection_until_shutdown() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let before: Vec<i32> = common::processes_of(&http, "default", "toolbox").await.into_iter().map(|(pid, _)| pid).collect();

    let path = "/api/v1/namespaces/default/pods/toolbox/exec?command=sh&stdin=true&stdout=true&tty=true";
    let mut ws = common::websocket(&sim, path, V5).await.expect("the upgrade");
    ws.send(Message::Binary(b"\x04{\"Width\":80,\"Height\":24}".to_vec().into())).await.expect("resize");
    // The shell computes 42: seeing it proves the shell runs, not just the terminal's echo.
    ws.send(Message::Binary(b"\x00echo orphan-$((6*7))\r".to_vec().into())).await.expect("type a command");
    wait_for_output(&mut ws, "orphan-42").await;

    let shells: Vec<(i32, Value)> = common::processes_of(&http, "default", "toolbox").await.into_iter().filter(|(pid, _)| !before.contains(pid)).collect();
    assert_eq!(shells.len(), 1, "/_sim/processes lists the exec'd shell: {}", http.get("/_sim/processes").await.text);
    let (pid, entry) = &shells[0];
    assert_eq!((&entry["command"], &entry["tty"], &entry["kind"], &entry["container"]), (&json!(["sh"]), &json!(true), &json!("exec"), &json!("shell")), "{entry}");
    assert!(common::process_running(*pid), "pid {pid} is a live process: {entry}");
    let pid = *pid;

    // Drop the TCP connection abruptly: an RST, no close frame.
    ws.get_ref().set_zero_linger().expect("SO_LINGER 0");
    drop(ws);

    // A TTY exec is not ended by its client going away (reference §4.1): it stays, listed and
    // running, for as long as we care to look. This watches an absence (no exit) over a window,
    // which no event can signal: the one place a test looks repeatedly on purpose.
    let look_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < look_until {
        let listed: Vec<i32> = common::processes_of(&http, "default", "toolbox").await.into_iter().map(|(pid, _)| pid).collect();
        assert!(listed.contains(&pid), "the orphaned shell {pid} left /_sim/processes");
        assert!(common::process_running(pid), "the orphaned shell {pid} died with its connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    sim.shutdown().await;
    common::eventually("the shell to be killed by shutdown", || async move { (!common::process_running(pid)).then_some(()) }).await;
}
