//! [`PostgresServer`]: a throwaway Postgres cluster on a free loopback port, for tests.
//!
//! Each server is a fresh cluster (`initdb` with trust authentication for the user `weir`,
//! locale C) in a new directory under the system temp dir, started with durability off
//! (`fsync`, `synchronous_commit` and `full_page_writes` off: a test database need not survive
//! a power cut), listening on `127.0.0.1` only and on a Unix socket in its own directory.
//! Tests that need isolation take a fresh database each ([`PostgresServer::create_database`],
//! [`PostgresServer::create_unique_database`]) on one server per test binary
//! ([`PostgresServer::shared`]), which keeps a suite to one `initdb`.
//!
//! The server runs under a small `sh` supervisor that holds the read end of a pipe whose write
//! end only this handle has: when the handle is dropped, or the test process exits in any way
//! (so also for the shared server, which is never dropped), the pipe closes and the supervisor
//! stops Postgres (a fast shutdown) and removes the directory.
//!
//! Binaries come from `WEIR_POSTGRES_BIN_DIR` if set, else the directory of `initdb` on `PATH`,
//! else the newest `/usr/lib/postgresql/*/bin` (where Debian's package `postgresql` puts them,
//! off `PATH`). `initdb` and `postgres` refuse to run as root: as root, both run as the system
//! user `postgres` (which the Debian package creates), and the directory is given to it.
//!
//! When no binaries are found, [`PostgresServer::start`] returns `Ok(None)` so a developer
//! without Postgres can still run the rest of the suite, *unless* `WEIR_REQUIRE_POSTGRES` is
//! set (to anything but empty or `0`): the test command sets it, so CI never skips silently.
//!
//! Talking to the server needs no client library: a few messages of the wire protocol (start-up
//! and simple query) are enough to probe readiness and create databases.
//!
//! ```no_run
//! # fn demo() -> std::io::Result<()> {
//! use weir_test_support::postgres::PostgresServer;
//! let Some(pg) = PostgresServer::shared()? else {
//!     eprintln!("postgres not installed: skipping");
//!     return Ok(());
//! };
//! let url = pg.create_unique_database("keys")?; // postgres://weir@127.0.0.1:PORT/keys_...
//! # let _ = url; Ok(()) }
//! ```

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that turns missing Postgres binaries into an error.
pub const REQUIRE_ENV: &str = "WEIR_REQUIRE_POSTGRES";
/// The environment variable naming the directory holding `initdb` and `postgres`.
pub const BIN_DIR_ENV: &str = "WEIR_POSTGRES_BIN_DIR";
/// The superuser every test cluster has (trust authentication, no password).
pub const USER: &str = "weir";

/// How long a fresh server may take to accept queries.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a dropped server may take to stop and clean up before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How many ports to try when another process grabs the free port first.
const START_ATTEMPTS: usize = 3;
/// Read and write timeout of the wire-protocol helper (`CREATE DATABASE` copies a template).
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs Postgres until its standard input closes, then stops it and removes the directory.
/// SIGINT is ignored so a Ctrl-C in the terminal still ends with the cleanup (Postgres, in
/// the same process group, gets the SIGINT itself and shuts down).
const SUPERVISOR: &str = r#"
trap '' INT
"$PG_BIN/postgres" -D "$PG_DIR/data" -p "$PG_PORT" -k "$PG_DIR" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_connections=200 \
    </dev/null >>"$PG_DIR/postgres.log" 2>&1 &
pid=$!
echo "$pid" >"$PG_DIR/postgres.pid"
cat >/dev/null
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$PG_DIR"
"#;

/// A running Postgres cluster, stopped (and its directory removed) on drop.
#[derive(Debug)]
pub struct PostgresServer {
    supervisor: Child,
    /// Closing it tells the supervisor to stop the server.
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    dir: PathBuf,
    bin_dir: PathBuf,
}

