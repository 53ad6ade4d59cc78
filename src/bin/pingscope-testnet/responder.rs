//! The event loop: read echo requests from the TUN device, decide with the profiles, hold each
//! answer in one timer heap until it is due, send it, and log what happened.
//!
//! One thread, one `poll` over three fds: the device, a `timerfd` armed (absolute, CLOCK_MONOTONIC)
//! for the earliest due answer, and a `signalfd`. So answers due together leave together, and the
//! measured send error (actual minus scheduled) is what a prober sees on top of the profile delay,
//! apart from the kernel's own hand-over into and out of the device, which this does not measure.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::logline::{LogLine, TimingReport};
use crate::packet::{self, EchoRequest};
use crate::path::PathState;
use crate::profile::Profiles;
use crate::tap::Tap;
use crate::tcp::{Connections, Segment};
use crate::udp::Datagram;

mod handle;

/// What the destination is asked for.
enum Kind<'a> {
    Echo(EchoRequest),
    Udp(Datagram<'a>),
    Tcp(Segment<'a>),
}

/// Answers held at once; past this a request is logged `overflow` and not answered.
const MAX_PENDING: usize = 100_000;
/// Timing samples kept for the percentiles.
const MAX_SAMPLES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        source: nix::Error,
    },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
}

fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> RunError {
    move |source| RunError::Sys { op, source }
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { op, source }
}

struct Job {
    due: u64,
    order: u64,
    arrived: u64,
    packet: Vec<u8>,
    line: LogLine,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    // Reversed: BinaryHeap is a max-heap and the earliest due must come out first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

fn now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The responder's state.
pub struct Responder {
    tun: File,
    tap: Option<Tap>,
    profiles: Profiles,
    // Re-read on SIGHUP, so a test can make a host stop answering and come back.
    profiles_path: Option<std::path::PathBuf>,
    log: BufWriter<File>,
    stats_path: Option<std::path::PathBuf>,
    heap: BinaryHeap<Job>,
    paths: PathState,
    connections: Connections,
    order: u64,
    ident: u16,
    errors_ns: Vec<u64>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("pending", &self.heap.len())
            .finish()
    }
}

