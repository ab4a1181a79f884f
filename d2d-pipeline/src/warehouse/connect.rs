//! Connecting to PostgreSQL: the database URL, and TLS when it asks for it.
//!
//! The URL is libpq's, as a URI (`postgres://user:pass@host:port/db?sslmode=require`) or as
//! `key=value` pairs (`host=db.example.com dbname=d2d sslmode=verify-full`). `sslmode` and
//! `sslrootcert` are read here, the rest by `tokio_postgres::Config`.
//!
//! | `sslmode` | what happens |
//! |---|---|
//! | absent, `disable`, `allow` | plain TCP, no TLS |
//! | `prefer` | TLS if the server offers it, else plain |
//! | `require` | TLS; the certificate is checked only when `sslrootcert` is given (as libpq) |
//! | `verify-ca` | TLS; certificate chain checked, host name not |
//! | `verify-full` | TLS; certificate chain and host name checked |
//!
//! Certificates are checked against `sslrootcert` (a PEM file, e.g. the provider's CA bundle
//! for a managed database) or, without it, against the Mozilla roots bundled by `webpki-roots`.
//! TLS is rustls (pure Rust, aws-lc-rs crypto).
//!
//! A refused connection says why, when TLS is the cause: the server's certificate not signed by
//! a CA of `sslrootcert`, not valid for the host name, expired; or a server that accepts only TLS
//! (`hostssl`) asked for a plain connection. `tests/tls.rs` (at the workspace root) checks each
//! against a real TLS-only PostgreSQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// How the connection is secured: libpq's `sslmode`, without `allow`'s fallback to TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS (also what an absent `sslmode` and `allow` mean here).
    #[default]
    Disable,
    /// TLS when the server supports it.
    Prefer,
    /// TLS always; the certificate is verified only with an explicit root certificate.
    Require,
    /// TLS always, certificate chain verified, host name not.
    VerifyCa,
    /// TLS always, certificate chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" | "allow" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }
}

/// A parsed database URL: the driver's settings plus the TLS choice.
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    /// Everything but the TLS settings.
    pub config: tokio_postgres::Config,
    /// From `sslmode`.
    pub ssl_mode: SslMode,
    /// From `sslrootcert`: PEM file of the certificates to trust.
    pub root_cert: Option<PathBuf>,
}

impl DatabaseUrl {
    /// Parses a libpq URI or `key=value` string.
    ///
    /// ```
    /// use d2d_pipeline::warehouse::{DatabaseUrl, SslMode};
    /// let url = DatabaseUrl::parse("postgres://d2d:secret@db.example.com/d2d?sslmode=verify-full").unwrap();
    /// assert_eq!(url.ssl_mode, SslMode::VerifyFull);
    /// assert_eq!(url.config.get_dbname(), Some("d2d"));
    /// ```
    ///
    /// As libpq, a setting the URL leaves out comes from its environment variable when set:
    /// `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`,
    /// `PGCONNECT_TIMEOUT`, `PGAPPNAME` (so a password can stay out of the URL). Unlike
    /// libpq, a URI that names a host without a port means port 5432, not `PGPORT`.
    pub fn parse(url: &str) -> Result<Self> {
        Self::parse_with_env(url, |name| std::env::var(name).ok())
    }

