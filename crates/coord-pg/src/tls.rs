//! TLS the libpq way: `sslmode` and `sslrootcert` read from the connection
//! string (a URI's query or a key=value string) or else from `PGSSLMODE` and
//! `PGSSLROOTCERT`, as `psql` reads them, and turned into the connection's
//! own settings and a rustls connector that checks exactly what the mode
//! asks for. (rustls rather than the system's OpenSSL: linking OpenSSL made
//! every `coord` process, TLS or not, start about 0.8 ms later.) rust-postgres knows only `disable`, `prefer` and `require`, and
//! no root certificates, so both keys are taken out of the string before it
//! parses the rest.

use std::path::PathBuf;
use std::sync::Arc;

use coord_core::CoordError;
use percent_encoding::percent_decode_str;
use postgres::config::{Host, SslMode as WireMode};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector a store keeps for its connections.
pub(crate) type MakeTlsConnector = MakeRustlsConnect;

/// libpq's `sslmode`, without `allow` (plain first, TLS if the server
/// insists), which rust-postgres cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, without checking its certificate
    /// (libpq's default).
    Prefer,
    /// TLS always, without checking the certificate (unless a root
    /// certificate is named: then as `VerifyCa`, as libpq does).
    Require,
    /// TLS, and the certificate must chain to a trusted root.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, CoordError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(CoordError::invalid_input(
                    "sslmode \"allow\" is not supported; use \"prefer\" (TLS when the server \
                     offers it) or \"disable\"",
                ));
            }
            other => {
                return Err(CoordError::invalid_input(format!(
                    "sslmode {other:?} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                )));
            }
        })
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's store (no `sslrootcert`, or `sslrootcert=system`).
    System,
    /// Only the certificates of this PEM file.
    File(PathBuf),
}

/// A connection string's TLS settings, and the string without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub roots: RootCerts,
    /// The connection string with `sslmode` and `sslrootcert` taken out.
    pub rest: String,
}

