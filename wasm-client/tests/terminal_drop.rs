//! A `Terminal` whose connection drops (the proxy is killed) reports it and never reconnects:
//! a new connection would be a new shell (`exec-portforward-protocol.md` §6.7). A test binary
//! of its own, because killing the proxy would disturb other tests.
#![cfg(target_arch = "wasm32")]

mod common;

use common::*;
use kubemux_client::Terminal;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn exec_sessions(pod: &str) -> usize {
    js_sys::Array::from(&call("GET", "/sim/processes").await).iter().filter(|p| get_str(p, "pod") == pod && get_str(p, "kind") == "exec").count()
}

#[wasm_bindgen_test]
async fn a_dropped_terminal_is_reported_and_not_reconnected() {
    let info = info().await;
    let (log, options) = recorder(
        &["onOpen", "onData", "onExit", "onError"],
        &[("cluster", get(&info, "cluster")), ("namespace", "default".into()), ("pod", "no-bash".into()), ("shells", js_sys::Array::of1(&"sh".into()).into())],
    );
    let terminal = Terminal::new(get_str(&info, "proxy"), options).unwrap();
    wait_for(15.0, "the terminal to open", || log.borrow().count("onOpen") == 1).await;
    // Waits for what the shell computed, not for a number of `onData` chunks: how the output
    // is split depends on timing, and under load the prompt and the echo can come as one.
    terminal.write("echo up-$((40+2))\r".into()).unwrap();
    let output = || -> String {
        let bytes: Vec<u8> = log.borrow().args("onData").iter().flat_map(|chunk| js_sys::Uint8Array::new(chunk).to_vec()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    wait_for(15.0, "the shell's output", || output().contains("up-42")).await;

    call("POST", "/proxy/kill").await;
    wait_for(15.0, "the exit", || log.borrow().count("onExit") == 1).await;
    let status = log.borrow().args("onError")[0].clone();
    assert_eq!(get(&status, "code").as_f64(), Some(503.0), "{status:?}");
    assert!(get_str(&status, "message").contains("no new session"), "{status:?}");
    let exit = log.borrow().args("onExit")[0].clone();
    assert!(get(&exit, "code").is_null(), "{exit:?}");
    let error = message(terminal.write("ls\r".into()).unwrap_err());
    assert!(error.contains("ended"), "{error}");

    // With the proxy back, nothing reconnects: no second session, no second onOpen.
    let sessions = exec_sessions("no-bash").await;
    call("POST", "/proxy/start").await;
    // An absence over a window (no reconnect for 3 s), which no event can signal.
    within(3.0, || false).await;
    assert_eq!(exec_sessions("no-bash").await, sessions, "a new exec session appeared after the drop");
    assert_eq!(log.borrow().count("onOpen"), 1);
    assert_eq!(log.borrow().count("onExit"), 1);
    terminal.close();
}
