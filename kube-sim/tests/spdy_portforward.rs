//! `portforward` over SPDY/3.1 with a Rust test client speaking kube-sim's own codec, over both
//! transports kubectl uses: `POST` + `Upgrade: SPDY/3.1` on a raw socket, and the
//! `SPDY/3.1+portforward.k8s.io` WebSocket tunnel. Also the `/_sim/portforward` fault hooks.
//! (kubectl itself is driven in `kubectl.rs`.)

mod common;

use axum::http::Method;
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use kube_sim::spdy::{Decoder, Encoder, Frame, Headers, goaway, rst};
use kube_sim::{Seed, Sim};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::{Http, Ws, within};

/// The demo seed's `hello` pod listens (echoes) on 8000.
const PORT: u16 = 8000;

enum Io {
    Tcp(TcpStream),
    Ws(Box<Ws>),
}

/// A SPDY client: what kubectl's spdystream does, on one connection.
struct Client {
    io: Io,
    decoder: Decoder,
    encoder: Encoder,
    next_stream: u32,
}

impl Client {
    /// `POST …/portforward` with `Upgrade: SPDY/3.1`, as kubectl's fallback sends it.
    async fn upgrade(sim: &Sim, pod: &str) -> Client {
        let mut tcp = TcpStream::connect(sim.addr()).await.expect("connect to the simulator");
        let request = format!(
            "POST /api/v1/namespaces/default/pods/{pod}/portforward HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\
             Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n",
            sim.addr()
        );
        tcp.write_all(request.as_bytes()).await.expect("send the upgrade");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = within("the upgrade response", tcp.read(&mut byte)).await.expect("read the response");
            assert_eq!(n, 1, "the connection ended inside the response head: {}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).expect("an ASCII head").to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: spdy/3.1\r\n"), "{head}");
        assert!(head.contains("x-stream-protocol-version: portforward.k8s.io\r\n"), "{head}");
        Client { io: Io::Tcp(tcp), decoder: Decoder::new(), encoder: Encoder::new(), next_stream: 1 }
    }

    /// The WebSocket tunnel kubectl tries first.
    async fn tunnel(sim: &Sim, pod: &str) -> Client {
        let path = format!("/api/v1/namespaces/default/pods/{pod}/portforward");
        let ws = common::websocket(sim, &path, "SPDY/3.1+portforward.k8s.io").await.expect("the tunnel upgrade");
        Client { io: Io::Ws(Box::new(ws)), decoder: Decoder::new(), encoder: Encoder::new(), next_stream: 1 }
    }

    async fn send(&mut self, frame: &Frame) {
        let bytes = self.encoder.encode_to_bytes(frame).expect("an encodable frame");
        match &mut self.io {
            Io::Tcp(tcp) => tcp.write_all(&bytes).await.expect("write a frame"),
            Io::Ws(ws) => ws.send(Message::Binary(bytes)).await.expect("send a frame"),
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.io {
            Io::Tcp(tcp) => tcp.write_all(bytes).await.expect("write bytes"),
            Io::Ws(ws) => ws.send(Message::Binary(Bytes::copy_from_slice(bytes))).await.expect("send bytes"),
        }
    }

    /// The next frame, `None` once the server has closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        within("a SPDY frame", async {
            loop {
                if let Some(frame) = self.decoder.next_frame().expect("the server sends valid SPDY") {
                    return Some(frame);
                }
                let bytes = match &mut self.io {
                    Io::Tcp(tcp) => {
                        let mut buf = vec![0u8; 64 * 1024];
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return None,
                            Ok(n) => buf[..n].to_vec(),
                        }
                    }
                    Io::Ws(ws) => match ws.next().await {
                        Some(Ok(Message::Binary(b))) => b.to_vec(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                        Some(Ok(other)) => panic!("the tunnel carries binary messages only, got {other:?}"),
                    },
                };
                self.decoder.extend(&bytes);
            }
        })
        .await
    }

    async fn expect(&mut self, wanted: &Frame) {
        assert_eq!(self.next().await.as_ref(), Some(wanted));
    }

    async fn syn_stream(&mut self, headers: Headers) -> u32 {
        let stream_id = self.next_stream;
        self.next_stream += 2;
        self.send(&Frame::SynStream { stream_id, associated_to: 0, priority: 0, slot: 0, fin: false, unidirectional: false, headers }).await;
        stream_id
    }

    /// kubectl's order per local connection: the error stream (half-closed at once), then the
    /// data stream. Returns (error, data) once both are answered.
    async fn open_pair(&mut self, port: u16, request: &str) -> (u32, u32) {
        let port = port.to_string();
        let error = self.syn_stream(Headers::from_pairs([("streamtype", "error"), ("port", &port), ("requestid", request)])).await;
        self.expect(&reply(error)).await;
        self.send(&fin(error)).await;
        let data = self.syn_stream(Headers::from_pairs([("streamtype", "data"), ("port", &port), ("requestid", request)])).await;
        self.expect(&reply(data)).await;
        (error, data)
    }

    /// Sends `payload` on `stream` and reads as many bytes back from it.
    async fn echo(&mut self, stream: u32, payload: &[u8]) -> Vec<u8> {
        self.send(&Frame::Data { stream_id: stream, fin: false, data: Bytes::copy_from_slice(payload) }).await;
        let mut back = Vec::new();
        while back.len() < payload.len() {
            match self.next().await {
                Some(Frame::Data { stream_id, fin: false, data }) if stream_id == stream => back.extend_from_slice(&data),
                other => panic!("expected data on stream {stream}, got {other:?}"),
            }
        }
        back
    }
}

