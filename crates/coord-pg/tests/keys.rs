//! A connection that breaks during the commit leaves the caller without
//! an answer while the change may have committed: retried with the same
//! idempotency key, the call answers with what committed and makes
//! nothing twice.
//!
//! A proxy between the store and the server passes the commit through and
//! then cuts the connection before the server's answer comes back: the
//! server commits, the caller sees a database error.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use coord_core::{
    ErrorKind, Filter, IdempotencyKey, KeyedChange, NextRequest, PostRequest, Status, Store,
};
use coord_pg::{PgStore, PgStoreOptions};
use coord_testkit::shared_cluster;

/// Forwards connections to the cluster's socket; once armed, the first
/// message carrying `COMMIT` is passed on and the connection is cut before
/// the reply.
struct CuttingProxy {
    dir: tempfile::TempDir,
    port: String,
    armed: Arc<AtomicBool>,
}

/// The cluster's socket file, and its port.
fn server_socket(dir: &Path) -> (PathBuf, String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(port) = name.strip_prefix(".s.PGSQL.")
            && !port.ends_with(".lock")
        {
            return (dir.join(&name), port.to_owned());
        }
    }
    panic!("no server socket in {}", dir.display());
}

impl CuttingProxy {
    fn start() -> CuttingProxy {
        let (upstream, port) = server_socket(shared_cluster().socket_dir());
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join(format!(".s.PGSQL.{port}"))).unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&armed);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = UnixStream::connect(&upstream).unwrap();
                pipe(client, server, Arc::clone(&flag));
            }
        });
        CuttingProxy { dir, port, armed }
    }

    fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

/// Copies both ways; after an armed `COMMIT` went up, the reply is dropped
/// and both sides closed.
fn pipe(client: UnixStream, server: UnixStream, armed: Arc<AtomicBool>) {
    let cut = Arc::new(AtomicBool::new(false));
    let (mut up_from, mut up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up_cut = Arc::clone(&cut);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = up_from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let commit = buf[..n].windows(6).any(|w| w == b"COMMIT");
            if commit && armed.swap(false, Ordering::SeqCst) {
                up_cut.store(true, Ordering::SeqCst);
            }
            if up_to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        let (mut down_from, mut down_to) = (server, client);
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = down_from.read(&mut buf) {
            if n == 0 || cut.load(Ordering::SeqCst) {
                break;
            }
            if down_to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = down_to.shutdown(std::net::Shutdown::Both);
        let _ = down_from.shutdown(std::net::Shutdown::Both);
    });
}

fn store(url: &str, schema: &str) -> PgStore {
    PgStore::connect(url, PgStoreOptions::default().schema(schema.to_owned())).unwrap()
}

#[test]
fn a_post_whose_commit_lost_its_answer_is_made_once_when_retried_with_its_key() {
    let proxy = CuttingProxy::start();
    let schema = shared_cluster().fresh_schema("keys_cut");
    let store = store(&proxy.url(), &schema);
    let key = IdempotencyKey::new("post-1").unwrap();
    let post = PostRequest::new("agent", "tests").description("run them");
    let change = KeyedChange::Post(&post);

    proxy.arm();
    let lost = store.apply_once(&key, &change).unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::Database, "{lost}");
    // The server committed what the caller never heard about.
    let direct = self::store(&shared_cluster().url(), &schema);
    let committed = direct.list(&Filter::default()).unwrap();
    assert_eq!(committed.len(), 1, "the commit went through: {committed:?}");

    let retried = store.apply_once(&key, &change).unwrap();
    assert_eq!(
        retried, committed[0],
        "the retry answers with what committed"
    );
    assert_eq!(direct.list(&Filter::default()).unwrap().len(), 1);
}

#[test]
fn a_next_whose_commit_lost_its_answer_takes_one_item_when_retried_with_its_key() {
    let proxy = CuttingProxy::start();
    let schema = shared_cluster().fresh_schema("keys_cut_next");
    let direct = store(&shared_cluster().url(), &schema);
    for n in 0..2 {
        direct
            .post(&PostRequest::new("poster", "tests").description(format!("item {n}")))
            .unwrap();
    }
    let store = store(&proxy.url(), &schema);
    let key = IdempotencyKey::new("next-1").unwrap();
    let next = NextRequest::new("worker");
    let change = KeyedChange::Next(&next);

    proxy.arm();
    let lost = store.apply_once(&key, &change).unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::Database, "{lost}");
    let retried = store.apply_once(&key, &change).unwrap();
    let taken = direct
        .list(&Filter {
            status: Some(Status::InProgress),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(taken.len(), 1, "one item taken, not two: {taken:?}");
    assert_eq!(retried, taken[0]);
}
