//! `Terminal` in headless Chromium, through the fixture's real proxy to kube-sim's real
//! processes (checked with the simulator's `/_sim/processes`): output, a close that leaves no
//! process behind, the shell fallback beside a live `Mux`, exit codes, refusals, and use after
//! close.
#![cfg(target_arch = "wasm32")]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::*;
use kubemux_client::{Mux, Terminal};
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const CALLBACKS: &[&str] = &["onOpen", "onData", "onExit", "onError"];

/// A terminal through the fixture's proxy; `extra` adds or overrides options.
async fn terminal(namespace: &str, pod: &str, extra: &[(&str, JsValue)]) -> (Terminal, Rc<RefCell<Log>>) {
    let info = info().await;
    let mut options = vec![("cluster", get(&info, "cluster")), ("namespace", namespace.into()), ("pod", pod.into()), ("cols", 100.into()), ("rows", 30.into())];
    options.extend(extra.iter().cloned());
    let (log, handlers) = recorder(CALLBACKS, &[]);
    for (key, value) in options {
        js_sys::Reflect::set(&handlers, &JsValue::from_str(key), &value).unwrap();
    }
    let terminal = Terminal::new(get_str(&info, "proxy"), handlers).expect("a Terminal");
    (terminal, log)
}

/// Everything `onData` delivered, as text.
fn output(log: &Rc<RefCell<Log>>) -> String {
    let bytes: Vec<u8> = log.borrow().args("onData").iter().flat_map(|chunk| js_sys::Uint8Array::new(chunk).to_vec()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The simulator's live processes in one pod: `(pid, command)`.
async fn processes(namespace: &str, pod: &str) -> Vec<(u32, String)> {
    js_sys::Array::from(&call("GET", "/sim/processes").await)
        .iter()
        .filter(|p| get_str(p, "namespace") == namespace && get_str(p, "pod") == pod)
        .map(|p| {
            let command: Vec<String> = js_sys::Array::from(&get(&p, "command")).iter().filter_map(|a| a.as_string()).collect();
            (get(&p, "pid").as_f64().unwrap() as u32, command.join(" "))
        })
        .collect()
}

fn strings(value: &JsValue) -> Vec<String> {
    js_sys::Array::from(value).iter().map(|s| s.as_string().unwrap()).collect()
}

/// The pid the shell itself reports (`$$`), printed as `{tag}-{pid}-42`: the arithmetic proves
/// the shell ran the line, since the terminal's echo of the typed line never contains `-42`.
/// The session's own shell, named by itself rather than found by comparing process lists,
/// where another test's shell still being torn down could pass for this one.
async fn shell_pid(terminal: &Terminal, log: &Rc<RefCell<Log>>, tag: &str) -> u32 {
    terminal.write(format!("echo {tag}-$$-$((6*7))\r").into()).unwrap();
    let found = |text: &str| {
        text.match_indices(&format!("{tag}-")).find_map(|(i, _)| {
            let rest = &text[i + tag.len() + 1..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (!digits.is_empty() && rest[digits.len()..].starts_with("-42")).then(|| digits.parse().ok()).flatten()
        })
    };
    wait_for(15.0, &format!("the {tag} shell's pid"), || found(&output(log)).is_some()).await;
    found(&output(log)).unwrap()
}

/// Waits until `pid` is no longer one of the simulator's live processes: the promise is 5 s
/// after `close()`.
async fn gone_after_close(pid: u32) {
    poll(5.0, "the session's shell to end after close()", || async {
        let left: Vec<(u32, String)> = processes("default", "toolbox").await.into_iter().filter(|(p, _)| *p == pid).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("still running: {left:?}")) }
    })
    .await;
}

#[wasm_bindgen_test]
async fn echo_shows_its_output_and_close_leaves_no_process() {
    let (terminal, log) = terminal("default", "toolbox", &[("container", "shell".into())]).await;
    // Typed before the session started: held back, then sent.
    terminal.write("echo hel".into()).unwrap();
    terminal.write(js_sys::Uint8Array::from(&b"lo\r"[..]).into()).unwrap();
    wait_for(15.0, "the terminal to open", || log.borrow().count("onOpen") == 1).await;
    assert_eq!(strings(&get(&log.borrow().args("onOpen")[0], "command")), ["bash"]);
    assert_eq!(strings(&terminal.command()), ["bash"]);
    if !within(15.0, || output(&log).contains("\rhello\r\n")).await {
        panic!("no `hello` on its own line in {:?}", output(&log));
    }
    let pid = shell_pid(&terminal, &log, "pid").await;
    let listed = processes("default", "toolbox").await;
    assert!(listed.contains(&(pid, "bash".to_owned())), "the session's shell {pid} shows in /_sim/processes: {listed:?}");
    terminal.resize(120.0, 40.0).unwrap();
    terminal.write("stty size\r".into()).unwrap();
    wait_for(10.0, "the new size", || output(&log).contains("40 120")).await;

    // Closed the moment a command's output arrives, before the shell is back at its prompt.
    terminal.close();
    gone_after_close(pid).await;
    // Nothing is delivered after close(), not even the exit.
    assert_eq!(log.borrow().count("onExit"), 0);
    assert_eq!(log.borrow().count("onError"), 0);
}

/// A shell inside the shell (`su`, `bash` typed at the prompt): one `exit` ends only the inner
/// one. `close()` must still leave nothing. Deterministic, where the flake was not: the browser
/// once typed one `exit` and closed stdin at once, which left the outer shell running every
/// time here (and, under load, even a plain shell, when its `exit` reached it together with the
/// Ctrl-C and was lost).
#[wasm_bindgen_test]
async fn close_ends_a_nested_shell_that_one_exit_would_not() {
    let (terminal, log) = terminal("default", "toolbox", &[("container", "shell".into())]).await;
    wait_for(15.0, "the terminal to open", || log.borrow().count("onOpen") == 1).await;
    let outer = shell_pid(&terminal, &log, "outer").await;
    terminal.write("bash\r".into()).unwrap();
    let inner = shell_pid(&terminal, &log, "inner").await;
    assert_ne!(inner, outer, "the inner shell is another process");
    terminal.close();
    gone_after_close(outer).await;
}

#[wasm_bindgen_test]
async fn a_missing_bash_falls_back_to_sh_without_disturbing_the_mux() {
    let info = info().await;
    let (conn, mux_options) = recorder(&["onState", "onError"], &[]);
    let mux = Mux::new(get_str(&info, "mux"), mux_options).unwrap();
    let (watch, handlers) = recorder(&["onEvent", "onSynced", "onReset", "onError", "onState"], &[]);
    let sub = mux.watch(object(&[("cluster", get(&info, "cluster")), ("path", get(&info, "podsPath"))]), handlers).unwrap();
    wait_for(15.0, "the watch's snapshot", || watch.borrow().count("onSynced") == 1).await;

    let (terminal, log) = terminal("default", "no-bash", &[]).await;
    wait_for(15.0, "the terminal to open", || log.borrow().count("onOpen") == 1).await;
    assert_eq!(strings(&get(&log.borrow().args("onOpen")[0], "command")), ["sh"], "bash is missing, so sh");
    assert_eq!(strings(&terminal.command()), ["sh"]);
    terminal.write("echo fallback-$((40+2))\r".into()).unwrap();
    wait_for(15.0, "the shell's output", || output(&log).contains("fallback-42")).await;
    assert_eq!(log.borrow().count("onError"), 0, "the missing bash is not an error");
    assert_eq!(log.borrow().count("onOpen"), 1);
    terminal.close();

    // The watch on the page's multiplexer saw nothing of it and keeps receiving.
    let before = watch.borrow().count("onEvent");
    wait_for(20.0, "more events on the watch", || watch.borrow().count("onEvent") >= before + 3).await;
    assert_eq!(conn.borrow().states(), ["connecting", "open"], "the Mux connection never dropped");
    assert_eq!(conn.borrow().count("onError"), 0);
    assert_eq!(watch.borrow().count("onError"), 0);
    assert_eq!(watch.borrow().count("onReset"), 0);
    assert_eq!(watch.borrow().count("onSynced"), 1);
    assert_eq!(sub.state().unwrap(), "synced");
    mux.close();
}

#[wasm_bindgen_test]
async fn exit_codes_reach_on_exit() {
    for (script, code) in [("exit 3", 3.0), ("true", 0.0)] {
        let command = js_sys::Array::of3(&"sh".into(), &"-c".into(), &script.into());
        let (terminal, log) = terminal("default", "toolbox", &[("command", command.into())]).await;
        wait_for(15.0, "the exit", || log.borrow().count("onExit") == 1).await;
        let exit = log.borrow().args("onExit")[0].clone();
        assert_eq!(get(&exit, "code").as_f64(), Some(code), "{script}: {exit:?}");
        assert_eq!(log.borrow().count("onError"), 0, "{script}: an exit code is not an error");
        assert_eq!(log.borrow().count("onOpen"), 1);
        // Once the session ended, input is refused with a clear error.
        let error = message(terminal.write("x".into()).unwrap_err());
        assert!(error.contains("ended"), "{error}");
        terminal.close(); // harmless after the end
    }
}

#[wasm_bindgen_test]
async fn refusals_arrive_as_a_status_and_an_exit() {
    // A missing pod: the proxy accepts the socket, then sends the upstream's 404 on channel 3.
    let (_terminal, log) = terminal("default", "no-such-pod", &[]).await;
    wait_for(15.0, "the exit", || log.borrow().count("onExit") == 1).await;
    let status = log.borrow().args("onError")[0].clone();
    assert_eq!(get(&status, "code").as_f64(), Some(404.0), "{status:?}");
    let exit = log.borrow().args("onExit")[0].clone();
    assert!(get(&exit, "code").is_null());
    assert!(!get_str(&exit, "message").is_empty());
    assert_eq!(log.borrow().count("onOpen"), 0);

    // No shell at all: the last candidate's InternalError is the answer.
    let shells = js_sys::Array::of2(&"zsh-not-here".into(), &"fish-not-here".into());
    let (_terminal, log) = terminal("default", "toolbox", &[("shells", shells.into())]).await;
    wait_for(15.0, "the exit", || log.borrow().count("onExit") == 1).await;
    let status = log.borrow().args("onError")[0].clone();
    assert_eq!(get(&status, "code").as_f64(), Some(500.0), "{status:?}");
    assert_eq!(get_str(&status, "reason"), "InternalError");
    assert!(get(&log.borrow().args("onExit")[0], "code").is_null());
}

#[wasm_bindgen_test]
async fn methods_after_close_throw_clear_errors() {
    let (terminal, log) = terminal("default", "toolbox", &[]).await;
    wait_for(15.0, "the terminal to open", || log.borrow().count("onOpen") == 1).await;
    terminal.close();
    terminal.close(); // closing twice is harmless
    let write = message(terminal.write("ls\r".into()).unwrap_err());
    assert!(write.contains("closed with close()"), "{write}");
    let resize = message(terminal.resize(80.0, 24.0).unwrap_err());
    assert!(resize.contains("closed with close()"), "{resize}");
    assert_eq!(strings(&terminal.command()), ["bash"], "the command stays readable");
}

#[wasm_bindgen_test]
async fn bad_arguments_throw_clear_errors() {
    let info = info().await;
    let base = || object(&[("cluster", "sim".into()), ("namespace", "default".into()), ("pod", "toolbox".into())]);
    let url = message(Terminal::new("ftp://example.invalid".to_owned(), base()).err().unwrap());
    assert!(url.contains("http://"), "{url}");
    let proxy = get_str(&info, "proxy");
    let missing = message(Terminal::new(proxy.clone(), object(&[("cluster", "sim".into()), ("namespace", "default".into())])).err().unwrap());
    assert!(missing.contains("`pod`"), "{missing}");
    let both = base();
    js_sys::Reflect::set(&both, &"command".into(), &js_sys::Array::of1(&"sh".into())).unwrap();
    js_sys::Reflect::set(&both, &"shells".into(), &js_sys::Array::of1(&"sh".into())).unwrap();
    let both = message(Terminal::new(proxy.clone(), both).err().unwrap());
    assert!(both.contains("either"), "{both}");
    let empty = base();
    js_sys::Reflect::set(&empty, &"command".into(), &js_sys::Array::new()).unwrap();
    let empty = message(Terminal::new(proxy.clone(), empty).err().unwrap());
    assert!(empty.contains("`command`"), "{empty}");
    let cols = base();
    js_sys::Reflect::set(&cols, &"cols".into(), &"80".into()).unwrap();
    js_sys::Reflect::set(&cols, &"rows".into(), &24.into()).unwrap();
    let cols = Terminal::new(proxy.clone(), cols).err().unwrap();
    assert!(is_type_error(&cols) && message(cols.clone()).contains("`cols`"), "{}", message(cols));
    let (terminal, _log) = terminal("default", "toolbox", &[]).await;
    let size = message(terminal.resize(0.0, 24.0).unwrap_err());
    assert!(size.contains("1 to 65535"), "{size}");
    let input = message(terminal.write(3.into()).unwrap_err());
    assert!(input.contains("string or a Uint8Array"), "{input}");
    terminal.close();
}
