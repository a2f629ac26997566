//! trustmesh control plane
fn main() {}