impl Responder {
    pub fn new(
        tun: File,
        tap: Option<Tap>,
        profiles: Profiles,
        log: File,
        stats_path: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            tun,
            tap,
            paths: PathState::new(profiles.seed(), now_ns()),
            connections: Connections::default(),
            profiles,
            profiles_path: None,
            log: BufWriter::new(log),
            stats_path,
            heap: BinaryHeap::new(),
            order: 0,
            ident: 0,
            errors_ns: Vec::new(),
        }
    }

    /// Re-read the profiles from `path` on SIGHUP (a file that fails to load is logged and the
    /// profiles in use stay).
    pub fn reload_from(mut self, path: std::path::PathBuf) -> Self {
        self.profiles_path = Some(path);
        self
    }

    fn reload_profiles(&mut self) {
        let Some(path) = &self.profiles_path else {
            return;
        };
        match Profiles::load(path) {
            Ok(p) => {
                self.paths = PathState::new(p.seed(), now_ns());
                self.profiles = p;
                tracing::info!(file = %path.display(), "profiles reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "profile reload failed; the profiles in use stay"),
        }
    }

    /// Block SIGTERM/SIGINT/SIGUSR1/SIGHUP and return the fd that delivers them.
    pub fn signals() -> Result<SignalFd, RunError> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGUSR1);
        mask.add(Signal::SIGHUP);
        mask.thread_block().map_err(sys("blocking signals"))?;
        SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(sys("creating signalfd"))
    }

    /// Run until SIGTERM or SIGINT; the log and timing report are complete when this returns.
    pub fn run(&mut self, signals: &SignalFd) -> Result<(), RunError> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(sys("creating timerfd"))?;
        let mut buf = vec![0u8; 65_536];
        let mut lines = Vec::new();
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.tun.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: timer.as_fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: signals.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: fds is a valid array of three pollfd for the whole call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RunError::Io {
                    op: "poll",
                    source: e,
                });
            }
            if fds[1].revents != 0 {
                // Drain the expiry count; EAGAIN just means it was already read.
                let _ = nix::unistd::read(timer.as_fd(), &mut [0u8; 8]);
            }
            if fds[0].revents != 0 {
                self.read_requests(&mut buf, &mut lines)?;
            }
            self.send_due(&mut lines);
            match self.heap.peek() {
                Some(job) => {
                    let due = TimeSpec::from_duration(Duration::from_nanos(job.due.max(1)));
                    timer
                        .set(
                            Expiration::OneShot(due),
                            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                        )
                        .map_err(sys("arming timerfd"))?;
                }
                None => timer.unset().map_err(sys("disarming timerfd"))?,
            }
            self.write_lines(&mut lines)?;
            if fds[2].revents != 0 {
                while let Ok(Some(info)) = signals.read_signal() {
                    if info.ssi_signo == Signal::SIGUSR1 as u32 {
                        self.report()?;
                    } else if info.ssi_signo == Signal::SIGHUP as u32 {
                        self.reload_profiles();
                    } else {
                        self.shutdown(&mut lines)?;
                        return Ok(());
                    }
                }
            }
        }
    }

    fn read_requests(&mut self, buf: &mut [u8], lines: &mut Vec<LogLine>) -> Result<(), RunError> {
        // Bounded so a flood cannot starve the sends that are due.
        for _ in 0..256 {
            let n = match self.tun.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(RunError::Io {
                        op: "reading the TUN device",
                        source: e,
                    });
                }
            };
            let read_ns = now_ns();
            let Some(pkt) = buf.get(..n) else { continue };
            let stamp = self.tap.as_mut().and_then(|tap| {
                tap.drain();
                tap.take(pkt, read_ns)
            });
            let Some(ip) = packet::parse_ip(pkt) else {
                continue;
            };
            let arrived = stamp.unwrap_or(read_ns);
            self.handle(&ip, arrived, stamp.map(|s| read_ns - s), lines);
        }
        Ok(())
    }

    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    /// Hold `packet` (`copies` of it) on the timer heap until `arrived + delay`; logged when sent.
    fn schedule(
        &mut self,
        mut line: LogLine,
        packet: Option<Vec<u8>>,
        arrived: u64,
        delay: Duration,
        copies: u32,
        lines: &mut Vec<LogLine>,
    ) {
        let Some(packet) = packet else {
            line.action = "misconfigured";
            lines.push(line);
            return;
        };
        if self.heap.len() >= MAX_PENDING {
            line.action = "overflow";
            lines.push(line);
            return;
        }
        let delay_ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        line.copies = copies;
        line.scheduled_delay_ns = Some(delay_ns);
        self.order += 1;
        self.heap.push(Job {
            due: arrived.saturating_add(delay_ns),
            order: self.order,
            arrived,
            packet,
            line,
        });
    }

    fn send_due(&mut self, lines: &mut Vec<LogLine>) {
        while self.heap.peek().is_some_and(|j| j.due <= now_ns()) {
            let Some(mut job) = self.heap.pop() else {
                break;
            };
            let sent = now_ns();
            let mut ok = 0;
            for _ in 0..job.line.copies {
                // A full device queue drops the copy; that is counted in `copies`, not retried.
                if self.tun.write(&job.packet).is_ok() {
                    ok += 1;
                }
            }
            if ok == 0 {
                job.line.action = "send_failed";
            }
            job.line.copies = ok;
            job.line.actual_delay_ns = Some(sent.saturating_sub(job.arrived));
            if self.errors_ns.len() < MAX_SAMPLES {
                self.errors_ns.push(sent.saturating_sub(job.due));
            }
            lines.push(job.line);
        }
    }

    fn write_lines(&mut self, lines: &mut Vec<LogLine>) -> Result<(), RunError> {
        if lines.is_empty() {
            return Ok(());
        }
        for line in lines.drain(..) {
            serde_json::to_writer(&mut self.log, &line).map_err(|e| RunError::Io {
                op: "writing the log",
                source: e.into(),
            })?;
            self.log.write_all(b"\n").map_err(io("writing the log"))?;
        }
        self.log.flush().map_err(io("flushing the log"))
    }

    /// Percentiles of the send error so far (nearest rank).
    pub fn timing(&self) -> TimingReport {
        let mut v = self.errors_ns.clone();
        v.sort_unstable();
        let rank = |q: f64| -> u64 {
            if v.is_empty() {
                return 0;
            }
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[i]
        };
        TimingReport {
            r#type: "timing",
            samples: v.len(),
            p50_ns: rank(0.50),
            p99_ns: rank(0.99),
            max_ns: v.last().copied().unwrap_or(0),
        }
    }

    fn report(&self) -> Result<(), RunError> {
        let line = serde_json::to_string(&self.timing()).map_err(|e| RunError::Io {
            op: "encoding the timing report",
            source: e.into(),
        })?;
        tracing::info!(report = %line, "timing");
        if let Some(path) = &self.stats_path {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io("opening the stats file"))?;
            writeln!(f, "{line}").map_err(io("writing the stats file"))?;
        }
        Ok(())
    }

    /// Answers still held are abandoned and logged as such, so every request has its line.
    fn shutdown(&mut self, lines: &mut Vec<LogLine>) -> Result<(), RunError> {
        while let Some(mut job) = self.heap.pop() {
            job.line.action = "abandoned";
            job.line.copies = 0;
            lines.push(job.line);
        }
        self.write_lines(lines)?;
        self.log
            .get_ref()
            .sync_all()
            .map_err(io("syncing the log"))?;
        self.report()
    }
}
