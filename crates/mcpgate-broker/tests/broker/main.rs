//! The broker's integration tests, one binary.

mod attacks;
mod audit;
mod cimd;
mod consent;
mod flow;
mod harness;
mod metadata;
mod screenshots;
mod upstream;
