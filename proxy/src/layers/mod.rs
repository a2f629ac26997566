//! The HTTP pieces both stacks are built from: bodies, header rules, limits, deadlines, the connection
//! driver, the plain-HTTP upstream client and the one map from errors to responses.

pub mod body;
pub mod deadline;
pub mod detect;
pub mod drive;
pub mod error;
pub mod h2c;
pub mod headers;
pub mod limits;
pub mod rescue;
pub mod upstream;
