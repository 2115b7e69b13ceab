//! The teardown sequence of reference `exec-portforward-protocol.md` §6: what the proxy writes
//! upstream when a terminal's client side goes away, so that the process ends instead of
//! living on in the container (nothing in Kubernetes ends it, §4).
//!
//! The plan (which steps, for which session) is the one of `kubemux_protocol::terminal::teardown`,
//! shared with the browser's terminal core, which types nothing of its own on close; [`run`]
//! executes the steps against the upstream writer, skipping the input steps as soon as a status
//! arrives.

use std::time::Duration;

use kubemux_protocol::channel::{self, ExecOutcome, WsPayload};
pub use kubemux_protocol::terminal::teardown::{SessionKind, Step};
use kubemux_protocol::terminal::teardown::{SessionShape, TeardownTimings, plan};
use tokio::sync::{mpsc, watch};

use super::TerminalSettings;
use super::codec::Codec;

/// How a teardown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream reported the process's end: nothing is left.
    StatusReceived,
    /// Every step ran and no status came: the process may live on. An upstream that merely
    /// closed (after the proxy's own close, say) is no proof of an exit.
    SuspectedOrphan,
    /// An attach session: the main process is the container's, never the proxy's to end.
    Detached,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::StatusReceived => "status_received",
            Outcome::SuspectedOrphan => "suspected_orphan",
            Outcome::Detached => "detached",
        }
    }
}

/// The steps for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeardownSequence {
    /// In order.
    pub steps: Vec<Step>,
}

impl TeardownSequence {
    /// The shared plan for a session of `kind` with the streams of `codec` (and its upstream's
    /// protocol, which decides whether stdin can be closed), with the settings' pauses.
    pub fn plan(kind: SessionKind, codec: &Codec, settings: &TerminalSettings) -> TeardownSequence {
        let shape = SessionShape { kind, stdin: codec.stdin, tty: codec.tty, can_close_stdin: codec.upstream.supports_close() };
        let timings = TeardownTimings { interrupt_pause: settings.interrupt_pause, exit_wait: settings.exit_wait, eof_wait: settings.eof_wait };
        TeardownSequence { steps: plan(shape, &timings) }
    }
}

/// What the upstream reader tells the rest of the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamState {
    /// The channel-3 status, once it arrived.
    pub status: Option<ExecOutcome>,
    /// The upstream connection has ended (after the status, or without one).
    pub ended: bool,
}

impl UpstreamState {
    /// The session is over upstream: the process has ended or the connection is gone.
    pub fn finished(&self) -> bool {
        self.status.is_some() || self.ended
    }
}

/// A message for the upstream connection's writer task.
#[derive(Debug)]
pub enum ToUpstream {
    /// One message, sent as one unfragmented frame.
    Frame(WsPayload),
    /// A close frame (1000); the writer ends after it.
    Close,
}