/// Reads `sslmode` and `sslrootcert` from `url`, else from `env` (for
/// `PGSSLMODE` and `PGSSLROOTCERT`; an empty value counts as unset), else
/// libpq's defaults (`prefer`, the system's roots).
pub fn settings(
    url: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<TlsSettings, CoordError> {
    let (rest, found) = take_keys(url)?;
    let from_env = |name: &str| env(name).filter(|v| !v.is_empty());
    let mode = match found.mode.or_else(|| from_env("PGSSLMODE")) {
        Some(text) => SslMode::parse(&text)?,
        None => SslMode::Prefer,
    };
    let roots = match found.root_cert.or_else(|| from_env("PGSSLROOTCERT")) {
        None => RootCerts::System,
        Some(text) if text == "system" => RootCerts::System,
        Some(text) => RootCerts::File(PathBuf::from(text)),
    };
    // libpq: `require` with a root certificate file verifies like
    // `verify-ca`.
    let mode = match (mode, &roots) {
        (SslMode::Require, RootCerts::File(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    Ok(TlsSettings { mode, roots, rest })
}

impl TlsSettings {
    /// rust-postgres' mode for this one: whether TLS is tried, and whether
    /// it is required.
    pub fn wire_mode(&self) -> WireMode {
        match self.mode {
            SslMode::Disable => WireMode::Disable,
            SslMode::Prefer => WireMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
        }
    }

    /// The connector for `hosts`, or `None` when TLS is never tried: mode
    /// `disable`, or only Unix sockets (libpq ignores `sslmode` there).
    pub fn connector(&self, hosts: &[Host]) -> Result<Option<MakeTlsConnector>, CoordError> {
        let over_network = hosts.iter().any(|h| matches!(h, Host::Tcp(_)));
        if self.mode == SslMode::Disable || !over_network {
            return Ok(None);
        }
        // ring: small and quick to build. rustls marks its provider
        // deprecated only for lacking post-quantum key exchange, which a
        // PostgreSQL server does not offer today either.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = match self.mode {
            // Encryption without knowing who answers: libpq's meaning of
            // these two modes.
            SslMode::Prefer | SslMode::Require | SslMode::Disable => None,
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = match &self.roots {
                    RootCerts::File(path) => read_root_certs(path)?,
                    RootCerts::System => system_roots()?,
                };
                let verifier =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| tls_setup(e.to_string()))?;
                Some(verifier)
            }
        };
        let checks = Checks {
            chain,
            names: self.mode == SslMode::VerifyFull,
            provider: provider.clone(),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(checks))
            .with_no_client_auth();
        Ok(Some(MakeRustlsConnect::new(config)))
    }
}

fn tls_setup(problem: String) -> CoordError {
    CoordError::Database {
        message: format!("cannot set up TLS: {problem}"),
        source: None,
    }
}

/// What a mode checks of the server's certificate: its chain against the
/// roots (`chain`), and then, if `names`, that it names the host.
#[derive(Debug)]
struct Checks {
    chain: Option<Arc<WebPkiServerVerifier>>,
    names: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Checks {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The name is checked after the chain: a name error means the chain
        // was good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    // The handshake's own signatures are always checked: they prove the
    // server holds the key of the certificate it sent.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Opens a connection with `config`, over TLS when `connector` is given.
pub(crate) fn connect(
    config: &postgres::Config,
    connector: Option<&MakeTlsConnector>,
) -> Result<postgres::Client, postgres::Error> {
    match connector {
        Some(connector) => config.connect(connector.clone()),
        None => config.connect(postgres::NoTls),
    }
}

/// The system's trusted roots.
fn system_roots() -> Result<RootCertStore, CoordError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(tls_setup(
            "no trusted root certificate found on this system; name one with sslrootcert"
                .to_owned(),
        ));
    }
    Ok(roots)
}

/// Every certificate in the PEM file `path`.
fn read_root_certs(path: &PathBuf) -> Result<RootCertStore, CoordError> {
    let problem =
        |what: String| CoordError::invalid_input(format!("sslrootcert {}: {what}", path.display()));
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(path).map_err(|e| problem(format!("cannot read it: {e}")))?
    {
        let cert = cert.map_err(|e| problem(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| problem(format!("not a usable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(problem("holds no PEM certificate".to_owned()));
    }
    Ok(roots)
}

/// The TLS keys found in a connection string.
#[derive(Debug, Default)]
struct Found {
    mode: Option<String>,
    root_cert: Option<String>,
}

impl Found {
    /// Keeps `value` if `key` is one of ours; says whether it was.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.mode = Some(value),
            "sslrootcert" => self.root_cert = Some(value),
            _ => return false,
        }
        true
    }
}

/// `url` without its `sslmode` and `sslrootcert`, and their values.
fn take_keys(url: &str) -> Result<(String, Found), CoordError> {
    let mut found = Found::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), found));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| {
                    CoordError::invalid_input(format!(
                        "the connection string's {key} is not UTF-8 once decoded"
                    ))
                })?
                .into_owned();
            if !found.take(key, value) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, found));
    }
    let mut rest = String::with_capacity(url.len());
    let mut cursor = KeyValues { text: url, at: 0 };
    while let Some((start, key, value)) = cursor.next_pair()? {
        if !found.take(&key, value) {
            rest.push_str(&url[start..cursor.at]);
        }
    }
    Ok((rest, found))
}

/// libpq's key=value strings: `key = value` pairs apart by white space, a
/// value either bare or in single quotes, `\` escaping the next character.
struct KeyValues<'a> {
    text: &'a str,
    at: usize,
}

