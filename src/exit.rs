//! Exit statuses of every command, in one place (sysexits where one fits).

/// Exit status: every host answered.
pub const EXIT_OK: u8 = 0;
/// Exit status: some host never answered.
pub const EXIT_NO_REPLY: u8 = 1;
/// Exit status: some host could not be resolved.
pub const EXIT_UNRESOLVED: u8 = 2;
/// Exit status: bad arguments or configuration (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit status: no permission to open ICMP sockets (EX_NOPERM).
pub const EXIT_NOPERM: u8 = 77;
/// Exit status: any other failure.
pub const EXIT_FAILURE: u8 = 70;
