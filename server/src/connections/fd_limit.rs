//! The open-files limit. Every connection is a file descriptor; with the
//! common soft limit of 1024, the caps of two listeners could not both be
//! reached, and running out makes `accept` (and the database pool, and
//! the chain client) fail for everyone.

use crate::config::Config;

/// Descriptors kept for everything but client connections: listeners, the
/// database pool's spare, RPC and websocket clients, log files.
const HEADROOM: u64 = 128;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and warns when the
/// connection caps of every listener, plus headroom, could still exceed it.
pub(crate) fn raise_open_files_limit(config: &Config) {
    let listeners = 2 + u64::from(config.monitoring.metrics_port.is_some());
    let needed = config.server.max_connections as u64 * listeners
        + u64::from(config.database.max_connections)
        + HEADROOM;
    match raise() {
        Ok((before, limit)) => {
            if limit > before {
                tracing::info!(before, limit, "raised the open-files limit");
            }
            if limit < needed {
                tracing::warn!(
                    limit,
                    needed,
                    "the open-files limit is below server.max_connections on every listener plus headroom; \
                     raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower server.max_connections"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open-files limit"),
    }
}

/// The soft limit before and after raising it to the hard limit.
#[cfg(unix)]
// rlim_t is u64 on Linux, but not on every unix.
#[allow(clippy::unnecessary_cast)]
fn raise() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok((before as u64, limit.rlim_cur as u64))
}

#[cfg(not(unix))]
fn raise() -> std::io::Result<(u64, u64)> {
    Err(std::io::Error::other(
        "no open-files limit on this platform",
    ))
}
