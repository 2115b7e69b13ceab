//! The teardown sequence of reference `exec-portforward-protocol.md` §6: what the proxy writes
//! upstream when a terminal's client side goes away, so that the process ends instead of
//! living on in the container (nothing in Kubernetes ends it, §4).
//!
//! [`TeardownSequence::plan`] is pure (which steps, for which session); [`run`] executes the
//! steps against the upstream writer, skipping the input steps as soon as a status arrives.

use std::time::Duration;

use kubemux_protocol::channel::{self, ExecOutcome, WsPayload};
use tokio::sync::{mpsc, watch};

use super::TerminalSettings;
use super::codec::Codec;

/// `exec` or `attach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A new process per session: the proxy must end it.
    Exec,
    /// The container's main process: the proxy must never write to it on its own.
    Attach,
}

impl SessionKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Exec => "exec",
            SessionKind::Attach => "attach",
        }
    }
}

/// One step of a teardown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes to the process's stdin.
    Stdin(&'static [u8]),
    /// Wait this long, or until the status arrives.
    Wait(Duration),
    /// Send the v5 CLOSE signal for stdin.
    CloseStdin,
}

/// Ctrl-C: SIGINT to the foreground job through the line discipline, and the partial line gone.
pub const INTERRUPT: &[u8] = b"\x03";
/// What a user would type to leave a shell.
pub const EXIT: &[u8] = b"exit\r";
/// Ctrl-D: end of input at an empty prompt, for shells where `exit` is not the builtin.
pub const EOF: &[u8] = b"\x04";

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
    /// The §6 steps for a session of `kind` with the streams of `codec` (and its upstream's
    /// protocol): TTY exec: Ctrl-C, a pause, `exit\r` up to three times, Ctrl-D, each followed
    /// by a wait for the status, then (v5) CLOSE of stdin — never earlier, since on containerd a
    /// TTY's stdin CLOSE detaches the output and the shell keeps running (§4.4). Non-TTY exec:
    /// CLOSE of stdin (v5) and a wait for the status. Attach, and sessions without stdin:
    /// nothing, the proxy has no business writing there.
    pub fn plan(kind: SessionKind, codec: &Codec, settings: &TerminalSettings) -> TeardownSequence {
        let v5 = codec.upstream.supports_close();
        let steps = match (kind, codec.stdin, codec.tty) {
            (SessionKind::Attach, _, _) | (SessionKind::Exec, false, _) => Vec::new(),
            (SessionKind::Exec, true, true) => {
                let mut steps = vec![Step::Stdin(INTERRUPT), Step::Wait(settings.interrupt_pause)];
                for _ in 0..3 {
                    steps.extend([Step::Stdin(EXIT), Step::Wait(settings.exit_wait)]);
                }
                steps.extend([Step::Stdin(EOF), Step::Wait(settings.exit_wait)]);
                if v5 {
                    steps.push(Step::CloseStdin);
                }
                steps
            }
            (SessionKind::Exec, true, false) if v5 => vec![Step::CloseStdin, Step::Wait(settings.eof_wait)],
            // v4 has no half-close: closing the connection is the process's EOF.
            (SessionKind::Exec, true, false) => Vec::new(),
        };
        TeardownSequence { steps }
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
pub async fn run(
    kind: SessionKind,
    sequence: &TeardownSequence,
    codec: &Codec,
    upstream: &mpsc::Sender<ToUpstream>,
    state: &mut watch::Receiver<UpstreamState>,
    close_wait: Duration,
) -> Outcome {
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
    fn tty_exec_on_v5() {
        let s = TerminalSettings::default();
        let plan = TeardownSequence::plan(SessionKind::Exec, &codec(ChannelProtocol::V5, true, true), &s);
        let w = Step::Wait(s.exit_wait);
        assert_eq!(
            plan.steps,
            vec![
                Step::Stdin(b"\x03"),
                Step::Wait(s.interrupt_pause),
                Step::Stdin(b"exit\r"),
                w.clone(),
                Step::Stdin(b"exit\r"),
                w.clone(),
                Step::Stdin(b"exit\r"),
                w.clone(),
                Step::Stdin(b"\x04"),
                w,
                Step::CloseStdin,
            ]
        );
        // v4 has no CLOSE: the same keystrokes, no signal.
        let v4 = TeardownSequence::plan(SessionKind::Exec, &codec(ChannelProtocol::V4, true, true), &s);
        assert_eq!(v4.steps.len(), plan.steps.len() - 1);
        assert!(!v4.steps.contains(&Step::CloseStdin));
    }

    #[test]
    fn non_tty_exec_attach_and_no_stdin() {
        let s = TerminalSettings::default();
        assert_eq!(
            TeardownSequence::plan(SessionKind::Exec, &codec(ChannelProtocol::V5, false, true), &s).steps,
            vec![Step::CloseStdin, Step::Wait(s.eof_wait)]
        );
        assert!(TeardownSequence::plan(SessionKind::Exec, &codec(ChannelProtocol::V4, false, true), &s).steps.is_empty());
        assert!(TeardownSequence::plan(SessionKind::Exec, &codec(ChannelProtocol::V5, true, false), &s).steps.is_empty());
        for (tty, stdin) in [(true, true), (false, true), (true, false)] {
            assert!(
                TeardownSequence::plan(SessionKind::Attach, &codec(ChannelProtocol::V5, tty, stdin), &s).steps.is_empty(),
                "attach never gets input (tty {tty}, stdin {stdin})"
            );
        }
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
