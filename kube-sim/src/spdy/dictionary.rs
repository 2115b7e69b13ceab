//! The SPDY/3 header compression dictionary (draft 3, §2.6.10.1): every zlib context of a
//! SPDY/3 connection starts from it, in both directions. Written here as the spec lays it out
//! (length-prefixed header names and values, then a run of common text) and assembled at
//! compile time; the test pins its length and the Adler-32 that zlib streams name it by.

/// Header names and values, each preceded by its length as a big-endian `u32`.
const WORDS: [&str; 65] = [
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
    "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
    "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
    "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public",
    "set-cookie", "keep-alive", "origin",
];

/// The text that follows the words, unprefixed: status codes, reason phrases, dates, types.
const TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The dictionary's length in bytes.
const LENGTH: usize = {
    let mut total = TAIL.len();
    let mut i = 0;
    while i < WORDS.len() {
        total += 4 + WORDS[i].len();
        i += 1;
    }
    total
};

/// The dictionary, as zlib's `deflateSetDictionary`/`inflateSetDictionary` take it.
pub const DICTIONARY: [u8; LENGTH] = {
    let mut out = [0u8; LENGTH];
    let mut at = 0;
    let mut i = 0;
    while i < WORDS.len() {
        let word = WORDS[i].as_bytes();
        // Every word is shorter than 256 bytes: three zero bytes, then the length.
        at += 3;
        out[at] = word.len() as u8;
        at += 1;
        let mut j = 0;
        while j < word.len() {
            out[at] = word[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    let tail = TAIL.as_bytes();
    let mut j = 0;
    while j < tail.len() {
        out[at] = tail[j];
        at += 1;
        j += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Adler-32 as RFC 1950 §8 defines it, so the check does not depend on the zlib backend.
    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in bytes {
            a = (a + u32::from(byte)) % 65_521;
            b = (b + a) % 65_521;
        }
        (b << 16) | a
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        // 1,423 bytes; a zlib stream primed with it carries DICTID e3 c6 a7 c2 after its
        // two-byte header, as kubectl's first header block does.
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
    }
}
