//! Exit statuses of the binary, shared by `ping`, `serve` and `check-config`.

/// Every host answered (or the command succeeded).
pub const OK: u8 = 0;
/// Some host never answered.
pub const NO_REPLY: u8 = 1;
/// Some host could not be resolved.
pub const UNRESOLVED: u8 = 2;
/// Bad arguments or configuration (EX_USAGE).
pub const USAGE: u8 = 64;
/// Any other failure (EX_SOFTWARE).
pub const FAILURE: u8 = 70;
/// No permission to open ICMP sockets (EX_NOPERM).
pub const NOPERM: u8 = 77;
