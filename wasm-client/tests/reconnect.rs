//! The client in headless Chromium while the proxy is killed and restarted on the same port: it
//! reports `reconnecting`, resumes, and its items equal the simulator's list, with no
//! duplicates. A test binary of its own, because killing the proxy would disturb other tests.
#![cfg(target_arch = "wasm32")]

mod common;

use common::*;
use kubemux_client::Mux;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn a_killed_proxy_is_reconnected_and_nothing_is_lost() {
    let info = info().await;
    let (conn, options) = recorder(&["onState", "onError"], &[("reconnectBaseMs", 200.into()), ("reconnectMaxMs", 1000.into())]);
    let mux = Mux::new(get_str(&info, "mux"), options).unwrap();
    let (log, handlers) = recorder(&["onEvent", "onSynced", "onReset", "onError", "onState"], &[]);
    let sub = mux.watch(object(&[("cluster", get(&info, "cluster")), ("path", get(&info, "podsPath"))]), handlers).unwrap();
    wait_for(15.0, "the snapshot", || log.borrow().count("onSynced") == 1).await;

    call("POST", "/proxy/kill").await;
    wait_for(15.0, "reconnecting", || conn.borrow().states().iter().any(|s| s == "reconnecting")).await;
    let reconnecting = conn.borrow().args("onState").into_iter().find(|s| get_str(s, "state") == "reconnecting").unwrap();
    assert!(get(&reconnecting, "delayMs").as_f64().is_some(), "reconnecting says when: {reconnecting:?}");
    wait_for(10.0, "the subscription to go stale", || sub.state().unwrap() == "stale").await;

    call("POST", "/proxy/start").await;
    wait_for(30.0, "a second open", || conn.borrow().states().iter().filter(|s| *s == "open").count() == 2).await;
    wait_for(30.0, "synced again", || sub.state().unwrap() == "synced" && log.borrow().count("onSynced") >= 2).await;

    // The cache must come to equal the simulator's list (same names, same versions), with
    // every pod once. Churn goes on meanwhile, so compare until they agree.
    poll(20.0, "the client's items to equal the simulator's list", || async {
        let shown = names_and_versions(&sub.items().unwrap());
        let mut names: Vec<&String> = shown.iter().map(|(n, _)| n).collect();
        names.dedup();
        assert_eq!(names.len(), shown.len(), "a pod is listed twice: {shown:?}");
        let direct = names_and_versions(&call("GET", "/sim/pods?ns=demo").await);
        if shown == direct { Ok(()) } else { Err(format!("the client shows {shown:?}, the simulator has {direct:?}")) }
    })
    .await;
    assert_eq!(conn.borrow().count("onError"), 0);
    assert_eq!(log.borrow().count("onError"), 0);
    mux.close();
}
