//! Length-prefixed Kafka frames: bytes in, complete size-checked frames out.
//!
//! A frame's 4-byte length is checked against the limit *before* any buffer of that size
//! exists, so a peer announcing a 2 GiB frame costs us nothing.

use bytes::{Buf, Bytes, BytesMut};

/// Why a byte stream can no longer be framed; the connection must be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The announced frame is larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// Configured limit.
        limit: usize,
    },
    /// The announced length is negative or too small to hold a request header.
    #[error("invalid frame length {0}")]
    InvalidLength(i32),
}

/// Accumulates bytes read from a socket and cuts them into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_bytes: usize,
}

/// Smallest valid request: api key, version, correlation id, client id length.
const MIN_FRAME_BYTES: i32 = 10;

impl FrameDecoder {
    /// A decoder that rejects frames larger than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(64 * 1024),
            max_frame_bytes,
        }
    }

    /// Appends bytes received from the peer.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The size of the frame currently being received, once its length prefix is known.
    ///
    /// Lets the caller reserve memory for the whole frame before reading it.
    pub fn pending_frame_bytes(&self) -> Option<Result<usize, FrameError>> {
        if self.buf.len() < 4 {
            return None;
        }
        Some(self.check_len(i32::from_be_bytes(self.buf[..4].try_into().unwrap())))
    }

    fn check_len(&self, len: i32) -> Result<usize, FrameError> {
        if len < MIN_FRAME_BYTES {
            return Err(FrameError::InvalidLength(len));
        }
        let len = len as usize;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size: len as u64,
                limit: self.max_frame_bytes,
            });
        }
        Ok(len)
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame (without its length prefix), if one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(len) = self.pending_frame_bytes() else {
            return Ok(None);
        };
        let len = len?;
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frames_split_across_reads() {
        let mut d = FrameDecoder::new(1024);
        let mut wire = framed(&[1u8; 20]);
        wire.extend(framed(&[2u8; 30]));
        for chunk in wire.chunks(7) {
            d.extend(chunk);
        }
        assert_eq!(d.next_frame().unwrap().unwrap(), Bytes::from(vec![1u8; 20]));
        assert_eq!(d.next_frame().unwrap().unwrap(), Bytes::from(vec![2u8; 30]));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn oversized_frame_is_rejected_before_allocation() {
        let mut d = FrameDecoder::new(1024);
        d.extend(&(i32::MAX).to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                size: i32::MAX as u64,
                limit: 1024
            })
        );
        assert!(d.buf.capacity() < 1024 * 1024);
    }

    #[test]
    fn negative_and_tiny_lengths_are_rejected() {
        let mut d = FrameDecoder::new(1024);
        d.extend(&(-5i32).to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::InvalidLength(-5)));
        let mut d = FrameDecoder::new(1024);
        d.extend(&3i32.to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::InvalidLength(3)));
    }
}
