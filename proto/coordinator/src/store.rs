//! The durable record format of the coordinator's internal log (`__consumer_offsets`).
//!
//! Every state change the coordinator must not forget is a [`StoreRecord`]: a Kafka record key plus an
//! optional value (`None` is a tombstone). Keys are stable per entity (one key per group, one per
//! group/topic/partition), so the internal log can be compacted like Kafka's and replaying it in order
//! rebuilds the state. The format is our own compact big-endian binary with a version byte in front of
//! every key and value, so later versions can add fields without breaking old logs.
//!
//! Which partition of the internal log a record belongs to is [`partition_for`] of its group id, the
//! same function Kafka uses, so `kafka-consumer-groups`-style tooling and Sluice agree.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Version byte written in front of every key.
const KEY_VERSION: u8 = 0;
/// Version byte written in front of every value.
const VALUE_VERSION: u8 = 0;

const TYPE_OFFSET: u8 = 0;
const TYPE_GROUP: u8 = 1;
const TYPE_PRODUCER_ID_BLOCK: u8 = 2;
const TYPE_TRANSACTION: u8 = 3;

/// Limit on any string or byte field, so a corrupt length cannot ask for gigabytes.
const FIELD_BYTES_MAX: usize = 64 << 20;
/// Limit on the member count of one group record.
const MEMBERS_MAX: usize = 1 << 20;

/// Why a stored key or value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The bytes ended inside a field.
    #[error("record truncated")]
    Truncated,
    /// A key or value was written by a newer (or corrupt) format version.
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// The key names a record type this version does not know.
    #[error("unknown record type {0}")]
    UnknownType(u8),
    /// A string field is not UTF-8.
    #[error("string field is not UTF-8")]
    InvalidUtf8,
    /// A length field is negative (where null is not allowed) or over the limit.
    #[error("invalid length {0}")]
    InvalidLength(i64),
    /// Bytes remained after the last field.
    #[error("{0} trailing bytes after record")]
    TrailingBytes(usize),
    /// A producer-id record carried a value-less (tombstone) form, which has no meaning.
    #[error("producer id block record without value")]
    MissingValue,
}

/// Kafka's partition of the internal log for a group: `abs(java_string_hash(group_id)) % n`.
///
/// Matches `GroupMetadataManager.partitionFor`, so the coordinator a Sluice node advertises for a group
/// is the one Kafka would compute.
pub fn partition_for(group_id: &str, n_partitions: i32) -> i32 {
    assert!(
        n_partitions > 0,
        "internal log needs at least one partition"
    );
    let hash = java_string_hash(group_id);
    // Kafka's Utils.abs maps i32::MIN to 0 instead of overflowing.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % n_partitions
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32))
}

/// One durable fact of the coordinator, as stored in the internal log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRecord {
    /// A committed offset, or its deletion (`value: None`).
    Offset {
        /// Which group/topic/partition the offset is for.
        key: OffsetKey,
        /// The commit, or `None` for a tombstone.
        value: Option<OffsetValue>,
    },
    /// A group's membership and assignment as of its last stable point, or its deletion.
    Group {
        /// The group id.
        group_id: String,
        /// The metadata, or `None` for a tombstone.
        value: Option<GroupMetadataValue>,
    },
    /// Producer ids below `block_end` may have been handed out; the next allocation starts there.
    ProducerIdBlock {
        /// Exclusive end of the reserved block.
        block_end: i64,
    },
    /// A transactional id's state (in `__transaction_state`), or its removal.
    Transaction {
        /// The transactional id.
        transactional_id: String,
        /// The state, or `None` for a tombstone.
        value: Option<TxnValue>,
    },
}

/// A transactional id's durable state, as Kafka's `TransactionLogValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    /// Current producer id.
    pub producer_id: i64,
    /// The producer id before the last one (an epoch exhaustion moved to a new id), or -1.
    pub last_producer_id: i64,
    /// Current epoch.
    pub producer_epoch: i16,
    /// Epoch before the last bump, or -1.
    pub last_producer_epoch: i16,
    /// `transaction.timeout.ms` of the producer.
    pub timeout_ms: i32,
    /// State code (see `txn::TxnState::code`).
    pub state: u8,
    /// Partitions in the transaction.
    pub partitions: Vec<(String, i32)>,
    /// When the ongoing transaction started (-1 when none).
    pub start_ms: i64,
    /// Last state change.
    pub update_ms: i64,
}

/// Key of a committed offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OffsetKey {
    /// Consumer group id.
    pub group_id: String,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

