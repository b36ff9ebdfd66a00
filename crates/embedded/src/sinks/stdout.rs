//! One line per transition on standard output (or any writer), for a
//! person watching a terminal or a log collector reading lines.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Mutex;

use async_trait::async_trait;
use trailwatch_core::alerts::{AlertSink, Delivery};
use trailwatch_core::ports::PortError;

use super::{one_line, record_json};

/// What each line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdoutFormat {
    /// [`text_line`]: severity, transition, rule, account, summary, origin, alert id.
    #[default]
    Text,
    /// The [`TransitionRecord`](super::TransitionRecord) as one line of JSON.
    Json,
}

/// Writes one line per transition and flushes it. The writer is behind a
/// mutex held only while the line is written (never across an `.await`).
pub struct StdoutSink<W = io::Stdout> {
    name: String,
    format: StdoutFormat,
    out: Mutex<W>,
}

impl StdoutSink<io::Stdout> {
    /// A sink named `stdout` writing to the process's standard output.
    pub fn new(format: StdoutFormat) -> Self {
        StdoutSink::with_writer(io::stdout(), format)
    }
}

impl<W: Write + Send> StdoutSink<W> {
    /// A sink named `stdout` writing to `out`.
    pub fn with_writer(out: W, format: StdoutFormat) -> Self {
        StdoutSink { name: "stdout".to_owned(), format, out: Mutex::new(out) }
    }

    /// Queues deliveries under another name (two stdout sinks, or a test's).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn line(&self, delivery: &Delivery) -> Result<Vec<u8>, PortError> {
        let mut line = match self.format {
            StdoutFormat::Text => text_line(delivery).into_bytes(),
            StdoutFormat::Json => record_json(delivery, &self.name)?,
        };
        line.push(b'\n');
        Ok(line)
    }
}

/// The human-readable line of a transition, without the newline:
///
/// ```text
/// [HIGH] opened  console-signin-brute-force  "Prod Payments" (111111111111)  5 failed sign-ins for bob  origin: iam_user arn:aws:iam::111111111111:user/bob (exact)  alert 01HX…
/// ```
///
/// The account is the id alone when it has no alias; `origin: unknown` when
/// the origin was not known; `by <who>` follows the origin when a person
/// acknowledged or resolved it. Line breaks in the summary become spaces.
pub fn text_line(delivery: &Delivery) -> String {
    let alert = &delivery.alert;
    let transition = &delivery.transition;
    let mut line = format!("[{}] {}  {}  ", alert.severity.as_str().to_uppercase(), transition.kind.as_str(), alert.rule_id);
    match &alert.account_alias {
        Some(alias) => {
            let _ = write!(line, "\"{}\" ({})", one_line(alias), alert.account_id);
        }
        None => line.push_str(&alert.account_id),
    }
    let _ = write!(line, "  {}  origin: ", one_line(&alert.summary));
    match &alert.origin {
        Some(origin) => {
            line.push_str(origin.kind.as_str());
            if let Some(principal) = &origin.principal {
                let _ = write!(line, " {}", one_line(principal));
            }
            let _ = write!(line, " ({})", origin.confidence.as_str());
        }
        None => line.push_str("unknown"),
    }
    if let Some(by) = &transition.by {
        let _ = write!(line, "  by {}", one_line(by));
    }
    let _ = write!(line, "  alert {}", alert.id);
    line
}

#[async_trait]
impl<W: Write + Send> AlertSink for StdoutSink<W> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), PortError> {
        let line = self.line(delivery)?;
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        out.write_all(&line).and_then(|()| out.flush()).map_err(|e| {
            // A closed pipe stays closed; anything else (a full disk behind a redirect) may pass.
            let retryable = e.kind() != io::ErrorKind::BrokenPipe;
            PortError::backend(self.name.clone(), format!("writing alert {}: {e}", delivery.dedup_key()), retryable)
        })
    }
}
