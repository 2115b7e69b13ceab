//! One `exec` or `attach` session over the RemoteCommand channel protocol (reference §3):
//! client frames to stdin and resize, process output to channels 1 and 2, then the status on
//! channel 3 and a 1000 close once the process has exited and its output is flushed.
//!
//! What the session does *not* do when the client goes is the point of the simulator: it
//! never kills the process, never hangs up its terminal. It only lets go of stdin (an EOF for
//! a pipe; nothing for a PTY, which the registry keeps open) and of the output, which the
//! process's readers then drain into the void (reference §4).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use bytes::Bytes;
use futures::StreamExt;
use kubemux_protocol::channel::{
    self, ChannelProtocol, Decoded, ExecOutcome, FrameError, RESIZE, STDERR, STDIN, STDOUT, TerminalSize, WsPayload,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use serde_json::Value;

use super::Runtime;
use super::exec::MISSING_BINARIES_ANNOTATION;
use super::options::{StreamOptions, annotation, container_spec, pod_uid};
use super::output::Chunk;
use super::process::{ExitInfo, LaunchSpec, PtyControl, container_env, declared_missing};
use super::registry::{ProcessInfo, ProcessKind, StdinLog};
use super::ws::{Connection, Outgoing};

/// After the process exits, how long its output may still take to reach EOF (a background
/// job may hold the pipe or terminal open) before the status is sent anyway.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Everything an upgraded exec or attach needs, decided before the upgrade.
pub(crate) struct SessionPlan {
    pub(crate) protocol: ChannelProtocol,
    pub(crate) options: StreamOptions,
    /// How the process is listed in `/_sim/processes`.
    pub(crate) info: ProcessInfo,
    /// How the process is started (exec: always; attach: if the main process is not running).
    pub(crate) spec: LaunchSpec,
}

/// The process behind a session, as exec and attach each choose it.
pub(crate) struct ProcessPlan {
    pub(crate) argv: Vec<String>,
    pub(crate) tty: bool,
    /// stdin, stdout, stderr.
    pub(crate) streams: [bool; 3],
    pub(crate) kind: ProcessKind,
}

impl ProcessPlan {
    /// Its listing and launch spec in `container` of `pod`: the container's sandbox directory
    /// and environment, and the binaries the pod says its image lacks.
    pub(crate) fn describe(self, runtime: &Runtime, pod: &Value, namespace: &str, name: &str, container: String) -> (ProcessInfo, LaunchSpec) {
        let cwd = runtime.sandbox_dir(namespace, name, &container);
        let [stdin, stdout, stderr] = self.streams;
        let spec = LaunchSpec {
            argv: self.argv.clone(),
            env: container_env(name, container_spec(pod, &container), &cwd, self.tty),
            cwd,
            tty: self.tty,
            stdin,
            stdout,
            stderr,
            missing: declared_missing(annotation(pod, MISSING_BINARIES_ANNOTATION)),
        };
        let info = ProcessInfo {
            namespace: namespace.to_owned(),
            pod: name.to_owned(),
            uid: pod_uid(pod).to_owned(),
            container,
            command: self.argv,
            tty: self.tty,
            kind: self.kind,
        };
        (info, spec)
    }
}

/// Everything a session streams between.
pub(crate) struct StreamTarget {
    /// Negotiated framing.
    pub protocol: ChannelProtocol,
    /// Forward output channel 1.
    pub stdout: bool,
    /// Forward output channel 2.
    pub stderr: bool,
    /// Where channel 0 goes (`None`: the client did not ask for stdin, or closed it).
    pub stdin: Option<mpsc::Sender<Bytes>>,
    /// Every stdin byte is recorded here first (attach).
    pub stdin_log: Option<Arc<StdinLog>>,
    /// Where channel 4 goes (tty sessions only).
    pub pty: Option<Arc<PtyControl>>,
    /// The process's output.
    pub output: mpsc::Receiver<Chunk>,
    /// The process's exit.
    pub exit: watch::Receiver<Option<ExitInfo>>,
    /// argv, for the pre-v4 failure text.
    pub command: Vec<String>,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The process exited; status and close were sent.
    Completed,
    /// The client closed or dropped the connection first.
    ClientGone,
    /// The simulator is shutting down.
    Shutdown,
}

/// The "connection established" frame (§3.5): empty, on the lowest output channel the client
/// asked for, else on the status channel.
pub(crate) fn connected_frame(protocol: ChannelProtocol, stdout: bool, stderr: bool) -> WsPayload {
    let channel = if stdout {
        STDOUT
    } else if stderr {
        STDERR
    } else {
        channel::ERROR
    };
    channel::encode(protocol, channel, &[])
}

/// The channel-3 message for `outcome`: a `Status` JSON for v4/v5; for the older protocols a
/// plain-text message, and nothing at all on success.
pub(crate) fn status_frame(protocol: ChannelProtocol, outcome: &ExecOutcome, command: &[String]) -> Option<WsPayload> {
    let text = if protocol.has_status_json() {
        outcome.to_status().to_string()
    } else {
        match outcome {
            ExecOutcome::Success => return None,
            ExecOutcome::ExitCode(code) => format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            ExecOutcome::Failure { message, .. } => message.clone(),
        }
    };
    Some(channel::encode(protocol, channel::ERROR, text.as_bytes()))
}

/// Sends a start failure as the status and closes (the real server upgrades first, §2).
pub(crate) async fn fail(conn: Connection, protocol: ChannelProtocol, message: &str, command: &[String]) {
    if let Some(frame) = status_frame(protocol, &ExecOutcome::internal_error(message), command) {
        conn.send(frame).await;
    }
    conn.close().await;
}

/// Runs a session until the process ends, the client goes, or shutdown.
pub(crate) async fn run(mut conn: Connection, target: StreamTarget, stop: CancellationToken) -> Ending {
    let StreamTarget { protocol, stdout, stderr, mut stdin, stdin_log, pty, output, exit, command } = target;
    let mut pump = tokio::spawn(pump_output(output, exit, conn.out.clone(), protocol, stdout, stderr, command));
    let ending = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ending::Shutdown,
            done = &mut pump => break if done.unwrap_or(false) { Ending::Completed } else { Ending::ClientGone },
            message = conn.incoming.next() => {
                let data = match message {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(text @ Message::Text(_))) => text.into_data(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // A close frame and a dropped connection reach the server identically (§3.9).
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break Ending::ClientGone,
                };
                match channel::decode(protocol, &data) {
                    Ok(Decoded::Empty) => {}
                    Ok(Decoded::Data { channel: STDIN, payload }) => {
                        let Some(sink) = &stdin else { continue };
                        if let Some(log) = &stdin_log {
                            log.record(&payload);
                        }
                        let sent = tokio::select! {
                            sent = sink.send(Bytes::from(payload)) => sent.is_ok(),
                            _ = stop.cancelled() => break Ending::Shutdown,
                        };
                        if !sent {
                            stdin = None;
                        }
                    }
                    Ok(Decoded::Data { channel: RESIZE, payload }) => {
                        if let (Some(pty), Some(size)) = (&pty, TerminalSize::parse_last(&payload)) {
                            pty.resize(size);
                        }
                    }
                    // Unrequested and unknown channels are dropped, as the server's IgnoreChannel does.
                    Ok(Decoded::Data { .. }) => {}
                    // v5 CLOSE of stdin: a pipe gets EOF (last sender dropped); a PTY keeps its
                    // writer in the registry, so the terminal stays open.
                    Ok(Decoded::Close { channel: STDIN }) => stdin = None,
                    Ok(Decoded::Close { channel }) if channel <= RESIZE => {}
                    // An out-of-range stream id or a malformed CLOSE ends the read loop, and with
                    // it the whole connection, in wsstream.
                    Ok(Decoded::Close { .. }) | Err(FrameError::BadClose) => break Ending::ClientGone,
                    Err(error) => tracing::debug!(%error, "dropping an undecodable frame"),
                }
            }
        }
    };
    drop(stdin);
    match ending {
        Ending::Completed => conn.close().await,
        Ending::ClientGone | Ending::Shutdown => {
            // Unsubscribing lets the process's readers drop its output from now on.
            pump.abort();
            conn.abandon().await;
        }
    }
    ending
}

