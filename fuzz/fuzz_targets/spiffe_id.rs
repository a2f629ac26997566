//! SPIFFE ID parsing (URI SANs of peer certificates, CSRs, `--identity`, policy principals).
//! Properties: what parses is exactly its input, `parse(to_string())` round-trips (also
//! through serde), its parts are consistent, and its trust domain parses on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustmesh_certs::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(td) = TrustDomain::parse(s) {
        assert_eq!(TrustDomain::parse(&td.to_string()).as_ref(), Ok(&td));
        assert_eq!(td.id_string(), format!("spiffe://{}", td.as_str()));
    }
    let Ok(id) = SpiffeId::parse(s) else {
        return;
    };
    assert_eq!(id.as_str(), s, "a parsed ID is its input, unchanged");
    let text = id.to_string();
    assert_eq!(
        SpiffeId::parse(&text).as_ref(),
        Ok(&id),
        "{s:?} does not round-trip"
    );
    let json = serde_json::to_string(&id).unwrap_or_default();
    assert_eq!(
        serde_json::from_str::<SpiffeId>(&json).ok().as_ref(),
        Some(&id)
    );
    let td = id.trust_domain();
    assert_eq!(TrustDomain::parse(id.trust_domain_str()).as_ref(), Ok(&td));
    assert!(id.path().starts_with('/') && id.path().len() > 1, "{s:?}");
    assert_eq!(
        format!("spiffe://{}{}", id.trust_domain_str(), id.path()),
        s
    );
    assert_eq!(format!("spiffe://{}", id.principal()), s);
    assert_eq!(SpiffeId::new(&td, id.path()).as_ref(), Ok(&id));
    if let (Some(ns), Some(sa)) = (id.namespace(), id.service_account()) {
        assert_eq!(
            SpiffeId::from_service_account(&td, ns, sa).as_ref(),
            Ok(&id)
        );
    }
});
