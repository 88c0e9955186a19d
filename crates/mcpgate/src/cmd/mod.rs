//! One module per subcommand.

pub mod check;
pub mod client;
pub mod explain;
pub mod idp;
pub mod serve;
