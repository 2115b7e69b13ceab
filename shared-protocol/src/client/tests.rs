//! The client core against a model server that follows `docs/PROTOCOL.md`: unit tests of each
//! rule, and a property test that random schedules of changes, disconnects, resumes on another
//! replica (with or without an inventory), 410s and slow-consumer resets always end with the
//! client's cache equal to the server's state, and that every `synced` on the way was true at
//! its version; with and without the default projection and deltas (patches applied, hidden
//! changes, patches against a base the client does not hold and the `resync` that heals them).

use proptest::prelude::*;

use super::model::Harness;
use super::*;

#[derive(Debug, Clone)]
enum Step {
    Change {
        key: u8,
        delete: bool,
        /// Only what the projection drops changes (and the version).
        managed_only: bool,
    },
    /// The server's next patch of this object names a base the client does not hold.
    ForgetBase(u8),
    Deliver(usize),
    Disconnect,
    /// The client's next connection reaches another replica, whose history starts now; it
    /// answers an older resume point with an inventory (if `inventory` and the client asks) or
    /// a `reset`.
    ProxyRestart {
        inventory: bool,
    },
    Expired,
    SlowConsumerReset,
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..12, any::<bool>(), any::<bool>()).prop_map(|(key, delete, managed_only)| Step::Change { key, delete, managed_only }),
        1 => (0u8..12).prop_map(Step::ForgetBase),
        4 => (1usize..6).prop_map(Step::Deliver),
        1 => Just(Step::Disconnect),
        2 => any::<bool>().prop_map(|inventory| Step::ProxyRestart { inventory }),
        1 => Just(Step::Expired),
        1 => Just(Step::SlowConsumerReset),
        1 => (0u64..40_000).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Invariant 2 of DESIGN.md: whatever happens, once synced the client's cache equals the
    /// server's state.
    #[test]
    fn cache_converges_to_server_state(seed in any::<u64>(), inventory_resume in any::<bool>(), headers in any::<bool>(), projection in any::<bool>(), deltas in any::<bool>(), steps in proptest::collection::vec(step(), 1..80)) {
        let mut h = Harness::with_config(ClientConfig { seed, inventory_resume, ..ClientConfig::default() });
        // Either way of handing events over: the same protocol logic.
        h.headers = headers;
        let options = WatchOptions { projection: projection.then_some(ProjectionMode::Default), deltas };
        let out = h.core.watch_with("pods", "c", "/api/v1/pods", None, options).unwrap();
        h.perform(out);
        for step in steps {
            match step {
                Step::Change { key, delete, managed_only } => h.server.change(key, delete, managed_only),
                Step::ForgetBase(key) => h.server.forget_base("pods", key),
                Step::Deliver(n) => h.deliver(n),
                Step::Disconnect => h.drop_connection(),
                Step::ProxyRestart { inventory } => {
                    // Another replica: no history, so older resume points get an inventory
                    // or a reset.
                    h.server.restart(inventory);
                    h.drop_connection();
                }
                Step::Expired | Step::SlowConsumerReset => {
                    if h.server.connected && h.server.active.contains(&"pods".to_owned()) {
                        if matches!(step, Step::SlowConsumerReset) {
                            h.server.in_flight.clear();
                        }
                        h.server.send(ServerMessage::Reset { id: "pods".into() });
                        h.server.snapshot("pods");
                    }
                }
                Step::Advance(ms) => {
                    h.now += ms;
                    let out = h.core.on_tick(h.now);
                    h.perform(out);
                }
            }
        }
        h.settle();
        prop_assert_eq!(h.core.subscription_state("pods"), Some(SubscriptionState::Synced));
        prop_assert_eq!(h.client_view("pods"), h.server_view("pods", h.server.rv));
    }
}

