//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, `pg_ctl start` on a
//! free loopback port, stopped (`-m immediate`) when dropped. PostgreSQL refuses to run as
//! root, so as root (CI) the server runs as the `postgres` user the distribution's package
//! creates. The binaries come from PATH or `/usr/lib/postgresql/*/bin`; without them the test
//! fails, saying how to install them.

use std::path::PathBuf;
use std::process::Command;

/// A running cluster; `url()` connects to its `postgres` database as user `arcface` (trust
/// authentication, loopback only).
pub struct TempCluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl TempCluster {
    /// initdb and start a cluster; panics (the test fails) when PostgreSQL is not installed.
    pub fn start() -> Self {
        let bin = bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("arcface-pg")
            .tempdir()
            .expect("a temporary directory");
        if as_postgres {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path()));
        }
        let data = dir.path().join("data");
        let cluster = Self {
            data,
            bin,
            port: crate::net::free_ports(0),
            as_postgres,
            _dir: dir,
        };
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&cluster.data);
        initdb.args(["-U", "arcface", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        run(&mut initdb);
        cluster.start_server();
        cluster
    }

    /// The connection URL.
    pub fn url(&self) -> String {
        format!("postgres://arcface@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server abruptly (`-m immediate`: no shutdown checkpoint, as after a crash).
    pub fn crash(&self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        run(&mut stop);
    }

    /// Starts the server again on the same port (crash recovery replays its WAL).
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.data.parent().expect("data dir has a parent").display()
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"));
        start.args(["-w", "-t", "60", "-o", &options, "start"]);
        run(&mut start);
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match self.as_postgres {
            true => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            false => Command::new(path),
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}

fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
    });
    let packaged = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    };
    on_path.or_else(packaged).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: on Debian, `apt-get install postgresql` (.ci/run does this)"
        )
    })
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server's log, for a failing test's message.
pub fn log(cluster: &TempCluster) -> String {
    std::fs::read_to_string(cluster.data.join("server.log")).unwrap_or_default()
}
