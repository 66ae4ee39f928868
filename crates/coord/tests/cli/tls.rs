//! `coord --database-url` over TLS, the libpq way (`sslmode`,
//! `sslrootcert`, `PGSSLMODE`, `PGSSLROOTCERT`), against a throwaway cluster
//! that takes network connections over TLS only, with a certificate for
//! `localhost` signed by a CA made for it.

use std::process::Command;
use std::sync::OnceLock;

use coord_testkit::{PgCluster, PgClusterOptions};

use crate::support::{Finish, Run, command_in};

fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    let started = CLUSTER.get_or_init(|| {
        PgCluster::start(&PgClusterOptions {
            tls: true,
            max_connections: 20,
            ..PgClusterOptions::default()
        })
    });
    match started {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start a throwaway PostgreSQL cluster with TLS: {e}"),
    }
}

/// `coord list` on a schema of its own, with `COORD_DATABASE_URL` = `url`
/// and the environment `env`.
fn list(url: &str, env: &[(&str, String)]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd: Command = command_in(&tmp.path().join("unused"), "agent", &["list"]);
    cmd.env("COORD_DATABASE_URL", url)
        .env("COORD_SCHEMA", cluster().fresh_schema("tls"))
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT");
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.finish().into()
}

fn ca() -> String {
    cluster().tls_file("ca.crt").display().to_string()
}

/// The message of a `database_error` (exit 12).
fn database_error(run: &Run) -> String {
    let err = run.expect_error("database_error", 12);
    err["message"].as_str().unwrap().to_owned()
}

#[test]
fn verify_full_with_the_right_ca_connects_in_every_form_libpq_reads() {
    let c = cluster();
    let key_value = c.tls_url(
        "localhost",
        &format!("sslmode=verify-full sslrootcert='{}'", ca()),
    );
    list(&key_value, &[]).expect_ok();

    let port = c.tls_url("localhost", "");
    let port = port
        .split("port=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let uri = format!(
        "postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        ca().replace('/', "%2F")
    );
    list(&uri, &[]).expect_ok();

    let from_env = [
        ("PGSSLMODE", "verify-full".to_owned()),
        ("PGSSLROOTCERT", ca()),
    ];
    list(&c.tls_url("localhost", ""), &from_env).expect_ok();
}

#[test]
fn a_certificate_from_another_ca_is_refused_with_exit_12() {
    let other = cluster().tls_file("other-ca.crt").display().to_string();
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = cluster().tls_url(
            "localhost",
            &format!("sslmode={mode} sslrootcert='{other}'"),
        );
        let message = database_error(&list(&url, &[]));
        assert!(
            message.contains("invalid peer certificate: UnknownIssuer"),
            "{mode}: {message}"
        );
    }
}

#[test]
fn a_host_name_the_certificate_does_not_name_is_refused_under_verify_full_only() {
    // The certificate names `localhost`, not `127.0.0.1`.
    let url = |mode: &str| {
        cluster().tls_url(
            "127.0.0.1",
            &format!("sslmode={mode} sslrootcert='{}'", ca()),
        )
    };
    let message = database_error(&list(&url("verify-full"), &[]));
    assert!(
        message.contains("certificate not valid for name \"127.0.0.1\""),
        "{message}"
    );
    list(&url("verify-ca"), &[]).expect_ok();
}

#[test]
fn require_and_prefer_encrypt_without_checking_and_disable_is_refused_by_the_server() {
    let c = cluster();
    list(&c.tls_url("127.0.0.1", "sslmode=require"), &[]).expect_ok();
    list(&c.tls_url("127.0.0.1", ""), &[]).expect_ok(); // prefer, libpq's default
    // The server takes network connections over TLS only.
    let message = database_error(&list(&c.tls_url("localhost", "sslmode=disable"), &[]));
    assert!(message.contains("no encryption"), "{message}");
    let from_env = [("PGSSLMODE", "disable".to_owned())];
    let message = database_error(&list(&c.tls_url("localhost", ""), &from_env));
    assert!(message.contains("no encryption"), "{message}");
}

#[test]
fn a_mode_libpq_does_not_know_or_a_missing_root_file_is_refused_by_name() {
    let run = list(&cluster().tls_url("localhost", "sslmode=verify_full"), &[]);
    let err = run.expect_error("coordination_validation_failed", 6);
    assert!(
        err["message"].as_str().unwrap().contains("verify_full"),
        "{err}"
    );
    let url = cluster().tls_url(
        "localhost",
        "sslmode=verify-full sslrootcert=/no/such/ca.pem",
    );
    let err = list(&url, &[]).expect_error("coordination_validation_failed", 6);
    assert!(
        err["message"].as_str().unwrap().contains("/no/such/ca.pem"),
        "{err}"
    );
}
