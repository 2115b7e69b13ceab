//! What the terminal tests share: WebSocket terminals on real sockets (so a test can drop the
//! TCP connection abruptly), the shell states of the orphan matrix, and the process table of
//! the host (kube-sim's processes are real), read from `/proc` and `/_sim/processes`.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

// Names the terminal tests have always found here, now the testkit's; each binary uses some.
#[allow(unused_imports)]
pub use kubemux_testkit::http::metric;
#[allow(unused_imports)]
pub use kubemux_testkit::wait::{DEADLINE, within};
#[allow(unused_imports)]
pub use kubemux_testkit::ws::{Refused, Ws, connect, process_running};

/// How long after the client goes away every process of its session must be gone (the issue's
/// promise).
pub const GONE_WITHIN: Duration = Duration::from_secs(5);

/// The v5 protocol, which kubectl and the browser `Terminal` speak.
pub const V5: &str = "v5.channel.k8s.io";

/// A TTY `sh` in the demo seed's `default/toolbox`, the stable exec target.
pub const TOOLBOX_SH: &str = "/api/v1/namespaces/default/pods/toolbox/exec?container=shell&command=sh&stdin=true&stdout=true&tty=true";

/// Asks `probe` until it answers `Ok`, failing after `deadline` with the last `Err`
/// description. For state with no event to wait on (the process table).
pub async fn poll_until<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    kubemux_testkit::wait::poll(what, deadline, || std::future::ready(probe())).await
}

/// How a session's client goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// A close frame (1000), as a browser closing the socket sends.
    CloseFrame,
    /// An abrupt TCP reset: no close frame (a crashed tab, a dead network).
    TcpDrop,
}

/// What the shell is doing when its client goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellState {
    /// Waiting at the prompt.
    Idle,
    /// `sleep 1000` in the foreground.
    Sleeping,
    /// `sh` started from the prompt, itself at its prompt.
    Nested,
    /// `cat` in the foreground, reading the terminal.
    Cat,
}

impl ShellState {
    /// Every state of the matrix.
    pub const ALL: [ShellState; 4] = [ShellState::Idle, ShellState::Sleeping, ShellState::Nested, ShellState::Cat];
}

/// A v5 TTY terminal driven the way a user at a keyboard would.
pub struct Terminal {
    /// The socket.
    pub ws: Ws,
    output: Vec<u8>,
}

impl Terminal {
    /// Wraps an open v5 socket.
    pub fn new(ws: Ws) -> Terminal {
        Terminal { ws, output: Vec::new() }
    }

    /// Types `text` (one stdin message).
    pub async fn type_text(&mut self, text: &str) {
        let mut frame = vec![0u8];
        frame.extend_from_slice(text.as_bytes());
        within("a stdin write", self.ws.send(Message::Binary(frame.into()))).await.expect("the session takes stdin");
    }

    /// Sends a resize.
    pub async fn resize(&mut self, width: u16, height: u16) {
        let frame = format!("\x04{{\"Width\":{width},\"Height\":{height}}}");
        within("a resize write", self.ws.send(Message::Binary(frame.into_bytes().into()))).await.expect("the session takes a resize");
    }

    /// Reads output until `found` recognises something in everything seen so far.
    pub async fn read_until<T>(&mut self, what: &str, mut found: impl FnMut(&str) -> Option<T>) -> T {
        within(what, async {
            loop {
                if let Some(value) = found(&String::from_utf8_lossy(&self.output)) {
                    return value;
                }
                match self.ws.next().await {
                    Some(Ok(Message::Binary(data))) if data.first() == Some(&1) => self.output.extend_from_slice(&data[1..]),
                    Some(Ok(Message::Binary(data))) if data.first() == Some(&3) => {
                        panic!("the session ended while waiting for {what}: {}", String::from_utf8_lossy(&data[1..]))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("the terminal broke while waiting for {what}: {e}"),
                    None => panic!("the terminal closed while waiting for {what}"),
                }
            }
        })
        .await
    }

    /// The shell's pid, as the shell itself reports it (`$$`): the session leader of the TTY.
    pub async fn shell_pid(&mut self) -> i32 {
        // The arithmetic proves the shell ran the line: the terminal's echo of the typed
        // line never contains `-42`.
        self.type_text("echo pid-$$-$((6*7))\r").await;
        self.read_until("the shell's pid", |text| number_between(text, "pid-", "-42")).await
    }

    /// Puts the shell (whose pid is `pid`) into `state` and waits until it is there.
    pub async fn enter(&mut self, pid: i32, state: ShellState) {
        match state {
            ShellState::Idle => {}
            ShellState::Sleeping => {
                self.type_text("sleep 1000\r").await;
                poll_until("sleep in the session", DEADLINE, || has_command(pid, "sleep")).await;
            }
            ShellState::Nested => {
                self.type_text("sh\r").await;
                self.type_text("echo inner-$$-$((6*7))\r").await;
                let inner = self.read_until("the inner shell's pid", |text| number_between(text, "inner-", "-42")).await;
                assert_ne!(inner, pid, "the inner shell is another process");
            }
            ShellState::Cat => {
                self.type_text("cat\r").await;
                poll_until("cat in the session", DEADLINE, || has_command(pid, "cat")).await;
            }
        }
    }

    /// Goes away as `departure` says.
    pub async fn leave(self, departure: Departure) {
        let mut ws = self.ws;
        match departure {
            Departure::TcpDrop => {
                ws.get_ref().set_zero_linger().expect("SO_LINGER 0");
                drop(ws);
            }
            Departure::CloseFrame => {
                let close = CloseFrame { code: 1000.into(), reason: "".into() };
                within("sending a close frame", ws.send(Message::Close(Some(close)))).await.expect("the close frame is sent");
                // A browser waits for the server's close; so does this client (briefly).
                let _ = tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = ws.next().await {} }).await;
            }
        }
    }
}

