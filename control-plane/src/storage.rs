//! Storage layer, the lowest of the control plane: the data folder (`--data-dir`) that every
//! replica shares outside Kubernetes (file names [`paths`], safe writes [`files`], the
//! folder's lock [`lock`]), and in Kubernetes mode the API client ([`kube`]) and the shared
//! objects in the API ([`kube_state`]). It imports nothing from the layers above (command line,
//! API, domain).

pub mod files;
pub mod kube;
pub mod kube_state;
pub mod lock;
pub mod paths;
