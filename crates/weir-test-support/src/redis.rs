//! [`RedisServer`]: a throwaway `redis-server` on a free loopback port, for tests.
//!
//! Each server binds `127.0.0.1` only, persists nothing (`--save '' --appendonly no`), keeps
//! its working directory (and its log, `redis.log`) in a fresh directory under the system temp
//! dir, and is killed (and its directory removed) when the handle is dropped.
//!
//! The `redis-server` binary comes from the Debian package of the same name, which
//! `scripts/test.sh` installs. When the binary is missing, [`RedisServer::start`] returns
//! `Ok(None)` so a developer without Redis can still run the rest of the suite, *unless* the
//! environment variable `WEIR_REQUIRE_REDIS` is set (to anything but empty or `0`), in which
//! case a missing binary is an error: the test command sets it, so CI can never skip the
//! Redis tests silently. `WEIR_REDIS_SERVER` may name another binary to run.
//!
//! ```no_run
//! # fn demo() -> std::io::Result<()> {
//! use weir_test_support::redis::RedisServer;
//! let Some(redis) = RedisServer::start()? else {
//!     eprintln!("redis-server not installed: skipping");
//!     return Ok(());
//! };
//! let url = redis.url(); // redis://127.0.0.1:PORT/
//! # let _ = url; Ok(()) }
//! ```

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that turns a missing `redis-server` into an error.
pub const REQUIRE_ENV: &str = "WEIR_REQUIRE_REDIS";
/// The environment variable naming the binary to run instead of `redis-server` from `PATH`.
pub const BINARY_ENV: &str = "WEIR_REDIS_SERVER";

/// How long a fresh server may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports to try when another process grabs the free port first.
const START_ATTEMPTS: usize = 3;

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl RedisServer {
    /// Start a server and wait until it answers `PING`.
    ///
    /// `Ok(None)` when the binary is not installed and `WEIR_REQUIRE_REDIS` is not set; an
    /// error when it is missing and required, or when the server does not come up.
    pub fn start() -> io::Result<Option<Self>> {
        let binary = std::env::var_os(BINARY_ENV)
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| OsString::from("redis-server"));
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&binary) {
                Ok(server) => return Ok(Some(server)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if required() {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!(
                                "{} not found, and {REQUIRE_ENV} is set so the Redis tests may not \
                                 be skipped: install the Debian package redis-server \
                                 (scripts/test.sh does)",
                                binary.to_string_lossy()
                            ),
                        ));
                    }
                    return Ok(None);
                }
                // Most likely the port was taken between probing and binding: try another one.
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    fn start_once(binary: &OsString) -> io::Result<Self> {
        let port = free_port()?;
        let dir = unique_temp_dir()?;
        let log = dir.join("redis.log");
        let spawned = Command::new(binary)
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .arg("--daemonize")
            .arg("no")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut server = Self {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Poll with `PING` until the server answers `+PONG`, it exits, or the deadline passes.
    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "redis-server on port {} exited at start ({status}); its log:\n{}",
                    self.addr.port(),
                    self.log_tail()
                )));
            }
            if ping(self.addr).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}; \
                         its log:\n{}",
                        self.addr.port(),
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server's working directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `WEIR_REQUIRE_REDIS` is set to something other than empty or `0`.
fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// A port nobody listens on right now (the OS picks it; a race with other processes is
/// possible, hence the retries in [`RedisServer::start`]).
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn unique_temp_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "weir-redis-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// One inline `PING`; `Ok(true)` on `+PONG`.
fn ping(addr: SocketAddr) -> io::Result<bool> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].starts_with(b"+PONG"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_cleans_up_on_drop() {
        let Some(server) = RedisServer::start().expect("start redis-server") else {
            eprintln!("redis-server not installed: skipping");
            return;
        };
        assert!(server.url().starts_with("redis://127.0.0.1:"));
        assert!(ping(server.addr()).expect("ping"));
        let (addr, dir) = (server.addr(), server.dir().to_path_buf());
        assert!(dir.is_dir());
        drop(server);
        assert!(!dir.exists(), "temp dir removed on drop");
        assert!(ping(addr).is_err(), "server killed on drop");
    }

    #[test]
    fn two_servers_get_distinct_ports() {
        let (Some(a), Some(b)) = (
            RedisServer::start().expect("start a"),
            RedisServer::start().expect("start b"),
        ) else {
            return;
        };
        assert_ne!(a.port(), b.port());
        assert_ne!(a.dir(), b.dir());
    }
}
