//! proxy
fn main() {}
