//! The opaque-TCP preamble. `proxy/src/opaque.rs` reads it inline (two bytes, the big-endian
//! port on the peer's app) and authorizes the connection with the library's TCP request; the
//! proxy is not factored for a function-level fuzz, so this target fuzzes what the library
//! side offers, fed exactly as `inbound` feeds it: input = preamble (2 bytes), then an
//! address family byte and the caller's IP, then the caller's SPIFFE ID (as a verified peer
//! certificate would name it). A short preamble is a closed connection, as in the proxy.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use trustmesh_certs::SpiffeId;
use trustmesh_fuzz::{assert_same, callers, example_policies};
use trustmesh_policies::Request;

fuzz_target!(|data: &[u8]| {
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let port = u16::from_be_bytes([*hi, *lo]);
    let (ip, rest): (Option<IpAddr>, &[u8]) = match rest {
        [0, a, b, c, d, rest @ ..] => (Some(Ipv4Addr::new(*a, *b, *c, *d).into()), rest),
        [1, rest @ ..] if rest.len() >= 16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[..16]);
            (Some(Ipv6Addr::from(octets).into()), &rest[16..])
        }
        _ => (None, rest),
    };
    let peer = std::str::from_utf8(rest)
        .ok()
        .and_then(|s| SpiffeId::parse(s).ok());
    for compiled in example_policies() {
        for workload in compiled.registry().entries() {
            let policies = compiled.policies_for(workload);
            for caller in callers().iter().chain([&peer]) {
                let request = Request::tcp(caller.as_ref(), ip, port);
                let decision = policies.authorize(&request);
                assert_same(&decision, &policies.authorize(&request));
            }
        }
    }
});
