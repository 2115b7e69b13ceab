//! The client in headless Chromium against a real proxy and kube-sim (started by the fixture,
//! see `tests/src/bin/kubemux-fixture.rs`): snapshots and live changes, isolation of a
//! forbidden watch, unwatch, a malformed server frame, and use after close.
#![cfg(target_arch = "wasm32")]

mod common;

use common::*;
use kubemux_client::Mux;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const SUB_CALLBACKS: &[&str] = &["onEvent", "onSynced", "onReset", "onError", "onChange", "onState"];

async fn connect() -> (Mux, std::rc::Rc<std::cell::RefCell<Log>>, JsValue) {
    let info = info().await;
    let (log, options) = recorder(&["onState", "onError"], &[]);
    let mux = Mux::new(get_str(&info, "mux"), options).expect("a Mux");
    (mux, log, info)
}

fn pods_request(info: &JsValue) -> JsValue {
    object(&[("cluster", get(info, "cluster")), ("path", get(info, "podsPath"))])
}

#[wasm_bindgen_test]
async fn a_watch_gets_its_snapshot_then_live_changes() {
    let (mux, states, info) = connect().await;
    let (log, handlers) = recorder(SUB_CALLBACKS, &[]);
    let sub = mux.watch(pods_request(&info), handlers).unwrap();
    assert_eq!(sub.state().unwrap(), "syncing");
    wait_for(15.0, "the snapshot", || log.borrow().count("onSynced") == 1).await;
    assert_eq!(sub.state().unwrap(), "synced");
    assert_eq!(states.borrow().states(), ["connecting", "open"]);

    // The items are plain objects, the same pods the simulator lists (give or take churn).
    let items = sub.items().unwrap();
    let shown = names_and_versions(&items);
    let direct = call("GET", "/sim/pods?ns=demo").await;
    let direct_count = js_sys::Array::from(&direct).length() as usize;
    assert!(shown.len() >= 6, "the demo namespace has at least 6 pods: {shown:?}");
    assert!(shown.len().abs_diff(direct_count) <= 2, "{} shown, {direct_count} in the simulator", shown.len());
    let first = js_sys::Array::from(&items).get(0);
    assert_eq!(get_str(&first, "kind"), "Pod");
    assert!(get(&get(&first, "spec"), "containers").is_array());

    // Live churn arrives as events, each one visible in items().
    let before = log.borrow().count("onEvent");
    wait_for(20.0, "live churn events", || log.borrow().count("onEvent") >= before + 5).await;
    let event = log.borrow().args("onEvent").last().cloned().unwrap();
    assert!(["ADDED", "MODIFIED", "DELETED"].contains(&get_str(&event, "type").as_str()));
    assert!(log.borrow().count("onChange") >= before + 5);
    if get_str(&event, "type") != "DELETED" {
        // The last event's object is what items() shows for that pod now.
        let name = get_str(&get(&get(&event, "object"), "metadata"), "name");
        let rv = get_str(&get(&get(&event, "object"), "metadata"), "resourceVersion");
        let items = sub.items().unwrap();
        let shown = names_and_versions(&items);
        let position = shown.iter().position(|shown| *shown == (name.clone(), rv.clone()));
        assert!(position.is_some(), "{shown:?}");
        // Not a copy: the very object onEvent was given (parsed once, from its frame).
        let listed = js_sys::Array::from(&items).get(position.unwrap_or_default() as u32);
        assert!(js_sys::Object::is(&listed, &get(&event, "object")), "items() lists the object onEvent had");
    }
    mux.close();
    assert_eq!(states.borrow().states().last().unwrap(), "closed");
}