impl PostgresServer {
    /// Create a cluster, start it and wait until it accepts queries.
    ///
    /// `Ok(None)` when the binaries are not installed and `WEIR_REQUIRE_POSTGRES` is not set;
    /// an error when they are missing and required, or when the server does not come up.
    pub fn start() -> io::Result<Option<Self>> {
        let Some(bin_dir) = find_bin_dir().filter(|d| d.join("initdb").is_file()) else {
            if required() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "Postgres binaries (initdb, postgres) not found, and {REQUIRE_ENV} is set \
                         so the Postgres tests may not be skipped: install the Debian package \
                         postgresql (scripts/test.sh does), or point {BIN_DIR_ENV} at the \
                         directory holding initdb"
                    ),
                ));
            }
            return Ok(None);
        };
        let owner = run_as()?;
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&bin_dir, owner) {
                Ok(server) => return Ok(Some(server)),
                // Most likely the port was taken between probing and binding: try another one.
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("postgres did not start")))
    }

    /// One server for the whole test binary, started on first use and stopped when the
    /// process exits. Give each test its own database on it.
    pub fn shared() -> io::Result<Option<&'static Self>> {
        static SHARED: OnceLock<Result<Option<PostgresServer>, String>> = OnceLock::new();
        match SHARED.get_or_init(|| Self::start().map_err(|e| e.to_string())) {
            Ok(server) => Ok(server.as_ref()),
            Err(message) => Err(io::Error::other(message.clone())),
        }
    }

    fn start_once(bin_dir: &Path, owner: Option<(u32, u32)>) -> io::Result<Self> {
        let dir = unique_temp_dir("weir-postgres")?;
        if let Some((uid, gid)) = owner
            && let Err(e) = std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
        {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        if let Err(e) = init_cluster(bin_dir, &dir, owner) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let port = free_port()?;
        let mut supervisor = Command::new("sh");
        supervisor
            .arg("-c")
            .arg(SUPERVISOR)
            .env("PG_BIN", bin_dir)
            .env("PG_DIR", &dir)
            .env("PG_PORT", port.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = owner {
            supervisor.uid(uid).gid(gid);
        }
        let mut child = match supervisor.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut server = Self {
            stdin: child.stdin.take(),
            supervisor: child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir,
            bin_dir: bin_dir.to_path_buf(),
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Poll with `SELECT 1` until it succeeds, the server fails, or the deadline passes.
    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.supervisor.try_wait()? {
                return Err(self.start_error(&format!("its supervisor exited ({status})")));
            }
            let probe = simple_query(self.addr, "postgres", "SELECT 1");
            if probe.is_ok() {
                return Ok(());
            }
            // Our own probe, made while the server starts, is answered with `FATAL: the
            // database system is starting up`: that one is not a failed start.
            let failed = self
                .log_tail()
                .lines()
                .any(|l| l.contains("FATAL:") && !l.contains("is starting up"));
            if failed {
                return Err(self.start_error("it failed at start"));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "postgres on port {} did not accept queries within {READY_TIMEOUT:?} \
                         (last probe: {probe:?}); its log:\n{}",
                        self.addr.port(),
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn start_error(&self, what: &str) -> io::Error {
        io::Error::other(format!(
            "postgres on port {}: {what}; its log:\n{}",
            self.addr.port(),
            self.log_tail()
        ))
    }

    /// `postgres://weir@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `name` on this server.
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://{USER}@{}/{name}", self.addr)
    }

    /// Create database `name` (lowercase letters, digits and `_`, at most 63) and return its
    /// URL.
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "database name {name:?} must be 1 to 63 lowercase letters, digits or _, \
                     not starting with a digit"
                ),
            ));
        }
        simple_query(self.addr, "postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url_for(name))
    }

    /// Create a database no other call in this process gets (`PREFIX_PID_N`) and return its
    /// URL. `prefix` follows the rules of [`PostgresServer::create_database`].
    pub fn create_unique_database(&self, prefix: &str) -> io::Result<String> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("{prefix}_{}_{n}", std::process::id()))
    }

    /// Run `sql` (one or more statements, no results) in `database` as the superuser.
    pub fn execute(&self, database: &str, sql: &str) -> io::Result<()> {
        simple_query(self.addr, database, sql)
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The cluster's directory (data in `data/`, log in `postgres.log`; removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `initdb` and `postgres` were found.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // EOF on the supervisor's stdin: it stops Postgres and removes the directory.
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.supervisor.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        if matches!(self.supervisor.try_wait(), Ok(None)) {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join("postgres.pid")) {
                let _ = Command::new("kill")
                    .args(["-KILL", pid.trim()])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = self.supervisor.kill();
            let _ = self.supervisor.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `initdb` into `dir/data`: trust authentication for [`USER`], UTF-8, locale C, no fsync.
fn init_cluster(bin_dir: &Path, dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    let mut initdb = Command::new(bin_dir.join("initdb"));
    initdb
        .arg("-D")
        .arg(dir.join("data"))
        .args([
            "-U",
            USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir(dir)
        .stdin(Stdio::null());
    if let Some((uid, gid)) = owner {
        initdb.uid(uid).gid(gid);
    }
    let out = initdb.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "initdb in {} failed ({}): {}{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// Whether `WEIR_REQUIRE_POSTGRES` is set to something other than empty or `0`.
fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `WEIR_POSTGRES_BIN_DIR`, else the directory of `initdb` on `PATH` (symlinks resolved, so
/// `postgres` is found beside the real one), else the newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("initdb"))
            .find(|p| p.is_file())
    });
    if let Some(initdb) = on_path {
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        return real.parent().map(Path::to_path_buf);
    }
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// `Some((uid, gid))` of the `postgres` user when running as root (Postgres refuses root),
/// `None` otherwise.
fn run_as() -> io::Result<Option<(u32, u32)>> {
    if effective_uid()? != 0 {
        return Ok(None);
    }
    let entry = Command::new("getent")
        .args(["passwd", "postgres"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .or_else(|| {
            std::fs::read_to_string("/etc/passwd")
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find(|l| l.starts_with("postgres:"))
                        .map(str::to_string)
                })
        });
    let ids = entry.and_then(|line| {
        let fields: Vec<&str> = line.trim().split(':').collect();
        Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
    });
    ids.map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "running as root, which initdb and postgres refuse, and there is no `postgres` \
             user to run them as: install the Debian package postgresql (it creates the user)",
        )
    })
}

/// The effective uid: the owner of `/proc/self`, or what `id -u` says.
fn effective_uid() -> io::Result<u32> {
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return Ok(meta.uid());
    }
    let out = Command::new("id").arg("-u").output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("cannot tell the current uid from `id -u`: {e}")))
}

