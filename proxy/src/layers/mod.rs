//! The HTTP pieces both stacks are built from: bodies, header rules, limits, deadlines,
//! `Expect: 100-continue` across the hop, the connection driver, the plain-HTTP and h2c
//! upstream clients, the idle set of keep-alive HTTP/1.1 connections both pools keep, upgrades
//! and their tunnels, and the one map from errors to responses.

pub mod body;
pub mod deadline;
pub mod detect;
pub mod drive;
pub mod error;
pub mod expect;
pub mod h2c;
pub mod headers;
pub mod idle;
pub mod limits;
pub mod replay;
pub mod rescue;
pub mod upgrade;
pub mod upstream;
