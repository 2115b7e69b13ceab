//! The one teardown plan of a terminal (reference `exec-portforward-protocol.md` §6): what is
//! written to a process's stdin when its client goes away, so that the process ends instead of
//! living on in the container (nothing in Kubernetes ends it, §4).
//!
//! The proxy runs this plan (`edge-proxy/src/terminal/teardown.rs`) whenever a terminal's
//! client side goes away, whether the browser's [`TerminalCore`](super::TerminalCore) closed
//! it or the socket just dropped. The browser types nothing of its own on close: a second
//! sequence racing this one lost its `exit\r` to the Ctrl-C, and its early CLOSE of stdin left
//! these keystrokes nowhere to go. One plan, one set of constants.

use std::time::Duration;

/// `exec` or `attach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A new process per session: whoever ends the session must end it.
    Exec,
    /// The container's main process: nothing may be written to it on the client's behalf.
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
/// How many times `exit\r` is typed: once per nested shell a user may have started.
pub const EXIT_ATTEMPTS: usize = 3;

/// The pauses of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeardownTimings {
    /// After Ctrl-C, before the first `exit\r`: the line discipline needs a moment to deliver
    /// SIGINT and redraw the prompt, or the `exit` lands in the interrupted line.
    pub interrupt_pause: Duration,
    /// After each `exit\r` and the Ctrl-D, how long the status is awaited.
    pub exit_wait: Duration,
    /// A non-TTY exec: how long the status is awaited after stdin is closed.
    pub eof_wait: Duration,
}

impl TeardownTimings {
    /// 250 ms after Ctrl-C, 1 s per `exit\r` and the Ctrl-D, 3 s after a non-TTY's CLOSE.
    pub const DEFAULT: TeardownTimings = TeardownTimings { interrupt_pause: Duration::from_millis(250), exit_wait: Duration::from_secs(1), eof_wait: Duration::from_secs(3) };
}

impl Default for TeardownTimings {
    fn default() -> Self {
        TeardownTimings::DEFAULT
    }
}

/// The streams a session has, and whether its upstream protocol can half-close (v5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionShape {
    /// Exec or attach.
    pub kind: SessionKind,
    /// The session has stdin.
    pub stdin: bool,
    /// The session has a TTY.
    pub tty: bool,
    /// The upstream speaks `v5.channel.k8s.io`, which has the CLOSE signal.
    pub can_close_stdin: bool,
}

/// The steps for a session of `shape`. TTY exec: Ctrl-C, a pause, `exit\r` up to three times,
/// Ctrl-D, each followed by a wait for the status, then (v5) CLOSE of stdin — never earlier,
/// since on containerd a TTY's stdin CLOSE detaches the output and the shell keeps running
/// (§4.4). Non-TTY exec: CLOSE of stdin (v5) and a wait for the status. Attach, and sessions
/// without stdin: nothing, no one has any business writing there.
pub fn plan(shape: SessionShape, timings: &TeardownTimings) -> Vec<Step> {
    match (shape.kind, shape.stdin, shape.tty) {
        (SessionKind::Attach, _, _) | (SessionKind::Exec, false, _) => Vec::new(),
        (SessionKind::Exec, true, true) => {
            let mut steps = vec![Step::Stdin(INTERRUPT), Step::Wait(timings.interrupt_pause)];
            for _ in 0..EXIT_ATTEMPTS {
                steps.extend([Step::Stdin(EXIT), Step::Wait(timings.exit_wait)]);
            }
            steps.extend([Step::Stdin(EOF), Step::Wait(timings.exit_wait)]);
            if shape.can_close_stdin {
                steps.push(Step::CloseStdin);
            }
            steps
        }
        (SessionKind::Exec, true, false) if shape.can_close_stdin => vec![Step::CloseStdin, Step::Wait(timings.eof_wait)],
        // v4 has no half-close: closing the connection is the process's EOF.
        (SessionKind::Exec, true, false) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: SessionKind, stdin: bool, tty: bool, can_close_stdin: bool) -> SessionShape {
        SessionShape { kind, stdin, tty, can_close_stdin }
    }

    #[test]
    fn tty_exec_interrupts_types_exit_three_times_then_eof_and_closes_stdin_last() {
        let t = TeardownTimings::default();
        let w = Step::Wait(t.exit_wait);
        let steps = plan(shape(SessionKind::Exec, true, true, true), &t);
        assert_eq!(
            steps,
            vec![
                Step::Stdin(b"\x03"),
                Step::Wait(t.interrupt_pause),
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
        let v4 = plan(shape(SessionKind::Exec, true, true, false), &t);
        assert_eq!(v4[..], steps[..steps.len() - 1]);
    }

    #[test]
    fn non_tty_exec_closes_stdin_and_attach_or_no_stdin_writes_nothing() {
        let t = TeardownTimings::default();
        assert_eq!(plan(shape(SessionKind::Exec, true, false, true), &t), vec![Step::CloseStdin, Step::Wait(t.eof_wait)]);
        assert!(plan(shape(SessionKind::Exec, true, false, false), &t).is_empty());
        assert!(plan(shape(SessionKind::Exec, false, true, true), &t).is_empty());
        for (stdin, tty) in [(true, true), (true, false), (false, true), (false, false)] {
            assert!(plan(shape(SessionKind::Attach, stdin, tty, true), &t).is_empty(), "attach stdin={stdin} tty={tty}");
        }
    }
}