/// A port nobody listens on right now (the OS picks it; a race with other processes is
/// possible, hence the retries in [`PostgresServer::start`]).
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn unique_temp_dir(prefix: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Connect as [`USER`] to `database` (trust authentication), run `sql` with the simple-query
/// protocol, and fail with the server's error if it reports one.
fn simple_query(addr: SocketAddr, database: &str, sql: &str) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(QUERY_TIMEOUT))?;
    stream.set_write_timeout(Some(QUERY_TIMEOUT))?;

    // StartupMessage: length, protocol 3.0, then name/value pairs, then a final NUL.
    let mut startup = Vec::with_capacity(64);
    startup.extend_from_slice(&196_608_i32.to_be_bytes());
    for part in ["user", USER, "database", database] {
        startup.extend_from_slice(part.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    write_message(&mut stream, None, &startup)?;
    loop {
        match read_message(&mut stream)? {
            (b'R', body) if body.get(..4) == Some(&[0, 0, 0, 0][..]) => {}
            (b'R', _) => {
                return Err(io::Error::other(
                    "the server asks for a password, but test clusters use trust authentication",
                ));
            }
            (b'E', body) => return Err(server_error(&body)),
            (b'Z', _) => break,
            _ => {} // parameter status, backend key data, notices
        }
    }

    let mut query = sql.as_bytes().to_vec();
    query.push(0);
    write_message(&mut stream, Some(b'Q'), &query)?;
    let mut failure = None;
    loop {
        match read_message(&mut stream)? {
            (b'E', body) => failure = Some(server_error(&body)),
            (b'Z', _) => break,
            _ => {}
        }
    }
    let _ = write_message(&mut stream, Some(b'X'), &[]);
    failure.map_or(Ok(()), Err)
}

fn write_message(stream: &mut TcpStream, tag: Option<u8>, body: &[u8]) -> io::Result<()> {
    let len = i32::try_from(body.len() + 4)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
    let mut message = Vec::with_capacity(body.len() + 5);
    message.extend(tag);
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(body);
    stream.write_all(&message)
}

fn read_message(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header)?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len.saturating_sub(4))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative message length"))?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok((header[0], body))
}

/// An ErrorResponse as `SEVERITY CODE: message`.
fn server_error(body: &[u8]) -> io::Error {
    let (mut severity, mut code, mut message) = ("ERROR".to_string(), String::new(), String::new());
    for field in body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let value = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'S' => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    io::Error::other(format!("postgres {severity} {code}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_creates_databases_and_cleans_up_on_drop() {
        let Some(server) = PostgresServer::start().expect("start postgres") else {
            eprintln!("postgres not installed: skipping");
            return;
        };
        assert!(server.url().starts_with("postgres://weir@127.0.0.1:"));
        let url = server
            .create_database("made_here")
            .expect("create database");
        assert!(url.ends_with("/made_here"), "{url}");
        server
            .execute(
                "made_here",
                "CREATE TABLE t (x INT); INSERT INTO t VALUES (1)",
            )
            .expect("usable");
        let dup = server.create_database("made_here").expect_err("exists");
        assert!(dup.to_string().contains("42P04"), "{dup}");
        let bad = server.create_database("Bad-Name").expect_err("invalid");
        assert_eq!(bad.kind(), io::ErrorKind::InvalidInput);
        let unique = server.create_unique_database("u").expect("unique");
        assert_ne!(unique, server.create_unique_database("u").expect("unique"));

        let (addr, dir) = (server.addr(), server.dir().to_path_buf());
        assert!(dir.join("data").is_dir());
        drop(server);
        assert!(!dir.exists(), "directory removed on drop");
        assert!(
            simple_query(addr, "postgres", "SELECT 1").is_err(),
            "server stopped on drop"
        );
    }

    #[test]
    fn shared_is_one_server() {
        let (Some(a), Some(b)) = (
            PostgresServer::shared().expect("shared"),
            PostgresServer::shared().expect("shared"),
        ) else {
            return;
        };
        assert_eq!(a.port(), b.port());
        simple_query(a.addr(), "postgres", "SELECT 1").expect("answers");
        let err = simple_query(a.addr(), "postgres", "SELEKT").expect_err("syntax error");
        assert!(err.to_string().contains("42601"), "{err}");
    }
}
