//! The sockets under both stacks: the shared accept loop, the IPv6 twins of the listeners and
//! the original destination of a connection iptables redirected.

pub mod accept;
pub mod listen;
pub mod original_dst;
