//! Name/value header blocks (draft 3 §2.6.10) and their zlib compression (§2.6.10.1): one
//! deflate context for everything a side sends and one inflate context for everything it
//! receives, for the life of the connection, both primed with the SPDY/3 dictionary, each
//! block ending in a sync flush. A block compressed by a fresh context and read by a
//! long-lived one (or the other way round) does not decode: that is the usual interop trap.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;
use super::{DecodeError, EncodeError};

/// Most bytes a decompressed header block may hold. kubectl's port-forward blocks are under
/// 100 bytes; this bounds what a peer can make us allocate from a tiny compressed frame.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Header names and values, in wire order. Names are lowercase on the wire (§2.6.10); several
/// values of one name travel as one value joined by NUL, and are kept that way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The value of `name`, compared case-insensitively (Go clients canonicalize names before
    /// lowercasing them for the wire).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Headers from pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Headers {
        Headers(pairs.into_iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect())
    }

    /// The uncompressed block: `u32` count, then `u32` length and bytes of each name and value.
    pub fn serialize(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        let count = u32::try_from(self.0.len()).map_err(|_| EncodeError::HeadersTooLarge)?;
        out.extend_from_slice(&count.to_be_bytes());
        for (name, value) in &self.0 {
            if name.is_empty() {
                return Err(EncodeError::EmptyHeaderName);
            }
            for part in [name.as_bytes(), value.as_bytes()] {
                let len = u32::try_from(part.len()).map_err(|_| EncodeError::HeadersTooLarge)?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        if out.len() > MAX_HEADER_BLOCK {
            return Err(EncodeError::HeadersTooLarge);
        }
        Ok(out)
    }

    /// Parses an uncompressed block; every length is checked against what is left.
    pub fn parse(block: &[u8]) -> Result<Headers, DecodeError> {
        let mut rest = block;
        let count = take_u32(&mut rest)?;
        let mut pairs = Vec::new();
        for _ in 0..count {
            let name = take_string(&mut rest)?;
            if name.is_empty() {
                return Err(DecodeError::InvalidHeaderBlock("a header name is empty"));
            }
            let value = take_string(&mut rest)?;
            pairs.push((name, value));
        }
        if !rest.is_empty() {
            return Err(DecodeError::InvalidHeaderBlock("bytes follow the last header"));
        }
        Ok(Headers(pairs))
    }
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, DecodeError> {
    let Some((head, tail)) = rest.split_first_chunk::<4>() else {
        return Err(DecodeError::InvalidHeaderBlock("a length is cut short"));
    };
    *rest = tail;
    Ok(u32::from_be_bytes(*head))
}

fn take_string(rest: &mut &[u8]) -> Result<String, DecodeError> {
    let len = usize::try_from(take_u32(rest)?).map_err(|_| DecodeError::InvalidHeaderBlock("a length is too large"))?;
    if len > rest.len() {
        return Err(DecodeError::InvalidHeaderBlock("a name or value runs past the block"));
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidHeaderBlock("a name or value is not UTF-8"))
}

/// The sending side's deflate context.
pub struct HeaderCompressor {
    deflate: Compress,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        HeaderCompressor::new()
    }
}

impl HeaderCompressor {
    /// A fresh context primed with the dictionary.
    pub fn new() -> HeaderCompressor {
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream: the stream error it reports is "already started".
        let _ = deflate.set_dictionary(&DICTIONARY);
        HeaderCompressor { deflate }
    }

    /// Compresses one header block, ending with a sync flush so the peer can decode it alone.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, EncodeError> {
        let block = headers.serialize()?;
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = block.as_slice();
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate.compress_vec(input, &mut out, FlushCompress::Sync).map_err(|_| EncodeError::Compression)?;
            let consumed = usize::try_from(self.deflate.total_in() - before).map_err(|_| EncodeError::Compression)?;
            input = input.get(consumed..).ok_or(EncodeError::Compression)?;
            // Done once every byte went in and the flush fit in the space we gave it.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The receiving side's inflate context.
pub struct HeaderDecompressor {
    inflate: Decompress,
    dictionary_set: bool,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        HeaderDecompressor::new()
    }
}

impl HeaderDecompressor {
    /// A fresh context; the dictionary goes in when the stream asks for it (zlib's FDICT).
    pub fn new() -> HeaderDecompressor {
        HeaderDecompressor { inflate: Decompress::new(true), dictionary_set: false }
    }

    /// Decompresses one header block and parses it. An error leaves the context unusable:
    /// the connection must end.
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Headers, DecodeError> {
        let mut out: Vec<u8> = Vec::with_capacity(compressed.len().saturating_mul(4).clamp(64, MAX_HEADER_BLOCK));
        let mut input = compressed;
        loop {
            if out.len() == out.capacity() {
                if out.len() > MAX_HEADER_BLOCK {
                    return Err(DecodeError::HeaderBlockTooLarge);
                }
                // Doubling, up to one byte past the limit: enough to tell "too large".
                let target = out.capacity().saturating_mul(2).clamp(64, MAX_HEADER_BLOCK + 1);
                out.reserve_exact(target.saturating_sub(out.len()));
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            let result = self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.inflate.total_in() - in_before).map_err(|_| DecodeError::Compression)?;
            input = input.get(consumed..).ok_or(DecodeError::Compression)?;
            match result {
                Err(error) if error.needs_dictionary().is_some() && !self.dictionary_set => {
                    self.inflate.set_dictionary(&DICTIONARY).map_err(|_| DecodeError::Compression)?;
                    self.dictionary_set = true;
                }
                Err(_) => return Err(DecodeError::Compression),
                // The peer ended its zlib stream; later blocks will fail, this one is whole.
                Ok(Status::StreamEnd) => break,
                Ok(Status::Ok | Status::BufError) => {
                    let progressed = consumed > 0 || out.len() > out_before;
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                    if !progressed && out.len() < out.capacity() {
                        return Err(DecodeError::Compression);
                    }
                }
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(DecodeError::HeaderBlockTooLarge);
            }
        }
        if out.len() > MAX_HEADER_BLOCK {
            return Err(DecodeError::HeaderBlockTooLarge);
        }
        Headers::parse(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port_forward_headers(stream_type: &str) -> Headers {
        Headers::from_pairs([("streamtype", stream_type), ("port", "80"), ("requestid", "0")])
    }

    #[test]
    fn uncompressed_block_layout() {
        // §2.6.10: count, then (length, name, length, value) per pair, all lengths u32 BE.
        let block = Headers::from_pairs([("port", "80")]).serialize().unwrap();
        assert_eq!(block, b"\0\0\0\x01\0\0\0\x04port\0\0\0\x0280");
        assert_eq!(Headers::parse(&block).unwrap(), Headers::from_pairs([("port", "80")]));
        assert_eq!(Headers::default().serialize().unwrap(), [0, 0, 0, 0]);
    }

    #[test]
    fn bad_blocks_are_errors() {
        for bad in [
            &b""[..],
            b"\0\0\0\x01",
            b"\0\0\0\x01\0\0\0\x04por",
            b"\0\0\0\x01\0\0\0\x00\0\0\0\x00",
            b"\0\0\0\x01\0\0\0\x01p\xff\xff\xff\xff",
            b"\0\0\0\x00x",
            b"\xff\xff\xff\xff",
            b"\0\0\0\x01\0\0\0\x01\xff\0\0\0\0",
        ] {
            assert!(Headers::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_context_per_direction_carries_across_blocks() {
        let mut compressor = HeaderCompressor::new();
        let mut decompressor = HeaderDecompressor::new();
        let first = compressor.compress(&port_forward_headers("error")).unwrap();
        // zlib header with FDICT set, then the dictionary's Adler-32.
        assert_eq!(first[0], 0x78);
        assert_eq!(first[1] & 0x20, 0x20, "FDICT");
        assert_eq!(&first[2..6], [0xe3, 0xc6, 0xa7, 0xc2]);
        assert_eq!(decompressor.decompress(&first).unwrap(), port_forward_headers("error"));
        let second = compressor.compress(&port_forward_headers("data")).unwrap();
        // The second block refers back into the first: smaller, and no zlib header of its own.
        assert!(second.len() < first.len(), "{second:?} vs {first:?}");
        assert_eq!(decompressor.decompress(&second).unwrap(), port_forward_headers("data"));
        // A fresh context cannot read it.
        assert!(HeaderDecompressor::new().decompress(&second).is_err());
    }

    #[test]
    fn a_bomb_is_refused() {
        let big = "x".repeat(MAX_HEADER_BLOCK);
        let headers = Headers::from_pairs([("a", big.as_str())]);
        assert_eq!(headers.serialize(), Err(EncodeError::HeadersTooLarge));
        // Build the oversized block by hand and compress it with a raw primed context.
        let mut block = Vec::new();
        block.extend_from_slice(&1u32.to_be_bytes());
        block.extend_from_slice(&1u32.to_be_bytes());
        block.push(b'a');
        block.extend_from_slice(&(4 * MAX_HEADER_BLOCK as u32).to_be_bytes());
        block.extend(std::iter::repeat_n(b'x', 4 * MAX_HEADER_BLOCK));
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(&DICTIONARY).unwrap();
        let mut compressed = Vec::with_capacity(block.len());
        deflate.compress_vec(&block, &mut compressed, FlushCompress::Sync).unwrap();
        assert!(compressed.len() < 4096, "highly compressible: {}", compressed.len());
        assert_eq!(HeaderDecompressor::new().decompress(&compressed), Err(DecodeError::HeaderBlockTooLarge));
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(HeaderDecompressor::new().decompress(b"\x00\x01\x02\x03"), Err(DecodeError::Compression));
        assert!(HeaderDecompressor::new().decompress(b"").is_err());
    }
}
