//! The TUN device: create it, address it, route the test ranges into it — and refuse to do any
//! of that outside a network namespace that holds nothing but `lo`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

/// The test ranges; nothing else is ever routed into the device.
pub const V4_ADDR: &str = "198.18.0.1/15";
pub const V4_NET: &str = "198.18.0.0/15";
pub const V6_ADDR: &str = "2001:db8::1/32";
pub const V6_NET: &str = "2001:db8::/32";

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("device name {0:?} must be 1..=15 ASCII alphanumerics")]
    BadName(String),
    #[error(
        "refusing to run: this network namespace has interfaces besides lo ({0}); \
         start the responder with `ip netns exec NS` in a namespace of its own"
    )]
    NotIsolated(String),
    #[error("listing interfaces in /sys/class/net: {0}")]
    ListInterfaces(std::io::Error),
    #[error("opening /dev/net/tun: {0}")]
    Open(std::io::Error),
    #[error("creating TUN device {name}: {source}")]
    Create {
        name: String,
        source: std::io::Error,
    },
    #[error("running `ip {args}`: {message}")]
    Ip { args: String, message: String },
}

/// Check that the namespace holds only `lo` (and, on a restart, our own device), so that
/// the test ranges can never leave this machine.
pub fn check_isolated(device: &str) -> Result<(), TunError> {
    let mut others = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net").map_err(TunError::ListInterfaces)? {
        let name = entry.map_err(TunError::ListInterfaces)?.file_name();
        let name = name.to_string_lossy();
        if name != "lo" && name != device {
            others.push(name.into_owned());
        }
    }
    if others.is_empty() {
        Ok(())
    } else {
        others.sort();
        Err(TunError::NotIsolated(others.join(", ")))
    }
}

/// Create the non-persistent TUN device `name` (IFF_TUN | IFF_NO_PI): it disappears with the fd.
pub fn create(name: &str) -> Result<File, TunError> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || !name.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(TunError::BadName(name.to_string()));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(TunError::Open)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives for the whole call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(TunError::Create {
            name: name.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(file)
}

fn ip(args: &[&str]) -> Result<(), TunError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| TunError::Ip {
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TunError::Ip {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Address the device, bring it (and lo) up, route the test ranges into it.
pub fn configure(name: &str) -> Result<(), TunError> {
    ip(&["link", "set", "lo", "up"])?;
    ip(&["addr", "replace", V4_ADDR, "dev", name])?;
    ip(&["-6", "addr", "replace", V6_ADDR, "dev", name, "nodad"])?;
    // The largest MTU, so big probes arrive whole: the responder does not reassemble fragments.
    ip(&["link", "set", name, "mtu", "65535"])?;
    ip(&["link", "set", name, "up"])?;
    ip(&["route", "replace", V4_NET, "dev", name])?;
    ip(&["-6", "route", "replace", V6_NET, "dev", name])?;
    Ok(())
}
