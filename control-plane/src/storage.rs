//! Storage layer, the lowest of the control plane: the data folder (`--data-dir`) that every
//! replica shares. File names ([`paths`]), safe writes ([`files`]) and the folder's lock
//! ([`lock`]). It imports nothing from the layers above (command line, API, domain).

pub mod files;
pub mod kube;
pub mod lock;
pub mod paths;
