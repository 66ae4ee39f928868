//! [`PgCluster`]: a throwaway PostgreSQL server on a Unix socket, started
//! from the installed server binaries, stopped (by a watchdog, if need be)
//! when its owner goes away.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// How to start a [`PgCluster`].
#[derive(Debug, Clone)]
pub struct PgClusterOptions {
    /// fsync, synchronous commit and full-page writes. Off makes tests fast;
    /// benchmarks keep them on, so their figures mean something.
    pub durable: bool,
    pub max_connections: u32,
    /// Also listen on 127.0.0.1 with TLS only (`hostssl` in `pg_hba.conf`),
    /// with a certificate for `localhost` from a CA made for this cluster.
    pub tls: bool,
}

impl Default for PgClusterOptions {
    fn default() -> Self {
        PgClusterOptions {
            durable: false,
            max_connections: 200,
            tls: false,
        }
    }
}

/// A throwaway PostgreSQL server listening only on a Unix socket in a
/// temporary directory. Dropping it stops the server and removes the
/// directory; a watchdog process does the same if the owner dies first
/// (a panic, a SIGKILL), so no server outlives its test run.
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    socket: PathBuf,
    as_postgres: bool,
    /// The TCP port, when the cluster listens with TLS.
    tls_port: Option<u16>,
}

/// Makes, in `dir`: `ca.crt` (a CA), `server.crt` and `server.key` (a
/// certificate it signed for the name `localhost` only), and `other-ca.crt`
/// (a CA that signed nothing here).
const MAKE_CERTIFICATES: &str = r#"set -e
key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
ca_ext="-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
openssl req -x509 $key $ca_ext -keyout ca.key -out ca.crt -days 2 -subj /CN=coord-test-ca 2>/dev/null
openssl req -x509 $key $ca_ext -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=coord-other-ca 2>/dev/null
openssl req $key -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost
extendedKeyUsage=serverAuth
' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2     -extfile server.ext -out server.crt 2>/dev/null
chmod 600 server.key
"#;

/// The server binaries: `COORD_PG_BIN`, or the newest
/// `/usr/lib/postgresql/<version>/bin`, or `pg_config --bindir`.
fn find_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("COORD_PG_BIN").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    match out {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").exists() {
                return Ok(dir);
            }
        }
        _ => {}
    }
    Err("PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL \
         (`apt-get install -y postgresql`, which `.ci/run` does) or set COORD_PG_BIN to their directory"
        .to_owned())
}

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PgCluster {
    /// Initialises and starts a new cluster (about a second).
    pub fn start(options: &PgClusterOptions) -> Result<PgCluster, String> {
        let bin = find_bin()?;
        let root = tempfile::Builder::new()
            .prefix("coord-pg-")
            .tempdir()
            .map_err(|e| format!("cannot make a directory for the cluster: {e}"))?
            .keep();
        let socket = root.join("sock");
        std::fs::create_dir(&socket).map_err(|e| e.to_string())?;
        // initdb and postgres refuse to run as root.
        let as_postgres = is_root();
        let tls_port = if options.tls {
            let dir = root.join("tls");
            std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
            let out = Command::new("sh")
                .args(["-c", MAKE_CERTIFICATES])
                .current_dir(&dir)
                .output()
                .map_err(|e| format!("cannot run openssl: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cannot make test certificates with openssl: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Some(free_port()?)
        } else {
            None
        };
        let cluster = PgCluster {
            root,
            bin,
            socket,
            as_postgres,
            tls_port,
        };
        cluster.spawn_watchdog()?;
        if as_postgres {
            cluster.run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&cluster.root),
            )?;
        }
        let data = cluster.root.join("data");
        cluster.run(
            cluster
                .server_command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
                .arg("--locale=C.UTF-8"),
        )?;
        let mut settings = format!(
            "-c listen_addresses='' -k {} -c max_connections={}",
            cluster.socket.display(),
            options.max_connections
        );
        if !options.durable {
            settings.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        if let Some(port) = cluster.tls_port {
            let tls = cluster.root.join("tls");
            settings = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections={} \
                 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cluster.socket.display(),
                options.max_connections,
                tls.join("server.crt").display(),
                tls.join("server.key").display(),
            );
            // Over the network, TLS or nothing.
            let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n";
            std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| e.to_string())?;
        }
        cluster.run(
            cluster
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.root.join("server.log"))
                .args(["-w", "-t", "60", "-o", &settings, "start"]),
        )?;
        Ok(cluster)
    }

    /// A connection string for the `postgres` database as user `postgres`.
    pub fn url(&self) -> String {
        format!(
            "host={} user=postgres dbname=postgres",
            self.socket.display()
        )
    }

    /// A connection string over TCP to `host` (which must resolve to
    /// 127.0.0.1) for a cluster started with `tls`, followed by `extra`
    /// (more key=value pairs). Panics on a cluster without TLS.
    pub fn tls_url(&self, host: &str, extra: &str) -> String {
        let port = self.tls_port.expect("a cluster started with tls");
        format!("host={host} port={port} user=postgres dbname=postgres {extra}")
    }

    /// A file of the cluster's test certificates (see `MAKE_CERTIFICATES`):
    /// `ca.crt`, `other-ca.crt`.
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.root.join("tls").join(name)
    }

    /// The directory of the Unix socket (`psql -h`, `pgbench -h`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket
    }

    /// The directory holding the server binaries (pgbench is there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// A schema name no other caller in this process got.
    pub fn fresh_schema(&self, prefix: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// A command for one of the server binaries, run as `postgres` when we
    /// are root.
    pub fn server_command(&self, program: &str) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        }
    }

    fn run(&self, command: &mut Command) -> Result<(), String> {
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {command:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{command:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// A detached shell that waits for this process to end, then stops the
    /// server and removes its directory.
    fn spawn_watchdog(&self) -> Result<(), String> {
        let stop = self.stop_script();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}",
            pid = std::process::id()
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))
    }

    fn stop_script(&self) -> String {
        let pg_ctl = self.bin.join("pg_ctl");
        let runner = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!(
            "{runner}{} -D '{}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{}'",
            pg_ctl.display(),
            self.root.join("data").display(),
            self.root.display()
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &self.stop_script()])
            .stdin(Stdio::null())
            .status();
    }
}

/// One cluster for every test of this process, started on first use. A
/// failure to start it fails the test that asked, with the reason.
pub fn shared_cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(|| PgCluster::start(&PgClusterOptions::default())) {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start a throwaway PostgreSQL cluster: {e}"),
    }
}