/// A committed offset as Kafka's `OffsetAndMetadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// The next offset the group will consume.
    pub offset: i64,
    /// Leader epoch of the committed offset, -1 when unknown (OffsetCommit < v6).
    pub leader_epoch: i32,
    /// Client-supplied metadata; Kafka stores `null` as the empty string.
    pub metadata: String,
    /// When the commit arrived (coordinator clock), base of retention.
    pub commit_timestamp_ms: i64,
    /// Explicit expiry of OffsetCommit v2–v4 with `retention_time_ms != -1`.
    pub expire_timestamp_ms: Option<i64>,
}

/// A group's durable metadata, written when it stabilises, becomes empty or a static member changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// Protocol type (`consumer`, `connect`, ...); `None` for groups that only commit offsets.
    pub protocol_type: Option<String>,
    /// Generation id.
    pub generation: i32,
    /// Selected protocol (assignor) name.
    pub protocol: Option<String>,
    /// Leader member id.
    pub leader: Option<String>,
    /// When the group entered its current state (base of offset retention for empty groups).
    pub state_timestamp_ms: i64,
    /// Members with their subscription (for the selected protocol) and assignment.
    pub members: Vec<MemberValue>,
}

/// One member in a [`GroupMetadataValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    /// Member id.
    pub member_id: String,
    /// Static membership id (KIP-345).
    pub group_instance_id: Option<String>,
    /// Client id from the JoinGroup request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Rebalance timeout from the member's last join.
    pub rebalance_timeout_ms: i32,
    /// Session timeout from the member's last join.
    pub session_timeout_ms: i32,
    /// The member's metadata for the selected protocol.
    pub subscription: Bytes,
    /// The assignment the leader gave this member.
    pub assignment: Bytes,
}

impl StoreRecord {
    /// The group this record belongs to (`None` for producer-id blocks).
    pub fn group_id(&self) -> Option<&str> {
        match self {
            StoreRecord::Offset { key, .. } => Some(&key.group_id),
            StoreRecord::Group { group_id, .. } => Some(group_id),
            StoreRecord::ProducerIdBlock { .. } | StoreRecord::Transaction { .. } => None,
        }
    }

    /// Encodes as a Kafka record key and value (`None` value = tombstone).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        key.put_u8(KEY_VERSION);
        let value = match self {
            StoreRecord::Offset { key: k, value } => {
                key.put_u8(TYPE_OFFSET);
                put_str(&mut key, &k.group_id);
                put_str(&mut key, &k.topic);
                key.put_i32(k.partition);
                value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_u8(VALUE_VERSION);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_str(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp_ms);
                    b.put_i64(v.expire_timestamp_ms.unwrap_or(-1));
                    b.freeze()
                })
            }
            StoreRecord::Group { group_id, value } => {
                key.put_u8(TYPE_GROUP);
                put_str(&mut key, group_id);
                value.as_ref().map(encode_group_value)
            }
            StoreRecord::ProducerIdBlock { block_end } => {
                key.put_u8(TYPE_PRODUCER_ID_BLOCK);
                let mut b = BytesMut::new();
                b.put_u8(VALUE_VERSION);
                b.put_i64(*block_end);
                Some(b.freeze())
            }
            StoreRecord::Transaction {
                transactional_id,
                value,
            } => {
                key.put_u8(TYPE_TRANSACTION);
                put_str(&mut key, transactional_id);
                value.as_ref().map(encode_txn_value)
            }
        };
        (key.freeze(), value)
    }

    /// Decodes a key and optional value written by [`StoreRecord::encode`].
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<StoreRecord, StoreError> {
        let mut k = key;
        let version = get_u8(&mut k)?;
        if version != KEY_VERSION {
            return Err(StoreError::UnknownVersion(version));
        }
        let record = match get_u8(&mut k)? {
            TYPE_OFFSET => {
                let key = OffsetKey {
                    group_id: get_str(&mut k)?,
                    topic: get_str(&mut k)?,
                    partition: get_i32(&mut k)?,
                };
                let value = value.map(decode_offset_value).transpose()?;
                StoreRecord::Offset { key, value }
            }
            TYPE_GROUP => {
                let group_id = get_str(&mut k)?;
                let value = value.map(decode_group_value).transpose()?;
                StoreRecord::Group { group_id, value }
            }
            TYPE_PRODUCER_ID_BLOCK => {
                let mut v = value.ok_or(StoreError::MissingValue)?;
                check_value_version(&mut v)?;
                let block_end = get_i64(&mut v)?;
                finish(v)?;
                StoreRecord::ProducerIdBlock { block_end }
            }
            TYPE_TRANSACTION => {
                let transactional_id = get_str(&mut k)?;
                let value = value.map(decode_txn_value).transpose()?;
                StoreRecord::Transaction {
                    transactional_id,
                    value,
                }
            }
            other => return Err(StoreError::UnknownType(other)),
        };
        finish(k)?;
        Ok(record)
    }
}

