//! Protocol-level behaviour real clients cannot provoke: bad frames, unknown APIs, pipelining,
//! byte limits. Uses a minimal client over the codec.

use std::io::Write;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_tests::Broker;
use sluice_tests::kafka::Conn;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn api_versions_ok(addr: &str) {
    let mut c = Conn::connect(addr);
    let ResponseKind::ApiVersions(r) = c.call(
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(s("t"))
                .with_client_software_version(s("1")),
        ),
    ) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
}

fn batch(records: usize, value_bytes: usize) -> Bytes {
    sluice_tests::kafka::batch(records, value_bytes, b'v')
}

fn produce(c: &mut Conn, topic: &str, records: Bytes, acks: i16) -> Option<ProduceResponse> {
    let body = sluice_tests::kafka::produce_request(topic, records, acks);
    if acks == 0 {
        let (_, f) = c.frame(ApiKey::Produce, 9, &body);
        c.stream.write_all(&f).unwrap();
        return None;
    }
    let ResponseKind::Produce(r) = c.call(ApiKey::Produce, 9, body) else {
        panic!()
    };
    Some(r)
}

#[test]
fn unknown_api_key_closes_only_that_connection() {
    let b = Broker::start(&[]);
    let mut other = Conn::connect(&b.addr);
    let mut c = Conn::connect(&b.addr);
    // api key 9999, version 0, correlation 1, null client id
    c.stream
        .write_all(&[0, 0, 0, 10, 0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .unwrap();
    assert!(c.is_closed());
    api_versions_ok(&b.addr);
    let ResponseKind::ApiVersions(_) = other.call(
        ApiKey::ApiVersions,
        0,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    ) else {
        panic!()
    };
}

#[test]
fn unsupported_api_versions_version_gets_v0_error_with_ranges() {
    let b = Broker::start(&[]);
    let mut c = Conn::connect(&b.addr);
    // ApiVersions v99, flexible header: client id null, no tags.
    c.stream
        .write_all(&[0, 0, 0, 11, 0, 18, 0, 99, 0, 0, 0, 5, 0xff, 0xff, 0])
        .unwrap();
    let frame = c.read_frame().expect("an answer");
    let (corr, body) = sluice_proto::codec::decode_api_versions_v0(frame).unwrap();
    assert_eq!(corr, 5);
    assert_eq!(body.error_code, 35);
    let produce = body.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (3, 13));
    // The connection stays usable for the retry.
    let ResponseKind::ApiVersions(r) = c.call(
        ApiKey::ApiVersions,
        0,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    ) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
}

#[test]
fn oversized_and_malformed_frames_are_refused_without_harm() {
    let b = Broker::start(&["--max-frame-bytes", "1048576"]);
    let mut c = Conn::connect(&b.addr);
    c.stream.write_all(&(i32::MAX).to_be_bytes()).unwrap();
    assert!(c.is_closed(), "oversized frame must close the connection");
    let mut c = Conn::connect(&b.addr);
    c.stream.write_all(&(-7i32).to_be_bytes()).unwrap();
    assert!(c.is_closed());
    // A Metadata v12 request whose body is garbage.
    let mut c = Conn::connect(&b.addr);
    c.stream
        .write_all(&[
            0, 0, 0, 16, 0, 3, 0, 12, 0, 0, 0, 9, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
        ])
        .unwrap();
    assert!(c.is_closed());
    // A frame announcing 2 MiB that never arrives must not stop other clients.
    let mut slow = Conn::connect(&b.addr);
    slow.stream.write_all(&(900_000i32).to_be_bytes()).unwrap();
    api_versions_ok(&b.addr);
    assert!(!b.log().contains("panicked"), "{}", b.log());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = Broker::start(&[]);
    let mut c = Conn::connect(&b.addr);
    let mut expected = Vec::new();
    let mut wire = Vec::new();
    for i in 0..60 {
        let (key, v, body) = match i % 3 {
            0 => (
                ApiKey::ApiVersions,
                3,
                RequestKind::ApiVersions(
                    ApiVersionsRequest::default()
                        .with_client_software_name(s("t"))
                        .with_client_software_version(s("1")),
                ),
            ),
            1 => (
                ApiKey::Produce,
                9,
                sluice_tests::kafka::produce_request("pipe", batch(2, 10), -1),
            ),
            _ => (
                ApiKey::Metadata,
                12,
                RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
            ),
        };
        let (id, f) = c.frame(key, v, &body);
        wire.extend_from_slice(&f);
        expected.push((id, key, v));
    }
    c.stream.write_all(&wire).unwrap();
    let mut next_offset = 0;
    for (id, key, v) in expected {
        let (corr, resp) = c.read_response(key, v).expect("response");
        assert_eq!(corr, id, "responses out of order");
        if let ResponseKind::Produce(p) = resp {
            let pr = &p.responses[0].partition_responses[0];
            assert_eq!(pr.error_code, 0);
            assert_eq!(pr.base_offset, next_offset);
            next_offset += 2;
        }
    }
}

#[test]
fn fetch_honours_max_bytes_and_partition_max_bytes() {
    let b = Broker::start(&[]);
    let mut c = Conn::connect(&b.addr);
    for _ in 0..20 {
        let r = produce(&mut c, "limits", batch(10, 1000), -1).unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let batch_len = batch(10, 1000).len();
    let fetch = |c: &mut Conn, max: i32, part_max: i32, offset: i64| -> usize {
        let ResponseKind::Fetch(r) = c.call(
            ApiKey::Fetch,
            12,
            RequestKind::Fetch(
                FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_min_bytes(1)
                    .with_max_bytes(max)
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![
                        fetch_request::FetchTopic::default()
                            .with_topic(TopicName(s("limits")))
                            .with_partitions(vec![
                                fetch_request::FetchPartition::default()
                                    .with_fetch_offset(offset)
                                    .with_partition_max_bytes(part_max),
                            ]),
                    ]),
            ),
        ) else {
            panic!()
        };
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.high_watermark, 200);
        p.records.as_ref().map(|r| r.len()).unwrap_or(0)
    };
    assert_eq!(fetch(&mut c, 10 << 20, 10 << 20, 0), 20 * batch_len);
    assert_eq!(
        fetch(&mut c, 3 * batch_len as i32 + 5, 10 << 20, 0),
        3 * batch_len
    );
    assert_eq!(
        fetch(&mut c, 10 << 20, 2 * batch_len as i32, 0),
        2 * batch_len
    );
    // KIP-74: a first batch larger than the limit still comes back, whole and alone.
    assert_eq!(fetch(&mut c, 100, 100, 0), batch_len);
    // Fetching from the middle of a batch returns that whole batch.
    assert_eq!(fetch(&mut c, 10 << 20, batch_len as i32, 15), batch_len);
    assert_eq!(fetch(&mut c, 10 << 20, 10 << 20, 200), 0);
}

