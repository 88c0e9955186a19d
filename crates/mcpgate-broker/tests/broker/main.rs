//! The broker's integration tests, one binary.

mod cimd;
mod flow;
mod harness;
mod metadata;
mod upstream;
