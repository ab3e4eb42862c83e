//! TLS to PostgreSQL: `sslmode=require` with the server's CA given
//! encrypts the store's sessions (as the server itself reports in
//! `pg_stat_ssl`); a CA that did not sign the server's certificate, or a
//! host name the certificate does not name, fails with an error naming
//! TLS.
//!
//! Needs `KMS_TEST_POSTGRES_URL` and a server with `ssl = on` whose
//! certificate is Debian's snakeoil one (`CN=localhost`, the CA file
//! [`SERVER_CA`]), as `.ci/run` sets up; outside CI a missing database or
//! CA file skips the tests.

use kms_activation::host::store::{CountStore, PostgresOptions, PostgresStore, StoreError};

use crate::stores::postgres::{admin, database, drop_schema, parts, runtime, unique_schema};
use crate::support::{KilledOnDrop, kms_host_refused, kms_host_until_ready};

/// The server's certificate, self-signed: its own CA.
const SERVER_CA: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// A CA that signed nothing the server holds.
const WRONG_CA: &[u8] = include_bytes!("../data/postgres-wrong-ca.pem");

/// The server's CA, or `None` (and a note) outside CI when it is missing.
fn server_ca(test: &str) -> Option<Vec<u8>> {
    match std::fs::read(SERVER_CA) {
        Ok(pem) => Some(pem),
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "{test}: {SERVER_CA} must exist in CI: {e}"
            );
            eprintln!("{test}: skipped, {SERVER_CA}: {e}");
            None
        }
    }
}

/// The test database's URL and the server's CA, or `None` (and a note)
/// when either is missing outside CI: the test is skipped.
fn setup(test: &str) -> Option<(String, Vec<u8>)> {
    match (database(test), server_ca(test)) {
        (Some(url), Some(ca)) => Some((url, ca)),
        _ => None,
    }
}

/// The test database at `host`, with `sslmode` and an application name.
fn url_at(url: &str, host: &str, sslmode: &str, name: &str) -> String {
    let (_, port, user, db) = parts(url);
    format!("postgres://{user}@{host}:{port}/{db}?sslmode={sslmode}&application_name={name}")
}

/// Whether each session named `name` is encrypted, as the server says.
async fn encrypted_sessions(url: &str, name: &str) -> Vec<bool> {
    admin(url)
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Connects a store to the test database at `host` with `sslmode`, its
/// sessions named `name`.
async fn store_at(
    url: &str,
    host: &str,
    sslmode: &str,
    name: &str,
    options: PostgresOptions,
) -> PostgresStore {
    PostgresStore::connect_with(&url_at(url, host, sslmode, name), options)
        .await
        .unwrap()
}

/// Asserts that the server has sessions named `name`, all of them
/// encrypted or none, as `encrypted` says.
async fn assert_sessions(url: &str, name: &str, encrypted: bool) {
    let sessions = encrypted_sessions(url, name).await;
    assert!(!sessions.is_empty(), "no session named {name} found");
    assert!(
        sessions.iter().all(|&ssl| ssl == encrypted),
        "{name}: {sessions:?}"
    );
}

#[test]
fn postgres_tls_require_with_the_servers_ca_encrypts_every_session() {
    let test = "postgres_tls_require_with_the_servers_ca_encrypts_every_session";
    let Some((url, ca)) = setup(test) else {
        return;
    };
    let schema = unique_schema();
    let name = format!("kms_tls_{}", getrandom::u32().unwrap());
    runtime().block_on(async {
        let options = PostgresOptions::default()
            .with_schema(&schema)
            .with_root_certificates(ca);
        let store = store_at(&url, "localhost", "require", &name, options).await;
        let tally = store
            .record_visit(kms_activation::host::store::Visit::new(
                kms_activation::Uuid::from_u128(1),
                kms_activation::Uuid::from_u128(2),
                25,
                kms_activation::FileTime::from_ticks(134_397_882_570_000_000),
                kms_activation::FileTime::from_ticks(0),
            ))
            .await
            .unwrap();
        assert_eq!(tally.clients, 1);
        assert_sessions(&url, &name, true).await;
        drop(store);
        drop_schema(&url, &schema).await;
    });
}

#[test]
fn postgres_tls_prefer_encrypts_without_a_ca_and_disable_does_not() {
    let test = "postgres_tls_prefer_encrypts_without_a_ca_and_disable_does_not";
    let Some((url, _)) = setup(test) else {
        return;
    };
    let schema = unique_schema();
    runtime().block_on(async {
        for (sslmode, encrypted) in [("prefer", true), ("disable", false)] {
            let name = format!("kms_tls_{sslmode}_{}", getrandom::u32().unwrap());
            let options = PostgresOptions::default().with_schema(&schema);
            let store = store_at(&url, "127.0.0.1", sslmode, &name, options).await;
            store
                .host_epid(kms_activation::Uuid::from_u128(1), "x")
                .await
                .unwrap();
            assert_sessions(&url, &name, encrypted).await;
            drop(store);
        }
        drop_schema(&url, &schema).await;
    });
}

/// The connection error with `options`, which must be a TLS failure.
fn tls_failure(url: &str, options: PostgresOptions) -> String {
    let err = runtime()
        .block_on(PostgresStore::connect_with(url, options))
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("TLS"), "{text}");
    text
}

