//! The sans-IO terminal core: a pod shell over the Kubernetes exec protocol, as the browser's
//! `Terminal` runs it. Like [`ClientCore`](crate::client::ClientCore) it owns no socket, reads
//! no clock and sets no timer: the shell (the wasm `Terminal`, a native client, a test) feeds it
//! what happened with the time in milliseconds, and performs the [`TerminalOutput`]s it returns.
//!
//! ```text
//! shell                              TerminalCore
//!   start()                     ───▶ [Connect{attempt, command}]
//!   binary frame: on_message(…) ───▶ [Send(resize)] [Opened] [Data] [Failed, Exited, CloseSocket]
//!                                    | [Connect{next shell}]
//!   socket closed: on_close(…)  ───▶ [Failed, Exited, CloseSocket]
//!   timer: on_tick(now)         ───▶ [Opened, Send(held input)]
//!   write / resize / close      ───▶ [Send(…)] | [CloseSocket]
//!   next_deadline()             ───▶ when to call on_tick next
//! ```
//!
//! Lifecycle (`exec-portforward-protocol.md` §3, §6.7, §9):
//! - each attempt is its own socket to `…/pods/{pod}/exec`; the server's empty frame says the
//!   session is connected, and the size goes out then;
//! - with shell candidates, an `InternalError` 500 status before any output means the binary is
//!   missing, and the next candidate gets a new socket; input typed meanwhile is held back and
//!   goes to the shell that starts. A connected session with more candidates left counts as
//!   started once it printed something, or after [`TerminalConfig::confirm_ms`] without a status;
//! - [`TerminalCore::close`] closes the socket and nothing else: the proxy's teardown ends the
//!   shell with the one plan of [`teardown`], as it does for a socket that just drops;
//! - a dropped socket ends the terminal: it is reported and never reconnected, because a new
//!   connection would be a new process.

pub mod teardown;

use crate::channel::{self, ChannelProtocol, Decoded, ExecOutcome, TerminalSize, WsPayload};

/// Shells tried in turn when no command is given.
pub const DEFAULT_SHELLS: [&str; 2] = ["bash", "sh"];

/// How frames are encoded and decoded. v5 and v4 frame data identically (binary, the channel
/// byte first; v5 only adds the client's CLOSE signal, which a terminal never sends: the
/// proxy's teardown does, last). Passing one constant to every `channel::encode`/`decode` call
/// also lets the optimiser drop their base64 paths, which would otherwise cost the browser
/// package about 2 KiB.
const FRAMING: ChannelProtocol = ChannelProtocol::V4;

/// The subprotocols a terminal's socket offers, in order of preference.
pub const SUBPROTOCOLS: [ChannelProtocol; 2] = [ChannelProtocol::V5, ChannelProtocol::V4];

/// Terminal settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalConfig {
    /// The commands to try in turn; the first that starts wins. Never empty.
    pub candidates: Vec<Vec<String>>,
    /// The initial size, sent once connected.
    pub size: Option<TerminalSize>,
    /// With more candidates left, a connected session without output or status counts as
    /// started after this long.
    pub confirm_ms: u64,
    /// Input held back while the session is starting; more than this is refused.
    pub pending_limit: usize,
}

impl TerminalConfig {
    /// Settings for these candidates (the default shells when `None`), with the default
    /// confirmation delay (400 ms) and held-input limit (64 KiB).
    pub fn new(candidates: Option<Vec<Vec<String>>>) -> TerminalConfig {
        let candidates = candidates.filter(|c| !c.is_empty()).unwrap_or_else(|| DEFAULT_SHELLS.map(|shell| vec![shell.to_owned()]).to_vec());
        TerminalConfig { candidates, size: None, confirm_ms: 400, pending_limit: 64 * 1024 }
    }
}

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting, or connected but not yet known to have started (shell fallback).
    Starting,
    /// Running; [`TerminalOutput::Opened`] was returned.
    Open,
    /// Over: exited, failed, dropped or closed.
    Ended,
}