fn encode_group_value(v: &GroupMetadataValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(VALUE_VERSION);
    put_opt_str(&mut b, v.protocol_type.as_deref());
    b.put_i32(v.generation);
    put_opt_str(&mut b, v.protocol.as_deref());
    put_opt_str(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp_ms);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut b, &m.member_id);
        put_opt_str(&mut b, m.group_instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

fn encode_txn_value(v: &TxnValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(VALUE_VERSION);
    b.put_i64(v.producer_id);
    b.put_i64(v.last_producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i16(v.last_producer_epoch);
    b.put_i32(v.timeout_ms);
    b.put_u8(v.state);
    b.put_i32(v.partitions.len() as i32);
    for (topic, partition) in &v.partitions {
        put_str(&mut b, topic);
        b.put_i32(*partition);
    }
    b.put_i64(v.start_ms);
    b.put_i64(v.update_ms);
    b.freeze()
}

fn decode_txn_value(mut v: &[u8]) -> Result<TxnValue, StoreError> {
    check_value_version(&mut v)?;
    let producer_id = get_i64(&mut v)?;
    let last_producer_id = get_i64(&mut v)?;
    let producer_epoch = get_i16(&mut v)?;
    let last_producer_epoch = get_i16(&mut v)?;
    let timeout_ms = get_i32(&mut v)?;
    let state = get_u8(&mut v)?;
    let n = get_i32(&mut v)?;
    if n < 0 || n as usize > MEMBERS_MAX {
        return Err(StoreError::InvalidLength(n as i64));
    }
    let mut partitions = Vec::with_capacity((n as usize).min(1024));
    for _ in 0..n {
        partitions.push((get_str(&mut v)?, get_i32(&mut v)?));
    }
    let value = TxnValue {
        producer_id,
        last_producer_id,
        producer_epoch,
        last_producer_epoch,
        timeout_ms,
        state,
        partitions,
        start_ms: get_i64(&mut v)?,
        update_ms: get_i64(&mut v)?,
    };
    finish(v)?;
    Ok(value)
}

fn decode_offset_value(mut v: &[u8]) -> Result<OffsetValue, StoreError> {
    check_value_version(&mut v)?;
    let value = OffsetValue {
        offset: get_i64(&mut v)?,
        leader_epoch: get_i32(&mut v)?,
        metadata: get_str(&mut v)?,
        commit_timestamp_ms: get_i64(&mut v)?,
        expire_timestamp_ms: Some(get_i64(&mut v)?).filter(|t| *t >= 0),
    };
    finish(v)?;
    Ok(value)
}

fn decode_group_value(mut v: &[u8]) -> Result<GroupMetadataValue, StoreError> {
    check_value_version(&mut v)?;
    let protocol_type = get_opt_str(&mut v)?;
    let generation = get_i32(&mut v)?;
    let protocol = get_opt_str(&mut v)?;
    let leader = get_opt_str(&mut v)?;
    let state_timestamp_ms = get_i64(&mut v)?;
    let n = get_i32(&mut v)?;
    if n < 0 || n as usize > MEMBERS_MAX {
        return Err(StoreError::InvalidLength(n as i64));
    }
    let mut members = Vec::with_capacity((n as usize).min(1024));
    for _ in 0..n {
        members.push(MemberValue {
            member_id: get_str(&mut v)?,
            group_instance_id: get_opt_str(&mut v)?,
            client_id: get_str(&mut v)?,
            client_host: get_str(&mut v)?,
            rebalance_timeout_ms: get_i32(&mut v)?,
            session_timeout_ms: get_i32(&mut v)?,
            subscription: get_bytes(&mut v)?,
            assignment: get_bytes(&mut v)?,
        });
    }
    finish(v)?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

fn check_value_version(v: &mut &[u8]) -> Result<(), StoreError> {
    match get_u8(v)? {
        VALUE_VERSION => Ok(()),
        other => Err(StoreError::UnknownVersion(other)),
    }
}

fn finish(rest: &[u8]) -> Result<(), StoreError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(StoreError::TrailingBytes(rest.len()))
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    put_bytes(b, s.as_bytes());
}

fn put_opt_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i32(-1),
    }
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    assert!(
        s.len() <= FIELD_BYTES_MAX,
        "store field over {FIELD_BYTES_MAX} bytes"
    );
    b.put_i32(s.len() as i32);
    b.put_slice(s);
}

