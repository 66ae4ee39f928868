//! Spans: every change on a coordination directory appends a span for its
//! run and one per saga step to `telemetry_spans.jsonl`, in one trace (the
//! caller's, given `TRACEPARENT`); other tools' lines stay as they were;
//! `--no-telemetry` and `COORD_TELEMETRY=off` write none.

use std::fs;

use serde_json::Value;

use crate::support::{Env, Finish, Run, json_lines};

const SPANS: &str = "telemetry_spans.jsonl";

/// The spans in the file, whole lines of JSON objects only.
fn spans(env: &Env) -> Vec<Value> {
    json_lines(&env.dir.join(SPANS))
}

fn is_hex(v: &Value, len: usize) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn a_claim_is_one_run_span_with_a_span_per_step_under_it() {
    let env = Env::new();
    let claim = env
        .run(&["claim", "deploy", "ship it", "--priority", "high"])
        .expect_ok();
    let spans = spans(&env);
    let run = &spans[0];
    assert_eq!(run["name"], "claim");
    assert_eq!(run["status"], "ok");
    assert_eq!(run["parent_span_id"], Value::Null);
    assert!(
        is_hex(&run["trace_id"], 32) && is_hex(&run["span_id"], 16),
        "{run}"
    );
    let attributes = &run["attributes"];
    assert_eq!(attributes["coord.work_item_id"], claim["work_item_id"]);
    assert_eq!(attributes["coord.work_type"], "deploy");
    assert_eq!(attributes["coord.priority"], "high");
    assert_eq!(attributes["coord.agent"], "agent_test");
    assert_eq!(attributes["coord.fence"], claim["fence"]);
    assert!(attributes["coord.lock_wait_us"].is_u64(), "{attributes}");
    let steps: Vec<&str> = spans[1..]
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "ensure_coordination_directory",
            "read_existing_claims",
            "settle_event_log",
            "check_coordination_conflicts",
            "create_updated_claims",
            "append_event_log",
            "write_claims_atomically",
        ]
    );
    for step in &spans[1..] {
        assert_eq!(step["trace_id"], run["trace_id"]);
        assert_eq!(step["parent_span_id"], run["span_id"]);
        assert_eq!(step["status"], "ok");
        assert!(step["start"].as_str().unwrap().ends_with('Z'));
        assert!(step["duration_us"].as_u64().unwrap() <= run["duration_us"].as_u64().unwrap());
    }
}

#[test]
fn a_refused_claim_is_an_error_span_naming_the_step_and_the_error() {
    let env = Env::new();
    env.run(&["claim", "deploy", "--priority", "high"])
        .expect_ok();
    env.run(&["claim", "deploy", "--priority", "high"])
        .expect_error("coordination_conflict", 3);
    let spans = spans(&env);
    let runs: Vec<&Value> = spans
        .iter()
        .filter(|s| s["parent_span_id"].is_null())
        .collect();
    assert_eq!(runs.len(), 2);
    let refused = runs[1];
    assert_eq!(refused["status"], "error");
    assert_eq!(
        refused["attributes"]["coord.error"],
        "coordination_conflict"
    );
    assert_eq!(
        refused["attributes"]["coord.failed_step"],
        "check_coordination_conflicts"
    );
    let failed_step = spans
        .iter()
        .find(|s| s["parent_span_id"] == refused["span_id"] && s["status"] == "error")
        .expect("the failing step's span");
    assert_eq!(failed_step["name"], "check_coordination_conflicts");
}

