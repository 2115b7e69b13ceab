//! `kubemux.v1+deflate` end to end (`docs/PROTOCOL.md` §1.1): kube-sim, the proxy, and raw
//! sockets reading the compressed stream the way a client does (`kubemux_testkit::ws::Inflater`).
//!
//! A client that offers it gets the same frames as one that does not, in the same order, in far
//! fewer bytes; an idle connection ends its stream and drops its compressor, and its next frames
//! start a new stream; a proxy with `deflate: false` selects plain `kubemux.v1`.

use std::time::Duration;

use kube_sim::resources::{CONFIGMAPS, NAMESPACES};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{ProxyProcess, kubeconfig};
use kubemux_protocol::frames::{SUBPROTOCOL, SUBPROTOCOL_DEFLATE};
use kubemux_proxy::ProxySettings;
use kubemux_proxy::mux::MuxSettings;
use kubemux_testkit::http::metric;
use kubemux_testkit::wait::poll;
use kubemux_testkit::ws::{DeflatedMux, mux_connect, mux_connect_offering_deflate, mux_next, mux_send, mux_until};
use serde_json::{Value, json};

const PATH: &str = "/api/v1/namespaces/squeeze/configmaps";

async fn sim_with_maps(count: usize) -> Sim {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap();
    let store = &sim.state().store;
    store.create(&NAMESPACES, "", json!({"metadata": {"name": "squeeze"}})).unwrap();
    for i in 0..count {
        store.create(&CONFIGMAPS, "squeeze", json!({"metadata": {"name": format!("map-{i:03}"), "labels": {"app": "shop"}}, "data": {"k": "v0", "padding": "x".repeat(1500)}})).unwrap();
    }
    sim
}

fn settings(mux: MuxSettings) -> ProxySettings {
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), mux, ..ProxySettings::default() }
}

fn watch() -> Value {
    json!({"op": "watch", "id": "maps", "cluster": "sim", "path": PATH})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_connection_gets_the_same_frames_as_a_plain_one_in_far_fewer_bytes() {
    let sim = sim_with_maps(50).await;
    let store = &sim.state().store;
    let proxy = ProxyProcess::start(settings(MuxSettings::default()), kubeconfig(&[("sim", &sim.url(), None)]));
    let mut plain = mux_connect(&proxy.mux_url()).await;
    let (ws, selected) = mux_connect_offering_deflate(&proxy.mux_url()).await;
    assert_eq!(selected, SUBPROTOCOL_DEFLATE);
    let mut deflated = DeflatedMux::new(ws);
    mux_send(&mut plain, watch()).await;
    // Client messages stay text frames on a compressed connection.
    mux_send(&mut deflated.ws, watch()).await;

    // The snapshots, then everything to the end of the writes, in order.
    let mut from_plain = mux_until(&mut plain, &["synced"]).await;
    let mut plain_bytes: usize = from_plain.iter().map(|frame| frame.to_string().len()).sum();
    let mut from_deflated = deflated.until(&["synced"]).await;
    let writes = 200;
    for i in 0..writes {
        let name = format!("map-{:03}", i % 50);
        store
            .modify(&CONFIGMAPS, "squeeze", &name, |map| {
                map["data"]["k"] = json!(format!("v{}", i + 1));
                Ok(())
            })
            .unwrap();
    }
    store.create(&CONFIGMAPS, "squeeze", json!({"metadata": {"name": "the-end"}})).unwrap();
    loop {
        let frame = mux_next(&mut plain).await;
        plain_bytes += frame.to_string().len();
        let end = frame["object"]["metadata"]["name"] == "the-end";
        from_plain.push(frame);
        if end {
            break;
        }
    }
    loop {
        let frame = deflated.next().await;
        let end = frame["object"]["metadata"]["name"] == "the-end";
        from_deflated.push(frame);
        if end {
            break;
        }
    }
    assert_eq!(from_plain.len(), 50 + 1 + writes + 1, "snapshot, synced, the writes and the create");
    assert_eq!(from_deflated, from_plain, "the same frames in the same order");
    let sent = deflated.inflater.bytes;
    assert!(sent * 5 < plain_bytes, "compressed: {sent} bytes against {plain_bytes} in {} messages", deflated.inflater.messages);
    assert_eq!(deflated.inflater.new_streams, 1, "one stream for the whole run");

    // `stats` tells the frames' bytes and what went on the wire apart.
    mux_send(&mut deflated.ws, json!({"op": "stats", "data": 1})).await;
    let stats = deflated.next().await;
    assert_eq!(stats["op"], "stats", "{stats}");
    let connection = &stats["connection"];
    let (frames, wire) = (connection["bytesOut"].as_u64().unwrap(), connection["wireBytesOut"].as_u64().unwrap());
    assert!(wire <= sent as u64 && wire * 5 < frames, "{stats}");

    // A malformed message gets its error on the compressed stream, and the connection lives on.
    mux_send(&mut deflated.ws, json!({"op": "watch", "id": "bad"})).await;
    let error = deflated.next().await;
    assert_eq!((error["op"].as_str(), error["id"].as_str()), (Some("error"), Some("bad")), "{error}");
    mux_send(&mut deflated.ws, json!({"op": "ping", "data": "still here"})).await;
    assert_eq!(deflated.next().await, json!({"op": "pong", "data": "still here"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_compressed_connection_drops_its_compressor_and_starts_a_new_stream() {
    let sim = sim_with_maps(3).await;
    let store = &sim.state().store;
    let mux = MuxSettings { deflate_idle_release: Duration::from_millis(300), ..MuxSettings::default() };
    let proxy = ProxyProcess::start(settings(mux), kubeconfig(&[("sim", &sim.url(), None)]));
    let metrics = format!("{}/metrics", proxy.http_url());
    let (ws, _) = mux_connect_offering_deflate(&proxy.mux_url()).await;
    let mut deflated = DeflatedMux::new(ws);
    mux_send(&mut deflated.ws, watch()).await;
    assert_eq!(deflated.until(&["synced"]).await.len(), 4);
    // Nothing to send for the idle time: the stream ends and the compressor is given back.
    poll("the idle connection to drop its compressor", Duration::from_secs(10), || async {
        let text = kubemux_testkit::http::get(&metrics).await.body;
        if metric(&text, "kubemux_deflate_streams ") == 0.0 { Ok(()) } else { Err(text) }
    })
    .await;
    store.create(&CONFIGMAPS, "squeeze", json!({"metadata": {"name": "after-idle"}, "data": {"k": "v"}})).unwrap();
    let event = deflated.next().await;
    assert_eq!((event["type"].as_str(), event["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("after-idle")), "{event}");
    assert_eq!(deflated.inflater.new_streams, 2, "the event came on a new stream, after the old one's end");
    let text = kubemux_testkit::http::get(&metrics).await.body;
    assert_eq!(metric(&text, "kubemux_deflate_streams "), 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_deflate_off_selects_plain_frames() {
    let sim = sim_with_maps(2).await;
    let mux = MuxSettings { deflate: false, ..MuxSettings::default() };
    let proxy = ProxyProcess::start(settings(mux), kubeconfig(&[("sim", &sim.url(), None)]));
    let (mut ws, selected) = mux_connect_offering_deflate(&proxy.mux_url()).await;
    assert_eq!(selected, SUBPROTOCOL);
    mux_send(&mut ws, watch()).await;
    let first = mux_next(&mut ws).await;
    assert_eq!(first["op"], "event", "text frames, as without the offer: {first}");
}
