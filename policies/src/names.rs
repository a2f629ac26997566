//! Kubernetes name rules (DNS-1123), shared by the checks and the compiler.

/// A Kubernetes DNS-1123 label: `[a-z0-9-]`, 1 to 63, alphanumeric at both ends.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes DNS-1123 subdomain: DNS-1123 labels joined by `.`, at most 253.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}