#[wasm_bindgen_test]
async fn a_forbidden_watch_fails_alone() {
    let (mux, states, info) = connect().await;
    let (pods, pods_handlers) = recorder(SUB_CALLBACKS, &[]);
    let healthy = mux.watch(pods_request(&info), pods_handlers).unwrap();
    wait_for(15.0, "the healthy snapshot", || pods.borrow().count("onSynced") == 1).await;

    let (denied, denied_handlers) = recorder(SUB_CALLBACKS, &[]);
    let forbidden = mux.watch(object(&[("cluster", get(&info, "restrictedCluster")), ("path", get(&info, "forbiddenPath"))]), denied_handlers).unwrap();
    wait_for(15.0, "the forbidden watch's error", || denied.borrow().count("onError") == 1).await;
    let error = denied.borrow().args("onError")[0].clone();
    assert_eq!(get_str(&error, "id"), forbidden.id());
    assert_eq!(get(&error, "fatal"), JsValue::TRUE);
    assert_eq!(get(&get(&error, "status"), "code").as_f64(), Some(403.0));
    assert_eq!(forbidden.state().unwrap(), "failed");
    assert_eq!(js_sys::Array::from(&forbidden.items().unwrap()).length(), 0);
    assert_eq!(denied.borrow().count("onEvent"), 0);

    // The healthy watch keeps receiving on the same connection, and saw no error.
    let before = pods.borrow().count("onEvent");
    wait_for(20.0, "more events on the healthy watch", || pods.borrow().count("onEvent") >= before + 5).await;
    assert_eq!(pods.borrow().count("onError"), 0);
    assert_eq!(healthy.state().unwrap(), "synced");
    assert_eq!(states.borrow().states(), ["connecting", "open"], "the connection never dropped");
    assert_eq!(states.borrow().count("onError"), 0, "nothing reached the connection's onError");
    mux.close();
}

#[wasm_bindgen_test]
async fn an_unwatched_subscription_gets_nothing_more() {
    let (mux, _states, info) = connect().await;
    let (kept, kept_handlers) = recorder(SUB_CALLBACKS, &[]);
    let (gone, gone_handlers) = recorder(SUB_CALLBACKS, &[]);
    let _kept_sub = mux.watch(pods_request(&info), kept_handlers).unwrap();
    let gone_sub = mux.watch(pods_request(&info), gone_handlers).unwrap();
    wait_for(15.0, "both snapshots", || kept.borrow().count("onSynced") == 1 && gone.borrow().count("onSynced") == 1).await;

    gone_sub.close();
    gone_sub.close(); // closing twice is harmless
    let calls = gone.borrow().calls.len();
    let before = kept.borrow().count("onEvent");
    wait_for(20.0, "more events on the kept watch", || kept.borrow().count("onEvent") >= before + 5).await;
    assert_eq!(gone.borrow().calls.len(), calls, "the closed subscription got callbacks after close()");
    let error = message(gone_sub.items().unwrap_err());
    assert!(error.contains("subscription was closed"), "{error}");
    assert!(gone_sub.state().is_err());
    mux.close();
}

#[wasm_bindgen_test]
async fn a_malformed_frame_is_reported_and_the_connection_lives_on() {
    let info = info().await;
    let (conn, options) = recorder(&["onState", "onError"], &[]);
    let mux = Mux::new(get_str(&info, "badMux"), options).unwrap();
    let (log, handlers) = recorder(SUB_CALLBACKS, &[]);
    let sub = mux.watch(object(&[("cluster", "sim".into()), ("path", "/api/v1/namespaces/bench/pods".into())]), handlers).unwrap();
    wait_for(15.0, "the snapshot after the bad frame", || log.borrow().count("onSynced") == 1).await;

    let errors = conn.borrow().args("onError");
    assert_eq!(errors.len(), 1, "one connection-level error: {errors:?}");
    assert!(get(&errors[0], "id").is_null());
    assert_eq!(get(&errors[0], "fatal"), JsValue::FALSE);
    assert_eq!(get_str(&get(&errors[0], "status"), "reason"), "BadRequest");
    assert_eq!(log.borrow().count("onError"), 0, "the subscription is not blamed");
    assert_eq!(names_and_versions(&sub.items().unwrap()), [("only-pod".to_owned(), "1".to_owned())]);
    assert_eq!(conn.borrow().states(), ["connecting", "open"], "the connection was not dropped");
    mux.close();
}