fn reply(stream_id: u32) -> Frame {
    Frame::SynReply { stream_id, fin: false, headers: Headers::default() }
}

fn fin(stream_id: u32) -> Frame {
    Frame::Data { stream_id, fin: true, data: Bytes::new() }
}

fn hello(sim: &Sim) -> String {
    common::pods_of(sim, "default", "hello")[0].clone()
}

/// `GET /_sim/portforward` until `wanted` holds.
async fn forwards_when(http: &Http, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let wanted = &wanted;
    kubemux_testkit::wait::poll(what, common::DEADLINE, || async move {
        let listed = http.get("/_sim/portforward").await.ok();
        if wanted(&listed) { Ok(listed) } else { Err(listed.to_string()) }
    })
    .await
}

/// One full forward: bytes both ways, the client's FIN half-closes the pod side, and the
/// server ends both streams with DATA + FIN (error stream first, as the kubelet closes them).
async fn forward_once(client: &mut Client, request: &str) {
    let (error, data) = client.open_pair(PORT, request).await;
    assert_eq!(client.echo(data, b"ping over spdy").await, b"ping over spdy");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(client.echo(data, &payload).await, payload);
    client.send(&fin(data)).await;
    client.expect(&fin(error)).await;
    client.expect(&fin(data)).await;
}

