//! A sans-IO SPDY/3.1 codec: the subset kubectl's `port-forward` speaks (moby/spdystream on
//! the client, reference `exec-portforward-protocol.md` §7.2). Bytes in, [`Frame`]s out, and
//! back; no sockets, no clocks, no tokio.
//!
//! Why hand-written: no maintained, permissively licensed Rust crate accepts kubectl's SPDY.
//! The only working Rust SPDY/3.1 code (`spdy-mux`, `kube-portforward`) is GPL-3.0-only and
//! client-only (it rejects the peer's SYN_STREAM, which is all a server gets), and the older
//! `spdy` crates are unmaintained SPDY/2 or HTTP-only (`portforward-anchors.md` §3.2).
//!
//! Frames (draft 3 §2.2): a control frame is `1|version(15)=3|type(16)`, `flags(8)|length(24)`;
//! a data frame `0|stream-id(31)`, `flags(8)|length(24)`. Header blocks are zlib-compressed
//! with one context per direction ([`compression`]). Every length read from the wire is
//! checked before it is used and bounded ([`MAX_CONTROL_LENGTH`], [`MAX_DATA_LENGTH`],
//! [`compression::MAX_HEADER_BLOCK`]): bad input is a [`DecodeError`], never a panic.

pub mod compression;
mod dictionary;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use compression::{HeaderCompressor, HeaderDecompressor, Headers};
pub use dictionary::DICTIONARY;

/// The only version spoken.
pub const VERSION: u16 = 3;
/// FLAG_FIN: the sender's half of the stream ends with this frame.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL (SYN_STREAM): the receiver must not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS.
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// The largest control frame accepted: header blocks are small, and this bounds what one
/// frame can make the decoder buffer.
pub const MAX_CONTROL_LENGTH: usize = 64 * 1024;
/// The largest data frame accepted. spdystream writes what each `Write` gets (kubectl copies
/// with 32 KiB buffers); the 24-bit length would allow 16 MiB per frame per connection.
pub const MAX_DATA_LENGTH: usize = 1024 * 1024;

const HEADER_LENGTH: usize = 8;

/// Control frame types (§2.6).
mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes (§2.6.3).
pub mod rst {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INVALID_STREAM: a frame for a stream that is not active.
    pub const INVALID_STREAM: u32 = 2;
    /// REFUSED_STREAM: not processed; safe to retry.
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL: the stream is no longer needed (what spdystream's `Reset` sends).
    pub const CANCEL: u32 = 5;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 6;
    /// STREAM_IN_USE: a SYN_STREAM for a stream that is already open.
    pub const STREAM_IN_USE: u32 = 8;
}

/// GOAWAY status codes (§2.6.6).
pub mod goaway {
    /// OK: a normal end.
    pub const OK: u32 = 0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 2;
}

/// One SETTINGS entry (§2.6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE / PERSISTED.
    pub flags: u8,
    /// The 24-bit setting id.
    pub id: u32,
    /// Its value.
    pub value: u32,
}