/// A failure the application is told about: the server's `Status`, or one the core made for
/// what it saw itself (a dropped socket, an unreadable status). Every failure has a code and a
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// HTTP-style code.
    pub code: u16,
    /// Machine-readable reason, e.g. `ServiceUnavailable`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// The server's own channel-3 `Status` text, when it sent one, for shells that hand the
    /// application the whole object.
    pub status: Option<String>,
}

/// What the shell must do, or tell the application.
#[derive(Debug, Clone, PartialEq)]
pub enum TerminalOutput {
    /// Open a socket for `command` (offering [`SUBPROTOCOLS`]), in place of any previous one,
    /// whose events are no longer wanted. Events of the new socket carry `attempt`.
    Connect {
        /// The attempt's number, passed back with its socket's events.
        attempt: u32,
        /// The command for the exec URL.
        command: Vec<String>,
    },
    /// Send this frame on the current socket.
    Send(WsPayload),
    /// Close the current socket and forget it.
    CloseSocket,
    /// The session has started (`onOpen`).
    Opened {
        /// The command that runs.
        command: Vec<String>,
    },
    /// Output of the process (`onData`).
    Data(Vec<u8>),
    /// The session failed (`onError`); [`TerminalOutput::Exited`] follows.
    Failed(Failure),
    /// The session is over (`onExit`); nothing more follows.
    Exited {
        /// The exit code, when the process reported one.
        code: Option<i32>,
        /// Why, when it did not exit on its own.
        message: Option<String>,
    },
}

/// Why input or a resize was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The application closed the terminal.
    Closed,
    /// The session has ended.
    Ended,
    /// Too much input was written before the session started.
    TooMuchPending,
}

impl Refused {
    /// A message for the application.
    pub fn message(self) -> &'static str {
        match self {
            Refused::Closed => "kubemux: this Terminal was closed with close(); create a new Terminal to start another session",
            Refused::Ended => "kubemux: this Terminal's session has ended (see onExit); create a new Terminal to start another session",
            Refused::TooMuchPending => "kubemux: too much input written before the terminal's session started",
        }
    }
}

/// The current attempt's socket, as far as the core knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    id: u32,
    connected: bool,
    output_seen: bool,
    sent_size: Option<TerminalSize>,
}

/// The terminal's state machine.
#[derive(Debug, Clone)]
pub struct TerminalCore {
    config: TerminalConfig,
    index: usize,
    size: Option<TerminalSize>,
    /// Input written while starting, sent once the session has started.
    pending: Vec<u8>,
    attempt: Option<Attempt>,
    attempts: u32,
    phase: Phase,
    user_closed: bool,
    /// When a connected session still starting counts as started.
    confirm_at: Option<u64>,
}

impl TerminalCore {
    /// A core that has not connected yet; call [`TerminalCore::start`].
    pub fn new(config: TerminalConfig) -> TerminalCore {
        let size = config.size;
        TerminalCore { config, index: 0, size, pending: Vec::new(), attempt: None, attempts: 0, phase: Phase::Starting, user_closed: false, confirm_at: None }
    }

    /// The first attempt.
    pub fn start(&mut self) -> Vec<TerminalOutput> {
        vec![self.connect()]
    }

    /// Where the session stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the application closed the terminal (then nothing more is delivered).
    pub fn is_closed(&self) -> bool {
        self.user_closed
    }

    /// The command of the current (or last) attempt, e.g. `["sh"]` after a fallback.
    pub fn command(&self) -> &[String] {
        self.config.candidates.get(self.index).map_or(&[], Vec::as_slice)
    }

    /// When [`TerminalCore::on_tick`] is due next.
    pub fn next_deadline(&self) -> Option<u64> {
        self.confirm_at
    }

