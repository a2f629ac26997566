//! What the proxy tells about the traffic it carries: access log, metrics, OTLP spans and the
//! trace context they share, and the run-time log filter.

pub mod access_log;
pub mod log_level;
pub mod metrics;
pub mod otlp;
pub mod request;
pub mod series;
pub mod trace;
