//! The broker's integration tests, one binary.

mod cimd;
mod metadata;
mod upstream;