/// Forwards output until it ends (or the process exited and the grace ran out), then sends
/// the status and queues the close. False if the client went away meanwhile.
async fn pump_output(
    mut output: mpsc::Receiver<Chunk>,
    mut exit: watch::Receiver<Option<ExitInfo>>,
    out: mpsc::Sender<Outgoing>,
    protocol: ChannelProtocol,
    stdout: bool,
    stderr: bool,
    command: Vec<String>,
) -> bool {
    let mut exited_at: Option<Instant> = None;
    loop {
        let grace_end = exited_at.map(|t| t + OUTPUT_GRACE).unwrap_or_else(Instant::now);
        tokio::select! {
            chunk = output.recv() => {
                let Some(chunk) = chunk else { break };
                let wanted = (chunk.channel == STDOUT && stdout) || (chunk.channel == STDERR && stderr);
                if wanted && out.send(Outgoing::Frame(channel::encode(protocol, chunk.channel, &chunk.data))).await.is_err() {
                    return false;
                }
            }
            _ = has_exited(&mut exit), if exited_at.is_none() => exited_at = Some(Instant::now()),
            _ = tokio::time::sleep_until(grace_end), if exited_at.is_some() => break,
        }
    }
    // Output is done; the status waits for the exit itself (a process may close its stdout
    // and keep running).
    let exit = if has_exited(&mut exit).await { *exit.borrow() } else { None }.unwrap_or(ExitInfo::Unknown);
    if let Some(frame) = status_frame(protocol, &exit.outcome(), &command)
        && out.send(Outgoing::Frame(frame)).await.is_err()
    {
        return false;
    }
    out.send(Outgoing::Close).await.is_ok()
}

