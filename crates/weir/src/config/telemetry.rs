//! `telemetry:`: where weir's traces go (`otlp.endpoint`, an OTLP/HTTP collector), what the
//! service is called there, and whether prompts and answers go with them
//! (`capture_content`).
//!
//! The standard OpenTelemetry variables win over the file, as they do for every OpenTelemetry
//! SDK: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL), else `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (a base URL, to which `/v1/traces` is added), `OTEL_SERVICE_NAME`, and
//! `OTEL_SDK_DISABLED=true` (no export at all). With no endpoint, nothing is exported.

use std::time::Duration;

use url::Url;

use super::raw::RawTelemetry;
use super::validate::Checker;

/// The service name when neither the file nor `OTEL_SERVICE_NAME` names one.
const DEFAULT_SERVICE_NAME: &str = "weir";
/// How long one export may take before its spans are dropped.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Spans waiting for export; past it, new spans are dropped (and counted).
const DEFAULT_QUEUE_SIZE: usize = 2048;

/// Traces, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Where spans go; `None`: traces are off.
    pub otlp: Option<OtlpConfig>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Record prompts and answers as `gen_ai.input.messages` / `gen_ai.output.messages`.
    pub capture_content: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            capture_content: false,
        }
    }
}

/// An OTLP/HTTP (protobuf) trace exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full traces URL (`http://collector:4318/v1/traces`).
    pub endpoint: Url,
    /// The longest one export may take.
    pub timeout: Duration,
    /// The most spans held for export.
    pub queue_size: usize,
}

pub(super) fn telemetry(c: &mut Checker<'_>, raw: &RawTelemetry) -> TelemetryConfig {
    let timeout = c.duration(
        "telemetry.otlp.timeout",
        raw.otlp.timeout.as_deref(),
        DEFAULT_TIMEOUT,
    );
    if timeout.is_zero() {
        c.problem(
            "telemetry.otlp.timeout",
            "must be more than zero; e.g. `10s`",
        );
    }
    let queue_size = raw.otlp.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE);
    if queue_size == 0 {
        c.problem(
            "telemetry.otlp.queue_size",
            "must be at least 1; the default, 2048, suits most gateways",
        );
    }
    // The standard variables first, then the file.
    let from_env = |name: &str| c.env.var(name).filter(|v| !v.trim().is_empty());
    let endpoint = if let Some(url) = from_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some((
            "env OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".to_owned(),
            url,
            false,
        ))
    } else if let Some(url) = from_env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(("env OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), url, true))
    } else {
        raw.otlp
            .endpoint
            .clone()
            .filter(|v| !v.trim().is_empty())
            .map(|url| ("telemetry.otlp.endpoint".to_owned(), url, false))
    };
    let disabled =
        from_env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let service_name = from_env("OTEL_SERVICE_NAME")
        .or_else(|| raw.service_name.clone())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let otlp = match endpoint {
        Some(_) if disabled => None,
        Some((path, text, base)) => {
            traces_url(c, &path, text.trim(), base).map(|endpoint| OtlpConfig {
                endpoint,
                timeout: timeout.max(Duration::from_millis(1)),
                queue_size: queue_size.max(1),
            })
        }
        None => None,
    };
    TelemetryConfig {
        otlp,
        service_name,
        capture_content: raw.capture_content,
    }
}

/// The traces URL: as written, or a base URL with `/v1/traces` added (the OTLP rule for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
fn traces_url(c: &mut Checker<'_>, path: &str, text: &str, base: bool) -> Option<Url> {
    let full = if base {
        format!("{}/v1/traces", text.trim_end_matches('/'))
    } else {
        text.to_owned()
    };
    match Url::parse(&full) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(url) => {
            c.problem(
                path,
                format!(
                    "`{text}` is a {} URL; the OTLP exporter speaks HTTP: write e.g. \
                     `http://localhost:4318/v1/traces`",
                    url.scheme()
                ),
            );
            None
        }
        Err(e) => {
            c.problem(
                path,
                format!(
                    "`{text}` is not a URL ({e}); write e.g. `http://localhost:4318/v1/traces`"
                ),
            );
            None
        }
    }
}