    /// A binary message of attempt `attempt`'s socket, at `now`.
    pub fn on_message(&mut self, attempt: u32, bytes: &[u8], now: u64) -> Vec<TerminalOutput> {
        let mut out = Vec::new();
        let Some(current) = self.attempt.filter(|a| a.id == attempt) else { return out };
        match channel::decode(FRAMING, bytes) {
            Ok(Decoded::Data { channel: channel::STDOUT | channel::STDERR, payload }) => {
                if !current.connected {
                    self.attempt = Some(Attempt { connected: true, ..current });
                    self.on_connected(now, &mut out);
                }
                if payload.is_empty() {
                    return out;
                }
                if let Some(current) = self.attempt.as_mut() {
                    current.output_seen = true;
                }
                if self.phase == Phase::Starting {
                    self.confirm(&mut out);
                }
                out.push(TerminalOutput::Data(payload));
            }
            Ok(Decoded::Data { channel: channel::ERROR, payload }) => self.on_status(&payload, &mut out),
            // Resize echoes, unknown channels and unreadable frames carry nothing for a user.
            _ => {}
        }
        out
    }

    /// Attempt `attempt`'s socket closed with `code`.
    pub fn on_close(&mut self, attempt: u32, code: u16) -> Vec<TerminalOutput> {
        let mut out = Vec::new();
        let Some(current) = self.attempt.filter(|a| a.id == attempt) else { return out };
        let what = if current.connected { "lost; no new session is started" } else { "refused or could not be opened" };
        let message = format!("the terminal's connection was {what} (WebSocket close code {code})");
        self.fail(503, "ServiceUnavailable", message, None, &mut out);
        out
    }

    /// The shell could not even open attempt `attempt`'s socket.
    pub fn on_connect_error(&mut self, attempt: u32, error: &str) -> Vec<TerminalOutput> {
        let mut out = Vec::new();
        if self.attempt.is_some_and(|a| a.id == attempt) {
            self.fail(500, "InternalError", format!("cannot open a WebSocket for the terminal: {error}"), None, &mut out);
        }
        out
    }

    /// The time is `now`: a session still starting may count as started.
    pub fn on_tick(&mut self, now: u64) -> Vec<TerminalOutput> {
        let mut out = Vec::new();
        if self.confirm_at.is_some_and(|at| now >= at) {
            self.confirm_at = None;
            if self.phase == Phase::Starting {
                self.confirm(&mut out);
            }
        }
        out
    }

    /// Input from the application: sent at once when the session runs, held back while it starts.
    pub fn write(&mut self, bytes: &[u8]) -> Result<Vec<TerminalOutput>, Refused> {
        self.ensure_live()?;
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        if self.phase == Phase::Open && self.attempt.is_some_and(|a| a.connected) {
            return Ok(vec![TerminalOutput::Send(channel::encode(FRAMING, channel::STDIN, bytes))]);
        }
        if self.pending.len() + bytes.len() > self.config.pending_limit {
            return Err(Refused::TooMuchPending);
        }
        self.pending.extend_from_slice(bytes);
        Ok(Vec::new())
    }

    /// A new size: sent at once when connected, otherwise as soon as the session connects.
    pub fn resize(&mut self, size: TerminalSize) -> Result<Vec<TerminalOutput>, Refused> {
        self.ensure_live()?;
        self.size = Some(size);
        let mut out = Vec::new();
        self.send_size(&mut out);
        Ok(out)
    }

    /// The application ends the session: the socket closes, and the proxy's teardown ends the
    /// shell ([`teardown::plan`]). Nothing is delivered afterwards; closing twice is harmless.
    pub fn close(&mut self) -> Vec<TerminalOutput> {
        if self.user_closed {
            return Vec::new();
        }
        self.user_closed = true;
        let mut out = Vec::new();
        self.finish(&mut out);
        out
    }

    fn ensure_live(&self) -> Result<(), Refused> {
        if self.user_closed {
            Err(Refused::Closed)
        } else if self.phase == Phase::Ended {
            Err(Refused::Ended)
        } else {
            Ok(())
        }
    }

