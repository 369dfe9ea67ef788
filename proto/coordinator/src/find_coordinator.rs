//! FindCoordinator answers, single-key (v0–v3) and batched (v4+).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

/// What a FindCoordinator key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorType {
    /// A consumer group id (key type 0).
    Group,
    /// A transactional id (key type 1). Sluice has no transactions: answering
    /// TRANSACTIONAL_ID_AUTHORIZATION_FAILED makes clients fail fast instead of retrying forever.
    Transaction,
}

/// Builds the FindCoordinator response at `api_version`, asking `resolve` for the `(node_id, host,
/// port)` of each key's coordinator (the server knows which node leads `partition_for(key)`).
/// Unknown key types answer INVALID_REQUEST, as Kafka does.
pub fn find_coordinator(
    req: &FindCoordinatorRequest,
    api_version: i16,
    mut resolve: impl FnMut(CoordinatorType, &str) -> Result<(i32, String, i32), ResponseError>,
) -> FindCoordinatorResponse {
    let key_type = match req.key_type {
        0 => Ok(CoordinatorType::Group),
        1 => Ok(CoordinatorType::Transaction),
        _ => Err(ResponseError::InvalidRequest),
    };
    let mut lookup = |key: &str| key_type.and_then(|t| resolve(t, key));
    if api_version < 4 {
        let mut resp = FindCoordinatorResponse::default();
        match lookup(req.key.as_str()) {
            Ok((node, host, port)) => {
                resp.node_id = BrokerId(node);
                resp.host = StrBytes::from_string(host);
                resp.port = port;
            }
            Err(e) => {
                resp.error_code = e.code();
                resp.error_message = Some(StrBytes::from_string(e.to_string()));
                resp.node_id = BrokerId(-1);
                resp.port = -1;
            }
        }
        return resp;
    }
    let coordinators = req
        .coordinator_keys
        .iter()
        .map(|key| {
            let c = Coordinator::default().with_key(key.clone());
            match lookup(key.as_str()) {
                Ok((node, host, port)) => c
                    .with_node_id(BrokerId(node))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port),
                Err(e) => c
                    .with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_string(e.to_string())))
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            }
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(t: CoordinatorType, _key: &str) -> Result<(i32, String, i32), ResponseError> {
        match t {
            CoordinatorType::Group => Ok((1, "localhost".into(), 9092)),
            CoordinatorType::Transaction => Err(ResponseError::TransactionalIdAuthorizationFailed),
        }
    }

    fn encodes(r: &FindCoordinatorResponse, version: i16) {
        use kafka_protocol::protocol::Encodable;
        let mut b = bytes::BytesMut::new();
        r.encode(&mut b, version)
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
    }

    #[test]
    fn every_version_encodes() {
        for v in 0..=6 {
            for key_type in [0, 1, 9] {
                let req = FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_static_str("g"))
                    .with_key_type(key_type)
                    .with_coordinator_keys(vec![StrBytes::from_static_str("g")]);
                let req = if v < 4 {
                    req.with_coordinator_keys(vec![])
                } else {
                    req
                };
                encodes(&find_coordinator(&req, v, resolve), v);
            }
        }
    }

    #[test]
    fn single_and_batched() {
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
        let r = find_coordinator(&req, 3, resolve);
        assert_eq!((r.error_code, r.node_id.0, r.port), (0, 1, 9092));

        let req = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![
                StrBytes::from_static_str("a"),
                StrBytes::from_static_str("b"),
            ]);
        let r = find_coordinator(&req, 4, resolve);
        assert_eq!(r.coordinators.len(), 2);
        assert!(
            r.coordinators
                .iter()
                .all(|c| c.error_code == 0 && c.node_id.0 == 1)
        );

        let req = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![StrBytes::from_static_str("tx")]);
        let r = find_coordinator(&req, 4, resolve);
        assert_eq!(
            r.coordinators[0].error_code,
            ResponseError::TransactionalIdAuthorizationFailed.code()
        );

        let req = FindCoordinatorRequest::default().with_key_type(7);
        let r = find_coordinator(&req, 3, resolve);
        assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
    }
}