/// One frame, decoded. Stream ids are 31 bits; reserved bits are dropped on decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// SYN_STREAM (§2.6.1): the peer opens a stream.
    SynStream {
        /// The new stream (odd from a client).
        stream_id: u32,
        /// The stream this one is associated with, 0 for none.
        associated_to: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// CREDENTIAL slot, 0 for none.
        slot: u8,
        /// FLAG_FIN.
        fin: bool,
        /// FLAG_UNIDIRECTIONAL.
        unidirectional: bool,
        /// The stream's headers.
        headers: Headers,
    },
    /// SYN_REPLY (§2.6.2): the receiver accepts a stream.
    SynReply {
        /// The stream accepted.
        stream_id: u32,
        /// FLAG_FIN.
        fin: bool,
        /// Reply headers (empty from the kubelet).
        headers: Headers,
    },
    /// RST_STREAM (§2.6.3): the stream ends abnormally, in both directions.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// One of [`rst`].
        status: u32,
    },
    /// SETTINGS (§2.6.4).
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        clear: bool,
        /// The entries.
        entries: Vec<Setting>,
    },
    /// PING (§2.6.5): echoed by the receiver when the id has the peer's parity.
    Ping {
        /// Odd from a client, even from a server.
        id: u32,
    },
    /// GOAWAY (§2.6.6): no new streams; streams above `last_good_stream_id` were not processed.
    GoAway {
        /// The last stream the sender processed.
        last_good_stream_id: u32,
        /// One of [`goaway`].
        status: u32,
    },
    /// HEADERS (§2.6.7): more headers for an open stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        fin: bool,
        /// The headers.
        headers: Headers,
    },
    /// WINDOW_UPDATE (§2.6.8).
    WindowUpdate {
        /// The stream, or 0 for the session window (3.1).
        stream_id: u32,
        /// The 31-bit delta.
        delta: u32,
    },
    /// A data frame (§2.2.2).
    Data {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN: the sender's last frame on this stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
    /// A control frame of a type this subset does not know (CREDENTIAL, NOOP, later
    /// extensions): the spec says to ignore it. Kept whole, so it re-encodes as it came.
    Unknown {
        /// The control frame type.
        frame_type: u16,
        /// Its flags.
        flags: u8,
        /// Its payload.
        payload: Bytes,
    },
}

/// Why input could not be decoded. Any error ends the connection: the decoder may have
/// consumed a header block the compression context then lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A length past the limits.
    #[error("a frame of {length} bytes is larger than the {limit} accepted")]
    FrameTooLarge {
        /// The frame's length field.
        length: usize,
        /// The limit for its kind.
        limit: usize,
    },
    /// A frame whose length does not fit its type.
    #[error("a {frame} frame cannot be {length} bytes long")]
    InvalidLength {
        /// Which frame.
        frame: &'static str,
        /// Its length field.
        length: usize,
    },
    /// The header block did not inflate.
    #[error("a header block does not decompress")]
    Compression,
    /// The header block inflated past [`compression::MAX_HEADER_BLOCK`].
    #[error("a header block decompresses to more than {} bytes", compression::MAX_HEADER_BLOCK)]
    HeaderBlockTooLarge,
    /// The inflated header block is malformed.
    #[error("invalid header block: {0}")]
    InvalidHeaderBlock(&'static str),
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The header block is larger than [`compression::MAX_HEADER_BLOCK`].
    #[error("the header block is too large")]
    HeadersTooLarge,
    /// A header with an empty name (§2.6.10 forbids it).
    #[error("a header name is empty")]
    EmptyHeaderName,
    /// A payload larger than its frame kind allows.
    #[error("a frame payload is too large")]
    PayloadTooLarge,
    /// zlib failed.
    #[error("compression failed")]
    Compression,
    /// A frame with a header block given to [`encode_plain`]: it needs the [`Encoder`].
    #[error("a frame with headers needs the connection's encoder")]
    NeedsHeaderContext,
}

/// Reads frames out of the bytes of one direction of a connection, owning that direction's
/// inflate context. Feed it bytes with [`Decoder::extend`], then take frames with
/// [`Decoder::next_frame`] until it answers `Ok(None)`.
#[derive(Default)]
pub struct Decoder {
    buffer: BytesMut,
    headers: HeaderDecompressor,
}

