//! The application handshake that follows TLS on the dialer's first bidirectional stream.
//!
//! TLS proves "this peer holds a certificate from the cluster CA". The handshake binds that to
//! Raft's view: the dialer says which cluster it is in, which node it is, and which node it
//! expects at the address it dialed. The acceptor checks all three (plus the certificate's node
//! name and duplicates) and answers [`Welcome`] in a frame, or refuses by closing the connection
//! with [`crate::CLOSE_REFUSED`] and a human-readable reason, which the dialer logs.
//!
//! Encoding (inside one length-delimited frame, all integers big-endian):
//!
//! ```text
//! Hello:   "SLQH" version:u8=1 kind:u8=1 from:u64 expected:u64 cluster_len:u8 cluster_id
//! Welcome: "SLQH" version:u8=1 kind:u8=2 node:u64
//! Join:    "SLQH" version:u8=1 kind:u8=3 from:u64 cluster_len:u8 cluster_id (empty: unknown)
//! Roster:  "SLQH" version:u8=1 kind:u8=4 cluster_len:u8 cluster_id fresh:u8
//!          initial_count:u16 (id:u64)* peer_count:u16 (id:u64 addr_len:u8 addr)*
//! ```
//!
//! A node joining a running cluster (`--join`) knows one member's Raft address and nothing
//! else: it sends [`Join`] instead of a hello, and a member that already counts it as one
//! (`sluice cluster add-node` came first) answers with the [`Roster`]: the cluster id, the
//! voters `__meta` started with (every node must build the same initial state) and every
//! member's Raft address. The connection then closes; the joiner starts its transport with
//! those peers.

/// Handshake frames are tiny; anything larger is not a handshake.
pub const HANDSHAKE_BYTES_MAX: usize = 1024;
/// A roster lists every member's address: larger than a hello, still bounded.
pub const ROSTER_BYTES_MAX: usize = 64 * 1024;

const MAGIC: &[u8; 4] = b"SLQH";
const VERSION: u8 = 1;
const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_JOIN: u8 = 3;
const KIND_ROSTER: u8 = 4;

/// Joiner → member: "I am node `from`, let me in" (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The cluster id the joiner was given (empty: it takes the member's).
    pub cluster_id: String,
    /// The joiner's node id; its certificate must carry `node-<from>.sluice`.
    pub from: u64,
}

/// Member → joiner: what it needs to start (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    /// The cluster id.
    pub cluster_id: String,
    /// Whether the joiner is new to the cluster (never registered): it may start with an empty
    /// state. A member that was running before and lost its data must recover like one.
    pub fresh: bool,
    /// The voters `__meta` started with.
    pub initial: Vec<u64>,
    /// Every member the answering node knows, itself included: `(id, Raft address)`.
    pub peers: Vec<(u64, String)>,
}

/// The first frame an acceptor reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A member connecting for Raft traffic.
    Hello(Hello),
    /// A node joining.
    Join(Join),
}

impl Opening {
    /// Parses a hello or a join.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > 5 && bytes[5] == KIND_JOIN {
            Join::decode(bytes).map(Opening::Join)
        } else {
            Hello::decode(bytes).map(Opening::Hello)
        }
    }
}

impl Join {
    /// Serializes the join.
    pub fn encode(&self) -> Vec<u8> {
        let cluster = self.cluster_id.as_bytes();
        assert!(cluster.len() <= u8::MAX as usize, "cluster id too long");
        let mut out = Vec::with_capacity(4 + 2 + 8 + 1 + cluster.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, KIND_JOIN]);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.push(cluster.len() as u8);
        out.extend_from_slice(cluster);
        out
    }

    /// Parses [`Join::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, KIND_JOIN)?;
        let from = r.u64()?;
        let cluster_id = r.string()?;
        r.end()?;
        Ok(Join { cluster_id, from })
    }
}

impl Roster {
    /// Serializes the roster (ids and addresses past the format's bounds are left out).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, KIND_ROSTER]);
        put_string(&mut out, &self.cluster_id);
        out.push(u8::from(self.fresh));
        let initial = &self.initial[..self.initial.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(initial.len() as u16).to_be_bytes());
        for id in initial {
            out.extend_from_slice(&id.to_be_bytes());
        }
        let peers: Vec<&(u64, String)> = self
            .peers
            .iter()
            .filter(|(_, a)| a.len() <= u8::MAX as usize)
            .take(u16::MAX as usize)
            .collect();
        out.extend_from_slice(&(peers.len() as u16).to_be_bytes());
        for (id, addr) in peers {
            out.extend_from_slice(&id.to_be_bytes());
            put_string(&mut out, addr);
        }
        out
    }

    /// Parses [`Roster::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, KIND_ROSTER)?;
        let cluster_id = r.string()?;
        let fresh = r.u8()? != 0;
        let n = r.u16()?;
        let initial = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
        let n = r.u16()?;
        let peers = (0..n)
            .map(|_| Ok((r.u64()?, r.string()?)))
            .collect::<Result<_, _>>()?;
        r.end()?;
        Ok(Roster {
            cluster_id,
            fresh,
            initial,
            peers,
        })
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u8::MAX as usize)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// Dialer → acceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's cluster id; must equal the acceptor's.
    pub cluster_id: String,
    /// The dialer's node id; its certificate must carry `node-<from>.sluice`.
    pub from: u64,
    /// The node the dialer expects at the address it dialed.
    pub expected: u64,
}

