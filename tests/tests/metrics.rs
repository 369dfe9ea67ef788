//! The Prometheus endpoint (`--metrics-addr`) of a standalone broker, scraped over HTTP while a
//! client produces: request, byte and connection counters and every partition's offsets.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use sluice_tests::kafka::{Conn, batch_of, produce_request};
use sluice_tests::{Broker, http_get, metric};

#[test]
fn metrics_count_requests_and_show_partition_offsets() {
    let port = sluice_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Broker::start(&["--metrics-addr", &addr]);
    let mut c = Conn::connect(&b.addr);
    for n in [3, 2] {
        let values: Vec<Bytes> = (0..n).map(|i| Bytes::from(format!("v{i}"))).collect();
        let body = produce_request("metered", batch_of(&values), -1);
        let ResponseKind::Produce(r) = c.call(ApiKey::Produce, 9, body) else {
            panic!("not a Produce response")
        };
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let (status, text) = http_get(&addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    let at =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(at("sluice_requests_total{api=\"Produce\"}"), 2.0);
    assert!(at("sluice_received_bytes_total") > 0.0);
    assert!(at("sluice_sent_bytes_total") > 0.0);
    assert!(at("sluice_connections_open") >= 1.0);
    let log = "{topic=\"metered\",partition=\"0\"}";
    assert_eq!(at(&format!("sluice_log_end_offset{log}")), 5.0);
    assert_eq!(at(&format!("sluice_log_high_watermark{log}")), 5.0);
    assert_eq!(at(&format!("sluice_log_start_offset{log}")), 0.0);
    assert!(at(&format!("sluice_log_size_bytes{log}")) > 0.0);
    assert!(!text.contains("sluice_raft_"), "no Raft metrics standalone");
    let (status, _) = http_get(&addr, "/other");
    assert_eq!(status, 404);
}

#[test]
fn a_bad_metrics_address_is_refused_at_start() {
    let (code, _, err) = sluice_tests::run_sluice(&[
        "--metrics-addr",
        "nowhere",
        "--data-dir",
        "/nonexistent-sluice",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--metrics-addr"), "{err}");
}