    /// [`DatabaseUrl::parse`], with the libpq variables read through `env`.
    pub fn parse_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut ssl_mode = None;
        let mut root_cert = None;
        let mut take = |key: &str, value: &str| -> Result<bool> {
            match key {
                "sslmode" => ssl_mode = Some(SslMode::parse(value)?),
                "sslrootcert" => root_cert = Some(PathBuf::from(value)),
                _ => return Ok(false),
            }
            Ok(true)
        };
        let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            match url.split_once('?') {
                None => url.to_owned(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        if !take(key, &percent_decode(value)?)? {
                            kept.push(pair);
                        }
                    }
                    if kept.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            let mut kept = Vec::new();
            for (key, value, text) in key_values(url)? {
                if !take(&key, &value)? {
                    kept.push(text);
                }
            }
            kept.join(" ")
        };
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| Error::Config(format!("database URL: {e}")))?;
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        if config.get_hosts().is_empty() {
            if let Some(hosts) = env("PGHOST") {
                for host in hosts.split(',') {
                    config.host(host);
                }
            }
        }
        if config.get_ports().is_empty() {
            if let Some(ports) = env("PGPORT") {
                for port in ports.split(',') {
                    let port = port.trim().parse().map_err(|_| {
                        Error::Config(format!("PGPORT {port:?} is not a port number"))
                    })?;
                    config.port(port);
                }
            }
        }
        if let (None, Some(user)) = (config.get_user(), env("PGUSER")) {
            config.user(&user);
        }
        if let (None, Some(password)) = (config.get_password(), env("PGPASSWORD")) {
            config.password(password);
        }
        if let (None, Some(dbname)) = (config.get_dbname(), env("PGDATABASE")) {
            config.dbname(&dbname);
        }
        if let (None, Some(seconds)) = (config.get_connect_timeout(), env("PGCONNECT_TIMEOUT")) {
            let seconds: u64 = seconds.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "PGCONNECT_TIMEOUT {seconds:?} is not a number of seconds"
                ))
            })?;
            config.connect_timeout(std::time::Duration::from_secs(seconds));
        }
        if let (None, Some(name)) = (config.get_application_name(), env("PGAPPNAME")) {
            config.application_name(&name);
        }
        if ssl_mode.is_none() {
            if let Some(mode) = env("PGSSLMODE") {
                ssl_mode = Some(SslMode::parse(&mode)?);
            }
        }
        if root_cert.is_none() {
            root_cert = env("PGSSLROOTCERT").map(PathBuf::from);
        }
        let ssl_mode = ssl_mode.unwrap_or_default();
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        Ok(Self {
            config,
            ssl_mode,
            root_cert,
        })
    }

    /// The rustls connector for this URL's mode; `None` when no TLS is wanted.
    pub fn tls(&self) -> Result<Option<MakeRustlsConnect>> {
        if self.ssl_mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let verify = match (self.ssl_mode, &self.root_cert) {
            // libpq's `require` and `prefer` encrypt without checking who answers, unless the
            // user names the roots to trust.
            (SslMode::Require | SslMode::Prefer, None) => Verify::Nothing,
            (SslMode::Require | SslMode::Prefer | SslMode::VerifyCa, _) => Verify::Chain,
            _ => Verify::ChainAndName,
        };
        let config = if verify == Verify::ChainAndName {
            builder
                .with_root_certificates(self.roots()?)
                .with_no_client_auth()
        } else {
            let chain = match verify {
                Verify::Nothing => None,
                _ => Some(
                    WebPkiServerVerifier::builder_with_provider(
                        Arc::new(self.roots()?),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| Error::Tls(e.to_string()))?,
                ),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(LibpqVerifier { chain, provider }))
                .with_no_client_auth()
        };
        Ok(Some(MakeRustlsConnect::new(config)))
    }

    /// Why a connection with this URL failed, in words, when the cause is the TLS setting on
    /// either side: the certificate not signed by a trusted CA, not valid for the host name,
    /// expired, or a server that takes connections over TLS only. `None` otherwise (the
    /// driver's and the server's own messages then say it).
    pub(crate) fn explain_failure(&self, error: &tokio_postgres::Error) -> Option<String> {
        if let Some(db) = error.as_db_error() {
            let tls_only = db.code()
                == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().contains("no encryption");
            return (tls_only && self.ssl_mode == SslMode::Disable).then(|| {
                "the server accepts this connection only over TLS; set sslmode=verify-full \
                 (with sslrootcert=<its CA>) in the database URL"
                    .to_owned()
            });
        }
        let rustls::Error::InvalidCertificate(cert) = find_rustls_error(error)? else {
            return None;
        };
        let trusted = match &self.root_cert {
            Some(path) => format!("sslrootcert {}", path.display()),
            None => "the bundled Mozilla roots (name the server's CA with sslrootcert=)".to_owned(),
        };
        Some(match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                format!("the server's certificate is not signed by a CA of {trusted}")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the server's certificate is not valid for the host name {} \
                     (sslmode=verify-full checks it; connect by a name the certificate lists)",
                    self.host_name()
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the clocks)".to_owned()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        })
    }

    /// The host name TLS checks the certificate against (the URL's first host).
    fn host_name(&self) -> String {
        match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => format!("{h:?}"),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => format!("{:?}", p.display().to_string()),
            None => "\"localhost\"".to_owned(),
        }
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs = read_pem_certs(path)?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(Error::Tls(format!(
                        "sslrootcert {}: no usable certificate",
                        path.display()
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(roots)
    }
}

/// The rustls error behind a failed TLS handshake. The driver wraps it in an `io::Error`, whose
/// `source()` skips it, so each `io::Error` of the chain is opened by hand.
fn find_rustls_error(error: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("sslrootcert {}: {e}", path.display())))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// Certificate checks as libpq's `require` (none) and `verify-ca` (chain only) do them; the
/// handshake signatures are always verified.
#[derive(Debug)]
struct LibpqVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LibpqVerifier {
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
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

/// A query value of the URL, %-decoded. The percent-encoding crate passes a malformed escape
/// (`%zz`, a `%` at the end) through as it is; in a database URL that is a typo, refused here.
fn percent_decode(value: &str) -> Result<String> {
    let bytes = value.as_bytes();
    let malformed = value.match_indices('%').any(|(i, _)| {
        !bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(Error::Config(format!(
            "database URL: bad %-escape in {value:?}"
        )));
    }
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| Error::Config(format!("database URL: {value:?} is not UTF-8")))
}

/// Splits libpq's `key=value key2='quoted value'` form into (key, value, original text).
fn key_values(s: &str) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(Error::Config(format!(
                "database URL: expected `=` after {key:?}"
            )));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => break,
                    },
                    Some((_, '\'')) => break,
                    Some((_, c)) => value.push(c),
                    None => {
                        return Err(Error::Config(format!(
                            "database URL: unterminated quote in the value of {key:?}"
                        )))
                    }
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        out.push((key, value, s[start..end].trim_end().to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn libpq_variables_fill_what_the_url_leaves_out() {
        let vars = |name: &str| {
            Some(
                match name {
                    "PGHOST" => "db.example.com",
                    "PGPORT" => "6543",
                    "PGUSER" => "etl_job",
                    "PGPASSWORD" => "from-env",
                    "PGDATABASE" => "fleet",
                    "PGSSLMODE" => "verify-full",
                    "PGSSLROOTCERT" => "/etc/ca.pem",
                    "PGCONNECT_TIMEOUT" => "7",
                    "PGAPPNAME" => "d2d-nightly",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let url = DatabaseUrl::parse_with_env("postgres://", vars).unwrap();
        let c = &url.config;
        assert_eq!(
            c.get_hosts(),
            [tokio_postgres::config::Host::Tcp("db.example.com".into())]
        );
        assert_eq!(c.get_ports(), [6543]);
        assert_eq!(
            (c.get_user(), c.get_password(), c.get_dbname()),
            (Some("etl_job"), Some(&b"from-env"[..]), Some("fleet"))
        );
        assert_eq!(
            c.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
        assert_eq!(c.get_application_name(), Some("d2d-nightly"));
        assert_eq!(url.ssl_mode, SslMode::VerifyFull);
        assert_eq!(url.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));

        // What the URL says wins.
        let url = DatabaseUrl::parse_with_env(
            "postgres://d2d:in-url@127.0.0.1:54329/d2d?sslmode=disable",
            vars,
        )
        .unwrap();
        let c = &url.config;
        assert_eq!(c.get_ports(), [54329]);
        assert_eq!(
            (c.get_user(), c.get_password(), c.get_dbname()),
            (Some("d2d"), Some(&b"in-url"[..]), Some("d2d"))
        );
        assert_eq!(url.ssl_mode, SslMode::Disable);

        let bad = |name: &str| (name == "PGPORT").then(|| "http".to_owned());
        assert!(DatabaseUrl::parse_with_env("postgres://", bad).is_err());
    }

    #[test]
    fn absent_sslmode_means_plain() {
        let url = DatabaseUrl::parse("postgres://d2d:d2d@127.0.0.1:54329/d2d").unwrap();
        assert_eq!(url.ssl_mode, SslMode::Disable);
        assert_eq!(url.config.get_ssl_mode(), PgSslMode::Disable);
        assert!(url.tls().unwrap().is_none());
        assert_eq!(url.config.get_user(), Some("d2d"));
        assert_eq!(url.config.get_ports(), [54329]);
    }

    #[test]
    fn uri_modes_and_other_parameters_survive() {
        for (mode, want, pg) in [
            ("disable", SslMode::Disable, PgSslMode::Disable),
            ("allow", SslMode::Disable, PgSslMode::Disable),
            ("prefer", SslMode::Prefer, PgSslMode::Prefer),
            ("require", SslMode::Require, PgSslMode::Require),
            ("verify-ca", SslMode::VerifyCa, PgSslMode::Require),
            ("verify-full", SslMode::VerifyFull, PgSslMode::Require),
        ] {
            let url = DatabaseUrl::parse(&format!(
                "postgresql://u@h/db?application_name=d2d&sslmode={mode}&connect_timeout=5"
            ))
            .unwrap();
            assert_eq!(url.ssl_mode, want, "{mode}");
            assert_eq!(url.config.get_ssl_mode(), pg, "{mode}");
            assert_eq!(url.config.get_application_name(), Some("d2d"));
            assert_eq!(
                url.config.get_connect_timeout(),
                Some(&std::time::Duration::from_secs(5))
            );
            assert_eq!(url.tls().unwrap().is_some(), want != SslMode::Disable);
        }
    }

    #[test]
    fn key_value_form() {
        let url = DatabaseUrl::parse(
            "host=db.example.com  dbname = d2d sslmode=require password='it''s \\'x\\' y' user=etl",
        );
        // libpq escapes a quote inside a quoted value with a backslash, not by doubling.
        assert!(url.is_err());
        let url = DatabaseUrl::parse(
            "host=db.example.com  dbname = d2d sslmode=require password='a \\'b\\' c' user=etl",
        )
        .unwrap();
        assert_eq!(url.ssl_mode, SslMode::Require);
        assert_eq!(url.config.get_dbname(), Some("d2d"));
        assert_eq!(url.config.get_user(), Some("etl"));
        assert_eq!(url.config.get_password(), Some(&b"a 'b' c"[..]));
    }

    #[test]
    fn root_cert_is_read_and_bad_values_are_named() {
        let url = DatabaseUrl::parse(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fno%2Fsuch%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url.root_cert.as_deref(), Some(Path::new("/no/such/ca.pem")));
        let err = url.tls().err().unwrap().to_string();
        assert!(err.contains("/no/such/ca.pem"), "{err}");

        let err = DatabaseUrl::parse("postgres://u@h/db?sslmode=always")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"always\""), "{err}");
        assert!(DatabaseUrl::parse("postgres://u@h/db?sslrootcert=%zz").is_err());
        assert!(DatabaseUrl::parse("host=h dbname").is_err());
    }

    #[test]
    fn percent_escapes_decode_and_bad_ones_are_named() {
        assert_eq!(percent_decode("%2Fa%20b%C3%BC+c").unwrap(), "/a bü+c");
        assert_eq!(percent_decode("plain").unwrap(), "plain");
        for bad in ["%zz", "a%4", "a%", "%%41"] {
            let err = percent_decode(bad).unwrap_err().to_string();
            assert!(err.contains("bad %-escape"), "{bad}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        let err = percent_decode("%FF").unwrap_err().to_string();
        assert!(err.contains("\"%FF\" is not UTF-8"), "{err}");
    }

    #[test]
    fn system_roots_when_no_root_cert() {
        let url = DatabaseUrl::parse("postgres://u@h/db?sslmode=verify-full").unwrap();
        assert!(url.roots().unwrap().len() > 50);
    }
}
