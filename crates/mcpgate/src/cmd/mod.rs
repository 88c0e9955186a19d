//! One module per subcommand.

pub mod audit;
pub mod check;
pub mod client;
pub mod entra_errors;
pub mod explain;
pub mod identifier;
pub mod idp;
pub mod pins;
pub mod serve;
pub mod shell;
pub mod stdio;