/// `stats()` resolves with the proxy's counters for this connection and each subscription (by
/// its id), and rejects once the connection closes before the answer, or after `close()`.
#[wasm_bindgen_test]
async fn stats_count_what_a_subscription_was_sent() {
    let (mux, _states, info) = connect().await;
    let (log, handlers) = recorder(SUB_CALLBACKS, &[]);
    let sub = mux.watch(pods_request(&info), handlers).unwrap();
    wait_for(15.0, "the snapshot", || log.borrow().count("onSynced") == 1).await;
    // A projecting watch of the same pods: its own subscription, sharing the upstream watch.
    let (slim_log, slim_handlers) = recorder(SUB_CALLBACKS, &[]);
    let slim_request = object(&[("cluster", get(&info, "cluster")), ("path", get(&info, "podsPath")), ("projection", "default".into())]);
    let slim = mux.watch(slim_request, slim_handlers).unwrap();
    wait_for(15.0, "the projected snapshot", || slim_log.borrow().count("onSynced") == 1).await;
    assert!(js_sys::Array::from(&slim.items().unwrap()).iter().all(|pod| get(&get(&pod, "metadata"), "managedFields").is_undefined()));
    let stats = wasm_bindgen_futures::JsFuture::from(mux.stats()).await.expect("stats() resolves on an open connection");
    let mine = get(&get(&stats, "subscriptions"), &sub.id());
    let number = |value: &JsValue, key: &str| get(value, key).as_f64().unwrap_or_else(|| panic!("{key} is a number"));
    let received = log.borrow().count("onEvent") as f64;
    assert!(number(&mine, "events") >= received && received >= 6.0, "events sent {} for {received} received", number(&mine, "events"));
    let upstream = get(&mine, "upstream");
    assert!(number(&upstream, "subscribers") >= 2.0, "the projecting watch shares the upstream watch");
    assert!(number(&upstream, "subscribers") >= 1.0 && number(&upstream, "events") >= 6.0 && number(&upstream, "requests") >= 1.0);
    assert!(number(&get(&stats, "connection"), "bytesOut") >= number(&mine, "bytes"));

    // Asked and closed before the answer: rejected, as is every later call.
    let pending = mux.stats();
    mux.close();
    let lost = message(wasm_bindgen_futures::JsFuture::from(pending).await.expect_err("the connection closed first"));
    assert!(lost.contains("closed before"), "{lost}");
    let after = message(wasm_bindgen_futures::JsFuture::from(mux.stats()).await.expect_err("closed"));
    assert!(after.contains("closed"), "{after}");
}

/// A `token` goes as the bearer subprotocol and the proxy acts as that user: a user restricted
/// to one namespace sees its pods and is refused another's, on a cluster whose own credentials
/// could read both.
#[wasm_bindgen_test]
async fn a_connection_token_is_who_the_proxy_acts_as() {
    let info = info().await;
    let mux = Mux::new(get_str(&info, "mux"), object(&[("token", get(&info, "restrictedToken"))])).unwrap();
    let (allowed, allowed_handlers) = recorder(SUB_CALLBACKS, &[]);
    let _pods = mux.watch(pods_request(&info), allowed_handlers).unwrap();
    let (denied, denied_handlers) = recorder(SUB_CALLBACKS, &[]);
    let _other = mux.watch(object(&[("cluster", get(&info, "cluster")), ("path", get(&info, "forbiddenPath"))]), denied_handlers).unwrap();
    wait_for(15.0, "the allowed snapshot and the refusal", || allowed.borrow().count("onSynced") >= 1 && denied.borrow().count("onError") >= 1).await;
    let error = denied.borrow().args("onError")[0].clone();
    assert_eq!(get(&get(&error, "status"), "code").as_f64(), Some(403.0), "the token's user, not the proxy's credentials");
    assert_eq!(allowed.borrow().count("onError"), 0);
    mux.close();
}

/// An object as JSON, its members' order aside (a patched object keeps its members' order and
/// adds new ones last).
fn as_json(object: &JsValue) -> serde_json::Value {
    serde_json::from_str(&js_sys::JSON::stringify(object).unwrap().as_string().unwrap()).unwrap()
}