impl Decoder {
    /// A decoder with a fresh inflate context.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends received bytes. The buffer never holds more than one incomplete frame beyond
    /// what has not been taken yet, each bounded by the frame limits.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let Some(head) = self.buffer.first_chunk::<HEADER_LENGTH>() else {
            return Ok(None);
        };
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let length = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        let control = first & 0x8000_0000 != 0;
        if control {
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(DecodeError::UnsupportedVersion(version));
            }
            if length > MAX_CONTROL_LENGTH {
                return Err(DecodeError::FrameTooLarge { length, limit: MAX_CONTROL_LENGTH });
            }
        } else if length > MAX_DATA_LENGTH {
            return Err(DecodeError::FrameTooLarge { length, limit: MAX_DATA_LENGTH });
        }
        if self.buffer.len() < HEADER_LENGTH + length {
            return Ok(None);
        }
        self.buffer.advance(HEADER_LENGTH);
        let payload = self.buffer.split_to(length).freeze();
        if !control {
            return Ok(Some(Frame::Data { stream_id: first & 0x7fff_ffff, fin: flags & FLAG_FIN != 0, data: payload }));
        }
        self.control((first & 0xffff) as u16, flags, payload).map(Some)
    }

    fn control(&mut self, frame_type: u16, flags: u8, mut payload: Bytes) -> Result<Frame, DecodeError> {
        let length = payload.len();
        let need = |frame: &'static str, ok: bool| if ok { Ok(()) } else { Err(DecodeError::InvalidLength { frame, length }) };
        let fin = flags & FLAG_FIN != 0;
        Ok(match frame_type {
            kind::SYN_STREAM => {
                need("SYN_STREAM", length >= 10)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                let associated_to = payload.get_u32() & 0x7fff_ffff;
                let priority = payload.get_u8() >> 5;
                let slot = payload.get_u8();
                let headers = self.headers.decompress(&payload)?;
                Frame::SynStream { stream_id, associated_to, priority, slot, fin, unidirectional: flags & FLAG_UNIDIRECTIONAL != 0, headers }
            }
            kind::SYN_REPLY => {
                need("SYN_REPLY", length >= 4)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                Frame::SynReply { stream_id, fin, headers: self.headers.decompress(&payload)? }
            }
            kind::HEADERS => {
                need("HEADERS", length >= 4)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                Frame::Headers { stream_id, fin, headers: self.headers.decompress(&payload)? }
            }
            kind::RST_STREAM => {
                need("RST_STREAM", length == 8)?;
                Frame::RstStream { stream_id: payload.get_u32() & 0x7fff_ffff, status: payload.get_u32() }
            }
            kind::SETTINGS => {
                need("SETTINGS", length >= 4)?;
                let count = payload.get_u32();
                need("SETTINGS", usize::try_from(count).ok().and_then(|c| c.checked_mul(8)) == Some(length - 4))?;
                let entries = (0..count)
                    .map(|_| {
                        let flag_id = payload.get_u32();
                        Setting { flags: (flag_id >> 24) as u8, id: flag_id & 0x00ff_ffff, value: payload.get_u32() }
                    })
                    .collect();
                Frame::Settings { clear: flags & FLAG_CLEAR_SETTINGS != 0, entries }
            }
            kind::PING => {
                need("PING", length == 4)?;
                Frame::Ping { id: payload.get_u32() }
            }
            kind::GOAWAY => {
                need("GOAWAY", length == 8)?;
                Frame::GoAway { last_good_stream_id: payload.get_u32() & 0x7fff_ffff, status: payload.get_u32() }
            }
            kind::WINDOW_UPDATE => {
                need("WINDOW_UPDATE", length == 8)?;
                Frame::WindowUpdate { stream_id: payload.get_u32() & 0x7fff_ffff, delta: payload.get_u32() & 0x7fff_ffff }
            }
            _ => Frame::Unknown { frame_type, flags, payload },
        })
    }
}

/// Writes frames for one direction of a connection, owning that direction's deflate
/// context: frames must reach the wire in the order they were encoded.
#[derive(Default)]
pub struct Encoder {
    headers: HeaderCompressor,
}

impl Encoder {
    /// An encoder with a fresh deflate context.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Appends `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), EncodeError> {
        match frame {
            Frame::SynStream { stream_id, associated_to, priority, slot, fin, unidirectional, headers } => {
                let block = self.headers.compress(headers)?;
                let flags = fin_flag(*fin) | if *unidirectional { FLAG_UNIDIRECTIONAL } else { 0 };
                control_header(out, kind::SYN_STREAM, flags, 10 + block.len())?;
                out.put_u32(sid(*stream_id));
                out.put_u32(sid(*associated_to));
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(*slot);
                out.put_slice(&block);
            }
            Frame::SynReply { stream_id, fin, headers } | Frame::Headers { stream_id, fin, headers } => {
                let frame_type = if matches!(frame, Frame::SynReply { .. }) { kind::SYN_REPLY } else { kind::HEADERS };
                let block = self.headers.compress(headers)?;
                control_header(out, frame_type, fin_flag(*fin), 4 + block.len())?;
                out.put_u32(sid(*stream_id));
                out.put_slice(&block);
            }
            _ => encode_plain(frame, out)?,
        }
        Ok(())
    }

    /// `frame` as bytes of its own.
    pub fn encode_to_bytes(&mut self, frame: &Frame) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(frame, &mut out)?;
        Ok(out.freeze())
    }
}

