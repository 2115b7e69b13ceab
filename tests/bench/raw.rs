//! The one raw-socket client of `kubemux-bench-mux`: the same code reads a watch from kube-sim,
//! from `kubectl proxy` (HTTP/1.1, chunked lines) and from `kubemux-proxy` (a WebSocket of
//! kubemux.v1 text frames), parses every line or frame whole (`serde_json`, the object skipped
//! but validated) and counts the events, so the three columns differ only in what serves them.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long any one read may wait before the bench gives up.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// One watch line or kubemux frame, parsed whole: `type` and `op` kept, the object walked.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow)]
    op: Option<&'a str>,
    #[serde(rename = "object")]
    _object: Option<IgnoredAny>,
}

/// What a line or frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A watch event (a line with `type` ADDED/MODIFIED/DELETED, or a kubemux `event` frame).
    Event,
    /// kubemux's `synced`.
    Synced,
    /// Anything else (bookmarks, pongs).
    Other,
}

fn classify(bytes: &[u8]) -> anyhow::Result<Seen> {
    let line: Line<'_> = serde_json::from_slice(bytes).with_context(|| format!("not a JSON line: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)])))?;
    Ok(match (line.op, line.kind) {
        (Some("event"), _) => Seen::Event,
        (Some("synced"), _) => Seen::Synced,
        (Some("error"), _) => bail!("an error frame: {}", String::from_utf8_lossy(bytes)),
        (None, Some("ADDED" | "MODIFIED" | "DELETED")) => Seen::Event,
        (None, Some("ERROR")) => bail!("an ERROR event: {}", String::from_utf8_lossy(bytes)),
        _ => Seen::Other,
    })
}

enum Framing {
    /// A chunked HTTP body of newline-separated JSON (a watch).
    Chunked { body: Vec<u8>, chunk_left: usize, done: bool },
    /// WebSocket frames (server to client: unmasked).
    WebSocket,
}

/// A watch over one TCP connection, read by hand.
pub struct Watch {
    socket: TcpStream,
    raw: Vec<u8>,
    start: usize,
    framing: Framing,
}

async fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let socket = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    socket.set_nodelay(true)?;
    Ok(socket)
}

/// Reads until the end of the response head; returns it and leaves what follows in `raw`.
async fn read_head(socket: &mut TcpStream, raw: &mut Vec<u8>) -> anyhow::Result<String> {
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            raw.drain(..end + 4);
            return Ok(head);
        }
        if read_more(socket, raw).await? == 0 {
            bail!("the connection closed before the response head");
        }
    }
}