/// `deltas: true`: the proxy sends changes as merge patches, the package applies them, and the
/// application holds exactly what a whole-object watch of the same pods holds, for fewer bytes;
/// a changed pod is a new object that shares its unchanged members with the previous one.
#[wasm_bindgen_test]
async fn a_delta_watch_holds_what_a_whole_watch_holds_for_fewer_bytes() {
    let (mux, _states, info) = connect().await;
    let (log, handlers) = recorder(SUB_CALLBACKS, &[]);
    let whole = mux.watch(pods_request(&info), handlers).unwrap();
    let (delta_log, delta_handlers) = recorder(SUB_CALLBACKS, &[]);
    let delta_request = object(&[("cluster", get(&info, "cluster")), ("path", get(&info, "podsPath")), ("deltas", true.into())]);
    let delta = mux.watch(delta_request, delta_handlers).unwrap();
    wait_for(15.0, "both snapshots", || log.borrow().count("onSynced") >= 1 && delta_log.borrow().count("onSynced") >= 1).await;
    let first = delta.get_snapshot();
    let events = delta_log.borrow().count("onEvent");
    wait_for(30.0, "churn to change pods", || delta_log.borrow().count("onEvent") >= events + 8).await;
    // Both subscriptions' frames come in order on one connection: wait until they agree.
    wait_for(15.0, "both watches at the same versions", || names_and_versions(&delta.items().unwrap()) == names_and_versions(&whole.items().unwrap())).await;
    let (patched, wholes) = (js_sys::Array::from(&delta.items().unwrap()), js_sys::Array::from(&whole.items().unwrap()));
    for (mine, theirs) in patched.iter().zip(wholes.iter()) {
        assert_eq!(as_json(&mine), as_json(&theirs), "a patched pod is the pod the whole watch holds");
    }
    let old: Vec<((String, String), JsValue)> = names_and_versions(&first).into_iter().zip(js_sys::Array::from(&first).iter()).collect();
    let mut shared = 0;
    for ((name, version), pod) in names_and_versions(&patched).into_iter().zip(patched.iter()) {
        if let Some((_, before)) = old.iter().find(|((old_name, old_version), _)| *old_name == name && *old_version != version) {
            assert!(!js_sys::Object::is(before, &pod), "a changed pod is a new object");
            if as_json(&get(before, "spec")) == as_json(&get(&pod, "spec")) && js_sys::Object::is(&get(before, "spec"), &get(&pod, "spec")) {
                shared += 1;
            }
        }
    }
    assert!(shared > 0, "a change that left a pod's spec alone keeps the same spec object");
    let stats = wasm_bindgen_futures::JsFuture::from(mux.stats()).await.expect("stats() resolves");
    let bytes = |sub: &str| get(&get(&get(&stats, "subscriptions"), sub), "bytes").as_f64().unwrap();
    assert!(bytes(&delta.id()) < bytes(&whole.id()), "patches cost fewer bytes: {} against {}", bytes(&delta.id()), bytes(&whole.id()));
    let bad = mux.watch(object(&[("cluster", get(&info, "cluster")), ("path", get(&info, "podsPath")), ("deltas", "yes".into())]), JsValue::UNDEFINED).err().unwrap();
    assert!(is_type_error(&bad) && message(bad.clone()).contains("`deltas`"), "{}", message(bad));
    mux.close();
}

/// `compression` (default `"deflate"`): the proxy sends `kubemux.v1+deflate`, the browser's
/// `DecompressionStream` reads it, and the application holds exactly what a plain connection's
/// does, the proxy having put a fraction of the bytes on the wire for it.
#[wasm_bindgen_test]
async fn a_compressed_connection_holds_what_a_plain_one_holds_for_fewer_bytes() {
    let (mux, _states, info) = connect().await;
    let plain = Mux::new(get_str(&info, "mux"), object(&[("compression", "none".into())])).unwrap();
    let (log, handlers) = recorder(SUB_CALLBACKS, &[]);
    let squeezed = mux.watch(pods_request(&info), handlers).unwrap();
    let (plain_log, plain_handlers) = recorder(SUB_CALLBACKS, &[]);
    let whole = plain.watch(pods_request(&info), plain_handlers).unwrap();
    wait_for(15.0, "both snapshots", || log.borrow().count("onSynced") >= 1 && plain_log.borrow().count("onSynced") >= 1).await;
    let events = log.borrow().count("onEvent");
    wait_for(30.0, "churn to change pods", || log.borrow().count("onEvent") >= events + 8).await;
    wait_for(15.0, "both connections at the same versions", || names_and_versions(&squeezed.items().unwrap()) == names_and_versions(&whole.items().unwrap())).await;
    let (mine, theirs) = (js_sys::Array::from(&squeezed.items().unwrap()), js_sys::Array::from(&whole.items().unwrap()));
    assert!(mine.length() > 0);
    for (mine, theirs) in mine.iter().zip(theirs.iter()) {
        assert_eq!(as_json(&mine), as_json(&theirs), "a pod read from the compressed stream is the plain connection's pod");
    }
    let connection = |stats: &JsValue, field: &str| get(&get(stats, "connection"), field).as_f64().unwrap();
    let stats = wasm_bindgen_futures::JsFuture::from(mux.stats()).await.expect("stats() resolves");
    let (frames, wire) = (connection(&stats, "bytesOut"), connection(&stats, "wireBytesOut"));
    assert!(wire * 3.0 < frames, "compressed: {wire} bytes on the wire for {frames} of frames");
    let stats = wasm_bindgen_futures::JsFuture::from(plain.stats()).await.expect("stats() resolves");
    assert_eq!(connection(&stats, "wireBytesOut"), connection(&stats, "bytesOut"), "`compression: \"none\"` is plain frames");
    let bad = Mux::new(get_str(&info, "mux"), object(&[("compression", "gzip".into())])).err().unwrap();
    assert!(is_type_error(&bad) && message(bad.clone()).contains("`compression`"), "{}", message(bad));
    mux.close();
    plain.close();
}

