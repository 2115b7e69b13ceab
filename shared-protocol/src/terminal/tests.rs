//! The terminal core driven as a shell would, with the frames a proxy sends.

use super::*;
use crate::channel::STDIN;

fn frame(channel: u8, payload: &[u8]) -> Vec<u8> {
    match channel::encode(ChannelProtocol::V4, channel, payload) {
        WsPayload::Binary(bytes) => bytes,
        WsPayload::Text(text) => text.into_bytes(),
    }
}

fn stdin(bytes: &[u8]) -> TerminalOutput {
    TerminalOutput::Send(channel::encode(ChannelProtocol::V4, STDIN, bytes))
}

fn connected() -> Vec<u8> {
    frame(channel::STDOUT, b"")
}

fn missing_binary() -> Vec<u8> {
    frame(channel::ERROR, ExecOutcome::internal_error("exec: \"bash\": executable file not found in $PATH").to_status().to_string().as_bytes())
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn core(candidates: Option<Vec<Vec<String>>>) -> TerminalCore {
    TerminalCore::new(TerminalConfig::new(candidates))
}

fn opened(out: &[TerminalOutput]) -> Option<Vec<String>> {
    out.iter().find_map(|o| if let TerminalOutput::Opened { command } = o { Some(command.clone()) } else { None })
}

#[test]
fn a_single_command_opens_when_connected_and_gets_its_size_first() {
    let mut t = TerminalCore::new(TerminalConfig { size: Some(TerminalSize { width: 80, height: 24 }), ..TerminalConfig::new(Some(vec![cmd(&["top"])])) });
    assert_eq!(t.start(), vec![TerminalOutput::Connect { attempt: 1, command: cmd(&["top"]) }]);
    let out = t.on_message(1, &connected(), 0);
    assert_eq!(out[0], TerminalOutput::Send(channel::encode(FRAMING, channel::RESIZE, &TerminalSize { width: 80, height: 24 }.to_payload())));
    assert_eq!(opened(&out), Some(cmd(&["top"])));
    assert_eq!(t.phase(), Phase::Open);
    assert_eq!(t.on_message(1, &frame(channel::STDOUT, b"hi"), 1), vec![TerminalOutput::Data(b"hi".to_vec())]);
    assert_eq!(t.write(b"q").unwrap(), vec![stdin(b"q")]);
    // The same size twice goes out once.
    assert!(t.resize(TerminalSize { width: 80, height: 24 }).unwrap().is_empty());
    assert_eq!(t.resize(TerminalSize { width: 100, height: 30 }).unwrap().len(), 1);
}

#[test]
fn with_fallbacks_a_quiet_connected_shell_counts_as_started_after_the_confirmation_delay() {
    let mut t = core(None);
    assert_eq!(t.start(), vec![TerminalOutput::Connect { attempt: 1, command: cmd(&["bash"]) }]);
    t.write(b"ls\r").unwrap();
    assert!(opened(&t.on_message(1, &connected(), 1000)).is_none(), "bash might still turn out missing");
    assert_eq!(t.next_deadline(), Some(1400));
    assert!(t.on_tick(1399).is_empty());
    let out = t.on_tick(1400);
    assert_eq!(out, vec![stdin(b"ls\r"), TerminalOutput::Opened { command: cmd(&["bash"]) }]);
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn output_confirms_a_shell_at_once() {
    let mut t = core(None);
    t.start();
    t.on_message(1, &connected(), 0);
    let out = t.on_message(1, &frame(channel::STDOUT, b"$ "), 5);
    assert_eq!(out, vec![TerminalOutput::Opened { command: cmd(&["bash"]) }, TerminalOutput::Data(b"$ ".to_vec())]);
}

#[test]
fn a_missing_shell_falls_back_on_a_new_socket_and_the_held_input_goes_to_the_one_that_starts() {
    let mut t = core(None);
    t.start();
    t.write(b"echo hi\r").unwrap();
    t.on_message(1, &connected(), 0);
    let out = t.on_message(1, &missing_binary(), 10);
    assert_eq!(out, vec![TerminalOutput::Connect { attempt: 2, command: cmd(&["sh"]) }]);
    assert_eq!(t.command(), cmd(&["sh"]));
    // The old socket's late events are not this session's any more.
    assert!(t.on_close(1, 1000).is_empty());
    assert!(t.on_message(1, &frame(channel::STDOUT, b"late"), 11).is_empty());
    // The last candidate counts as started once connected.
    let out = t.on_message(2, &connected(), 20);
    assert_eq!(out, vec![stdin(b"echo hi\r"), TerminalOutput::Opened { command: cmd(&["sh"]) }]);
}

#[test]
fn a_failure_after_output_is_the_sessions_error_not_a_missing_shell() {
    let mut t = core(None);
    t.start();
    t.on_message(1, &frame(channel::STDOUT, b"x"), 0);
    let out = t.on_message(1, &missing_binary(), 1);
    let TerminalOutput::Failed(failure) = &out[0] else { panic!("{out:?}") };
    assert_eq!((failure.code, failure.reason.as_str()), (500, "InternalError"));
    assert!(failure.status.as_deref().is_some_and(|s| s.contains("executable file not found")));
    assert!(matches!(out[1], TerminalOutput::Exited { code: None, .. }));
    assert_eq!(out[2], TerminalOutput::CloseSocket);
    assert_eq!(t.phase(), Phase::Ended);
    assert_eq!(t.write(b"x"), Err(Refused::Ended));
}

#[test]
fn the_exit_status_ends_the_session_with_its_code() {
    let mut t = core(Some(vec![cmd(&["sh", "-c", "exit 3"])]));
    t.start();
    t.on_message(1, &connected(), 0);
    let out = t.on_message(1, &frame(channel::ERROR, ExecOutcome::ExitCode(3).to_status().to_string().as_bytes()), 1);
    assert_eq!(out, vec![TerminalOutput::Exited { code: Some(3), message: None }, TerminalOutput::CloseSocket]);
    let mut t = core(Some(vec![cmd(&["true"])]));
    t.start();
    let out = t.on_message(1, &frame(channel::ERROR, br#"{"status":"Success"}"#), 1);
    assert_eq!(out[0], TerminalOutput::Exited { code: Some(0), message: None });
}

#[test]
fn an_unreadable_status_is_a_bad_gateway() {
    let mut t = core(Some(vec![cmd(&["sh"])]));
    t.start();
    let out = t.on_message(1, &frame(channel::ERROR, b"not json"), 1);
    let TerminalOutput::Failed(failure) = &out[0] else { panic!("{out:?}") };
    assert_eq!((failure.code, failure.reason.as_str(), failure.status.as_deref()), (502, "BadGateway", None));
}

#[test]
fn a_dropped_socket_ends_the_terminal_and_is_never_reconnected() {
    for (was_connected, words) in [(false, "refused or could not be opened"), (true, "lost; no new session is started")] {
        let mut t = core(Some(vec![cmd(&["sh"])]));
        t.start();
        if was_connected {
            t.on_message(1, &connected(), 0);
        }
        let out = t.on_close(1, 1006);
        let TerminalOutput::Failed(failure) = &out[0] else { panic!("{out:?}") };
        assert_eq!((failure.code, failure.reason.as_str()), (503, "ServiceUnavailable"));
        assert!(failure.message.contains(words) && failure.message.contains("1006"), "{}", failure.message);
        assert!(!out.iter().any(|o| matches!(o, TerminalOutput::Connect { .. })));
        assert_eq!(t.phase(), Phase::Ended);
    }
}

#[test]
fn close_closes_the_socket_and_delivers_nothing_more() {
    let mut t = core(None);
    t.start();
    t.write(b"held").unwrap();
    assert_eq!(t.close(), vec![TerminalOutput::CloseSocket]);
    assert!(t.is_closed());
    assert!(t.close().is_empty(), "closing twice is harmless");
    assert!(t.on_message(1, &connected(), 0).is_empty());
    assert!(t.on_close(1, 1000).is_empty());
    assert!(t.on_tick(10_000).is_empty());
    assert_eq!(t.write(b"x"), Err(Refused::Closed));
    assert_eq!(t.resize(TerminalSize { width: 1, height: 1 }), Err(Refused::Closed));
}

#[test]
fn held_input_is_bounded() {
    let mut t = TerminalCore::new(TerminalConfig { pending_limit: 4, ..TerminalConfig::new(None) });
    t.start();
    t.write(b"abcd").unwrap();
    assert_eq!(t.write(b"e"), Err(Refused::TooMuchPending));
    assert!(t.write(b"").unwrap().is_empty());
}

#[test]
fn a_socket_that_cannot_be_opened_fails_the_session() {
    let mut t = core(Some(vec![cmd(&["sh"])]));
    t.start();
    assert!(t.on_connect_error(7, "no").is_empty(), "not the current attempt");
    let out = t.on_connect_error(1, "SyntaxError");
    assert!(matches!(&out[0], TerminalOutput::Failed(f) if f.code == 500 && f.message.contains("SyntaxError")));
}

#[test]
fn no_candidates_means_the_default_shells() {
    assert_eq!(TerminalConfig::new(Some(Vec::new())).candidates, vec![cmd(&["bash"]), cmd(&["sh"])]);
}
