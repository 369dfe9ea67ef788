//! What topic settings do to appended batches: recompression (`compression.type`),
//! LogAppendTime stamping, timestamp bounds, and the flush.messages / flush.ms bookkeeping.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as Codec, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};

use super::*;
use crate::storage::MemStorage;

const CODECS: [Codec; 5] = [
    Codec::None,
    Codec::Gzip,
    Codec::Snappy,
    Codec::Lz4,
    Codec::Zstd,
];

fn ours(c: Codec) -> Compression {
    Compression::from_id(c as i16).unwrap()
}

fn open(config: LogConfig) -> PartitionLog {
    PartitionLog::open(Arc::new(MemStorage::new()), "logs/t-0".into(), config, 0).unwrap()
}

/// `n` records of an idempotent producer (id 7, epoch 3, sequences from 10) with timestamps
/// `ts[i]`, keys, values and a header.
fn records(ts: &[i64]) -> Vec<Record> {
    ts.iter()
        .enumerate()
        .map(|(i, &t)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 7,
            producer_epoch: 3,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: 10 + i as i32,
            timestamp: t,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}-").repeat(20))),
            headers: [(
                kafka_protocol::protocol::StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]
            .into_iter()
            .collect(),
        })
        .collect()
}

fn encode(records: &[Record], c: Codec) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: c,
        },
    )
    .unwrap();
    buf.freeze()
}

fn stored(log: &mut PartitionLog) -> Bytes {
    if let Some(w) = log.take_sync_work() {
        log.mark_durable(w.end_offset);
    }
    log.read(0, 1 << 24, true).unwrap().records
}

#[test]
fn recompression_keeps_every_record_offset_sequence_and_timestamp_in_every_codec() {
    let original = records(&[1_000, 1_005, 1_002, 1_010]);
    for from in CODECS {
        for to in CODECS {
            let mut log = open(LogConfig {
                compression: Some(ours(to)),
                ..LogConfig::default()
            });
            let sent = encode(&original, from);
            let a = log.append(&sent, 0, 2_000).unwrap();
            assert_eq!((a.base_offset, a.last_offset), (0, 3));
            assert_eq!(a.log_append_time, -1);
            let bytes = stored(&mut log);
            let h = crate::batch::validate(&bytes).unwrap();
            let sent_h = crate::batch::validate(&sent).unwrap();
            assert_eq!(h.compression(), to as i16, "{from:?} -> {to:?}");
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (7, 3, 10)
            );
            assert_eq!(
                (
                    h.records_count,
                    h.last_offset_delta,
                    h.base_timestamp,
                    h.max_timestamp
                ),
                (4, 3, sent_h.base_timestamp, sent_h.max_timestamp)
            );
            if from == to {
                assert_eq!(
                    bytes[16..],
                    sent[16..],
                    "a batch already in the codec is kept"
                );
            }
            let mut b = bytes.clone();
            let back = RecordBatchDecoder::decode(&mut b).unwrap().records;
            assert_eq!(back, original, "{from:?} -> {to:?}");
        }
    }
}

#[test]
fn producer_compression_keeps_batches_as_sent() {
    let mut log = open(LogConfig::default());
    let sent = encode(&records(&[1_000, 1_001]), Codec::Snappy);
    log.append(&sent, 0, 2_000).unwrap();
    assert_eq!(stored(&mut log)[16..], sent[16..]);
}

#[test]
fn recompression_is_deterministic_and_honours_levels() {
    let sent = encode(&records(&[1_000; 30]), Codec::None);
    let at = |level: i32| {
        let mut log = open(LogConfig {
            compression: Some(Compression::Zstd),
            zstd_level: level,
            ..LogConfig::default()
        });
        log.append(&sent, 0, 2_000).unwrap();
        stored(&mut log)
    };
    assert_eq!(at(3), at(3), "same input, same bytes");
    assert_ne!(at(1)[61..], at(19)[61..], "the level is used");
}