#[wasm_bindgen_test]
async fn methods_after_close_throw_clear_errors() {
    let (mux, states, info) = connect().await;
    let (_log, handlers) = recorder(SUB_CALLBACKS, &[]);
    let sub = mux.watch(pods_request(&info), handlers).unwrap();
    mux.close();
    mux.close(); // closing twice is harmless
    assert_eq!(states.borrow().states().last().unwrap(), "closed");
    assert_eq!(get_str(&mux.state(), "state"), "closed");

    let watch = message(mux.watch(pods_request(&info), JsValue::UNDEFINED).err().unwrap());
    assert!(watch.contains("closed with close()"), "{watch}");
    let auth = message(mux.auth("sim".to_owned(), "t".to_owned()).unwrap_err());
    assert!(auth.contains("closed with close()"), "{auth}");
    let items = message(sub.items().unwrap_err());
    assert!(items.contains("closed with close()"), "{items}");
    sub.close(); // harmless too
}

#[wasm_bindgen_test]
async fn bad_arguments_throw_clear_errors() {
    let info = info().await;
    let url = message(Mux::new("http://example.invalid/mux".to_owned(), JsValue::UNDEFINED).err().unwrap());
    assert!(url.contains("ws://"), "{url}");
    let mux = Mux::new(get_str(&info, "mux"), JsValue::UNDEFINED).unwrap();
    let missing = message(mux.watch(object(&[("cluster", "sim".into())]), JsValue::UNDEFINED).err().unwrap());
    assert!(missing.contains("`path`"), "{missing}");
    let invalid = message(mux.watch(object(&[("cluster", "sim".into()), ("path", "/api/v1/../secrets".into())]), JsValue::UNDEFINED).err().unwrap());
    assert!(invalid.contains("refused"), "{invalid}");
    let not_function = message(mux.watch(pods_request(&info), object(&[("onEvent", 3.into())])).err().unwrap());
    assert!(not_function.contains("onEvent"), "{not_function}");
    // A wrong option is a TypeError that names it.
    let selector = mux.watch(object(&[("cluster", "sim".into()), ("path", get(&info, "podsPath")), ("labelSelector", 3.into())]), JsValue::UNDEFINED).err().unwrap();
    assert!(is_type_error(&selector) && message(selector.clone()).contains("`labelSelector`"), "{}", message(selector));
    let projection = mux.watch(object(&[("cluster", "sim".into()), ("path", get(&info, "podsPath")), ("projection", "slim".into())]), JsValue::UNDEFINED).err().unwrap();
    assert!(is_type_error(&projection) && message(projection.clone()).contains("`projection`"), "{}", message(projection));
    let backoff = Mux::new(get_str(&info, "mux"), object(&[("reconnectBaseMs", "soon".into())])).err().unwrap();
    assert!(is_type_error(&backoff) && message(backoff.clone()).contains("`reconnectBaseMs`"), "{}", message(backoff));
    let negative = message(Mux::new(get_str(&info, "mux"), object(&[("reconnectMaxMs", (-1).into())])).err().unwrap());
    assert!(negative.contains("`reconnectMaxMs`") && negative.contains("non-negative"), "{negative}");
    let token = message(Mux::new(get_str(&info, "mux"), object(&[("token", 42.into())])).err().unwrap());
    assert!(token.contains("`token`") && !token.contains("42"), "the message names the field, never a token: {token}");
    mux.close();
}

