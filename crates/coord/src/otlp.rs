//! OpenTelemetry export of coord's spans and metrics over OTLP/HTTP with
//! protobuf, switched on by the standard variables:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `..._METRICS_ENDPOINT` (full URLs)
//! or `OTEL_EXPORTER_OTLP_ENDPOINT` (a base, `/v1/traces` and `/v1/metrics`
//! added), `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default; the
//! per-signal `..._TRACES_PROTOCOL` / `..._METRICS_PROTOCOL` win),
//! `OTEL_SERVICE_NAME` (default `coord`), `OTEL_RESOURCE_ATTRIBUTES` and,
//! for metrics, `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds, default 60000).
//!
//! The stores hand their spans to [`Exporter::sink`]; they are sent in
//! batches from a thread of the exporter's, and what is left is sent by
//! [`Exporter::shutdown`] before the command exits. Metrics (`coord work`)
//! are sent as cumulative totals by [`MetricsExporter::send`], every
//! interval and once more at the end. A collector that cannot be reached
//! costs a command at most [`TIMEOUT`] per export and changes nothing of
//! its output or exit code: failures are logged (`COORD_LOG`).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use coord_core::trace::{SpanRecord, SpanSink};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1 as otlp_metrics;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;
use serde_json::Value;

use crate::metrics::{Kind, Snapshot};

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
    /// Where the environment sends `signal` (`traces`, `metrics`), if
    /// anywhere.
    fn from_env(signal: &str) -> Option<Target> {
        let upper = signal.to_ascii_uppercase();
        let url = match env(&format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")) {
            Some(url) => url,
            None => format!(
                "{}/v1/{signal}",
                env("OTEL_EXPORTER_OTLP_ENDPOINT")?.trim_end_matches('/')
            ),
        };
        let protocol = env(&format!("OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "http/protobuf".to_owned());
        if protocol != "http/protobuf" {
            crate::output::warn(
                "otlp_protocol_unsupported",
                &format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: coord sends http/protobuf only; {signal} are not exported"
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

/// coord as the instrumentation scope of what it exports.
fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "coord".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
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
                scope: Some(scope()),
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
    if let Err(e) = post(agent, target, &body) {
        tracing::warn!(error = %e, url = target.url, spans = spans.len(), "spans not exported");
    }
}

/// Posts one encoded export request.
fn post(agent: &ureq::Agent, target: &Target, body: &[u8]) -> Result<(), ureq::Error> {
    agent
        .post(&target.url)
        .header("Content-Type", "application/x-protobuf")
        .send(body)
        .map(drop)
}

/// The HTTP client of an export: no request takes over [`TIMEOUT`].
fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(true)
        .build()
        .into()
}

impl Exporter {
    /// An exporter when the environment configures one.
    pub fn from_env() -> Option<Exporter> {
        let target = Target::from_env("traces")?;
        let agent = http_agent();
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

/// Sends metrics to an OTLP/HTTP collector.
#[derive(Debug)]
pub struct MetricsExporter {
    target: Target,
    agent: ureq::Agent,
    interval: Duration,
}

impl MetricsExporter {
    /// An exporter when the environment configures one.
    pub fn from_env() -> Option<MetricsExporter> {
        let target = Target::from_env("metrics")?;
        let interval = env("OTEL_METRIC_EXPORT_INTERVAL")
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(Duration::from_secs(60), Duration::from_millis);
        Some(MetricsExporter {
            target,
            agent: http_agent(),
            interval,
        })
    }

    /// How often to send.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Sends `snapshot`; failures are logged.
    pub fn send(&self, snapshot: &Snapshot) {
        let body = metrics_request(&self.target, snapshot).encode_to_vec();
        if let Err(e) = post(&self.agent, &self.target, &body) {
            tracing::warn!(error = %e, url = self.target.url, "metrics not exported");
        }
    }
}

/// The export request for `snapshot`: counters as monotonic cumulative
/// sums, gauges as gauges, histograms with explicit bounds.
fn metrics_request(target: &Target, snapshot: &Snapshot) -> ExportMetricsServiceRequest {
    use otlp_metrics::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
        metric::Data, number_data_point,
    };
    let nanos = |t: coord_core::Timestamp| u64::try_from(t.as_unix_nanos()).unwrap_or(0);
    let (start, now) = (nanos(snapshot.started), nanos(snapshot.taken));
    let cumulative = AggregationTemporality::Cumulative as i32;
    let mut metrics: Vec<Metric> = Vec::new();
    for point in &snapshot.points {
        let attributes: Vec<KeyValue> = point
            .labels
            .iter()
            .map(|(k, v)| string_attribute(k, v.clone()))
            .collect();
        let number = |value| NumberDataPoint {
            attributes: attributes.clone(),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(value),
            ..NumberDataPoint::default()
        };
        let name = format!("coord.{}", point.def.name);
        // A metric's points follow each other in a snapshot.
        if metrics.last().is_none_or(|m| m.name != name) {
            let data = match point.def.kind {
                Kind::Counter => Data::Sum(Sum {
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                    ..Sum::default()
                }),
                Kind::Gauge => Data::Gauge(Gauge::default()),
                Kind::Histogram => Data::Histogram(Histogram {
                    aggregation_temporality: cumulative,
                    ..Histogram::default()
                }),
            };
            metrics.push(Metric {
                name,
                description: point.def.help.to_owned(),
                unit: if point.def.kind == Kind::Histogram {
                    "s"
                } else {
                    "1"
                }
                .to_owned(),
                data: Some(data),
                ..Metric::default()
            });
        }
        let Some(data) = metrics.last_mut().and_then(|m| m.data.as_mut()) else {
            continue;
        };
        match (data, &point.value) {
            (Data::Sum(sum), crate::metrics::Value::Counter(n)) => sum.data_points.push(number(
                number_data_point::Value::AsInt(i64::try_from(*n).unwrap_or(i64::MAX)),
            )),
            (Data::Gauge(gauge), crate::metrics::Value::Gauge(n)) => gauge
                .data_points
                .push(number(number_data_point::Value::AsInt(*n))),
            (
                Data::Histogram(histogram),
                crate::metrics::Value::Histogram {
                    count,
                    sum,
                    buckets,
                },
            ) => histogram.data_points.push(HistogramDataPoint {
                attributes: attributes.clone(),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: *count,
                sum: Some(*sum),
                bucket_counts: buckets.clone(),
                explicit_bounds: crate::metrics::bounds().to_vec(),
                ..HistogramDataPoint::default()
            }),
            _ => {}
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![otlp_metrics::ResourceMetrics {
            resource: Some(Resource {
                attributes: target.resource.clone(),
                ..Resource::default()
            }),
            scope_metrics: vec![otlp_metrics::ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..otlp_metrics::ScopeMetrics::default()
            }],
            ..otlp_metrics::ResourceMetrics::default()
        }],
    }
}