#[tokio::test]
async fn upgrade_forwards_bytes_both_ways_with_half_close() {
    let sim = common::start(Seed::Demo).await;
    let mut client = Client::upgrade(&sim, &hello(&sim)).await;
    // What spdystream may send and the server must read past.
    client.send(&Frame::Settings { clear: false, entries: vec![] }).await;
    client.send(&Frame::WindowUpdate { stream_id: 0, delta: 1 << 20 }).await;
    client.send(&Frame::Ping { id: 1 }).await;
    client.expect(&Frame::Ping { id: 1 }).await;
    forward_once(&mut client, "0").await;
    // HEADERS on a closed stream is ignored; the connection goes on.
    client.send(&Frame::Headers { stream_id: 3, fin: false, headers: Headers::default() }).await;
    forward_once(&mut client, "1").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn tunnel_carries_the_same_protocol_in_binary_messages() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let mut client = Client::tunnel(&sim, &hello(&sim)).await;
    let (error, data) = client.open_pair(PORT, "0").await;
    let listed = forwards_when(&http, "the tunnel's stream pair", |l| l["streams"].as_array().is_some_and(|s| s.len() == 1)).await;
    assert_eq!(listed["streams"][0]["transport"], "websocket");
    assert_eq!(listed["streams"][0]["port"], PORT);
    assert_eq!(listed["connections"][0]["transport"], "websocket");
    assert_eq!(client.echo(data, b"through the tunnel").await, b"through the tunnel");
    client.send(&fin(data)).await;
    client.expect(&fin(error)).await;
    client.expect(&fin(data)).await;
    forward_once(&mut client, "1").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn many_requests_share_one_connection() {
    let sim = common::start(Seed::Demo).await;
    let mut client = Client::upgrade(&sim, &hello(&sim)).await;
    let mut pairs = Vec::new();
    for request in 0..8 {
        pairs.push(client.open_pair(PORT, &request.to_string()).await);
    }
    // Interleaved: every pair has its own pod connection.
    for (i, (_, data)) in pairs.iter().enumerate().rev() {
        let message = format!("connection {i}");
        assert_eq!(client.echo(*data, message.as_bytes()).await, message.as_bytes());
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_refused_port_gets_the_kubelets_error_on_the_error_stream() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let pod = hello(&sim);
    let mut client = Client::upgrade(&sim, &pod).await;
    let refused = async |client: &mut Client, port: u16, request: &str| {
        let (error, data) = client.open_pair(port, request).await;
        let message = match client.next().await {
            Some(Frame::Data { stream_id, fin: false, data }) if stream_id == error => String::from_utf8(data.to_vec()).expect("text"),
            other => panic!("expected the error text, got {other:?}"),
        };
        client.expect(&fin(error)).await;
        client.expect(&fin(data)).await;
        message
    };
    // Nothing listens on 9999.
    let message = refused(&mut client, 9999, "0").await;
    assert!(message.starts_with(&format!("error forwarding port 9999 to pod {pod}, uid ")), "{message}");
    assert!(message.contains("connect: connection refused"), "{message}");

    // The hook refuses a port that does listen, for this pod only.
    http.hook(&format!("/_sim/portforward/refuse?port={PORT}&namespace=default&pod={pod}")).await;
    let message = refused(&mut client, PORT, "1").await;
    assert!(message.starts_with(&format!("error forwarding port {PORT} to pod {pod}")), "{message}");
    http.send(Method::DELETE, "/_sim/portforward/refuse", None, Vec::new()).await.ok();
    forward_once(&mut client, "2").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn withheld_syn_reply_is_never_sent() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let mut client = Client::upgrade(&sim, &hello(&sim)).await;
    http.hook("/_sim/portforward/withhold-replies?count=1").await;
    let withheld = client.syn_stream(Headers::from_pairs([("streamtype", "error"), ("port", "8000"), ("requestid", "0")])).await;
    let answered = client.syn_stream(Headers::from_pairs([("streamtype", "error"), ("port", "8000"), ("requestid", "1")])).await;
    // Replies go out in order: the first frame answers the second stream, never the first.
    client.expect(&reply(answered)).await;
    assert_eq!(withheld, 1);
    assert_eq!(http.get("/_sim/portforward").await.ok()["withheldReplies"], 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn cut_streams_resets_the_pair_and_keeps_the_connection() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let pod = hello(&sim);
    let mut client = Client::tunnel(&sim, &pod).await;
    let (error, data) = client.open_pair(PORT, "0").await;
    assert_eq!(client.echo(data, b"before").await, b"before");
    // Another pod's filter cuts nothing.
    assert_eq!(http.hook("/_sim/portforward/cut?namespace=default&pod=someone-else").await["cut"], 0);
    assert_eq!(http.hook(&format!("/_sim/portforward/cut?namespace=default&pod={pod}")).await["cut"], 1);
    client.expect(&Frame::RstStream { stream_id: data, status: rst::CANCEL }).await;
    client.expect(&Frame::RstStream { stream_id: error, status: rst::CANCEL }).await;
    forward_once(&mut client, "1").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn cut_connections_drops_them_without_a_goaway() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let mut client = Client::upgrade(&sim, &hello(&sim)).await;
    let (_, data) = client.open_pair(PORT, "0").await;
    assert_eq!(client.echo(data, b"before").await, b"before");
    assert_eq!(http.hook("/_sim/portforward/cut?scope=connections").await["cut"], 1);
    assert_eq!(client.next().await, None, "the connection ends with no frame");
    forwards_when(&http, "the cut connection to leave the table", |l| l["connections"] == serde_json::json!([])).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_resets_pairs_that_carry_nothing() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let mut client = Client::upgrade(&sim, &hello(&sim)).await;
    http.hook("/_sim/portforward/idle-timeout?seconds=0.3").await;
    let (error, data) = client.open_pair(PORT, "0").await;
    assert_eq!(client.echo(data, b"busy").await, b"busy");
    client.expect(&Frame::RstStream { stream_id: data, status: rst::CANCEL }).await;
    client.expect(&Frame::RstStream { stream_id: error, status: rst::CANCEL }).await;
    http.hook("/_sim/portforward/idle-timeout?seconds=0").await;
    forward_once(&mut client, "1").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_says_goaway() {
    let sim = common::start(Seed::Demo).await;
    let mut client = Client::upgrade(&sim, &hello(&sim)).await;
    let (_, data) = client.open_pair(PORT, "0").await;
    sim.shutdown().await;
    loop {
        match client.next().await {
            Some(Frame::GoAway { last_good_stream_id, status }) => {
                assert_eq!((last_good_stream_id, status), (data, goaway::OK));
                break;
            }
            // The pair may end first, as its pod goes.
            Some(Frame::Data { .. } | Frame::RstStream { .. }) => {}
            other => panic!("expected GOAWAY, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn bad_streams_are_reset_and_bad_bytes_end_the_connection() {
    let sim = common::start(Seed::Demo).await;
    let mut client = Client::upgrade(&sim, &hello(&sim)).await;
    // No port header: the kubelet rejects the stream.
    let stream = client.syn_stream(Headers::from_pairs([("streamtype", "data"), ("requestid", "0")])).await;
    client.expect(&Frame::RstStream { stream_id: stream, status: rst::CANCEL }).await;
    // A SPDY/2 control frame: GOAWAY(PROTOCOL_ERROR), then the end.
    client.send_raw(&[0x80, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]).await;
    client.expect(&Frame::GoAway { last_good_stream_id: stream, status: goaway::PROTOCOL_ERROR }).await;
    assert_eq!(client.next().await, None);
    sim.shutdown().await;
}
