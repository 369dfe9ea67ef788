//! The record-batch codecs, for the broker's own recompression (`compression.type`).
//!
//! Output is what Kafka's broker writes: gzip members, xerial-framed snappy, LZ4 frames with
//! independent 64 KiB blocks and no checksums, zstd frames. Decompression is bounded, so a small
//! batch that expands to gigabytes is refused instead of exhausting memory. Compression is
//! deterministic for a given input, codec and level: replicas recompressing the same batch write
//! the same bytes.

use std::io::{Read, Write};

/// A batch's codec (the low three bits of its attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Uncompressed.
    None = 0,
    /// gzip.
    Gzip = 1,
    /// Snappy.
    Snappy = 2,
    /// LZ4.
    Lz4 = 3,
    /// Zstandard.
    Zstd = 4,
}

impl Compression {
    /// The codec of attribute bits `id`.
    pub fn from_id(id: i16) -> Option<Self> {
        Some(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Why a codec failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The compressed bytes do not decode.
    #[error("{codec} data does not decompress: {reason}")]
    Corrupt {
        /// Codec name.
        codec: &'static str,
        /// Library message.
        reason: String,
    },
    /// The data expands past the limit.
    #[error("records decompress to more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// xerial snappy-java's stream header (magic, version 1, compatible version 1), as Kafka writes.
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// Uncompressed bytes per xerial block.
const XERIAL_BLOCK: usize = 32 * 1024;

fn corrupt(codec: Compression) -> impl Fn(std::io::Error) -> CodecError {
    move |e| CodecError::Corrupt {
        codec: codec.name(),
        reason: e.to_string(),
    }
}

fn read_bounded(codec: Compression, r: impl Read, limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt(codec))?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { limit });
    }
    Ok(out)
}

fn snappy_raw(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), CodecError> {
    let bad = |e: snap::Error| CodecError::Corrupt {
        codec: "snappy",
        reason: e.to_string(),
    };
    let n = snap::raw::decompress_len(block).map_err(bad)?;
    if out.len() + n > limit {
        return Err(CodecError::TooLarge { limit });
    }
    let at = out.len();
    out.resize(at + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[at..])
        .map_err(bad)?;
    Ok(())
}

/// Decompresses a batch's records section, refusing output longer than `limit`.
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(CodecError::TooLarge { limit });
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(data), limit),
        Compression::Lz4 => {
            let d = lz4::Decoder::new(data).map_err(corrupt(codec))?;
            read_bounded(codec, d, limit)
        }
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::new(data).map_err(corrupt(codec))?;
            read_bounded(codec, d, limit)
        }
        Compression::Snappy => {
            let mut out = Vec::new();
            if data.len() >= 8 && data[..8] == XERIAL_MAGIC[..8] {
                // xerial framing (Java clients, Kafka): header, then [u32 length][raw block]...
                let mut rest = data.get(16..).unwrap_or_default();
                while !rest.is_empty() {
                    let short = || CodecError::Corrupt {
                        codec: "snappy",
                        reason: "truncated xerial block".into(),
                    };
                    let len = u32::from_be_bytes(
                        rest.get(..4)
                            .ok_or_else(short)?
                            .try_into()
                            .expect("4 bytes"),
                    ) as usize;
                    let block = rest.get(4..4 + len).ok_or_else(short)?;
                    snappy_raw(block, &mut out, limit)?;
                    rest = &rest[4 + len..];
                }
            } else {
                snappy_raw(data, &mut out, limit)?;
            }
            Ok(out)
        }
    }
}

/// Compresses a records section with `codec` at `level` (Kafka's level for gzip, lz4 and zstd;
/// ignored for snappy and none).
pub fn compress(codec: Compression, data: &[u8], level: i32) -> Result<Vec<u8>, CodecError> {
    let io = |e: std::io::Error| CodecError::Corrupt {
        codec: codec.name(),
        reason: e.to_string(),
    };
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let level = if level < 0 {
                flate2::Compression::default()
            } else {
                flate2::Compression::new(level as u32)
            };
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).map_err(io)?;
            e.finish().map_err(io)
        }
        Compression::Snappy => {
            let mut out = XERIAL_MAGIC.to_vec();
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = enc.compress_vec(chunk).map_err(|e| CodecError::Corrupt {
                    codec: "snappy",
                    reason: e.to_string(),
                })?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .level(level.max(0) as u32)
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::new())
                .map_err(io)?;
            e.write_all(data).map_err(io)?;
            let (out, r) = e.finish();
            r.map_err(io)?;
            Ok(out)
        }
        Compression::Zstd => zstd::bulk::compress(data, level).map_err(io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips_deterministically() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in ALL {
            let level = match c {
                Compression::Gzip => -1,
                Compression::Lz4 => 9,
                Compression::Zstd => 3,
                _ => 0,
            };
            let z = compress(c, &data, level).unwrap();
            assert_eq!(
                z,
                compress(c, &data, level).unwrap(),
                "{c:?} is deterministic"
            );
            assert_eq!(decompress(c, &z, data.len()).unwrap(), data, "{c:?}");
            assert_eq!(
                decompress(c, &z, data.len() - 1),
                Err(CodecError::TooLarge {
                    limit: data.len() - 1
                }),
                "{c:?} is bounded"
            );
        }
    }

    #[test]
    fn kafka_and_client_framings_decode() {
        // kafka-protocol writes what Java clients write (xerial snappy, LZ4 frames, ...).
        use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
        let data = b"hello hello hello hello hello".repeat(100);
        let enc = |f: &dyn Fn(&mut bytes::BytesMut)| {
            let mut b = bytes::BytesMut::new();
            f(&mut b);
            b.to_vec()
        };
        let put = |b: &mut bytes::BytesMut| b.extend_from_slice(&data);
        let gz = enc(&|b| {
            Gzip::compress(b, |t| {
                put(t);
                Ok(())
            })
            .unwrap()
        });
        let sn = enc(&|b| {
            Snappy::compress(b, |t| {
                put(t);
                Ok(())
            })
            .unwrap()
        });
        let l4 = enc(&|b| {
            Lz4::compress(b, |t| {
                put(t);
                Ok(())
            })
            .unwrap()
        });
        let zs = enc(&|b| {
            Zstd::compress(b, |t| {
                put(t);
                Ok(())
            })
            .unwrap()
        });
        for (c, z) in [
            (Compression::Gzip, gz),
            (Compression::Snappy, sn),
            (Compression::Lz4, l4),
            (Compression::Zstd, zs),
        ] {
            assert_eq!(decompress(c, &z, 1 << 20).unwrap(), data, "{c:?}");
        }
        // Raw snappy (librdkafka) too.
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 1 << 20).unwrap(),
            data
        );
        assert!(decompress(Compression::Zstd, b"not zstd", 100).is_err());
    }
}
