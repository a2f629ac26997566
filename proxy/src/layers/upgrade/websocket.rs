//! The two WebSocket handshake fields that differ between HTTP/1.1 (RFC 6455 §4) and HTTP/2
//! (RFC 8441 §5, which drops them): an HTTP/1.1 server needs a `Sec-WebSocket-Key`, and an
//! HTTP/1.1 client checks the `Sec-WebSocket-Accept` made from its own key. A sidecar that
//! turns one form into the other supplies them.

use aws_lc_rs::digest;
use http::header::{self, HeaderMap, HeaderValue};

/// RFC 6455 §1.3: the GUID appended to the key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Adds a fresh random `Sec-WebSocket-Key` (16 bytes, base64; RFC 6455 §4.1) and
/// `Sec-WebSocket-Version: 13` when the request has none.
pub fn ensure_key(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SEC_WEBSOCKET_KEY) {
        let mut nonce = [0u8; 16];
        for b in &mut nonce {
            *b = fastrand::u8(..);
        }
        if let Ok(v) = HeaderValue::from_str(&base64(&nonce)) {
            headers.insert(header::SEC_WEBSOCKET_KEY, v);
        }
    }
    headers
        .entry(header::SEC_WEBSOCKET_VERSION)
        .or_insert(HeaderValue::from_static("13"));
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key ‖ GUID)) (RFC 6455 §4.2.2 item 5.4).
pub fn accept(key: &HeaderValue) -> HeaderValue {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID);
    let encoded = base64(ctx.finish().as_ref());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_is_the_rfc_6455_example() {
        // RFC 6455 §1.3.
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept(&key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc, "{raw:?}");
        }
    }

    #[test]
    fn a_key_is_made_only_when_missing() {
        let mut h = HeaderMap::new();
        ensure_key(&mut h);
        let key = h[header::SEC_WEBSOCKET_KEY].to_str().unwrap().to_string();
        assert_eq!(key.len(), 24, "16 bytes in base64: {key}");
        assert_eq!(h[header::SEC_WEBSOCKET_VERSION], "13");
        ensure_key(&mut h);
        assert_eq!(h[header::SEC_WEBSOCKET_KEY], key.as_str());
    }
}
