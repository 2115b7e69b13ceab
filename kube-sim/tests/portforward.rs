//! `portforward` to the demo pods' ports, which are echo servers: through kube's
//! `Api::portforward` and through a raw `v4.channel.k8s.io` WebSocket (the port-prefix frames
//! of `exec-portforward-protocol.md` §7.1).

mod common;

use futures::{SinkExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube_sim::Seed;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio_tungstenite::tungstenite::Message;

use common::within;

/// Writes `data` and reads back as many bytes.
async fn echo(stream: &mut DuplexStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).await.expect("write to the forwarded port");
    let mut back = vec![0; data.len()];
    within("the echo", stream.read_exact(&mut back)).await.expect("read from the forwarded port");
    back
}

#[tokio::test]
async fn kube_portforward_echoes_bytes() {
    let sim = common::start(Seed::Demo).await;
    let pods = Api::<Pod>::namespaced(common::kube_client(&sim).await, "default");
    let hello = common::pods_of(&sim, "default", "hello")[0].clone();

    let mut forwarder = within("port-forward to start", pods.portforward(&hello, &[8000])).await.expect("port-forward starts");
    let mut stream = forwarder.take_stream(8000).expect("a stream for port 8000");
    assert_eq!(echo(&mut stream, b"ping\n").await, b"ping\n");
    // Binary data and a larger payload, in one write.
    let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo(&mut stream, &payload).await, payload);
    drop(stream);
    within("the forwarder to finish", forwarder.join()).await.expect("a clean end");
    sim.shutdown().await;
}

#[tokio::test]
async fn kube_portforward_two_ports_at_once() {
    let sim = common::start(Seed::Demo).await;
    let pods = Api::<Pod>::namespaced(common::kube_client(&sim).await, "demo");
    let api_pod = common::pods_of(&sim, "demo", "api")[0].clone();

    let mut forwarder = within("port-forward to start", pods.portforward(&api_pod, &[8080, 9090])).await.expect("port-forward starts");
    let mut first = forwarder.take_stream(8080).expect("port 8080");
    let mut second = forwarder.take_stream(9090).expect("port 9090");
    assert_eq!(echo(&mut second, b"to 9090").await, b"to 9090");
    assert_eq!(echo(&mut first, b"to 8080").await, b"to 8080");
    drop((first, second));
    within("the forwarder to finish", forwarder.join()).await.expect("a clean end");
    sim.shutdown().await;
}

#[tokio::test]
async fn raw_v4_portforward_prefixes_each_channel_with_the_port() {
    let sim = common::start(Seed::Demo).await;
    let hello = common::pods_of(&sim, "default", "hello")[0].clone();
    let path = format!("/api/v1/namespaces/default/pods/{hello}/portforward?ports=8000");
    let mut ws = common::websocket(&sim, &path, "v4.channel.k8s.io").await.expect("the upgrade");

    // Port 8000 is 0x1F40: little-endian 40 1F, on the data channel (0) and the error channel (1).
    let mut first_two = Vec::new();
    while first_two.len() < 2 {
        match within("the port frames", ws.next()).await.expect("the session is open").expect("a clean WebSocket") {
            Message::Binary(data) => first_two.push(data.to_vec()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected binary port frames, got {other:?}"),
        }
    }
    first_two.sort();
    assert_eq!(first_two, [vec![0u8, 0x40, 0x1F], vec![1u8, 0x40, 0x1F]]);

    ws.send(Message::Binary(b"\x00hello over v4".to_vec().into())).await.expect("send data");
    let mut echoed = Vec::new();
    while echoed.len() < b"hello over v4".len() {
        match within("the echo", ws.next()).await.expect("the session is open").expect("a clean WebSocket") {
            Message::Binary(data) => {
                assert_eq!(data.first(), Some(&0), "data comes back on channel 0: {data:?}");
                echoed.extend_from_slice(&data[1..]);
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected binary data, got {other:?}"),
        }
    }
    assert_eq!(echoed, b"hello over v4");
    sim.shutdown().await;
}

/// 120 ports over `v4.base64.channel.k8s.io`: channels past 9 go out as `'0' + channel`,
/// wrapping past 255 as the API server's byte arithmetic does, and every one of the 240 initial
/// port frames decodes to its channel and port (this panicked in the encoder from channel 208).
#[tokio::test]
async fn base64_portforward_with_many_ports_names_every_channel() {
    use kubemux_protocol::channel::{self, ChannelProtocol, Decoded};
    const PORTS: u16 = 120;
    let sim = common::start(Seed::Demo).await;
    let hello = common::pods_of(&sim, "default", "hello")[0].clone();
    let ports: Vec<String> = (0..PORTS).map(|i| (8000 + i).to_string()).collect();
    let path = format!("/api/v1/namespaces/default/pods/{hello}/portforward?ports={}", ports.join(","));
    let mut ws = common::websocket(&sim, &path, "v4.base64.channel.k8s.io").await.expect("the upgrade");

    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < usize::from(PORTS) * 2 {
        let data = match within("the port frames", ws.next()).await.expect("the session is open").expect("a clean WebSocket") {
            Message::Text(text) => text.as_bytes().to_vec(),
            Message::Binary(data) => data.to_vec(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected port frames, got {other:?}"),
        };
        match channel::decode(ChannelProtocol::V4Base64, &data).expect("a valid base64 frame") {
            Decoded::Data { channel, payload } if payload.len() == 2 && !seen.contains_key(&channel) => {
                seen.insert(channel, u16::from_le_bytes([payload[0], payload[1]]));
            }
            // Error text on a port nothing listens on may follow its prefix.
            Decoded::Data { channel, .. } if channel % 2 == 1 && seen.contains_key(&channel) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    for (i, port) in (0..PORTS).map(|i| (i, 8000 + i)) {
        let data_channel = channel::portforward::data_channel(usize::from(i));
        let error_channel = channel::portforward::error_channel(usize::from(i));
        assert_eq!((seen.get(&data_channel), seen.get(&error_channel)), (Some(&port), Some(&port)), "port {port}");
    }
    sim.shutdown().await;
}