async fn read_more(socket: &mut TcpStream, raw: &mut Vec<u8>) -> anyhow::Result<usize> {
    raw.reserve(64 * 1024);
    let n = tokio::time::timeout(READ_DEADLINE, socket.read_buf(raw)).await.context("no bytes within the read deadline")??;
    Ok(n)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn status(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Watch {
    /// `GET path` (with its query) as a streaming HTTP watch at `addr` (host:port).
    pub async fn http(addr: &str, path: &str) -> anyhow::Result<Watch> {
        let mut socket = connect(addr).await?;
        socket.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nUser-Agent: kubemux-bench\r\n\r\n").as_bytes()).await?;
        let mut raw = Vec::new();
        let head = read_head(&mut socket, &mut raw).await?;
        if status(&head) != 200 {
            bail!("GET {path} at {addr}: {head}");
        }
        if !header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            bail!("GET {path} at {addr}: a watch that is not chunked: {head}");
        }
        Ok(Watch { socket, raw, start: 0, framing: Framing::Chunked { body: Vec::new(), chunk_left: 0, done: false } })
    }

    /// A kubemux.v1 WebSocket to `addr`'s `/mux`, with `watch` sent for `path` as subscription
    /// `id`. The caller reads up to `synced`.
    pub async fn mux(addr: &str, id: &str, path: &str) -> anyhow::Result<Watch> {
        let mut socket = connect(addr).await?;
        let request = format!(
            "GET /mux HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a3ViZW11eC1iZW5jaC1rZXk=\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
            kubemux_protocol::frames::SUBPROTOCOL
        );
        socket.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        let head = read_head(&mut socket, &mut raw).await?;
        if status(&head) != 101 {
            bail!("the /mux upgrade at {addr} was refused: {head}");
        }
        let mut watch = Watch { socket, raw, start: 0, framing: Framing::WebSocket };
        watch.send_text(&serde_json::json!({"op": "watch", "id": id, "cluster": "sim", "path": path}).to_string()).await?;
        Ok(watch)
    }

    /// Sends a masked text frame.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mask = fastrand::u32(..).to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.socket.write_all(&frame).await?;
        Ok(())
    }

    /// Reads and parses lines or frames, handing each to `seen` until it returns true.
    pub async fn read_until(&mut self, mut seen: impl FnMut(Seen) -> bool) -> anyhow::Result<()> {
        loop {
            let mut pongs = Vec::new();
            let finished = self.drain(&mut seen, &mut pongs)?;
            for payload in pongs {
                self.send_frame(0xA, &payload).await?;
            }
            if finished {
                return Ok(());
            }
            if self.start > 0 {
                self.raw.drain(..self.start);
                self.start = 0;
            }
            if read_more(&mut self.socket, &mut self.raw).await? == 0 {
                bail!("the watch ended");
            }
        }
    }

    /// Reads until `count` events have been parsed: when the first and the last arrived.
    pub async fn events(&mut self, count: usize) -> anyhow::Result<(Instant, Instant)> {
        let (mut first, mut seen) = (None, 0);
        self.read_until(|kind| {
            if kind == Seen::Event {
                first.get_or_insert_with(Instant::now);
                seen += 1;
            }
            seen >= count
        })
        .await?;
        let last = Instant::now();
        Ok((first.unwrap_or(last), last))
    }

    /// Reads up to kubemux's `synced`: when the first event came (if any) and how many.
    pub async fn until_synced(&mut self) -> anyhow::Result<(Option<Instant>, usize)> {
        let (mut first, mut seen) = (None, 0);
        self.read_until(|kind| {
            if kind == Seen::Event {
                first.get_or_insert_with(Instant::now);
                seen += 1;
            }
            kind == Seen::Synced
        })
        .await?;
        Ok((first, seen))
    }

    /// Handles every complete line or frame in the buffer; true once `seen` said so.
    fn drain(&mut self, seen: &mut impl FnMut(Seen) -> bool, pongs: &mut Vec<Vec<u8>>) -> anyhow::Result<bool> {
        match &mut self.framing {
            Framing::WebSocket => loop {
                let buffered = &self.raw[self.start..];
                let Some((opcode, header_len, len)) = frame_header(buffered)? else { return Ok(false) };
                if buffered.len() < header_len + len {
                    return Ok(false);
                }
                let payload = &buffered[header_len..header_len + len];
                self.start += header_len + len;
                match opcode {
                    0x1 | 0x2 if seen(classify(payload)?) => return Ok(true),
                    0x1 | 0x2 => {}
                    0x8 => bail!("the proxy closed the WebSocket: {}", String::from_utf8_lossy(payload)),
                    0x9 => pongs.push(payload.to_vec()),
                    0x0 => bail!("a fragmented frame (the bench reads whole frames only)"),
                    _ => {}
                }
            },
            Framing::Chunked { body, chunk_left, done } => {
                // Move every complete chunk's bytes into `body`.
                loop {
                    let buffered = &self.raw[self.start..];
                    if *chunk_left > 0 {
                        let take = (*chunk_left).min(buffered.len());
                        body.extend_from_slice(&buffered[..take]);
                        self.start += take;
                        *chunk_left -= take;
                        if *chunk_left > 0 {
                            break;
                        }
                        continue;
                    }
                    // Between chunks: an optional CRLF ending the last one, then a size line.
                    let Some(eol) = buffered.windows(2).position(|w| w == b"\r\n") else { break };
                    if eol == 0 {
                        self.start += 2;
                        continue;
                    }
                    let size_text = String::from_utf8_lossy(&buffered[..eol]);
                    let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16).with_context(|| format!("a chunk size {size_text:?}"))?;
                    self.start += eol + 2;
                    if size == 0 {
                        *done = true;
                        break;
                    }
                    *chunk_left = size;
                }
                let mut consumed = 0;
                let mut finished = false;
                while let Some(newline) = body[consumed..].iter().position(|b| *b == b'\n') {
                    let line = &body[consumed..consumed + newline];
                    consumed += newline + 1;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    if seen(classify(line)?) {
                        finished = true;
                        break;
                    }
                }
                body.drain(..consumed);
                if !finished && *done {
                    bail!("the watch response ended");
                }
                Ok(finished)
            }
        }
    }
}

