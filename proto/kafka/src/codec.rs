//! Request frames → decoded requests; responses → response frames.
//!
//! Pure functions over byte buffers: [`decode_request`] turns one frame (as cut by
//! [`crate::frame::FrameDecoder`]) into a header and a typed body, checking the API version
//! against what this broker advertises; [`encode_response`] writes the size prefix, the right
//! response header version (v0 for ApiVersions, v1 for flexible versions) and the body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::versions;

/// What the broker needs to know about a request besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// Which API.
    pub api_key: ApiKey,
    /// Which version of it.
    pub api_version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
    /// The client's self-declared id (null is allowed).
    pub client_id: Option<String>,
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Header fields.
    pub ctx: RequestContext,
    /// Typed body.
    pub body: RequestKind,
}

/// Why a frame could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The API key is not one Kafka defines; the connection is closed (as Kafka does).
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey {
        /// Key sent.
        api_key: i16,
        /// Correlation id sent.
        correlation_id: i32,
    },
    /// A known API at a version we do not serve. ApiVersions gets a v0 error answer
    /// (KIP-511); other APIs are answered by closing the connection, as Kafka does.
    #[error("unsupported version {} of {:?} (supported {min}..={max})", ctx.api_version, ctx.api_key)]
    UnsupportedVersion {
        /// Header of the request.
        ctx: RequestContext,
        /// Lowest supported version.
        min: i16,
        /// Highest supported version.
        max: i16,
    },
    /// The header or body does not parse.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which part.
        what: &'static str,
        /// Parser's message.
        reason: String,
    },
}

impl DecodeError {
    /// The response to send before closing, if the protocol has one for this error.
    pub fn response(&self) -> Option<(RequestContext, ResponseKind)> {
        match self {
            DecodeError::UnsupportedVersion { ctx, .. } if ctx.api_key == ApiKey::ApiVersions => {
                let mut r = versions::api_versions_response();
                r.error_code = kafka_protocol::error::ResponseError::UnsupportedVersion.code();
                // Answer in v0, which every client can read.
                let ctx = RequestContext {
                    api_version: 0,
                    ..ctx.clone()
                };
                Some((ctx, ResponseKind::ApiVersions(r)))
            }
            _ => None,
        }
    }
}

/// Decodes one frame (without its length prefix).
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Malformed {
            what: "request header",
            reason: format!("{} bytes is too short", frame.len()),
        });
    }
    let mut peek = &frame[..8];
    let key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let api_key = ApiKey::try_from(key).map_err(|_| DecodeError::UnknownApiKey {
        api_key: key,
        correlation_id,
    })?;
    let Some((min, max)) = versions::supported(api_key) else {
        return Err(DecodeError::UnknownApiKey {
            api_key: key,
            correlation_id,
        });
    };
    let mut buf = frame;
    if version < min || version > max {
        // Parse what we can of the header (client id) for the log line; ignore the body.
        let client_id = RequestHeader::decode(&mut buf, 1)
            .ok()
            .and_then(|h| h.client_id.map(|c| c.to_string()));
        return Err(DecodeError::UnsupportedVersion {
            ctx: RequestContext {
                api_key,
                api_version: version,
                correlation_id,
                client_id,
            },
            min,
            max,
        });
    }
    let header_version = api_key.request_header_version(version);
    let header =
        RequestHeader::decode(&mut buf, header_version).map_err(|e| DecodeError::Malformed {
            what: "request header",
            reason: e.to_string(),
        })?;
    let ctx = RequestContext {
        api_key,
        api_version: version,
        correlation_id,
        client_id: header.client_id.map(|c| c.to_string()),
    };
    let body =
        RequestKind::decode(api_key, &mut buf, version).map_err(|e| DecodeError::Malformed {
            what: "request body",
            reason: format!("{:?} v{version}: {e:#}", api_key),
        })?;
    Ok(Request { ctx, body })
}

/// Encodes a response frame, length prefix included.
pub fn encode_response(ctx: &RequestContext, response: &ResponseKind) -> Result<Bytes, String> {
    let mut buf = BytesMut::with_capacity(256 + records_len(response));
    buf.put_i32(0);
    // ApiVersions always answers with header v0 so that a client of any version can read it.
    let header_version = if ctx.api_key == ApiKey::ApiVersions {
        0
    } else {
        response.header_version(ctx.api_version)
    };
    ResponseHeader::default()
        .with_correlation_id(ctx.correlation_id)
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())?;
    response
        .encode(&mut buf, ctx.api_version)
        .map_err(|e| format!("{:?} v{}: {e:#}", ctx.api_key, ctx.api_version))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The record bytes a response carries: a fetch response is mostly records, and sizing its
/// buffer for them up front saves growing (and copying) it while they are encoded.
fn records_len(response: &ResponseKind) -> usize {
    match response {
        ResponseKind::Fetch(f) => f
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, |r| r.len() + 5) + 64)
            .sum(),
        _ => 0,
    }
}

/// Builds a client-side request frame; used by tests and the benchmark tool.
pub fn encode_request(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
    body: &RequestKind,
) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.map(|c| StrBytes::from_string(c.to_string())));
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a response frame (without length prefix) on the client side; used by tests.
pub fn decode_response(
    api_key: ApiKey,
    version: i16,
    mut frame: Bytes,
) -> Result<(i32, ResponseKind), String> {
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let header = ResponseHeader::decode(&mut frame, header_version).map_err(|e| e.to_string())?;
    let body = ResponseKind::decode(api_key, &mut frame, version).map_err(|e| e.to_string())?;
    Ok((header.correlation_id, body))
}

/// An ApiVersions v0 body as a client would parse it; used by tests of the KIP-511 fallback.
pub fn decode_api_versions_v0(frame: Bytes) -> Result<(i32, ApiVersionsResponse), String> {
    let mut frame = frame;
    let header = ResponseHeader::decode(&mut frame, 0).map_err(|e| e.to_string())?;
    let body = ApiVersionsResponse::decode(&mut frame, 0).map_err(|e| e.to_string())?;
    Ok((header.correlation_id, body))
}

#[cfg(test)]
mod tests;
