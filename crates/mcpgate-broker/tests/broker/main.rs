//! The broker's integration tests, one binary.

mod attacks;
mod cimd;
mod consent;
mod flow;
mod harness;
mod metadata;
mod screenshots;
mod upstream;
