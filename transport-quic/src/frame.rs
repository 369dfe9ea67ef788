//! Length-delimited frames on a QUIC stream: a big-endian `u32` byte count, then the payload.
//!
//! A payload is opaque here (for Raft traffic it is one encoded `sluice_raft::wire::PeerBatch`).
//! Both sides enforce a size limit; an oversized frame is an error, never an allocation.

use bytes::Bytes;

/// Default limit on one frame's payload: 64 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 << 20;

/// Bytes of the length prefix.
const HEADER_BYTES: usize = 4;

/// Reading or writing one frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    #[error("frame of {bytes} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced (or attempted) size.
        bytes: usize,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The stream or connection failed while reading.
    #[error("read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream or connection failed while writing.
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
}

/// Writes one frame (header and payload as two chunks, no copy of the payload).
pub async fn write_frame(
    send: &mut quinn::SendStream,
    payload: Bytes,
    max_bytes: usize,
) -> Result<(), FrameError> {
    let len = payload.len();
    if len > max_bytes || u32::try_from(len).is_err() {
        return Err(FrameError::TooLarge {
            bytes: len,
            max: max_bytes,
        });
    }
    let header = Bytes::copy_from_slice(&(len as u32).to_be_bytes());
    let mut chunks = [header, payload];
    send.write_all_chunks(&mut chunks).await?;
    Ok(())
}

/// Reads one frame. `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            return Err(FrameError::Truncated {
                got,
                want: HEADER_BYTES,
            });
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max_bytes {
        return Err(FrameError::TooLarge {
            bytes: len,
            max: max_bytes,
        });
    }
    let mut payload = vec![0u8; len];
    match recv.read_exact(&mut payload).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            return Err(FrameError::Truncated { got, want: len });
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    debug_assert_eq!(payload.len(), len);
    Ok(Some(Bytes::from(payload)))
}