/// React's `useSyncExternalStore` (and a Svelte store, a Vue `shallowRef`) binds to
/// `subscribe`/`getSnapshot` directly: the snapshot is the same array until a change, a new one
/// after it (in which an unchanged object is the same object), the listener hears every change,
/// and unsubscribing or closing stops it. (The array is not frozen, on purpose: see
/// `Shell::snapshot`.)
#[wasm_bindgen_test]
async fn the_external_store_contract_keeps_one_array_until_a_change() {
    let (mux, _states, info) = connect().await;
    let sub = mux.watch(pods_request(&info), object(&[])).unwrap();
    let (heard, listener) = recorder(&["listener"], &[]);
    let unsubscribe: js_sys::Function = get(&listener, "listener").dyn_into::<js_sys::Function>().map(|f| sub.subscribe(f)).unwrap().dyn_into().unwrap();
    wait_for(15.0, "the snapshot", || sub.state().unwrap() == "synced").await;
    let first = sub.get_snapshot();
    assert!(js_sys::Object::is(&first, &sub.get_snapshot()), "nothing changed: the same array");
    assert_eq!(names_and_versions(&first), names_and_versions(&sub.items().unwrap()));
    assert!(heard.borrow().count("listener") >= 1, "the listener heard the snapshot arrive");

    // Churn changes the collection: the listener hears it, and the next snapshot is new and current.
    let before = heard.borrow().count("listener");
    wait_for(20.0, "a change", || heard.borrow().count("listener") > before).await;
    let second = sub.get_snapshot();
    assert!(!js_sys::Object::is(&first, &second));
    assert_eq!(names_and_versions(&second), names_and_versions(&sub.items().unwrap()));
    // The list is converted once per version: a pod unchanged between the two snapshots is the
    // same object in both (and in `items()`), a changed one is a new object.
    let by_version = |list: &JsValue| -> Vec<((String, String), JsValue)> { names_and_versions(list).into_iter().zip(js_sys::Array::from(list).iter()).collect() };
    let (old, new, items) = (by_version(&first), by_version(&second), by_version(&sub.items().unwrap()));
    let (mut same, mut changed) = (0, 0);
    for (identity, object) in &new {
        match old.iter().find(|(name, _)| name.0 == identity.0) {
            Some((old_identity, old_object)) if old_identity.1 == identity.1 => {
                assert!(js_sys::Object::is(old_object, object), "unchanged {identity:?} is the same object");
                same += 1;
            }
            Some((_, old_object)) => {
                assert!(!js_sys::Object::is(old_object, object), "changed {identity:?} is a new object");
                changed += 1;
            }
            None => {}
        }
    }
    assert!(same > 0, "churn leaves most pods alone: {same} unchanged, {changed} changed");
    assert!(new.iter().zip(&items).all(|((_, a), (_, b))| js_sys::Object::is(a, b)), "items() hands out the snapshot's objects");

    // Unsubscribed, the listener hears nothing more while another watch of the same pods sees changes.
    unsubscribe.call0(&JsValue::UNDEFINED).unwrap();
    unsubscribe.call0(&JsValue::UNDEFINED).unwrap();
    let after = heard.borrow().count("listener");
    let (other, handlers) = recorder(&["onChange"], &[]);
    let _witness = mux.watch(pods_request(&info), handlers).unwrap();
    wait_for(20.0, "three more changes", || other.borrow().count("onChange") >= 3).await;
    assert_eq!(heard.borrow().count("listener"), after);

    // A closed subscription answers one empty array, always the same.
    sub.close();
    let empty = sub.get_snapshot();
    assert_eq!(js_sys::Array::from(&empty).length(), 0);
    assert!(js_sys::Object::is(&empty, &sub.get_snapshot()));
    mux.close();
}
