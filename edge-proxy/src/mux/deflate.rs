//! The `kubemux.v1+deflate` subprotocol's sending side (`docs/PROTOCOL.md` §1.1): a connection's
//! frames as one raw DEFLATE stream (RFC 1951), each frame followed by a record separator
//! (U+001E, which JSON text cannot contain), each writer batch ended by a sync flush and sent as
//! one binary message whose first byte says whether it continues the stream or starts a new one.
//!
//! Written here rather than negotiated as permessage-deflate (RFC 7692): tungstenite, the
//! WebSocket library of axum and kube, has no permessage-deflate, and a browser reads this one
//! stream with its own `DecompressionStream("deflate-raw")`. flate2 (zlib-rs, pure Rust, already
//! in the tree for kube-sim's SPDY) does the compressing; this only frames it.
//!
//! A stream's compressor holds some 300 KiB, so a connection that sends nothing for a while
//! ([`super::MuxSettings::deflate_idle_release`]) ends its stream and drops it; its next batch
//! starts a new stream.

use flate2::{Compress, CompressError, Compression, FlushCompress, Status};
use kubemux_protocol::frames::{DEFLATE_CONTINUE, DEFLATE_NEW_STREAM, FRAME_SEPARATOR};
use prometheus_client::metrics::gauge::Gauge;

/// The zlib level. Measured with `cargo xtask bench bytes` (whole pods on a compressed
/// connection, bytes per MODIFIED event on the wire): level 1 (zlib-rs' quick strategy, static
/// Huffman codes only) 620, level 4 363, level 6 315. Level 4 keeps most of level 6's ratio
/// with a shorter match search, a cost every compressed connection pays on its own.
pub const LEVEL: u32 = 4;

/// One connection's compressed stream, if it holds one, and the batch message being built.
pub struct Deflater {
    stream: Option<Compress>,
    /// The message being built: its header byte, then what the stream gave for the batch so far.
    message: Vec<u8>,
    /// Compressors held across the proxy (`kubemux_mux_deflate_streams`).
    held: Gauge,
}

impl Deflater {
    pub fn new(held: Gauge) -> Deflater {
        Deflater { stream: None, message: Vec::new(), held }
    }

    /// Whether a stream is open (and its compressor held).
    pub fn holds(&self) -> bool {
        self.stream.is_some()
    }

    /// Adds one frame to the batch being built.
    pub fn push(&mut self, frame: &str) -> Result<(), CompressError> {
        if self.message.is_empty() {
            self.message.push(if self.stream.is_some() { DEFLATE_CONTINUE } else { DEFLATE_NEW_STREAM });
        }
        let held = &self.held;
        let stream = self.stream.get_or_insert_with(|| {
            held.inc();
            Compress::new(Compression::new(LEVEL), false)
        });
        run(stream, frame.as_bytes(), &mut self.message, FlushCompress::None)?;
        run(stream, &[FRAME_SEPARATOR], &mut self.message, FlushCompress::None)
    }

    /// The batch's message, ended by a sync flush, if any frame was pushed since the last one.
    pub fn take(&mut self) -> Result<Option<Vec<u8>>, CompressError> {
        let Some(stream) = self.stream.as_mut().filter(|_| !self.message.is_empty()) else { return Ok(None) };
        run(stream, &[], &mut self.message, FlushCompress::Sync)?;
        Ok(Some(std::mem::take(&mut self.message)))
    }

    /// Ends the stream with its final block and drops the compressor: the message to send, if a
    /// stream was open. Any batch being built is part of it.
    pub fn release(&mut self) -> Result<Option<Vec<u8>>, CompressError> {
        let Some(mut stream) = self.stream.take() else { return Ok(None) };
        self.held.dec();
        if self.message.is_empty() {
            self.message.push(DEFLATE_CONTINUE);
        }
        run(&mut stream, &[], &mut self.message, FlushCompress::Finish)?;
        Ok(Some(std::mem::take(&mut self.message)))
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        if self.stream.is_some() {
            self.held.dec();
        }
    }
}