/// A change to an object the client holds comes as a patch and is applied; a patch against a
/// version it does not hold is not, and the client asks once for a `resync`, moving its resume
/// point no further until the `reset` that answers it, after which it holds the server's state.
#[test]
fn patches_apply_to_their_base_and_a_wrong_base_is_resynced_once() {
    let mut h = Harness::new(7);
    let out = h.core.watch_with("pods", "c", "/api/v1/pods", None, WatchOptions { projection: None, deltas: true }).unwrap();
    h.perform(out);
    h.server.change(1, false, false);
    h.server.change(2, false, false);
    h.settle();
    h.server.change(1, false, false);
    let frame = h.server.in_flight.back().cloned().unwrap();
    assert!(frame.starts_with(r#"{"op":"patch","id":"pods","base":"101""#), "{frame}");
    h.settle();
    assert_eq!(h.client_objects("pods"), h.server.objects, "the patch applied");
    assert_eq!(h.core.resume_point("pods"), Some("103"), "a patch moves the resume point");
    // A patch against a version the client does not hold, then one it could apply.
    h.server.forget_base("pods", 2);
    h.server.change(2, false, false);
    h.server.change(1, false, false);
    h.server.connected = false; // hold the answer back to look at what the client sends
    let mut sent = Vec::new();
    while let Some(frame) = h.server.in_flight.pop_front() {
        for output in h.core.on_message(h.now, &frame) {
            if let Output::Send(text) = output {
                sent.push(text);
            }
        }
    }
    assert_eq!(sent, [r#"{"op":"resync","id":"pods"}"#], "one resync, and the next patch is dropped");
    assert_eq!(h.core.resume_point("pods"), None, "nothing moved the resume point past the gap");
    h.server.connected = true;
    h.server.handle_client(&sent[0]);
    h.settle();
    assert_eq!(h.client_objects("pods"), h.server.objects, "the reset's snapshot healed the cache");
    assert_eq!(h.core.resume_point("pods"), Some("105"));
}

/// With the projection and deltas, a change only to what the projection drops comes as a patch
/// of the version alone; a later real change as a patch against that version, and the client's
/// copy is the server's, projected, at its version.
#[test]
fn a_projected_patch_follows_a_hidden_change() {
    let mut h = Harness::new(8);
    let out = h.core.watch_with("pods", "c", "/api/v1/pods", None, WatchOptions { projection: Some(ProjectionMode::Default), deltas: true }).unwrap();
    h.perform(out);
    h.server.change(1, false, false);
    h.settle();
    h.server.change(1, false, true);
    let touch = h.server.in_flight.back().cloned().unwrap();
    assert!(touch.contains(r#""patch":{"metadata":{"resourceVersion":"102"}}"#), "a managedFields-only change is its version alone: {touch}");
    h.server.change(1, false, false);
    let frame = h.server.in_flight.back().cloned().unwrap();
    assert!(frame.contains(r#""base":"102""#) && !frame.contains("managedFields"), "{frame}");
    h.settle();
    let held = &h.client_objects("pods")["obj-1"];
    assert_eq!(held["metadata"]["resourceVersion"], "103");
    assert_eq!(held["data"], 103);
    assert_eq!(held["metadata"].get("managedFields"), None);
}

#[test]
fn fresh_watch_snapshot_then_live_events() {
    let mut h = Harness::new(1);
    h.server.change(1, false, false);
    h.server.change(2, false, false);
    let out = h.core.watch("pods", "c", "/api/v1/pods", None).unwrap();
    h.perform(out);
    h.deliver(usize::MAX);
    assert_eq!(h.core.subscription_state("pods"), Some(SubscriptionState::Synced));
    assert_eq!(h.core.resume_point("pods"), Some("102"));
    h.server.change(1, true, false);
    h.deliver(usize::MAX);
    assert_eq!(h.client_objects("pods").keys().collect::<Vec<_>>(), vec!["obj-2"]);
    assert_eq!(h.core.resume_point("pods"), Some("103"));
}

#[test]
fn reset_builds_aside_and_swaps_at_synced() {
    let mut h = Harness::new(1);
    h.server.change(1, false, false);
    let out = h.core.watch("pods", "c", "/api/v1/pods", None).unwrap();
    h.perform(out);
    h.deliver(usize::MAX);
    h.server.objects.clear();
    h.server.change(2, false, false);
    h.server.in_flight.clear();
    h.server.send(ServerMessage::Reset { id: "pods".into() });
    h.server.snapshot("pods");
    // Reset and the snapshot's ADDED: the old view stays visible, nothing flickers empty.
    h.deliver(2);
    assert_eq!(h.client_objects("pods").keys().collect::<Vec<_>>(), vec!["obj-1"]);
    assert_eq!(h.core.subscription_state("pods"), Some(SubscriptionState::Syncing));
    h.deliver(1);
    assert_eq!(h.client_objects("pods").keys().collect::<Vec<_>>(), vec!["obj-2"]);
}

#[test]
fn reconnect_resends_watches_with_resume_points_after_backoff() {
    let mut h = Harness::new(5);
    h.core.auth("c", "tok").unwrap();
    let out = h.core.watch("pods", "c", "/api/v1/pods", None).unwrap();
    h.perform(out);
    h.deliver(usize::MAX);
    h.server.change(3, false, false);
    h.deliver(usize::MAX);
    h.server.connected = false;
    let out = h.core.on_close(10, Some(1006));
    let Some(Output::State(ConnectionState::Reconnecting { delay_ms })) = out.first().cloned() else { panic!("{out:?}") };
    assert!(delay_ms <= 500);
    assert_eq!(h.core.subscription_state("pods"), Some(SubscriptionState::Stale));
    assert_eq!(h.core.on_tick(10 + delay_ms).last(), Some(&Output::Connect));
    let sent: Vec<String> = h.core.on_open(20 + delay_ms).into_iter().filter_map(|o| if let Output::Send(s) = o { Some(s) } else { None }).collect();
    assert_eq!(
        sent,
        vec![r#"{"op":"auth","cluster":"c","token":"tok"}"#.to_owned(), r#"{"op":"watch","id":"pods","cluster":"c","path":"/api/v1/pods","resourceVersion":"101","resume":"inventory"}"#.to_owned(),]
    );
}

/// The frames a fresh `on_open` sends.
fn sent_on_open(h: &mut Harness) -> Vec<String> {
    h.server.connected = false;
    h.core.on_close(h.now, Some(1001));
    h.now += 1_000;
    h.core.on_tick(h.now);
    h.core.on_open(h.now).into_iter().filter_map(|o| if let Output::Send(s) = o { Some(s) } else { None }).collect()
}

#[test]
fn the_inventory_opt_in_is_sent_with_a_resume_point_only_and_only_when_configured() {
    for inventory_resume in [true, false] {
        let mut h = Harness::with_config(ClientConfig { seed: 2, inventory_resume, ..ClientConfig::default() });
        let out = h.core.watch("pods", "c", "/api/v1/pods", None).unwrap();
        assert!(matches!(&out[..], [_, Output::Send(watch)] if !watch.contains("resume")), "a first watch has nothing to resume: {out:?}");
        h.perform(out);
        h.deliver(usize::MAX);
        let expected = if inventory_resume { r#","resume":"inventory"}"# } else { r#""resourceVersion":"100"}"# };
        assert!(sent_on_open(&mut h)[0].ends_with(expected), "inventory_resume {inventory_resume}");
    }
}

/// A resume answered from another replica's store: the changed objects (in key order, as
/// `MODIFIED`), the inventory and `synced`. An object the client never had reaches the
/// application as `ADDED`, each dropped one as `DELETED` in its last state, and only the
/// `synced` moves the resume point.
#[test]
fn an_inventory_resume_adds_updates_and_drops_and_only_synced_is_a_resume_point() {
    let mut h = Harness::new(3);
    for key in [1, 2, 3, 4] {
        h.server.change(key, false, false);
    }
    let out = h.core.watch("pods", "c", "/api/v1/pods", None).unwrap();
    h.perform(out);
    h.deliver(usize::MAX);
    assert_eq!(h.core.resume_point("pods"), Some("104"));
    // Away: obj-4 changes first, then obj-1; obj-2 goes; obj-5 is new. The replica that the
    // client comes back to started after all of it.
    h.server.connected = false;
    h.core.on_close(h.now, None);
    h.server.change(4, false, false);
    h.server.change(1, false, false);
    h.server.change(2, true, false);
    h.server.change(5, false, false);
    h.server.restart(true);
    h.now += 1_000;
    let out = h.core.on_tick(h.now);
    h.perform(out);
    let mut seen = Vec::new();
    while let Some(frame) = h.server.in_flight.pop_front() {
        let out = h.core.on_message(h.now, &frame);
        for output in &out {
            if let Output::Event { event_type, object, .. } = output {
                seen.push((*event_type, object["metadata"]["name"].as_str().unwrap().to_owned()));
            }
        }
        if !matches!(ServerMessage::decode(&frame), Ok(ServerMessage::Synced { .. })) {
            assert_eq!(h.core.resume_point("pods"), Some("104"), "not moved by {frame}");
        }
    }
    let named = |t, n: &str| (t, n.to_owned());
    assert_eq!(seen, vec![named(EventType::Modified, "obj-1"), named(EventType::Modified, "obj-4"), named(EventType::Added, "obj-5"), named(EventType::Deleted, "obj-2")]);
    assert_eq!(h.core.resume_point("pods"), Some("108"));
    assert_eq!(h.core.subscription_state("pods"), Some(SubscriptionState::Synced));
    assert_eq!(h.client_objects("pods"), h.server.objects);
}

/// Cut off in the middle of an inventory resume (after obj-1's change, which comes first in key
/// order, but before obj-4's older one), the client resumes from the version it had, not from
/// obj-1's: a replica that has the history from there replays both.
#[test]
fn a_connection_lost_during_an_inventory_resume_resumes_from_the_version_held() {
    let mut h = Harness::new(4);
    for key in [1, 4] {
        h.server.change(key, false, false);
    }
    let out = h.core.watch("pods", "c", "/api/v1/pods", None).unwrap();
    h.perform(out);
    h.deliver(usize::MAX);
    h.drop_connection();
    h.server.change(4, false, false);
    h.server.change(1, false, false);
    let (history, floor) = (h.server.history.clone(), h.server.floor);
    h.server.restart(true);
    h.now += 1_000;
    let out = h.core.on_tick(h.now);
    h.perform(out);
    h.deliver(1);
    assert_eq!(h.client_objects("pods")["obj-1"]["metadata"]["resourceVersion"], "104", "obj-1's change arrived");
    assert_eq!(h.core.resume_point("pods"), Some("102"));
    h.drop_connection();
    // Back on the replica that kept its history.
    (h.server.history, h.server.floor) = (history, floor);
    h.settle();
    assert_eq!(h.client_objects("pods"), h.server.objects);
}
/// The reconnect delay `on_close` scheduled.
fn reconnect_delay(out: &[Output]) -> u64 {
    match out.first() {
        Some(Output::State(ConnectionState::Reconnecting { delay_ms })) => *delay_ms,
        other => panic!("no reconnect scheduled: {other:?}"),
    }
}

#[test]
fn a_connection_that_resyncs_every_subscription_resets_the_backoff_and_failing_ones_escalate() {
    let mut h = Harness::new(11);
    let out = h.core.watch("pods", "c", "/api/v1/pods", None).unwrap();
    h.perform(out);
    h.deliver(usize::MAX);
    assert_eq!(h.core.subscription_state("pods"), Some(SubscriptionState::Synced));
    // Ten drops in a row (a proxy replica restarting under the client), each followed by a
    // connection that resyncs: every delay stays within the first ceiling (0.5 s), where a
    // backoff that counted them as failures would be at 30 s by now.
    for round in 0..10 {
        h.now += 1_000;
        h.server.connected = false;
        h.server.active.clear();
        h.server.in_flight.clear();
        let out = h.core.on_close(h.now, Some(1006));
        let delay = reconnect_delay(&out);
        assert!(delay <= 500, "round {round}: {delay} ms after a successful connection");
        h.now += delay;
        let out = h.core.on_tick(h.now);
        h.perform(out);
        h.deliver(usize::MAX);
        assert_eq!(h.core.subscription_state("pods"), Some(SubscriptionState::Synced), "round {round}");
    }
    // Connections that open and drop before resyncing are failures: the ceiling grows.
    let mut ceiling_passed = false;
    for _ in 0..8 {
        h.now += 10;
        h.server.connected = false;
        let out = h.core.on_close(h.now, Some(1011));
        let delay = reconnect_delay(&out);
        ceiling_passed |= delay > 500;
        h.now += delay;
        let out = h.core.on_tick(h.now);
        assert_eq!(out.last(), Some(&Output::Connect));
        h.core.on_open(h.now);
    }
    assert!(ceiling_passed, "eight failed connections in a row escalated past the first ceiling");
}

#[test]
fn pings_and_dead_connection_detection() {
    let mut h = Harness::new(1);
    assert_eq!(h.core.next_deadline(), Some(30_000));
    let out = h.core.on_tick(30_000);
    assert!(matches!(&out[..], [Output::Send(s)] if s.contains("\"op\":\"ping\"")));
    // Nothing heard for 75 s: the socket is closed and a reconnect scheduled.
    let out = h.core.on_tick(75_000);
    assert_eq!(out.first(), Some(&Output::CloseSocket));
    assert!(matches!(out.get(1), Some(Output::State(ConnectionState::Reconnecting { .. }))));
}

#[test]
fn errors_are_routed_to_their_subscription() {
    let mut h = Harness::new(1);
    for id in ["a", "b"] {
        let out = h.core.watch(id, "c", "/api/v1/pods", None).unwrap();
        h.perform(out);
    }
    h.deliver(usize::MAX);
    let status = Status::failure(403, "Forbidden", "nope");
    let out = h.core.on_message(1, &ServerMessage::Error { id: Some("a".into()), fatal: true, status: status.clone() }.encode());
    assert!(out.contains(&Output::Error { id: Some("a".into()), fatal: true, status }));
    assert_eq!(h.core.subscription_state("a"), None);
    assert_eq!(h.core.subscription_state("b"), Some(SubscriptionState::Synced));
    // A malformed frame is reported with no id, and the connection lives on.
    let out = h.core.on_message(2, "{not json");
    assert!(matches!(&out[..], [Output::Error { id: None, fatal: false, .. }]));
    assert!(h.core.watch("a", "c", "/api/v1/pods", None).is_ok(), "a fatal error frees the id");
}

/// `stats` is a request and its answer: the answer to this connection's request comes back
/// with its number; one the connection never answers is reported lost when it ends, and a
/// `stats` frame nobody asked for is nobody's.
#[test]
fn stats_requests_are_answered_or_reported_lost() {
    let mut h = Harness::new(1);
    let out = h.core.watch("pods", "c", "/api/v1/pods", None).unwrap();
    h.perform(out);
    h.deliver(usize::MAX);
    let (first, out) = h.core.stats().unwrap();
    assert!(matches!(&out[..], [Output::Send(text)] if text == &format!(r#"{{"op":"stats","data":{first}}}"#)), "{out:?}");
    h.perform(out);
    let answer = h.server.in_flight.pop_front().expect("the model answers");
    let out = h.core.on_message(1, &answer);
    assert_eq!(out, vec![Output::Stats { request: first, report: Some(serde_json::json!({"connection": {}, "subscriptions": {"pods": {}}})) }]);
    assert_eq!(h.core.on_message(2, &answer), vec![], "answered once");
    let (second, _) = h.core.stats().unwrap();
    assert_ne!(second, first);
    let out = h.core.on_close(3, None);
    assert_eq!(out.first(), Some(&Output::Stats { request: second, report: None }), "{out:?}");
    assert_eq!(h.core.stats(), Err(ClientError::NotConnected));
    h.core.close();
    assert_eq!(h.core.stats(), Err(ClientError::Closed));
}

#[test]
fn refuses_calls_after_close_and_bad_watches() {
    let mut core = ClientCore::new(ClientConfig::default());
    assert!(matches!(core.watch("x", "c", "/api/v1/pods/../x", None), Err(ClientError::InvalidWatch(_))));
    core.watch("x", "c", "/api/v1/pods", None).unwrap();
    assert_eq!(core.watch("x", "c", "/api/v1/pods", None), Err(ClientError::DuplicateId("x".into())));
    core.close();
    assert_eq!(core.watch("y", "c", "/api/v1/pods", None), Err(ClientError::Closed));
    assert_eq!(core.unwatch("x"), Err(ClientError::Closed));
}

/// The browser's way in (the header read outside the core, the object opaque to it) gives the
/// application exactly what the text path gives: the same outputs in the same order and the
/// same objects, for every kind of frame. The payload here is the object's JSON text, a stand-in
/// for the browser's `JsValue` that the core cannot look into.
#[test]
fn the_header_path_delivers_what_the_text_path_does() {
    let pod = |name: &str, rv: u32| serde_json::json!({"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv.to_string()}, "spec": {"n": rv}});
    let event = |event_type: EventType, object: Value| ServerMessage::Event { id: "pods".into(), event_type, object }.encode();
    let frames = vec![
        event(EventType::Added, pod("b", 1)),
        event(EventType::Added, pod("a", 2)),
        event(EventType::Added, serde_json::json!({"metadata": {"generateName": "x-"}})),
        ServerMessage::Synced { id: "pods".into(), resource_version: "2".into() }.encode(),
        event(EventType::Modified, pod("a", 3)),
        event(EventType::Deleted, pod("b", 4)),
        ServerMessage::Event { id: "other".into(), event_type: EventType::Added, object: pod("z", 5) }.encode(),
        ServerMessage::Reset { id: "pods".into() }.encode(),
        event(EventType::Added, pod("c", 6)),
        ServerMessage::Synced { id: "pods".into(), resource_version: "6".into() }.encode(),
        ServerMessage::Inventory { id: "pods".into(), keys: BTreeMap::from([("ns".to_owned(), vec![])]) }.encode(),
        r#"{"op":"event","id":"pods","type":"GONE","object":{}}"#.to_owned(),
        r#"{"op":"patch","id":"pods","base":"6","namespace":"ns","name":"c","resourceVersion":"7","patch":{"metadata":{"resourceVersion":"7"},"x":1}}"#.to_owned(),
        r#"{"op":"patch","id":"pods","base":"6","namespace":"ns","name":"c","resourceVersion":"8","patch":{"metadata":{"resourceVersion":"8"}}}"#.to_owned(),
    ];
    let mut text: ClientCore = ClientCore::new(ClientConfig::default());
    let mut headers: ClientCore<String> = ClientCore::with_payload(ClientConfig::default(), patch_text);
    text.start(0);
    text.watch("pods", "c", "/api/v1/pods", None).unwrap();
    text.on_open(0);
    headers.start(0);
    headers.watch("pods", "c", "/api/v1/pods", None).unwrap();
    headers.on_open(0);
    for frame in &frames {
        let expected: Vec<Output<String>> = text.on_message(1, frame).into_iter().map(as_text).collect();
        let got = match ServerMessage::decode(frame) {
            Ok(ServerMessage::Event { id, event_type, object }) => {
                let meta = &object["metadata"];
                let key = meta["name"].as_str().map(|name| (meta["namespace"].as_str().unwrap_or_default(), name));
                let frame = EventFrame { id: &id, event_type, key, resource_version: meta["resourceVersion"].as_str(), object: object.to_string() };
                headers.on_event(1, frame)
            }
            _ => headers.on_message_with(1, frame, |object| object.to_string()),
        };
        assert_eq!(got, expected, "after {frame}");
        let (text_items, header_items): (Vec<String>, Vec<String>) = (text.items("pods").unwrap().map(Value::to_string).collect(), headers.items("pods").unwrap().cloned().collect());
        assert_eq!(header_items, text_items, "the caches after {frame}");
    }
}

/// A core holding JSON text patches it by parsing it: what the header path of the test above
/// compares with the text path.
fn patch_text(held: &String, base: &str, patch: &String) -> Option<String> {
    let held: Value = serde_json::from_str(held).ok()?;
    Some(patch_value(&held, base, &serde_json::from_str(patch).ok()?)?.to_string())
}

fn as_text(output: Output) -> Output<String> {
    match output {
        Output::Event { id, event_type, object } => Output::Event { id, event_type, object: object.to_string() },
        Output::Connect => Output::Connect,
        Output::Send(text) => Output::Send(text),
        Output::CloseSocket => Output::CloseSocket,
        Output::State(state) => Output::State(state),
        Output::Synced { id, resource_version } => Output::Synced { id, resource_version },
        Output::Reset { id } => Output::Reset { id },
        Output::Error { id, fatal, status } => Output::Error { id, fatal, status },
        Output::Changed { id } => Output::Changed { id },
        Output::SubscriptionState { id, state } => Output::SubscriptionState { id, state },
        Output::Stats { request, report } => Output::Stats { request, report },
    }
}