/// A WebSocket frame's opcode, header length and payload length, once the header is in.
fn frame_header(buffered: &[u8]) -> anyhow::Result<Option<(u8, usize, usize)>> {
    if buffered.len() < 2 {
        return Ok(None);
    }
    if buffered[1] & 0x80 != 0 {
        bail!("a masked frame from the server");
    }
    let opcode = buffered[0] & 0x0f;
    Ok(match buffered[1] & 0x7f {
        126 if buffered.len() >= 4 => Some((opcode, 4, u16::from_be_bytes([buffered[2], buffered[3]]) as usize)),
        127 if buffered.len() >= 10 => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&buffered[2..10]);
            Some((opcode, 10, usize::try_from(u64::from_be_bytes(len)).context("a frame too long")?))
        }
        126 | 127 => None,
        n => Some((opcode, 2, n as usize)),
    })
}

/// A list, as a client pages it: the items counted, when the first byte of the first response
/// body came and when the last page was read whole.
pub struct Listed {
    pub items: usize,
    pub pages: usize,
    pub first_byte: Instant,
    pub complete: Instant,
}

#[derive(Deserialize)]
struct ListBody {
    metadata: ListMeta,
    items: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "continue")]
    next: Option<String>,
}

/// `GET path?limit=…` page after page over one kept-alive connection, as kubectl pages a list
/// (`limit` 0: one unpaged GET). Each page's body is parsed whole.
pub async fn list(addr: &str, path: &str, limit: usize) -> anyhow::Result<Listed> {
    let mut socket = connect(addr).await?;
    let mut raw = Vec::new();
    let (mut items, mut pages, mut first_byte, mut next) = (0, 0, None, None::<String>);
    loop {
        let mut target = path.to_owned();
        if limit > 0 {
            target.push_str(&format!("?limit={limit}"));
            if let Some(token) = &next {
                target.push_str(&format!("&continue={}", percent(token)));
            }
        }
        socket.write_all(format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nUser-Agent: kubemux-bench\r\n\r\n").as_bytes()).await?;
        let head = read_head(&mut socket, &mut raw).await?;
        if status(&head) != 200 {
            bail!("GET {target} at {addr}: {head}");
        }
        let body = read_body(&mut socket, &mut raw, &head, &mut first_byte).await?;
        let page: ListBody = serde_json::from_slice(&body).context("a list body")?;
        items += page.items.len();
        pages += 1;
        next = page.metadata.next.filter(|t| !t.is_empty());
        if next.is_none() || limit == 0 {
            break;
        }
    }
    let complete = Instant::now();
    Ok(Listed { items, pages, first_byte: first_byte.unwrap_or(complete), complete })
}

/// A response body after its head: by `Content-Length` or chunked. Notes when its first byte
/// was in, if nothing was noted yet.
async fn read_body(socket: &mut TcpStream, raw: &mut Vec<u8>, head: &str, first_byte: &mut Option<Instant>) -> anyhow::Result<Vec<u8>> {
    if raw.is_empty() {
        read_more(socket, raw).await?;
    }
    first_byte.get_or_insert_with(Instant::now);
    if let Some(length) = header(head, "content-length") {
        let length: usize = length.parse().context("a Content-Length")?;
        while raw.len() < length {
            if read_more(socket, raw).await? == 0 {
                bail!("the body ended early");
            }
        }
        return Ok(raw.drain(..length).collect());
    }
    let mut body = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            if read_more(socket, raw).await? == 0 {
                bail!("the chunked body ended early");
            }
            continue;
        };
        let size_text = String::from_utf8_lossy(&raw[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16).with_context(|| format!("a chunk size {size_text:?}"))?;
        while raw.len() < eol + 2 + size + 2 {
            if read_more(socket, raw).await? == 0 {
                bail!("the chunked body ended early");
            }
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw.drain(..eol + 2 + size + 2);
        if size == 0 {
            return Ok(body);
        }
    }
}

fn percent(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
