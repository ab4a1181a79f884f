//! Alerts: the operator's command, run when a daily run fails, and an SNS topic
//! ([`SnsAlert`], the AWS way) that receives the same redacted summary.
//!
//! The command runs with `sh -c`, the failure summary on its standard input and in
//! `D2D_ALERT_SUMMARY`, and a **scrubbed environment**: only [`BASE_ENV`] (the path, home,
//! user, locale, time zone and temporary folder a shell command needs) and the variables the
//! operator names on purpose ([`AlertCommand::pass_env`], `daily_load --alert-env NAME`). The
//! job's own environment holds the database URL with its password and the AWS credentials; an
//! alert hook (a mailer, a chat webhook, a pager script) has no business with either.
//!
//! The summary is redacted before it leaves ([`redact`]): passwords in URLs
//! (`postgres://user:***@host`), `password=` settings, and the values of the job's secrets
//! (the database password, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `PGPASSWORD`).
//!
//! ```no_run
//! # async fn demo() -> d2d_pipeline::Result<()> {
//! use d2d_pipeline::alert::AlertCommand;
//! AlertCommand::new("mail -s 'd2d failed' ops@example.com")
//!     .pass_env(["MAILRC"])
//!     .run("day 2019-06-01 failed while merging: ...")
//!     .await?;
//! # Ok(()) }
//! ```

mod sns;

use std::time::Duration;

use crate::error::{Error, Result};
pub use sns::SnsAlert;

/// The variables every alert command gets (when the job has them): enough for a shell
/// command to find programs, write temporary files and format text. Any `LC_*` too.
pub const BASE_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
];

/// Variables whose values are secrets wherever they appear.
const SECRET_ENV: &[&str] = &["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD"];

/// A literal secret shorter than this is not searched for in the summary (a short password
/// such as `d2d` would blank out ordinary words); it is still hidden where a URL or a
/// `password=` setting names it.
const MIN_SECRET_LEN: usize = 6;

/// What the summary shows instead of a secret.
pub const REDACTED: &str = "***";

/// The operator's alert command; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertCommand {
    command: String,
    pass_env: Vec<String>,
    secrets: Vec<String>,
    timeout: Duration,
}

impl AlertCommand {
    /// `command`, run by `sh -c`, with the scrubbed environment and a 60 s limit.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            pass_env: Vec::new(),
            secrets: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// Also hands these variables of the job's environment to the command (those that are
    /// set), on purpose: a webhook URL, the AWS credentials of an `aws sns publish`.
    pub fn pass_env<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.pass_env.extend(names.into_iter().map(Into::into));
        self
    }

    /// A value to hide from the summary, besides those [`redact`] finds by itself; the
    /// password of `database_url` is taken from a libpq URL.
    pub fn secret(mut self, value: impl Into<String>) -> Self {
        let value = value.into();
        if !value.is_empty() {
            self.secrets.push(value);
        }
        self
    }

    /// Hides the password of this libpq URL (URI or `key=value` form) from the summary.
    pub fn database_url(self, url: &str) -> Self {
        match crate::warehouse::DatabaseUrl::parse(url)
            .ok()
            .and_then(|u| u.config.get_password().map(<[u8]>::to_vec))
            .and_then(|p| String::from_utf8(p).ok())
        {
            Some(password) => self.secret(password),
            None => self,
        }
    }

    /// Kills the command if it is still running after `timeout` (an error then).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The summary as the command will receive it: [`redact`]ed of the secrets given and of
    /// those in the job's environment.
    pub fn redacted(&self, summary: &str) -> String {
        let mut secrets = self.secrets.clone();
        for name in SECRET_ENV {
            if let Ok(value) = std::env::var(name) {
                secrets.push(value);
            }
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if let Some(p) = AlertCommand::new("").database_url(&url).secrets.pop() {
                secrets.push(p);
            }
        }
        redact(summary, &secrets)
    }

    /// The environment the command gets, `D2D_ALERT_SUMMARY` aside.
    pub fn environment(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(name, _)| {
                BASE_ENV.contains(&name.as_str())
                    || name.starts_with("LC_")
                    || self.pass_env.iter().any(|p| p == name)
            })
            .collect()
    }

    /// Runs the command with the redacted summary on its standard input and in
    /// `D2D_ALERT_SUMMARY`. A non-zero exit, or still running after the timeout, is an error.
    pub async fn run(&self, summary: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let fail = |detail: String| Error::Alert {
            command: self.command.clone(),
            detail,
        };
        let summary = self.redacted(summary);
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .env_clear()
            .envs(self.environment())
            .env("D2D_ALERT_SUMMARY", &summary)
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot start: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that ignores its input may close it early: that is not a failure.
            let _ = stdin.write_all(summary.as_bytes()).await;
            let _ = stdin.write_all(b"\n").await;
        }
        let status = tokio::time::timeout(self.timeout, child.wait())
            .await
            .map_err(|_| fail(format!("still running after {:?}; killed", self.timeout)))?
            .map_err(|e| fail(format!("cannot wait for it: {e}")))?;
        if !status.success() {
            return Err(fail(format!("exited with {status}")));
        }
        Ok(())
    }
}