#[test]
fn fetch_long_poll_returns_when_data_arrives() {
    let b = Broker::start(&[]);
    let mut c = Conn::connect(&b.addr);
    produce(&mut c, "poll", batch(1, 10), -1).unwrap();
    let body = RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(10_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(TopicName(s("poll")))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_fetch_offset(1)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]),
    );
    let (_, f) = c.frame(ApiKey::Fetch, 12, &body);
    let started = std::time::Instant::now();
    c.stream.write_all(&f).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut p = Conn::connect(&b.addr);
    produce(&mut p, "poll", batch(3, 10), 1).unwrap();
    let (_, resp) = c.read_response(ApiKey::Fetch, 12).unwrap();
    let ResponseKind::Fetch(r) = resp else {
        panic!()
    };
    let part = &r.responses[0].partitions[0];
    assert_eq!(part.high_watermark, 4);
    assert!(!part.records.as_ref().unwrap().is_empty());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "long poll did not wake on new data"
    );
}

#[test]
fn bad_batches_get_kafka_errors_and_write_nothing() {
    let b = Broker::start(&[]);
    let mut c = Conn::connect(&b.addr);
    let good = batch(2, 10);
    let mut bad = good.to_vec();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let r = produce(&mut c, "bad", Bytes::from(bad), -1).unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );
    let mut magic1 = good.to_vec();
    magic1[16] = 1;
    let r = produce(&mut c, "bad", Bytes::from(magic1), -1).unwrap();
    assert_ne!(r.responses[0].partition_responses[0].error_code, 0);
    let r = produce(&mut c, "bad", good, -1).unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].base_offset, 0,
        "nothing was written by the bad batches"
    );
    let big = batch(1, 2 << 20);
    let r = produce(&mut c, "bad", big, -1).unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 10,
        "MESSAGE_TOO_LARGE"
    );
}

#[test]
fn acks_zero_gets_no_response_but_is_stored() {
    let b = Broker::start(&[]);
    let mut c = Conn::connect(&b.addr);
    produce(&mut c, "a0", batch(5, 10), -1).unwrap();
    produce(&mut c, "a0", batch(5, 10), 0);
    // The next response on the connection is the next request's, not an ack for acks=0.
    let r = produce(&mut c, "a0", batch(1, 10), -1).unwrap();
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 10);
}