fn sid(id: u32) -> u32 {
    id & 0x7fff_ffff
}

fn fin_flag(fin: bool) -> u8 {
    if fin { FLAG_FIN } else { 0 }
}

/// Appends a frame that carries no header block (everything but SYN_STREAM, SYN_REPLY and
/// HEADERS) to `out`. It needs no compression context, so any task may encode one; the
/// order on the wire only matters against frames of the same stream.
pub fn encode_plain(frame: &Frame, out: &mut BytesMut) -> Result<(), EncodeError> {
    match frame {
        Frame::SynStream { .. } | Frame::SynReply { .. } | Frame::Headers { .. } => return Err(EncodeError::NeedsHeaderContext),
        Frame::RstStream { stream_id, status } => {
            control_header(out, kind::RST_STREAM, 0, 8)?;
            out.put_u32(sid(*stream_id));
            out.put_u32(*status);
        }
        Frame::Settings { clear, entries } => {
            let length = entries.len().checked_mul(8).and_then(|n| n.checked_add(4)).ok_or(EncodeError::PayloadTooLarge)?;
            control_header(out, kind::SETTINGS, if *clear { FLAG_CLEAR_SETTINGS } else { 0 }, length)?;
            out.put_u32(u32::try_from(entries.len()).map_err(|_| EncodeError::PayloadTooLarge)?);
            for entry in entries {
                out.put_u32(u32::from(entry.flags) << 24 | (entry.id & 0x00ff_ffff));
                out.put_u32(entry.value);
            }
        }
        Frame::Ping { id } => {
            control_header(out, kind::PING, 0, 4)?;
            out.put_u32(*id);
        }
        Frame::GoAway { last_good_stream_id, status } => {
            control_header(out, kind::GOAWAY, 0, 8)?;
            out.put_u32(sid(*last_good_stream_id));
            out.put_u32(*status);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_header(out, kind::WINDOW_UPDATE, 0, 8)?;
            out.put_u32(sid(*stream_id));
            out.put_u32(delta & 0x7fff_ffff);
        }
        Frame::Data { stream_id, fin, data } => {
            if data.len() > MAX_DATA_LENGTH {
                return Err(EncodeError::PayloadTooLarge);
            }
            out.put_u32(sid(*stream_id));
            put_flags_length(out, fin_flag(*fin), data.len());
            out.put_slice(data);
        }
        Frame::Unknown { frame_type, flags, payload } => {
            control_header(out, *frame_type, *flags, payload.len())?;
            out.put_slice(payload);
        }
    }
    Ok(())
}

/// A DATA frame as bytes of its own.
pub fn data_frame(stream_id: u32, fin: bool, data: &[u8]) -> Result<Bytes, EncodeError> {
    plain_to_bytes(&Frame::Data { stream_id, fin, data: Bytes::copy_from_slice(data) })
}

/// A frame without a header block as bytes of its own.
pub fn plain_to_bytes(frame: &Frame) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    encode_plain(frame, &mut out)?;
    Ok(out.freeze())
}

fn control_header(out: &mut BytesMut, frame_type: u16, flags: u8, length: usize) -> Result<(), EncodeError> {
    if length > MAX_CONTROL_LENGTH {
        return Err(EncodeError::PayloadTooLarge);
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    put_flags_length(out, flags, length);
    Ok(())
}

/// `flags(8)|length(24)`; callers have bounded `length` well below 2^24.
fn put_flags_length(out: &mut BytesMut, flags: u8, length: usize) {
    out.put_u8(flags);
    out.put_uint(length as u64 & 0x00ff_ffff, 3);
}

#[cfg(test)]
mod tests;