/// The number in `text` between `before` and `after`, where one is printed.
pub fn number_between(text: &str, before: &str, after: &str) -> Option<i32> {
    text.match_indices(before).find_map(|(i, _)| {
        let rest = &text[i + before.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty() && rest[digits.len()..].starts_with(after)).then(|| digits.parse().ok()).flatten()
    })
}

/// `(pid, state, session id, command)` of every process on the host.
fn process_table() -> Vec<(i32, char, i32, String)> {
    let mut table = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return table };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid pgrp session …`; comm may contain spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map(|(_, c)| c.to_owned()).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(state), Some(session)) = (fields.first().and_then(|s| s.chars().next()), fields.get(3).and_then(|s| s.parse().ok())) else {
            continue;
        };
        table.push((pid, state, session, comm));
    }
    table
}

/// Live (not zombie) processes of the terminal session led by `sid`, as `(pid, command)`.
pub fn session_members(sid: i32) -> Vec<(i32, String)> {
    process_table().into_iter().filter(|(_, state, session, _)| *session == sid && !matches!(state, 'Z' | 'X')).map(|(pid, _, _, comm)| (pid, comm)).collect()
}

fn has_command(sid: i32, command: &str) -> Result<(), String> {
    let members = session_members(sid);
    if members.iter().any(|(_, comm)| comm == command) { Ok(()) } else { Err(format!("session {sid} has {members:?}")) }
}

/// The pids `/_sim/processes` lists.
pub async fn sim_pids(sim: &kube::Client) -> BTreeSet<i32> {
    let table = kubemux_e2e::hook(sim, "GET", "/_sim/processes").await;
    table.as_array().into_iter().flatten().filter_map(|e| e["pid"].as_i64()).map(|p| p as i32).collect()
}

/// The `/_sim/processes` entry of the attach (main) process of `namespace/pod`, if running.
pub async fn sim_main_process(sim: &kube::Client, namespace: &str, pod: &str) -> Option<Value> {
    let table = kubemux_e2e::hook(sim, "GET", "/_sim/processes").await;
    table.as_array().into_iter().flatten().find(|e| e["kind"] == "attach" && e["namespace"] == namespace && e["pod"] == pod).cloned()
}

/// Waits (up to [`GONE_WITHIN`] from `since`) until nothing of the session led by `pid` runs:
/// not the shell, not anything it started (`members`), nothing else in its session, and the
/// simulator no longer lists it. `what` names the case in the failure. The process table pushes
/// nothing, so this is a poll.
pub async fn assert_session_gone(sim: &kube::Client, pid: i32, members: &[(i32, String)], since: Instant, what: &str) {
    let left = GONE_WITHIN.saturating_sub(since.elapsed());
    kubemux_testkit::wait::poll(&format!("{what}: every process of the session gone"), left, || async {
        let alive: Vec<(i32, String)> = members.iter().filter(|(p, _)| process_running(*p)).cloned().chain(session_members(pid)).collect();
        let listed = sim_pids(sim).await.contains(&pid);
        if alive.is_empty() && !listed {
            Ok(())
        } else {
            Err(format!("{:?} after the client left, still running: {alive:?}; listed by /_sim/processes: {listed}", since.elapsed()))
        }
    })
    .await
}

/// `GET path` on `addr`; returns the status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = kubemux_testkit::http::get(&format!("http://{addr}{path}")).await;
    (response.status.as_u16(), response.body)
}

/// Every status and close a socket receives until it ends: `(channel-3 payloads, close code)`.
pub async fn read_to_close(ws: &mut Ws) -> (Vec<Vec<u8>>, Vec<Message>, Option<u16>) {
    let mut statuses = Vec::new();
    let mut frames = Vec::new();
    let code = within("the server to close", async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(Message::Binary(data)) if data.first() == Some(&3) => {
                    statuses.push(data[1..].to_vec());
                    frames.push(Message::Binary(data));
                }
                Ok(other @ (Message::Binary(_) | Message::Text(_))) => frames.push(other),
                Ok(_) => {}
                Err(e) => panic!("the socket broke before its close: {e}"),
            }
        }
        None
    })
    .await;
    (statuses, frames, code)
}
