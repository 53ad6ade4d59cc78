//! Name resolution per address family (in progress: the resolver itself lands with the engine).

use serde::{Deserialize, Serialize};

/// Which addresses of a host to probe.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// One address: IPv4 when the host has one, else IPv6.
    #[default]
    Auto,
    /// One IPv4 address.
    Ip4,
    /// One IPv6 address.
    Ip6,
    /// Every address the host resolves to, both families.
    All,
}

impl Family {
    /// The config/query spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Ip4 => "ip4",
            Self::Ip6 => "ip6",
            Self::All => "all",
        }
    }
}