    /// A socket for the current candidate, in place of any previous one.
    fn connect(&mut self) -> TerminalOutput {
        self.attempts += 1;
        self.attempt = Some(Attempt { id: self.attempts, connected: false, output_seen: false, sent_size: None });
        self.confirm_at = None;
        TerminalOutput::Connect { attempt: self.attempts, command: self.command().to_vec() }
    }

    /// The server's empty frame: the session is connected.
    fn on_connected(&mut self, now: u64, out: &mut Vec<TerminalOutput>) {
        self.send_size(out);
        if self.phase != Phase::Starting {
            return;
        }
        if self.index + 1 == self.config.candidates.len() {
            self.confirm(out);
        } else {
            self.confirm_at = Some(now.saturating_add(self.config.confirm_ms));
        }
    }

    /// The session has started: tell the application and send the input held back.
    fn confirm(&mut self, out: &mut Vec<TerminalOutput>) {
        self.phase = Phase::Open;
        self.confirm_at = None;
        if self.attempt.is_some() && !self.pending.is_empty() {
            out.push(TerminalOutput::Send(channel::encode(FRAMING, channel::STDIN, &std::mem::take(&mut self.pending))));
        }
        out.push(TerminalOutput::Opened { command: self.command().to_vec() });
    }

    /// Channel 3: how the process ended (or why it never started).
    fn on_status(&mut self, payload: &[u8], out: &mut Vec<TerminalOutput>) {
        let output_seen = self.attempt.is_some_and(|a| a.output_seen);
        match ExecOutcome::parse(payload) {
            Ok(ExecOutcome::Success) => self.end(Some(0), None, out),
            Ok(ExecOutcome::ExitCode(code)) => self.end(Some(code), None, out),
            Ok(ExecOutcome::Failure { message, reason, code }) => {
                let missing = reason.as_deref() == Some("InternalError") && code == Some(500);
                if missing && !output_seen && self.index + 1 < self.config.candidates.len() {
                    // The binary is missing: try the next shell on a new socket.
                    self.index += 1;
                    self.phase = Phase::Starting;
                    out.push(self.connect());
                    return;
                }
                let status = std::str::from_utf8(payload).ok().map(str::to_owned);
                self.fail(code.unwrap_or(500), reason.as_deref().unwrap_or("Unknown"), message, status, out);
            }
            Err(error) => self.fail(502, "BadGateway", format!("the terminal's status could not be read: {error}"), None, out),
        }
    }

    fn fail(&mut self, code: u16, reason: &str, message: String, status: Option<String>, out: &mut Vec<TerminalOutput>) {
        out.push(TerminalOutput::Failed(Failure { code, reason: reason.to_owned(), message: message.clone(), status }));
        self.end(None, Some(message), out);
    }

    /// The session is over: `Exited`, then nothing more.
    fn end(&mut self, code: Option<i32>, message: Option<String>, out: &mut Vec<TerminalOutput>) {
        out.push(TerminalOutput::Exited { code, message });
        self.finish(out);
    }

    fn finish(&mut self, out: &mut Vec<TerminalOutput>) {
        self.phase = Phase::Ended;
        self.confirm_at = None;
        self.pending = Vec::new();
        if self.attempt.take().is_some() {
            out.push(TerminalOutput::CloseSocket);
        }
    }

    fn send_size(&mut self, out: &mut Vec<TerminalOutput>) {
        let Some(size) = self.size else { return };
        if let Some(attempt) = self.attempt.as_mut().filter(|a| a.connected && a.sent_size != Some(size)) {
            // Terminals are always TTY sessions, where resize is meaningful.
            out.push(TerminalOutput::Send(channel::encode(FRAMING, channel::RESIZE, &size.to_payload())));
            attempt.sent_size = Some(size);
        }
    }
}

#[cfg(test)]
mod tests;