/// Compresses all of `input` into `out`, growing it, and completes `flush`: with `Sync`, until
/// the stream has given everything it was fed; with `Finish`, until the stream's end.
fn run(stream: &mut Compress, mut input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) -> Result<(), CompressError> {
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.len().max(1024));
        }
        let before = stream.total_in();
        let status = stream.compress_vec(input, out, flush)?;
        let consumed = usize::try_from(stream.total_in() - before).unwrap_or(input.len()).min(input.len());
        input = &input[consumed..];
        let room_left = out.len() < out.capacity();
        match (status, flush) {
            (Status::StreamEnd, _) => return Ok(()),
            (_, FlushCompress::Finish) => {}
            // zlib's rule: a flush is complete when it returns with output space to spare.
            (_, FlushCompress::Sync) if input.is_empty() && room_left => return Ok(()),
            (_, FlushCompress::None) if input.is_empty() => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    /// What a client makes of the messages: the frames, in order.
    fn inflate(messages: &[Vec<u8>]) -> Vec<String> {
        let mut stream: Option<Decompress> = None;
        let mut text = Vec::new();
        for message in messages {
            let (&header, body) = message.split_first().expect("a header byte");
            if header == DEFLATE_NEW_STREAM {
                stream = Some(Decompress::new(false));
            }
            let stream = stream.as_mut().expect("a stream was started");
            let mut input = body;
            loop {
                text.reserve(64 * 1024);
                let before = stream.total_in();
                let status = stream.decompress_vec(input, &mut text, FlushDecompress::Sync).expect("valid deflate");
                input = &input[(stream.total_in() - before) as usize..];
                if input.is_empty() && (text.len() < text.capacity() || status == flate2::Status::StreamEnd) {
                    break;
                }
            }
        }
        let text = String::from_utf8(text).expect("UTF-8");
        assert!(text.is_empty() || text.ends_with(FRAME_SEPARATOR as char), "the last frame is whole");
        text.split_terminator(FRAME_SEPARATOR as char).map(str::to_owned).collect()
    }

    #[test]
    fn batches_and_a_released_stream_read_back_as_the_frames_in_order() {
        let held = Gauge::default();
        let mut deflater = Deflater::new(held.clone());
        assert_eq!(deflater.take().unwrap(), None, "nothing pushed, nothing sent");
        let frames: Vec<String> = (0..200).map(|i| format!(r#"{{"op":"event","id":"w1","type":"MODIFIED","object":{{"n":{i},"pad":"{}"}}}}"#, "x".repeat(i % 50))).collect();
        let mut messages = Vec::new();
        for batch in frames[..150].chunks(7) {
            for frame in batch {
                deflater.push(frame).unwrap();
            }
            messages.push(deflater.take().unwrap().expect("a message per batch"));
        }
        assert_eq!(held.get(), 1);
        assert_eq!(messages[0][0], DEFLATE_NEW_STREAM);
        assert!(messages[1..].iter().all(|m| m[0] == DEFLATE_CONTINUE));
        let ended = deflater.release().unwrap().expect("the stream's end");
        assert_eq!(ended[0], DEFLATE_CONTINUE);
        assert_eq!(held.get(), 0, "a released stream holds no compressor");
        assert_eq!(deflater.release().unwrap(), None);
        messages.push(ended);
        for frame in &frames[150..] {
            deflater.push(frame).unwrap();
        }
        let fresh = deflater.take().unwrap().expect("a message");
        assert_eq!(fresh[0], DEFLATE_NEW_STREAM, "after a release the next batch starts a stream");
        messages.push(fresh);
        assert_eq!(inflate(&messages), frames);
        let sent: usize = messages.iter().map(Vec::len).sum();
        let raw: usize = frames.iter().map(|f| f.len() + 1).sum();
        assert!(sent * 4 < raw, "repetitive frames compress: {sent} of {raw} bytes");
        drop(deflater);
        assert_eq!(held.get(), 0);
    }

    #[test]
    fn a_large_frame_is_whole_after_its_flush() {
        let mut deflater = Deflater::new(Gauge::default());
        // Incompressible enough to outgrow every buffer step.
        let mut rng = fastrand::Rng::with_seed(7);
        let big: String = (0..300_000).map(|_| rng.alphanumeric()).collect();
        let frame = format!(r#"{{"op":"event","blob":"{big}"}}"#);
        deflater.push(&frame).unwrap();
        deflater.push("{}").unwrap();
        let message = deflater.take().unwrap().unwrap();
        assert_eq!(inflate(&[message]), vec![frame, "{}".to_owned()]);
    }

    #[test]
    fn dropping_a_held_stream_gives_its_count_back() {
        let held = Gauge::default();
        let mut deflater = Deflater::new(held.clone());
        deflater.push("{}").unwrap();
        assert_eq!(held.get(), 1);
        drop(deflater);
        assert_eq!(held.get(), 0);
    }
}
