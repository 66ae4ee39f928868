//! TLS the libpq way: `sslmode` and `sslrootcert` read from the connection
//! string (a URI's query or a key=value string) or else from `PGSSLMODE` and
//! `PGSSLROOTCERT`, as `psql` reads them, and turned into the connection's
//! own settings and a native-tls connector that checks exactly what the mode
//! asks for. rust-postgres knows only `disable`, `prefer` and `require`, and
//! no root certificates, so both keys are taken out of the string before it
//! parses the rest.

use std::path::PathBuf;

use coord_core::CoordError;
use native_tls::{Certificate, TlsConnector};
use percent_encoding::percent_decode_str;
use postgres::config::{Host, SslMode as WireMode};
use postgres_native_tls::MakeTlsConnector;

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
        let mut builder = TlsConnector::builder();
        match self.mode {
            // Encryption without knowing who answers: libpq's meaning of
            // these two modes.
            SslMode::Prefer | SslMode::Require => {
                builder.danger_accept_invalid_certs(true);
            }
            SslMode::VerifyCa => {
                builder.danger_accept_invalid_hostnames(true);
            }
            SslMode::VerifyFull | SslMode::Disable => {}
        }
        if let RootCerts::File(path) = &self.roots {
            builder.disable_built_in_roots(true);
            for cert in read_root_certs(path)? {
                builder.add_root_certificate(cert);
            }
        }
        let connector = builder.build().map_err(|e| CoordError::Database {
            message: format!("cannot set up TLS: {e}"),
            source: Some(Box::new(e)),
        })?;
        Ok(Some(MakeTlsConnector::new(connector)))
    }
}

/// Every certificate in the PEM file `path`.
fn read_root_certs(path: &PathBuf) -> Result<Vec<Certificate>, CoordError> {
    let problem =
        |what: String| CoordError::invalid_input(format!("sslrootcert {}: {what}", path.display()));
    let text =
        std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read it: {e}")))?;
    const END: &str = "-----END CERTIFICATE-----";
    let certs: Vec<Certificate> = text
        .split_inclusive(END)
        .filter(|block| block.contains(END))
        .map(|block| Certificate::from_pem(block.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| problem(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(problem("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
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
