//! Starts after a clean shutdown and after a crash: the clean-shutdown record is written last
//! and removed first, so only a start that follows a clean shutdown skips checking log tails.

use std::sync::Arc;

use super::{Broker, BrokerConfig, CLEAN_SHUTDOWN_FILE};
use crate::storage::{MemStorage, Storage};

fn open(fs: &MemStorage) -> Broker {
    let config = BrokerConfig {
        offsets_partitions: 1,
        ..BrokerConfig::default()
    };
    Broker::open(Arc::new(fs.clone()) as Arc<dyn Storage>, config, 5, 0).unwrap()
}

#[test]
fn the_clean_shutdown_record_is_written_last_and_removed_first() {
    let fs = MemStorage::new();
    let mut b = open(&fs);
    assert!(fs.raw(CLEAN_SHUTDOWN_FILE).is_none());
    b.close();
    assert!(fs.raw(CLEAN_SHUTDOWN_FILE).is_some(), "written by close");
    drop(b);
    let b = open(&fs);
    assert!(
        fs.raw(CLEAN_SHUTDOWN_FILE).is_none(),
        "removed at start, before anything is written"
    );
    // A crash now (no close): the record stays gone, so the next start checks every tail.
    drop(b);
    fs.crash();
    assert!(fs.raw(CLEAN_SHUTDOWN_FILE).is_none());
    let _ = open(&fs);
}

#[test]
fn a_torn_tail_after_a_crash_is_still_truncated() {
    let fs = MemStorage::new();
    let mut b = open(&fs);
    b.close();
    drop(b);
    let b = open(&fs);
    drop(b);
    // Garbage appended to the last segment of a partition, as a torn write leaves it.
    let seg = "logs/__consumer_offsets-0/00000000000000000000.log";
    let mut raw = fs.raw(seg).expect("segment exists");
    let before = raw.len();
    raw.extend_from_slice(&[0xAB; 40]);
    fs.set_raw(seg, raw);
    let _b = open(&fs);
    assert_eq!(fs.raw(seg).unwrap().len(), before, "the torn tail was cut");
}
