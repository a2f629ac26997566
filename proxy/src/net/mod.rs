//! The sockets under both stacks: the shared accept loop, the IPv6 twins of the listeners,
//! the original destination of a connection iptables redirected, and the open-files limit
//! every connection counts against (raised at start-up).

pub mod accept;
pub mod listen;
pub mod nofile;
pub mod original_dst;
