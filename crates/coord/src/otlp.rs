//! OpenTelemetry export of coord's spans over OTLP/HTTP with protobuf,
//! switched on by the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! (the full URL) or `OTEL_EXPORTER_OTLP_ENDPOINT` (a base, `/v1/traces`
//! added), `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default),
//! `OTEL_SERVICE_NAME` (default `coord`) and `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! The stores hand their spans to [`Exporter::sink`]; they are sent in
//! batches from a thread of the exporter's, and what is left is sent by
//! [`Exporter::shutdown`] before the command exits. A collector that
//! cannot be reached costs a command at most [`TIMEOUT`] and changes
//! nothing of its output or exit code: failures are logged (`COORD_LOG`).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use coord_core::trace::{SpanRecord, SpanSink};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;
use serde_json::Value;

/// The longest one export may take.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// How often a long-lived process sends what it has.
const SEND_EVERY: Duration = Duration::from_secs(2);

/// Sends spans to an OTLP/HTTP collector.
#[derive(Debug)]
pub struct Exporter {
    buffer: Arc<Mutex<Vec<SpanRecord>>>,
    stop: mpsc::Sender<()>,
    sender: Option<JoinHandle<()>>,
}

/// Where and as what to send.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    resource: Vec<KeyValue>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Target {
    fn from_env() -> Option<Target> {
        let url = match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => url,
            None => format!(
                "{}/v1/traces",
                env("OTEL_EXPORTER_OTLP_ENDPOINT")?.trim_end_matches('/')
            ),
        };
        let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "http/protobuf".to_owned());
        if protocol != "http/protobuf" {
            crate::output::warn(
                "otlp_protocol_unsupported",
                &format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: coord sends http/protobuf only; spans are not exported"
                ),
            );
            return None;
        }
        let mut resource = vec![string_attribute(
            "service.name",
            env("OTEL_SERVICE_NAME").unwrap_or_else(|| "coord".to_owned()),
        )];
        // `key=value,key=value`, values percent-encoded as the spec says.
        for pair in env("OTEL_RESOURCE_ATTRIBUTES")
            .unwrap_or_default()
            .split(',')
        {
            if let Some((key, value)) = pair.split_once('=') {
                let value = percent_encoding::percent_decode_str(value.trim())
                    .decode_utf8_lossy()
                    .into_owned();
                resource.push(string_attribute(key.trim(), value));
            }
        }
        Some(Target { url, resource })
    }
}

fn string_attribute(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
    }
}

fn attribute(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        other => any_value::Value::StringValue(other.to_string()),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// One of coord's spans as OTLP has it.
fn span_of(record: &SpanRecord) -> Span {
    let start = u64::try_from(record.start.as_unix_nanos()).unwrap_or(0);
    let code = if record.status == "ok" {
        status::StatusCode::Ok
    } else {
        status::StatusCode::Error
    };
    Span {
        trace_id: hex_bytes(&record.trace_id),
        span_id: hex_bytes(&record.span_id),
        parent_span_id: record
            .parent_span_id
            .as_deref()
            .map(hex_bytes)
            .unwrap_or_default(),
        name: record.name.clone(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(record.duration_us.saturating_mul(1000)),
        attributes: record
            .attributes
            .iter()
            .map(|(k, v)| attribute(k, v))
            .collect(),
        status: Some(Status {
            code: code as i32,
            ..Status::default()
        }),
        ..Span::default()
    }
}

/// The export request for `spans`.
fn request(target: &Target, spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: target.resource.clone(),
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "coord".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.iter().map(span_of).collect(),
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// Sends what `buffer` holds (emptying it); failures are logged.
fn send(agent: &ureq::Agent, target: &Target, buffer: &Mutex<Vec<SpanRecord>>) {
    let spans = std::mem::take(&mut *buffer.lock().expect("not poisoned"));
    if spans.is_empty() {
        return;
    }
    let body = request(target, &spans).encode_to_vec();
    let sent = agent
        .post(&target.url)
        .header("Content-Type", "application/x-protobuf")
        .send(&body[..]);
    if let Err(e) = sent {
        tracing::warn!(error = %e, url = target.url, spans = spans.len(), "spans not exported");
    }
}

impl Exporter {
    /// An exporter when the environment configures one.
    pub fn from_env() -> Option<Exporter> {
        let target = Target::from_env()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(true)
            .build()
            .into();
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = Arc::clone(&buffer);
        let sender = std::thread::Builder::new()
            .name("coord-otlp".to_owned())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(SEND_EVERY) {
                        Err(RecvTimeoutError::Timeout) => send(&agent, &target, &shared),
                        // Asked to stop (or the exporter is gone): the rest.
                        _ => {
                            send(&agent, &target, &shared);
                            return;
                        }
                    }
                }
            })
            .ok()?;
        Some(Exporter {
            buffer,
            stop,
            sender: Some(sender),
        })
    }

    /// What the stores give their spans to.
    pub fn sink(&self) -> SpanSink {
        let buffer = Arc::clone(&self.buffer);
        Arc::new(move |spans: &[SpanRecord]| {
            buffer
                .lock()
                .expect("not poisoned")
                .extend_from_slice(spans);
        })
    }

    /// Sends what is left and stops: at most [`TIMEOUT`] more.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(());
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}
