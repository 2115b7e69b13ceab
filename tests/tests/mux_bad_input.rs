//! Malformed `watch` frames carrying an id: each is a fatal `BadRequest` for that id alone
//! (PROTOCOL.md §2), and the connection and its other subscriptions live on (DESIGN.md
//! invariant 1).

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, kubeconfig, sim_client};
use kubemux_protocol::frames::SUBPROTOCOL;
use kubemux_proxy::ProxySettings;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

fn settings() -> ProxySettings {
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }
}

/// A client message over the limit (64 KiB) closes the connection with 1009, whether it comes
/// as one big frame or as small fragments that add up (PROTOCOL.md §1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_closes_with_1009_in_one_frame_or_in_fragments() {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap();
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let big = format!(r#"{{"op":"ping","data":"{}"}}"#, "x".repeat(65 * 1024));
    let one_frame = vec![Message::Text(big.clone().into())];
    let chunks: Vec<&[u8]> = big.as_bytes().chunks(4096).collect();
    let fragments = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let opcode = if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
            Message::Frame(Frame::message(chunk.to_vec(), opcode, i + 1 == chunks.len()))
        })
        .collect();
    for (how, messages) in [("one frame", one_frame), ("fragments", fragments)] {
        let mut request = proxy.mux_url().into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        for message in messages {
            socket.send(message).await.unwrap();
        }
        let close = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(message) = socket.next().await {
                if let Ok(Message::Close(frame)) = message {
                    return frame.map(|f| u16::from(f.code));
                }
            }
            None
        })
        .await
        .unwrap_or_else(|_| panic!("{how}: no close within 10 s"));
        assert_eq!(close, Some(1009), "{how}");
    }
    sim.shutdown().await;
}

/// `query` that is not an object (`[]`, `["app=web"]`, a string) is refused for its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_is_not_an_object_is_a_fatal_bad_request_for_its_id() {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap();
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(11));
    client.watch("good", "sim", CONFIGMAPS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the good subscription synced", |v| v.synced.contains_key("good")).await.unwrap();

    let bad = [("empty", "[]"), ("selector-list", r#"["app=web"]"#), ("string", r#""app=web""#)];
    for (id, query) in bad {
        client.send_raw(&format!(r#"{{"op":"watch","id":"{id}","cluster":"sim","path":"{CONFIGMAPS}","query":{query}}}"#));
    }
    let view = client.wait_for(Duration::from_secs(10), "an error for every bad watch", |v| bad.iter().all(|(id, _)| !v.errors_of(id).is_empty())).await.unwrap();
    for (id, query) in bad {
        let (_, fatal, status) = view.errors.iter().find(|(i, _, _)| i.as_deref() == Some(id)).unwrap();
        assert_eq!((status.code, status.reason.as_str(), *fatal), (400, "BadRequest", true), "query {query}: {status:?}");
        assert!(!view.synced.contains_key(id), "query {query} was not served");
    }
    assert_eq!(view.opens(), 1, "the connection stayed open");

    // The good subscription still receives.
    let data = json!({"metadata": {"name": "after-the-bad-input"}});
    api.request::<serde_json::Value>(http::Request::post(CONFIGMAPS).header("content-type", "application/json").body(data.to_string().into_bytes()).unwrap()).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the new object on the good subscription", |v| v.caches.get("good").is_some_and(|c| c.len() == 1)).await.unwrap();
    sim.shutdown().await;
}
