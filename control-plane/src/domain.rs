//! Domain layer: what the control plane knows and decides, below the API ([`crate::api`]) and
//! above storage ([`crate::storage`]): the CA and its rotation ([`ca`]), bootstrap tokens
//! ([`tokens`]), Kubernetes ServiceAccount JWTs ([`k8s_jwt`]), the reserved identities
//! ([`reserved`]), the blocklist ([`blocklist`]), the trust state every replica follows
//! ([`trust`], from the data folder or the Kubernetes API), the policy source
//! ([`policy_source`]), snapshots and the proxies seen ([`snapshot`]), and the pod rewrite of
//! sidecar injection ([`inject`]). Nothing here imports the API or the command line.

pub mod blocklist;
pub mod ca;
pub mod discovery;
pub mod inject;
pub mod k8s_jwt;
pub mod policy_source;
pub mod reserved;
pub mod routes;
pub mod snapshot;
pub mod tokens;
pub mod trust;
pub mod used_tokens;