#[test]
fn postgres_tls_with_a_wrong_ca_or_host_name_fails_naming_tls() {
    let test = "postgres_tls_with_a_wrong_ca_or_host_name_fails_naming_tls";
    let Some((url, ca)) = setup(test) else {
        return;
    };
    let schema = unique_schema();
    let options = PostgresOptions::default().with_schema(&schema);

    let text = tls_failure(
        &url_at(&url, "localhost", "require", "kms_tls_wrong_ca"),
        options.clone().with_root_certificates(WRONG_CA),
    );
    assert!(text.contains("UnknownIssuer"), "{text}");

    // The right CA, but the certificate names localhost, not 127.0.0.1.
    let text = tls_failure(
        &url_at(&url, "127.0.0.1", "require", "kms_tls_wrong_name"),
        options.clone().with_root_certificates(ca),
    );
    assert!(text.contains("not valid for name"), "{text}");

    // A PEM without a certificate is refused before connecting.
    let err = runtime()
        .block_on(PostgresStore::connect_with(
            &url,
            options.with_root_certificates(b"not a certificate".to_vec()),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("TLS root certificates"), "{err}");
}

/// `kms-host --postgres-ca FILE`: the host starts on a verified session
/// with the server's CA, refuses to start naming TLS with another CA, and
/// refuses the flag without a PostgreSQL store (status 2).
#[test]
fn kms_host_takes_the_postgres_ca() {
    let test = "kms_host_takes_the_postgres_ca";
    let Some((url, _)) = setup(test) else {
        return;
    };
    let name = format!("kms_tls_host_{}", getrandom::u32().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, WRONG_CA).unwrap();
    // kms-host keeps its tables in the schema `public`: a database of the
    // test's own.
    let (_, port, user, _) = parts(&url);
    runtime().block_on(async {
        let admin = admin(&url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    });
    let store_url = format!(
        "postgres://{user}@localhost:{port}/{name}?sslmode=require&application_name={name}"
    );

    let (_, stderr) = kms_host_refused([
        "--store",
        &store_url,
        "--listen",
        "127.0.0.1:0",
        "--postgres-ca",
        wrong.to_str().unwrap(),
    ]);
    assert!(stderr.contains("TLS"), "{stderr}");

    let (code, stderr) = kms_host_refused(["--listen", "127.0.0.1:0", "--postgres-ca", SERVER_CA]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--postgres-ca needs a postgres:// store"),
        "{stderr}"
    );

    let (host, ready) = kms_host_until_ready([
        "--store",
        &store_url,
        "--listen",
        "127.0.0.1:0",
        "--postgres-ca",
        SERVER_CA,
    ]);
    let host = KilledOnDrop(host);
    ready.expect("kms-host never got ready");
    runtime().block_on(assert_sessions(&url, &name, true));
    drop(host);
    runtime().block_on(async {
        admin(&url)
            .await
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
    });
}