#[test]
fn a_batch_that_grows_past_max_message_bytes_when_recompressed_is_refused() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut r = records(&[1_000]);
    r[0].value = Some(Bytes::from(
        (0..4000).map(|_| rng.r#gen::<u8>()).collect::<Vec<_>>(),
    ));
    let sent = encode(&r, Codec::None);
    let mut log = open(LogConfig {
        compression: Some(Compression::Gzip),
        max_message_bytes: sent.len(),
        ..LogConfig::default()
    });
    assert!(matches!(
        log.append(&sent, 0, 2_000),
        Err(LogError::TooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn a_batch_decompressing_past_the_limit_is_refused() {
    let mut r = records(&[1_000]);
    r[0].value = Some(Bytes::from(vec![0u8; 17 << 20]));
    let sent = encode(&r, Codec::Zstd);
    assert!(sent.len() < 1 << 18, "{} bytes", sent.len());
    // The limit: 64 x max.message.bytes, at least 16 MiB.
    let mut log = open(LogConfig {
        compression: Some(Compression::Lz4),
        max_message_bytes: 1 << 18,
        ..LogConfig::default()
    });
    let e = log.append(&sent, 0, 2_000).unwrap_err();
    assert!(matches!(e, LogError::InvalidRecord(_)), "{e}");
}

#[test]
fn log_append_time_stamps_the_batch_with_a_valid_crc() {
    for (codec, recompress) in [
        (Codec::None, None),
        (Codec::Gzip, None),
        (Codec::Snappy, Some(Compression::Zstd)),
    ] {
        let mut log = open(LogConfig {
            log_append_time: true,
            compression: recompress,
            ..LogConfig::default()
        });
        // Timestamps far from the broker's clock do not matter with LogAppendTime.
        let sent = encode(&records(&[1, 2, 3]), codec);
        let a = log.append(&sent, 0, 5_000_000_000).unwrap();
        assert_eq!(a.log_append_time, 5_000_000_000);
        assert_eq!(a.max_timestamp, 5_000_000_000);
        let bytes = stored(&mut log);
        let h = crate::batch::validate(&bytes).expect("the CRC was recomputed");
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 5_000_000_000);
        assert_eq!((h.producer_id, h.base_sequence), (7, 10));
        let mut b = bytes.clone();
        let set = RecordBatchDecoder::decode(&mut b).unwrap();
        assert!(
            set.records
                .iter()
                .all(|r| r.timestamp_type == TimestampType::LogAppend)
        );
        // Time lookups see the append time for every record of the batch.
        assert_eq!(
            log.offset_for_timestamp(4_000_000_000).unwrap(),
            Some((0, 5_000_000_000))
        );
    }
    // A producer may not claim LogAppendTime itself.
    let mut log = open(LogConfig {
        log_append_time: true,
        ..LogConfig::default()
    });
    let mut claimed = encode(&records(&[1]), Codec::None).to_vec();
    claimed[21..23].copy_from_slice(&crate::batch::LOG_APPEND_TIME.to_be_bytes());
    crate::batch::reseal(&mut claimed);
    assert!(matches!(
        log.append(&claimed, 0, 10),
        Err(LogError::InvalidTimestamp(_))
    ));
}

#[test]
fn record_timestamps_outside_the_topic_bounds_are_refused() {
    let bounded = LogConfig {
        timestamp_before_max_ms: 1_000,
        timestamp_after_max_ms: 1_000,
        ..LogConfig::default()
    };
    let now = 10_000;
    for codec in CODECS {
        let mut log = open(bounded.clone());
        log.append(&encode(&records(&[9_000, 11_000, -1]), codec), 0, now)
            .expect("the bounds are inclusive, no timestamp is not checked");
        let e = log
            .append(&encode(&records(&[10_000, 10_500, 11_001]), codec), 0, now)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Timestamp 11001 of message with offset 2 is out of range. The timestamp should be within [9000, 11000]",
            "{codec:?}"
        );
        let e = log
            .append(&encode(&records(&[8_999, 10_000]), codec), 0, now)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Timestamp 8999 of message with offset 0")
        );
        // check() refuses the same, and nothing was written.
        assert!(matches!(
            log.check(&encode(&records(&[8_999]), codec), now),
            Err(LogError::InvalidTimestamp(_))
        ));
        assert!(log.check(&encode(&records(&[9_999]), codec), now).is_ok());
        assert_eq!(log.log_end_offset(), 3);
    }
    // Kafka 4's defaults: nothing is too old; more than an hour ahead is refused (for a
    // compressed batch, by its header's max timestamp).
    let mut log = open(LogConfig::default());
    for codec in CODECS {
        log.append(&encode(&records(&[0, now]), codec), 0, now)
            .unwrap();
        let ahead = now + 3_600_001;
        assert!(matches!(
            log.append(&encode(&records(&[now, ahead]), codec), 0, now),
            Err(LogError::InvalidTimestamp(_))
        ));
    }
    // LogAppendTime ignores the producer's timestamps.
    let mut log = open(LogConfig {
        log_append_time: true,
        ..bounded
    });
    log.append(&encode(&records(&[0]), Codec::Lz4), 0, now)
        .unwrap();
}

#[test]
fn flush_messages_and_flush_ms_make_a_partition_due() {
    let mut log = open(LogConfig {
        flush_messages: 5,
        flush_ms: 100,
        ..LogConfig::default()
    });
    assert!(!log.flush_due(0));
    assert_eq!(log.flush_deadline(), None);
    log.append(&encode(&records(&[1, 2]), Codec::None), 0, 1_000)
        .unwrap();
    assert_eq!(log.flush_deadline(), Some(1_100));
    assert!(!log.flush_due(1_099));
    assert!(
        log.flush_due(1_100),
        "flush.ms after the oldest unsynced append"
    );
    log.append(&encode(&records(&[1, 2]), Codec::None), 0, 1_050)
        .unwrap();
    assert_eq!(log.flush_deadline(), Some(1_100), "counted from the oldest");
    assert!(log.take_sync_work().is_some());
    assert!(!log.flush_due(5_000));
    assert_eq!(log.flush_deadline(), None);
    log.append(&encode(&records(&[1, 2, 3, 4]), Codec::Gzip), 0, 2_000)
        .unwrap();
    assert!(!log.flush_due(2_000));
    log.append(&encode(&records(&[1]), Codec::None), 0, 2_000)
        .unwrap();
    assert!(log.flush_due(2_000), "flush.messages reached");
    // Defaults: never due by these rules (the runtime's periodic sync covers the partition).
    let mut log = open(LogConfig::default());
    log.append(&encode(&records(&[1]), Codec::None), 0, 0)
        .unwrap();
    assert!(!log.flush_due(i64::MAX / 2));
    assert_eq!(log.flush_deadline(), None);
}