/// Runs `sequence`, then closes the upstream connection and waits (up to `close_wait`) for it
/// to end. Input steps are skipped once the upstream has finished; the CLOSE signal is sent
/// regardless, as the hygiene step of §6.3. Returns how it went.
pub async fn run(kind: SessionKind, sequence: &TeardownSequence, codec: &Codec, upstream: &mpsc::Sender<ToUpstream>, state: &mut watch::Receiver<UpstreamState>, close_wait: Duration) -> Outcome {
    for step in &sequence.steps {
        match step {
            Step::Stdin(bytes) if !state.borrow().finished() => {
                if upstream.send(ToUpstream::Frame(codec.upstream_stdin(bytes))).await.is_err() {
                    break;
                }
            }
            Step::Stdin(_) => {}
            Step::Wait(duration) => {
                // A reader that is gone (it panicked) can report nothing: the pause still
                // passes in full, since the shell needs it between the keystrokes.
                let status_or_end = async {
                    if state.wait_for(UpstreamState::finished).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                let _ = tokio::time::timeout(*duration, status_or_end).await;
            }
            Step::CloseStdin => {
                let _ = upstream.send(ToUpstream::Frame(channel::encode_close(channel::STDIN))).await;
            }
        }
    }
    let _ = upstream.send(ToUpstream::Close).await;
    let _ = tokio::time::timeout(close_wait, state.wait_for(|s| s.ended)).await;
    outcome(kind, &state.borrow())
}

/// How a teardown of `kind` went, given what the upstream has said so far: only a status proves
/// that the process ended. The upstream ending is not enough: it ends when the proxy closes it,
/// with the shell still running.
pub fn outcome(kind: SessionKind, state: &UpstreamState) -> Outcome {
    match kind {
        SessionKind::Attach => Outcome::Detached,
        SessionKind::Exec if state.status.is_some() => Outcome::StatusReceived,
        SessionKind::Exec => Outcome::SuspectedOrphan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubemux_protocol::channel::ChannelProtocol;

    fn codec(upstream: ChannelProtocol, tty: bool, stdin: bool) -> Codec {
        Codec { client: ChannelProtocol::V5, upstream, tty, stdin }
    }

    #[test]
    fn the_shared_plan_with_this_sessions_streams_and_pauses() {
        let s = TerminalSettings { exit_wait: std::time::Duration::from_millis(7), ..TerminalSettings::default() };
        let v5 = TeardownSequence::plan(SessionKind::Exec, &codec(ChannelProtocol::V5, true, true), &s);
        assert_eq!((v5.steps.first(), v5.steps.last()), (Some(&Step::Stdin(b"\x03")), Some(&Step::CloseStdin)));
        assert!(v5.steps.contains(&Step::Wait(s.exit_wait)));
        // v4 has no CLOSE: the same keystrokes, no signal.
        let v4 = TeardownSequence::plan(SessionKind::Exec, &codec(ChannelProtocol::V4, true, true), &s);
        assert_eq!(v4.steps[..], v5.steps[..v5.steps.len() - 1]);
        assert_eq!(TeardownSequence::plan(SessionKind::Exec, &codec(ChannelProtocol::V5, false, true), &s).steps, vec![Step::CloseStdin, Step::Wait(s.eof_wait)]);
        assert!(TeardownSequence::plan(SessionKind::Attach, &codec(ChannelProtocol::V5, true, true), &s).steps.is_empty());
    }

    /// The executor against a fake upstream: a shell that exits on the second `exit\r` (a
    /// nested shell). Runs on paused time, so the waits cost nothing.
    #[tokio::test(start_paused = true)]
    async fn stops_typing_once_the_status_arrives() {
        let s = TerminalSettings::default();
        let c = codec(ChannelProtocol::V5, true, true);
        let plan = TeardownSequence::plan(SessionKind::Exec, &c, &s);
        let (tx, mut rx) = mpsc::channel(8);
        let (state_tx, mut state) = watch::channel(UpstreamState::default());
        let shell = tokio::spawn(async move {
            let mut written = Vec::new();
            let mut exits = 0;
            while let Some(message) = rx.recv().await {
                match message {
                    ToUpstream::Frame(WsPayload::Binary(frame)) => {
                        if frame == b"\x00exit\r" {
                            exits += 1;
                            if exits == 2 {
                                state_tx.send_modify(|s| s.status = Some(ExecOutcome::Success));
                            }
                        }
                        written.push(frame);
                    }
                    ToUpstream::Frame(other) => panic!("v5 is binary: {other:?}"),
                    ToUpstream::Close => {
                        state_tx.send_modify(|s| s.ended = true);
                        written.push(b"close".to_vec());
                    }
                }
            }
            written
        });
        let outcome = run(SessionKind::Exec, &plan, &c, &tx, &mut state, s.close_wait).await;
        drop(tx);
        assert_eq!(outcome, Outcome::StatusReceived);
        let written = shell.await.unwrap();
        assert_eq!(written, vec![b"\x00\x03".to_vec(), b"\x00exit\r".to_vec(), b"\x00exit\r".to_vec(), vec![255, 0], b"close".to_vec()]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_status_is_a_suspected_orphan_and_attach_is_detached() {
        let s = TerminalSettings::default();
        let c = codec(ChannelProtocol::V5, true, true);
        let (tx, mut rx) = mpsc::channel(64);
        let (_state_tx, mut state) = watch::channel(UpstreamState::default());
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let plan = TeardownSequence::plan(SessionKind::Exec, &c, &s);
        assert_eq!(run(SessionKind::Exec, &plan, &c, &tx, &mut state, s.close_wait).await, Outcome::SuspectedOrphan);
        let plan = TeardownSequence::plan(SessionKind::Attach, &c, &s);
        assert_eq!(run(SessionKind::Attach, &plan, &c, &tx, &mut state, s.close_wait).await, Outcome::Detached);
        drop(tx);
        drain.await.unwrap();
    }

    /// An upstream that stops taking input (a runtime that dropped stdin) and closes only when
    /// the proxy closes it: no status ever came, so the shell may live on, and the teardown
    /// must say so rather than count the close as an exit.
    #[tokio::test(start_paused = true)]
    async fn an_upstream_closed_by_the_proxy_is_no_exit() {
        let s = TerminalSettings::default();
        let c = codec(ChannelProtocol::V5, true, true);
        let (tx, mut rx) = mpsc::channel(64);
        let (state_tx, mut state) = watch::channel(UpstreamState::default());
        let upstream = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if let ToUpstream::Close = message {
                    state_tx.send_modify(|s| s.ended = true);
                }
            }
        });
        let plan = TeardownSequence::plan(SessionKind::Exec, &c, &s);
        assert_eq!(run(SessionKind::Exec, &plan, &c, &tx, &mut state, s.close_wait).await, Outcome::SuspectedOrphan);
        assert!(state.borrow().ended);
        drop(tx);
        upstream.await.unwrap();
    }
}
