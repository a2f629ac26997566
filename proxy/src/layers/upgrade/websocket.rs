//! The two WebSocket handshake fields that differ between HTTP/1.1 (RFC 6455 §4) and HTTP/2
//! (RFC 8441 §5, which drops them): an HTTP/1.1 server needs a `Sec-WebSocket-Key`, and an
//! HTTP/1.1 client checks the `Sec-WebSocket-Accept` made from its own key. A sidecar that
//! turns one form into the other supplies them.

use http::header::{self, HeaderMap, HeaderValue};
use ring::digest;

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
        if let Ok(v) = HeaderValue::from_str(&encode(&nonce)) {
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
    let encoded = encode(ctx.finish().as_ref());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Standard base64 with padding (RFC 4648 §4), as RFC 6455 uses it.
fn encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
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
