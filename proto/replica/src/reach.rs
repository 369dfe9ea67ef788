//! Whether this node still reaches its cluster, from what it hears.
//!
//! A node cut off from a majority (isolated, or deaf: it still sends but hears nothing) steps
//! down from every group it led, but its clients do not learn where the new leaders are: it
//! answers their Metadata with "no leader", and librdkafka and the Java client keep asking the
//! broker they are connected to. Such a node closes its Kafka connections and refuses new ones
//! until it hears a majority again, so clients take their requests and Metadata to nodes that
//! know (ZooKeeper's servers do the same when they lose their quorum). Every peer is pinged
//! when nothing else went to it for a while, so silence means the link or the peer is gone,
//! not that the two nodes happened to share no Raft group.

use std::collections::{BTreeMap, BTreeSet};

/// A peer sent nothing for this long (ms) no longer counts as reachable: more than the longest
/// election timeout, so an ordinary election (whose votes are messages) never looks like a cut.
pub const SILENT_MS: u64 = 1_200;
/// The cut must last this long (ms) before the node acts on it: a node resuming from a pause
/// sees old silence until the messages queued meanwhile are read.
pub const CONFIRM_MS: u64 = 100;
/// A peer that was sent nothing for this long (ms) gets an empty batch.
pub const PING_MS: u64 = 200;

/// What this node heard from and sent to each peer.
#[derive(Debug, Default)]
pub struct Reach {
    /// Last time (ms) each peer was heard.
    heard: BTreeMap<u64, u64>,
    /// Peers heard since the last [`Reach::update`] (messages carry no time).
    fresh: BTreeSet<u64>,
    /// Last time (ms) each peer was sent something.
    sent: BTreeMap<u64, u64>,
    /// Since when fewer than a majority were heard.
    short_since: Option<u64>,
    cut_off: bool,
    now: u64,
}

/// A change of [`Reach::cut_off`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Cut off: `heard` are the peers still heard.
    CutOff { heard: Vec<u64> },
    /// A majority is heard again.
    Rejoined,
}

impl Reach {
    /// When `peer` was last heard (ms, as of the last [`Reach::update`]).
    pub fn last_heard(&self, peer: u64) -> Option<u64> {
        self.heard.get(&peer).copied()
    }

    /// Peers of `voters` (other than `me`) not heard from for [`SILENT_MS`] as of `now`.
    pub fn silent(&self, now: u64, me: u64, voters: &[u64]) -> BTreeSet<u64> {
        voters
            .iter()
            .copied()
            .filter(|&v| v != me)
            .filter(|v| {
                self.heard
                    .get(v)
                    .is_none_or(|&at| now.saturating_sub(at) >= SILENT_MS)
            })
            .collect()
    }

    /// A batch arrived from `peer`.
    pub fn heard(&mut self, peer: u64) {
        self.fresh.insert(peer);
    }

    /// Makes `peer` due for a ping at the next [`Reach::pings_due`].
    pub fn forget_sent(&mut self, peer: u64) {
        self.sent.remove(&peer);
    }

    /// A batch left for `peer`.
    pub fn sent(&mut self, peer: u64) {
        self.sent.insert(peer, self.now);
    }

    /// The time of the last [`Reach::update`].
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether the node is cut off from a majority of `voters` (itself included).
    pub fn cut_off(&self) -> bool {
        self.cut_off
    }

    /// Advances to `now` with the cluster's voters; returns a change of [`Reach::cut_off`].
    pub fn update(&mut self, now: u64, me: u64, voters: &[u64]) -> Option<Change> {
        self.now = now;
        for p in std::mem::take(&mut self.fresh) {
            self.heard.insert(p, now);
        }
        let mut heard = Vec::new();
        for &v in voters.iter().filter(|&&v| v != me) {
            // A peer first seen now counts as heard: silence is measured from here.
            let at = *self.heard.entry(v).or_insert(now);
            if now.saturating_sub(at) < SILENT_MS {
                heard.push(v);
            }
        }
        let majority = (1 + heard.len()) * 2 > voters.len().max(1);
        if majority {
            self.short_since = None;
            if self.cut_off {
                self.cut_off = false;
                return Some(Change::Rejoined);
            }
            return None;
        }
        let since = *self.short_since.get_or_insert(now);
        if !self.cut_off && now.saturating_sub(since) >= CONFIRM_MS {
            self.cut_off = true;
            return Some(Change::CutOff { heard });
        }
        None
    }

    /// Peers of `voters` that were sent nothing for [`PING_MS`]: each gets an empty batch.
    pub fn pings_due(&mut self, now: u64, me: u64, voters: &[u64]) -> Vec<u64> {
        let due: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|&v| v != me)
            .filter(|v| {
                self.sent
                    .get(v)
                    .is_none_or(|at| now.saturating_sub(*at) >= PING_MS)
            })
            .collect();
        for &v in &due {
            self.sent.insert(v, now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOTERS: [u64; 3] = [1, 2, 3];

    #[test]
    fn a_node_hearing_one_peer_of_two_is_not_cut_off() {
        let mut r = Reach::default();
        assert_eq!(r.update(0, 1, &VOTERS), None);
        for t in (100..5_000).step_by(100) {
            r.heard(2);
            assert_eq!(r.update(t, 1, &VOTERS), None, "at {t}");
        }
        assert!(!r.cut_off());
    }

    #[test]
    fn a_node_hearing_nobody_is_cut_off_after_the_silence_and_rejoins_on_a_message() {
        let mut r = Reach::default();
        r.update(0, 1, &VOTERS);
        let mut cut_at = None;
        for t in (10..3_000).step_by(10) {
            if let Some(Change::CutOff { heard }) = r.update(t, 1, &VOTERS) {
                assert!(heard.is_empty());
                cut_at = Some(t);
                break;
            }
        }
        assert_eq!(cut_at, Some(SILENT_MS + CONFIRM_MS));
        assert!(r.cut_off());
        r.heard(3);
        assert_eq!(r.update(3_000, 1, &VOTERS), Some(Change::Rejoined));
        assert!(!r.cut_off());
    }

    #[test]
    fn a_short_look_of_silence_after_a_pause_is_not_a_cut() {
        let mut r = Reach::default();
        r.update(0, 1, &VOTERS);
        // Paused for 5 s: the first pass sees only old silence, the next one the queued mail.
        assert_eq!(r.update(5_000, 1, &VOTERS), None);
        r.heard(2);
        assert_eq!(r.update(5_005, 1, &VOTERS), None);
        assert!(!r.cut_off());
    }

    #[test]
    fn a_lone_voter_is_never_cut_off() {
        let mut r = Reach::default();
        assert_eq!(r.update(0, 1, &[1]), None);
        assert_eq!(r.update(10_000, 1, &[1]), None);
    }

    #[test]
    fn peers_sent_nothing_recently_are_pinged() {
        let mut r = Reach::default();
        r.update(0, 1, &VOTERS);
        assert_eq!(r.pings_due(0, 1, &VOTERS), vec![2, 3]);
        r.update(150, 1, &VOTERS);
        r.sent(2);
        assert_eq!(r.pings_due(150, 1, &VOTERS), Vec::<u64>::new());
        assert_eq!(r.pings_due(200, 1, &VOTERS), vec![3]);
        assert_eq!(r.pings_due(349, 1, &VOTERS), Vec::<u64>::new());
        assert_eq!(r.pings_due(350, 1, &VOTERS), vec![2]);
    }
}