#[test]
fn a_traceparent_makes_the_run_a_child_of_the_callers_span() {
    let env = Env::new();
    let run: Run = env
        .command(&["post", "tests", "run them"])
        .env(
            "TRACEPARENT",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .finish()
        .into();
    run.expect_ok();
    let spans = spans(&env);
    assert!(!spans.is_empty());
    for span in &spans {
        assert_eq!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    assert_eq!(spans[0]["name"], "post");
    assert_eq!(spans[0]["parent_span_id"], "00f067aa0ba902b7");
    // Not W3C trace context: a trace of coord's own.
    let run: Run = env
        .command(&["post", "tests", "again"])
        .env("TRACEPARENT", "not-a-trace")
        .finish()
        .into();
    run.expect_ok();
    let last_run = spans_after(&env, spans.len());
    assert_ne!(last_run[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(last_run[0]["parent_span_id"], Value::Null);
}

fn spans_after(env: &Env, n: usize) -> Vec<Value> {
    spans(env).split_off(n)
}

#[test]
fn other_tools_multi_line_spans_are_kept_and_skipped() {
    let env = Env::new();
    fs::create_dir_all(&env.dir).unwrap();
    // The shell tools' form: one pretty-printed object, cut short at the end.
    let theirs = "{\n  \"trace_id\": \"abc\",\n  \"name\": \"claim_work\"\n}\n{\n  \"trace_id\":";
    fs::write(env.dir.join(SPANS), theirs).unwrap();
    env.run(&["post", "tests", "run them"]).expect_ok();
    let text = fs::read_to_string(env.dir.join(SPANS)).unwrap();
    assert!(text.starts_with(theirs), "their lines were changed");
    let ours: Vec<Value> = text[theirs.len()..]
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("each line of ours is one object"))
        .collect();
    assert_eq!(ours[0]["name"], "post");
}

#[test]
fn telemetry_can_be_switched_off() {
    let env = Env::new();
    env.run(&["--no-telemetry", "post", "tests", "one"])
        .expect_ok();
    let run: Run = env
        .command(&["post", "tests", "two"])
        .env("COORD_TELEMETRY", "off")
        .finish()
        .into();
    run.expect_ok();
    assert!(!env.dir.join(SPANS).exists());
    let bad: Run = env
        .command(&["post", "tests", "three"])
        .env("COORD_TELEMETRY", "maybe")
        .finish()
        .into();
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn coord_run_hands_its_child_the_claims_span() {
    let env = Env::new();
    let run: Run = env
        .command(&[
            "run",
            "build",
            "--",
            "sh",
            "-c",
            "\"$COORD\" post tests from-the-child",
        ])
        .env("COORD", env!("CARGO_BIN_EXE_coord"))
        .env(
            "TRACEPARENT",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .finish()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let spans = spans(&env);
    // The runs' spans (steps have names of their own).
    let runs: Vec<&Value> = spans
        .iter()
        .filter(|s| ["claim", "post", "complete"].contains(&s["name"].as_str().unwrap()))
        .collect();
    let names: Vec<&str> = runs.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["claim", "post", "complete"], "{spans:?}");
    for span in &spans {
        assert_eq!(
            span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{span}"
        );
    }
    let (claim, post) = (runs[0], runs[1]);
    assert_eq!(claim["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(
        post["parent_span_id"], claim["span_id"],
        "the child's change is a child of the claim's span"
    );
}

#[test]
fn coord_work_hands_each_child_the_span_of_its_take() {
    let env = Env::new();
    env.run(&["post", "job", "one"]).expect_ok();
    let run: Run = env
        .command(&[
            "work",
            "--max-items",
            "1",
            "--",
            "sh",
            "-c",
            "\"$COORD\" post tests from-the-child",
        ])
        .env("COORD", env!("CARGO_BIN_EXE_coord"))
        .finish()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let spans = spans(&env);
    let take = spans
        .iter()
        .find(|s| s["name"] == "next")
        .expect("the take's span");
    let child = spans
        .iter()
        .filter(|s| s["name"] == "post")
        .nth(1)
        .expect("the child's post");
    assert_eq!(child["trace_id"], take["trace_id"]);
    assert_eq!(child["parent_span_id"], take["span_id"]);
}

#[test]
fn on_postgresql_spans_go_to_the_telemetry_file_one_per_change_and_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = coord_testkit::shared_cluster().fresh_schema("cli_spans");
    let file = tmp.path().join("spans.jsonl");
    let on_db = |args: &[&str]| -> Run {
        let mut cmd = crate::support::command_in(&tmp.path().join("unused"), "agent_pg", args);
        cmd.env("COORD_DATABASE_URL", coord_testkit::shared_cluster().url())
            .env("COORD_SCHEMA", &schema)
            .env("COORD_TELEMETRY_FILE", &file)
            .env(
                "TRACEPARENT",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
        cmd.finish().into()
    };
    let claim = on_db(&["claim", "deploy", "--priority", "high"]).expect_ok();
    on_db(&["claim", "deploy", "--priority", "high"]).expect_error("coordination_conflict", 3);
    let spans = json_lines(&file);
    let runs: Vec<&Value> = spans.iter().filter(|s| s["name"] == "claim").collect();
    assert_eq!(runs.len(), 2, "{spans:?}");
    let (made, refused) = (runs[0], runs[1]);
    assert_eq!(made["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(made["status"], "ok");
    assert_eq!(made["attributes"]["coord.store"], "postgresql");
    assert_eq!(
        made["attributes"]["coord.work_item_id"],
        claim["work_item_id"]
    );
    assert_eq!(refused["status"], "error");
    assert_eq!(
        refused["attributes"]["coord.error"],
        "coordination_conflict"
    );
    for run in [made, refused] {
        let trips: Vec<&Value> = spans
            .iter()
            .filter(|s| s["parent_span_id"] == run["span_id"])
            .collect();
        assert!(!trips.is_empty(), "no round trips under {run}");
        for trip in trips {
            assert_eq!(trip["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(trip["attributes"]["db.system"], "postgresql");
            assert!(trip["attributes"]["db.rows"].is_u64(), "{trip}");
        }
    }
    // The transaction of the claim that was made: opened, committed.
    let names: Vec<&str> = spans
        .iter()
        .filter(|s| s["parent_span_id"] == made["span_id"])
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("BEGIN")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("COMMIT")), "{names:?}");
    // Without a file, nothing is written.
    let before = fs::read(&file).unwrap();
    let mut cmd =
        crate::support::command_in(&tmp.path().join("unused"), "agent_pg", &["post", "x", "y"]);
    cmd.env("COORD_DATABASE_URL", coord_testkit::shared_cluster().url())
        .env("COORD_SCHEMA", &schema);
    Run::from(cmd.finish()).expect_ok();
    assert_eq!(fs::read(&file).unwrap(), before);
}

/// A collector in the test: answers every request 200 and hands over its
/// path and body; with `answer` false it reads and never answers.
fn collector(answer: bool) -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let _ = tx.send((path, body));
            if answer {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            } else {
                std::thread::sleep(Duration::from_secs(30));
            }
        }
    });
    (url, rx)
}

use std::time::{Duration, Instant};

#[test]
fn spans_are_exported_to_an_otlp_collector_over_http_protobuf() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let env = Env::new();
    let (url, received) = collector(true);
    let run: Run = env
        .command(&["claim", "deploy", "--priority", "high"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
        .env("OTEL_SERVICE_NAME", "builder")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=test,team=a%20b",
        )
        .finish()
        .into();
    let claim = run.expect_ok();
    let (path, body) = received
        .recv_timeout(Duration::from_secs(5))
        .expect("the collector got a request");
    assert_eq!(path, "/v1/traces");
    let request = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
    let resource = &request.resource_spans[0];
    let attribute = |key: &str| {
        resource
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| format!("{:?}", a.value))
    };
    assert!(attribute("service.name").unwrap().contains("builder"));
    assert!(attribute("team").unwrap().contains("a b"));
    let spans = &resource.scope_spans[0].spans;
    let run_span = spans
        .iter()
        .find(|s| s.name == "claim")
        .expect("the claim's span");
    assert_eq!(run_span.trace_id.len(), 16);
    assert_eq!(run_span.span_id.len(), 8);
    assert!(run_span.parent_span_id.is_empty());
    assert!(run_span.end_time_unix_nano >= run_span.start_time_unix_nano);
    let id = run_span
        .attributes
        .iter()
        .find(|a| a.key == "coord.work_item_id")
        .map(|a| format!("{:?}", a.value))
        .unwrap();
    assert!(id.contains(claim["work_item_id"].as_str().unwrap()), "{id}");
    let steps = spans
        .iter()
        .filter(|s| s.parent_span_id == run_span.span_id)
        .count();
    assert_eq!(steps, 7, "the claim's seven steps");
    // The same spans went to the directory's file.
    assert_eq!(self::spans(&env).len(), spans.len());
}

#[test]
fn a_collector_that_is_gone_or_silent_changes_nothing_and_costs_at_most_a_second() {
    let env = Env::new();
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (silent, _received) = collector(false);
    for url in [gone, silent] {
        let started = Instant::now();
        let run: Run = env
            .command(&["post", "tests", "still posted"])
            .env(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("{url}/v1/traces"),
            )
            .finish()
            .into();
        let took = started.elapsed();
        let item = run.expect_ok();
        assert_eq!(item["description"], "still posted");
        assert!(run.stderr.is_empty(), "{run:?}");
        assert!(took < Duration::from_millis(2500), "{url}: took {took:?}");
    }
}

#[test]
fn a_change_that_never_got_the_lock_is_an_error_span_with_its_wait() {
    let env = Env::new();
    env.run(&["post", "tests", "first"]).expect_ok();
    let _held = crate::support::hold_lock(&env.dir);
    env.run(&["--lock-timeout", "200ms", "post", "tests", "second"])
        .expect_error("lock_timeout", 5);
    let spans = spans(&env);
    let last = spans.last().unwrap();
    assert_eq!(last["name"], "post");
    assert_eq!(last["status"], "error");
    assert_eq!(last["attributes"]["coord.error"], "lock_timeout");
    assert!(
        last["attributes"]["coord.lock_wait_us"].as_u64().unwrap() >= 200_000,
        "{last}"
    );
}

#[test]
fn each_retry_of_a_blocked_claim_is_a_span_saying_which_attempt_it_was() {
    let env = Env::new();
    env.run(&["claim", "deploy", "--priority", "high"])
        .expect_ok();
    let before = spans(&env).len();
    env.run(&["claim", "deploy", "--priority", "high", "--retry", "2"])
        .expect_error("coordination_conflict", 3);
    let attempts: Vec<Value> = spans_after(&env, before)
        .into_iter()
        .filter(|s| s["name"] == "claim")
        .map(|s| s["attributes"]["coord.attempt"].clone())
        .collect();
    assert_eq!(
        attempts,
        vec![Value::Null, 2.into(), 3.into()],
        "the first attempt is not marked, the retries are"
    );
}

#[test]
fn a_change_that_writes_down_a_lapsed_lease_says_how_many() {
    let env = Env::new();
    env.run(&["claim", "build", "--lease", "100ms"]).expect_ok();
    std::thread::sleep(Duration::from_millis(250));
    let before = spans(&env).len();
    env.run(&["post", "tests", "after the lapse"]).expect_ok();
    let post = spans_after(&env, before)
        .into_iter()
        .find(|s| s["name"] == "post")
        .expect("the post's span");
    assert_eq!(post["attributes"]["coord.expired"], 1, "{post}");
    // The next change has nothing to write down, and says nothing.
    let before = spans(&env).len();
    env.run(&["post", "tests", "again"]).expect_ok();
    let post = spans_after(&env, before)
        .into_iter()
        .find(|s| s["name"] == "post")
        .unwrap();
    assert!(post["attributes"].get("coord.expired").is_none(), "{post}");
}

#[test]
fn on_postgresql_a_change_measures_its_lock_wait_apart_from_its_other_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = coord_testkit::shared_cluster();
    let schema = cluster.fresh_schema("cli_lock_wait");
    let file = tmp.path().join("spans.jsonl");
    let on_db = |args: &[&str]| -> Run {
        let mut cmd = crate::support::command_in(&tmp.path().join("unused"), "agent_pg", args);
        cmd.env("COORD_DATABASE_URL", cluster.url())
            .env("COORD_SCHEMA", &schema)
            .env("COORD_TELEMETRY_FILE", &file);
        cmd.finish().into()
    };
    let claim = on_db(&["claim", "build"]).expect_ok();
    let id = claim["work_item_id"].as_str().unwrap().to_owned();
    // Another transaction holds the item's row for a while.
    let mut other = postgres::Client::connect(&cluster.url(), postgres::NoTls).unwrap();
    let mut hold = other.transaction().unwrap();
    hold.execute(
        &format!("SELECT 1 FROM {schema}.coord_claims WHERE work_item_id = $1 FOR UPDATE"),
        &[&id],
    )
    .unwrap();
    let held = Duration::from_millis(400);
    let completed = std::thread::scope(|scope| {
        let completing = scope.spawn(|| on_db(&["complete", &id]));
        std::thread::sleep(held);
        hold.commit().unwrap();
        completing.join().unwrap()
    });
    completed.expect_ok();
    let spans = json_lines(&file);
    let children = |run: &Value| -> Vec<Value> {
        spans
            .iter()
            .filter(|s| s["parent_span_id"] == run["span_id"])
            .cloned()
            .collect()
    };
    let by_name = |name: &str| spans.iter().find(|s| s["name"] == name).unwrap().clone();
    let (claimed, complete) = (by_name("claim"), by_name("complete"));
    let waited = complete["attributes"]["coord.lock_wait_us"]
        .as_u64()
        .unwrap();
    assert!(
        waited >= 300_000,
        "the complete waited about {held:?} for the row: {complete}"
    );
    let trips = children(&complete);
    let waiting: Vec<&Value> = trips
        .iter()
        .filter(|t| t["attributes"]["db.waits_for_locks"] == true)
        .collect();
    assert!(!waiting.is_empty(), "{trips:?}");
    let waiting_us: u64 = waiting
        .iter()
        .map(|t| t["duration_us"].as_u64().unwrap())
        .sum();
    assert_eq!(
        waited, waiting_us,
        "the wait is the waiting round trips' time"
    );
    // Round trips are timed each on its own: together no longer than
    // their change, and the ones that wait for nothing are short.
    for run in [&claimed, &complete] {
        let total: u64 = children(run)
            .iter()
            .map(|t| t["duration_us"].as_u64().unwrap())
            .sum();
        assert!(total <= run["duration_us"].as_u64().unwrap(), "{run}");
    }
    let uncontended = claimed["attributes"]["coord.lock_wait_us"]
        .as_u64()
        .unwrap();
    assert!(uncontended < 200_000, "{claimed}");
}

#[test]
fn a_worker_sends_its_metrics_to_an_otlp_collector_while_it_runs_and_at_the_end() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data, number_data_point};
    use prost::Message;
    let env = Env::new();
    for i in 0..3 {
        env.run(&["post", "job", &format!("job {i}")]).expect_ok();
    }
    // A lease that lapses before the worker starts: its first change writes it down.
    env.run(&["claim", "build", "--lease", "100ms"]).expect_ok();
    std::thread::sleep(Duration::from_millis(250));
    let (url, received) = collector(true);
    let run: Run = env
        .command(&["work", "--idle-exit", "1s", "--", "true"])
        .env(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            format!("{url}/v1/metrics"),
        )
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .finish()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let requests: Vec<(String, Vec<u8>)> = received.try_iter().collect();
    assert!(
        requests.len() >= 2,
        "sent every 200 ms and at the end: {}",
        requests.len()
    );
    assert!(requests.iter().all(|(path, _)| path == "/v1/metrics"));
    // Totals are cumulative: the last request has them all.
    let last = ExportMetricsServiceRequest::decode(&requests.last().unwrap().1[..]).unwrap();
    let metrics: &Vec<Metric> = &last.resource_metrics[0].scope_metrics[0].metrics;
    let metric = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
    };
    let label = |attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str| {
        attributes.iter().find(|a| a.key == key).and_then(|a| {
            match a.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            }
        })
    };
    let int = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsInt(n)) => *n,
        other => panic!("not an integer: {other:?}"),
    };
    let Some(Data::Sum(changes)) = &metric("coord.changes").data else {
        panic!("changes is a sum");
    };
    assert!(changes.is_monotonic);
    let completes = changes
        .data_points
        .iter()
        .find(|p| {
            label(&p.attributes, "change").as_deref() == Some("complete")
                && label(&p.attributes, "outcome").as_deref() == Some("ok")
        })
        .expect("the completes");
    assert_eq!(int(&completes.value), 3);
    let Some(Data::Sum(expirations)) = &metric("coord.expirations").data else {
        panic!("expirations is a sum");
    };
    assert_eq!(int(&expirations.data_points[0].value), 1);
    let Some(Data::Gauge(items)) = &metric("coord.items").data else {
        panic!("items is a gauge");
    };
    let completed = items
        .data_points
        .iter()
        .find(|p| label(&p.attributes, "status").as_deref() == Some("completed"))
        .expect("completed items");
    assert_eq!(int(&completed.value), 3);
    let Some(Data::Histogram(durations)) = &metric("coord.change_duration_seconds").data else {
        panic!("change durations are a histogram");
    };
    for point in &durations.data_points {
        assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
        assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
    }
    let service = label(
        &last.resource_metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes,
        "service.name",
    );
    assert_eq!(service.as_deref(), Some("coord"));
}