impl KeyValues<'_> {
    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    /// The next pair: where it starts (its leading space included, so the
    /// text between pairs stays as it was), its key and its value.
    fn next_pair(&mut self) -> Result<Option<(usize, String, String)>, CoordError> {
        let start = self.at;
        self.skip_space();
        if self.at == self.text.len() {
            return Ok(None);
        }
        let rest = &self.text[self.at..];
        let key_len = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = rest[..key_len].to_owned();
        self.at += key_len;
        self.skip_space();
        if !self.text[self.at..].starts_with('=') {
            return Err(CoordError::invalid_input(format!(
                "not a valid PostgreSQL connection string: {key:?} has no \"=\" after it"
            )));
        }
        self.at += 1;
        self.skip_space();
        let mut value = String::new();
        let mut chars = self.text[self.at..].char_indices().peekable();
        let quoted = chars.peek().is_some_and(|&(_, c)| c == '\'');
        if quoted {
            chars.next();
        }
        let mut end = self.text.len() - self.at;
        let mut closed = !quoted;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '\'' if quoted => {
                    end = i + 1;
                    closed = true;
                    break;
                }
                c if !quoted && c.is_whitespace() => {
                    end = i;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return Err(CoordError::invalid_input(format!(
                "not a valid PostgreSQL connection string: the value of {key:?} has no \
                 closing quote"
            )));
        }
        self.at += end;
        Ok(Some((start, key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_keys_are_read_from_a_uri_and_taken_out_of_it() {
        let s = settings(
            "postgresql://coord@db/coord?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
            no_env,
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.roots, RootCerts::File("/etc/ca.pem".into()));
        assert_eq!(s.rest, "postgresql://coord@db/coord?application_name=x");
        let s = settings("postgres://db/coord?sslmode=require", no_env).unwrap();
        assert_eq!(
            (s.mode, s.rest.as_str()),
            (SslMode::Require, "postgres://db/coord")
        );
    }

    #[test]
    fn the_keys_are_read_from_a_key_value_string_and_taken_out_of_it() {
        let s = settings(
            r"host=db sslmode = 'verify-ca' sslrootcert='/a b/c\'a.pem' dbname=coord",
            no_env,
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.roots, RootCerts::File("/a b/c'a.pem".into()));
        assert_eq!(s.rest, "host=db dbname=coord");
        let unclosed = settings("host=db sslmode='require", no_env).unwrap_err();
        assert!(unclosed.to_string().contains("closing quote"), "{unclosed}");
        let no_equals = settings("host=db sslmode", no_env).unwrap_err();
        assert!(no_equals.to_string().contains("sslmode"), "{no_equals}");
    }

    #[test]
    fn the_environment_fills_in_what_the_string_does_not_say() {
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("verify-full".to_owned()),
            "PGSSLROOTCERT" => Some(String::new()),
            _ => None,
        };
        let s = settings("host=db", env).unwrap();
        assert_eq!((s.mode, s.roots), (SslMode::VerifyFull, RootCerts::System));
        let s = settings("host=db sslmode=disable", env).unwrap();
        assert_eq!(s.mode, SslMode::Disable);
        let s = settings("host=db", no_env).unwrap();
        assert_eq!(s.mode, SslMode::Prefer, "libpq's default");
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain_as_libpq_does() {
        let s = settings("host=db sslmode=require sslrootcert=/ca.pem", no_env).unwrap();
        assert_eq!(s.mode, SslMode::VerifyCa);
        let s = settings("host=db sslmode=require sslrootcert=system", no_env).unwrap();
        assert_eq!(s.mode, SslMode::Require);
    }

    #[test]
    fn an_unknown_mode_or_an_unreadable_root_file_is_refused_by_name() {
        for mode in ["allow", "verify_full", ""] {
            let e = settings(&format!("host=db sslmode='{mode}'"), no_env).unwrap_err();
            assert_eq!(e.kind(), coord_core::ErrorKind::ValidationFailed, "{e}");
        }
        let s = settings(
            "host=db sslmode=verify-full sslrootcert=/no/such.pem",
            no_env,
        )
        .unwrap();
        let e = s
            .connector(&[Host::Tcp("db".into())])
            .map(drop)
            .unwrap_err();
        assert!(e.to_string().contains("/no/such.pem"), "{e}");
    }

    #[test]
    fn no_connector_when_tls_is_never_tried() {
        let s = settings("host=db sslmode=disable", no_env).unwrap();
        assert!(s.connector(&[Host::Tcp("db".into())]).unwrap().is_none());
        let s = settings("host=/run/postgresql sslmode=require", no_env).unwrap();
        assert!(
            s.connector(&[Host::Unix("/run/postgresql".into())])
                .unwrap()
                .is_none()
        );
        let s = settings("host=db", no_env).unwrap();
        assert!(s.connector(&[Host::Tcp("db".into())]).unwrap().is_some());
    }
}