/// `text` without secrets: the password of every `scheme://user:password@` URL, the value of
/// every `password=` setting (a query string's or libpq's `key=value` form, quoted or not),
/// and every occurrence of each of `secrets` at least six characters long, each replaced by
/// [`REDACTED`].
///
/// ```
/// use d2d_pipeline::alert::redact;
/// assert_eq!(
///     redact("postgres://etl:s3cret@db/d2d?sslmode=require", &[]),
///     "postgres://etl:***@db/d2d?sslmode=require"
/// );
/// assert_eq!(redact("host=db password='a b' user=etl", &[]), "host=db password=*** user=etl");
/// assert_eq!(redact("key wJalrXUtnFEMI seen", &["wJalrXUtnFEMI".into()]), "key *** seen");
/// ```
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = redact_passwords(&redact_userinfo(text));
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .collect();
    // Longest first, so a secret that contains another is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        out = out.replace(secret, REDACTED);
    }
    out
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        // The authority ends at the path, query, fragment or any blank or quote.
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `password=value`, `password='quoted value'` (libpq) or `?password=value&` → `password=***`.
fn redact_passwords(text: &str) -> String {
    const KEY: &str = "password=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = find_ascii_case_insensitive(rest, KEY) {
        let (before, after) = rest.split_at(i + KEY.len());
        out.push_str(before);
        out.push_str(REDACTED);
        let end = if let Some(quoted) = after.strip_prefix('\'') {
            // libpq quoting: `\'` and `\\` are escapes inside the quotes.
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map_or(after.len(), |(j, _)| j + 2)
        } else {
            after
                .find(|c: char| matches!(c, '&' | '#' | '"') || c.is_whitespace())
                .unwrap_or(after.len())
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_keep_the_rest() {
        for (text, want) in [
            (
                "error: postgres://d2d:d2d@127.0.0.1:5432/d2d refused",
                "error: postgres://d2d:***@127.0.0.1:5432/d2d refused",
            ),
            ("s3://bucket/prefix/", "s3://bucket/prefix/"),
            ("http://user@host/x", "http://user@host/x"),
            (
                "lake: http://a:b@h and http://c:d@e/",
                "lake: http://a:***@h and http://c:***@e/",
            ),
            ("postgres://u:p%40ss@h/db", "postgres://u:***@h/db"),
            ("\"postgres://u:pw@h\"", "\"postgres://u:***@h\""),
            ("no url at all: a:b@c", "no url at all: a:b@c"),
        ] {
            assert_eq!(redact(text, &[]), want, "{text}");
        }
    }

    #[test]
    fn password_settings_are_hidden_in_both_url_forms() {
        for (text, want) in [
            (
                "postgres://h/db?user=u&password=pw&sslmode=require",
                "postgres://h/db?user=u&password=***&sslmode=require",
            ),
            (
                "host=h PASSWORD=pw dbname=d",
                "host=h PASSWORD=*** dbname=d",
            ),
            (
                r"host=h password='a \' b' dbname=d",
                "host=h password=*** dbname=d",
            ),
            ("password=", "password=***"),
        ] {
            assert_eq!(redact(text, &[]), want, "{text}");
        }
    }

    #[test]
    fn literal_secrets_are_hidden_when_long_enough() {
        let secrets = [
            "abc".to_owned(),
            "topsecret".to_owned(),
            "topsecret-and-more".to_owned(),
        ];
        assert_eq!(
            redact("abc topsecret topsecret-and-more", &secrets),
            "abc *** ***"
        );
    }

    #[test]
    fn the_database_password_is_a_secret() {
        let alert =
            AlertCommand::new("true").database_url("host=h user=u password=hunter2-long dbname=d");
        assert_eq!(alert.secrets, ["hunter2-long"]);
        assert_eq!(alert.redacted("saw hunter2-long"), "saw ***");
        let none = AlertCommand::new("true").database_url("postgres://u@h/d");
        assert!(none.secrets.is_empty());
    }

    #[test]
    fn the_environment_is_the_base_and_what_is_passed() {
        let alert = AlertCommand::new("true").pass_env(["D2D_TEST_SURELY_UNSET", "PATH"]);
        let env = alert.environment();
        for (name, _) in &env {
            assert!(
                BASE_ENV.contains(&name.as_str()) || name.starts_with("LC_"),
                "{name} leaked"
            );
        }
        if std::env::var_os("PATH").is_some() {
            assert!(env.iter().any(|(n, _)| n == "PATH"));
        }
    }
}
