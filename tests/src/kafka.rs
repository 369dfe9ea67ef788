//! A minimal blocking Kafka client over the codec in `sluice-proto`, for protocol-level tests
//! that real clients cannot express (bad frames, pipelining, byte limits).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, RequestKind, ResponseKind, TopicName, produce_request,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_proto::codec;

/// One connection.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    next_id: i32,
}

impl Conn {
    /// Connects.
    pub fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, next_id: 1 }
    }

    /// Wraps a socket the caller connected (with its own timeouts).
    pub fn from_stream(stream: TcpStream) -> Conn {
        Conn { stream, next_id: 1 }
    }

    /// Encodes a request frame with the next correlation id.
    pub fn frame(&mut self, key: ApiKey, version: i16, body: &RequestKind) -> (i32, Bytes) {
        let id = self.next_id;
        self.next_id += 1;
        (
            id,
            codec::encode_request(key, version, id, Some("sluice-tests"), body).unwrap(),
        )
    }

    /// Sends a request and reads its response.
    pub fn call(&mut self, key: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
        let (id, f) = self.frame(key, version, &body);
        self.stream.write_all(&f).unwrap();
        let (corr, resp) = self.read_response(key, version).expect("response");
        assert_eq!(corr, id);
        resp
    }

    /// Reads one response frame; `None` if the broker closed the connection.
    pub fn read_response(&mut self, key: ApiKey, version: i16) -> Option<(i32, ResponseKind)> {
        let raw = self.read_frame()?;
        Some(codec::decode_response(key, version, raw).unwrap())
    }

    /// Reads one raw frame (without the length); `None` on EOF.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).is_err() {
            return None;
        }
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// Whether the broker has closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// One uncompressed record batch of `records` records, each with a `value_bytes`-byte value
/// filled with `fill`.
pub fn batch(records: usize, value_bytes: usize, fill: u8) -> Bytes {
    let values: Vec<Bytes> = (0..records)
        .map(|_| Bytes::from(vec![fill; value_bytes]))
        .collect();
    batch_of(&values)
}

/// One uncompressed record batch holding `values` in order (no keys, no producer id).
pub fn batch_of(values: &[Bytes]) -> Bytes {
    let recs: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant: the encoder keeps all records in one batch.
            sequence: i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(v.clone()),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

/// A Produce request for partition 0 of `topic`.
pub fn produce_request(topic: &str, records: Bytes, acks: i16) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5000)
            .with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.into())))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records)),
                    ]),
            ]),
    )
}