fn get_u8(b: &mut &[u8]) -> Result<u8, StoreError> {
    if b.remaining() < 1 {
        return Err(StoreError::Truncated);
    }
    Ok(b.get_u8())
}

fn get_i16(b: &mut &[u8]) -> Result<i16, StoreError> {
    if b.remaining() < 2 {
        return Err(StoreError::Truncated);
    }
    Ok(b.get_i16())
}

fn get_i32(b: &mut &[u8]) -> Result<i32, StoreError> {
    if b.remaining() < 4 {
        return Err(StoreError::Truncated);
    }
    Ok(b.get_i32())
}

fn get_i64(b: &mut &[u8]) -> Result<i64, StoreError> {
    if b.remaining() < 8 {
        return Err(StoreError::Truncated);
    }
    Ok(b.get_i64())
}

fn get_opt_slice<'a>(b: &mut &'a [u8]) -> Result<Option<&'a [u8]>, StoreError> {
    let len = get_i32(b)?;
    if len == -1 {
        return Ok(None);
    }
    if len < 0 || len as usize > FIELD_BYTES_MAX {
        return Err(StoreError::InvalidLength(len as i64));
    }
    let len = len as usize;
    if b.len() < len {
        return Err(StoreError::Truncated);
    }
    let (head, tail) = b.split_at(len);
    *b = tail;
    Ok(Some(head))
}

fn get_bytes(b: &mut &[u8]) -> Result<Bytes, StoreError> {
    get_opt_slice(b)?
        .map(Bytes::copy_from_slice)
        .ok_or(StoreError::InvalidLength(-1))
}

fn get_opt_str(b: &mut &[u8]) -> Result<Option<String>, StoreError> {
    get_opt_slice(b)?
        .map(|s| {
            std::str::from_utf8(s)
                .map(str::to_owned)
                .map_err(|_| StoreError::InvalidUtf8)
        })
        .transpose()
}

fn get_str(b: &mut &[u8]) -> Result<String, StoreError> {
    get_opt_str(b)?.ok_or(StoreError::InvalidLength(-1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: StoreRecord) {
        let (k, v) = r.encode();
        assert_eq!(StoreRecord::decode(&k, v.as_deref()).unwrap(), r);
    }

    #[test]
    fn records_roundtrip() {
        let key = OffsetKey {
            group_id: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        roundtrip(StoreRecord::Offset {
            key: key.clone(),
            value: Some(OffsetValue {
                offset: 42,
                leader_epoch: 7,
                metadata: "meta".into(),
                commit_timestamp_ms: 1000,
                expire_timestamp_ms: None,
            }),
        });
        roundtrip(StoreRecord::Offset { key, value: None });
        roundtrip(StoreRecord::Group {
            group_id: "g".into(),
            value: Some(GroupMetadataValue {
                protocol_type: Some("consumer".into()),
                generation: 3,
                protocol: Some("range".into()),
                leader: Some("m1".into()),
                state_timestamp_ms: 5,
                members: vec![MemberValue {
                    member_id: "m1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::new(),
                }],
            }),
        });
        roundtrip(StoreRecord::Group {
            group_id: "g".into(),
            value: None,
        });
        roundtrip(StoreRecord::ProducerIdBlock { block_end: 2000 });
        roundtrip(StoreRecord::Transaction {
            transactional_id: "tx".into(),
            value: Some(TxnValue {
                producer_id: 7,
                last_producer_id: -1,
                producer_epoch: 3,
                last_producer_epoch: 2,
                timeout_ms: 60_000,
                state: 1,
                partitions: vec![("t".into(), 0), ("u".into(), 4)],
                start_ms: 10,
                update_ms: 11,
            }),
        });
        roundtrip(StoreRecord::Transaction {
            transactional_id: "tx".into(),
            value: None,
        });
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let (k, v) = StoreRecord::ProducerIdBlock { block_end: 1 }.encode();
        assert_eq!(
            StoreRecord::decode(&k[..1], v.as_deref()),
            Err(StoreError::Truncated)
        );
        assert_eq!(
            StoreRecord::decode(&[9, 0], None),
            Err(StoreError::UnknownVersion(9))
        );
        assert_eq!(
            StoreRecord::decode(&[0, 77], None),
            Err(StoreError::UnknownType(77))
        );
        let mut long = v.unwrap().to_vec();
        long.push(0);
        assert_eq!(
            StoreRecord::decode(&k, Some(&long)),
            Err(StoreError::TrailingBytes(1))
        );
    }

    #[test]
    fn partition_matches_kafka() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("ab"), 97 * 31 + 98);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE in Java: Kafka's abs maps it to 0.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert!((0..50).contains(&partition_for("console-consumer-1", 50)));
    }
}