/// Acceptor → dialer: accepted; `node` is the acceptor's id (must be the expected one, and its
/// certificate must carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The acceptor's node id.
    pub node: u64,
}

/// A handshake frame that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed handshake: {0}")]
pub struct DecodeError(pub &'static str);

impl Hello {
    /// Serializes the hello (cluster ids longer than 255 bytes are rejected by config checks).
    pub fn encode(&self) -> Vec<u8> {
        let cluster = self.cluster_id.as_bytes();
        assert!(cluster.len() <= u8::MAX as usize, "cluster id too long");
        let mut out = Vec::with_capacity(4 + 2 + 16 + 1 + cluster.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, KIND_HELLO]);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.expected.to_be_bytes());
        out.push(cluster.len() as u8);
        out.extend_from_slice(cluster);
        out
    }

    /// Parses [`Hello::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, KIND_HELLO)?;
        let from = r.u64()?;
        let expected = r.u64()?;
        let len = r.u8()? as usize;
        let cluster = r.take(len)?;
        r.end()?;
        let cluster_id = String::from_utf8(cluster.to_vec())
            .map_err(|_| DecodeError("cluster id is not UTF-8"))?;
        Ok(Hello {
            cluster_id,
            from,
            expected,
        })
    }
}

impl Welcome {
    /// Serializes the welcome.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 2 + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, KIND_WELCOME]);
        out.extend_from_slice(&self.node.to_be_bytes());
        out
    }

    /// Parses [`Welcome::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, KIND_WELCOME)?;
        let node = r.u64()?;
        r.end()?;
        Ok(Welcome { node })
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], kind: u8) -> Result<Self, DecodeError> {
        let mut r = Reader { rest: bytes };
        if r.take(4)? != MAGIC {
            return Err(DecodeError("bad magic (not a Sluice Raft transport peer)"));
        }
        if r.u8()? != VERSION {
            return Err(DecodeError("unsupported handshake version"));
        }
        if r.u8()? != kind {
            return Err(DecodeError("unexpected message kind"));
        }
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes(b.try_into().expect("2 bytes")))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u8()? as usize;
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("a string is not UTF-8"))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_welcome_roundtrip() {
        let hello = Hello {
            cluster_id: "prod-eu".into(),
            from: 1,
            expected: u64::MAX,
        };
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
        let welcome = Welcome { node: 3 };
        assert_eq!(Welcome::decode(&welcome.encode()).unwrap(), welcome);
    }

    #[test]
    fn join_and_roster_roundtrip() {
        let join = Join {
            cluster_id: String::new(),
            from: 4,
        };
        assert_eq!(
            Opening::decode(&join.encode()).unwrap(),
            Opening::Join(join.clone())
        );
        let hello = Hello {
            cluster_id: "c".into(),
            from: 1,
            expected: 2,
        };
        assert_eq!(
            Opening::decode(&hello.encode()).unwrap(),
            Opening::Hello(hello)
        );
        let roster = Roster {
            cluster_id: "prod".into(),
            fresh: true,
            initial: vec![1, 2, 3],
            peers: vec![(1, "127.0.0.1:7001".into()), (5, "[::1]:7005".into())],
        };
        let bytes = roster.encode();
        assert_eq!(Roster::decode(&bytes).unwrap(), roster);
        for len in 0..bytes.len() {
            assert!(Roster::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        assert!(Roster::decode(&join.encode()).is_err());
    }

    #[test]
    fn malformed_handshakes_are_errors() {
        let hello = Hello {
            cluster_id: "c".into(),
            from: 1,
            expected: 2,
        }
        .encode();
        for len in 0..hello.len() {
            assert!(Hello::decode(&hello[..len]).is_err(), "prefix {len}");
        }
        let mut trailing = hello.clone();
        trailing.push(0);
        assert_eq!(Hello::decode(&trailing), Err(DecodeError("trailing bytes")));
        assert!(Welcome::decode(&hello).is_err(), "a hello is not a welcome");
        let mut bad_magic = hello.clone();
        bad_magic[0] = b'X';
        assert!(Hello::decode(&bad_magic).is_err());
        let mut bad_utf8 = hello;
        let last = bad_utf8.len() - 1;
        bad_utf8[last] = 0xff;
        assert!(Hello::decode(&bad_utf8).is_err());
    }
}