/// Waits for the exit; false if it can never be known. The watch guard stays inside, so the
/// caller's future remains `Send`.
async fn has_exited(exit: &mut watch::Receiver<Option<ExitInfo>>) -> bool {
    exit.wait_for(Option::is_some).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChannelProtocol::*;

    fn text(p: Option<WsPayload>) -> Option<String> {
        p.map(|p| match p {
            WsPayload::Binary(b) => format!("bin:{}", String::from_utf8_lossy(&b)),
            WsPayload::Text(t) => format!("txt:{t}"),
        })
    }

    #[test]
    fn connected_frame_is_on_the_lowest_requested_channel() {
        assert_eq!(connected_frame(V5, true, true), WsPayload::Binary(vec![1]));
        assert_eq!(connected_frame(V4, false, true), WsPayload::Binary(vec![2]));
        assert_eq!(connected_frame(V4, false, false), WsPayload::Binary(vec![3]));
        assert_eq!(connected_frame(V4Base64, true, false), WsPayload::Text("1".into()));
    }

    #[test]
    fn status_frames_by_protocol() {
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        assert_eq!(text(status_frame(V5, &ExecOutcome::Success, &cmd)).unwrap(), "bin:\u{3}{\"metadata\":{},\"status\":\"Success\"}");
        assert!(text(status_frame(V4, &ExecOutcome::ExitCode(3), &cmd)).unwrap().contains("\"reason\":\"NonZeroExitCode\""));
        // Pre-v4: nothing on success, plain text on failure.
        assert_eq!(status_frame(V1, &ExecOutcome::Success, &cmd), None);
        assert_eq!(status_frame(Base64, &ExecOutcome::Success, &cmd), None);
        assert_eq!(
            text(status_frame(V1, &ExecOutcome::ExitCode(3), &cmd)).unwrap(),
            "bin:\u{3}command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        let failure = ExecOutcome::internal_error("boom");
        let json = channel::encode(V4Base64, channel::ERROR, failure.to_status().to_string().as_bytes());
        assert_eq!(status_frame(V4Base64, &failure, &cmd), Some(json));
    }

    /// Output queued before the exit is all delivered, in order, before the status.
    #[tokio::test]
    async fn status_comes_after_all_output() {
        let (chunks_tx, chunks) = mpsc::channel(8);
        let (exit_tx, exit) = watch::channel(None);
        let (out, mut frames) = mpsc::channel(16);
        for (channel, data) in [(STDOUT, "a"), (STDERR, "b"), (STDOUT, "c")] {
            chunks_tx.send(Chunk { channel, data: Bytes::from(data) }).await.unwrap();
        }
        exit_tx.send_replace(Some(ExitInfo::Code(2)));
        drop(chunks_tx);
        // stderr was not requested.
        assert!(pump_output(chunks, exit, out, V4, true, false, vec![]).await);
        let mut got = Vec::new();
        while let Ok(frame) = frames.try_recv() {
            got.push(match frame {
                Outgoing::Frame(WsPayload::Binary(b)) => format!("{}:{}", b[0], String::from_utf8_lossy(&b[1..])),
                Outgoing::Frame(WsPayload::Text(t)) => t,
                Outgoing::Close => "close".into(),
            });
        }
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[..2], ["1:a", "1:c"]);
        assert!(got[2].starts_with("3:{") && got[2].contains("exit code 2"), "{got:?}");
        assert_eq!(got[3], "close");
    }
}
