//! Kafka's listener settings: `--listeners NAME://HOST:PORT,...`, `--advertised-listeners`,
//! `--listener-security-protocol-map NAME:PROTOCOL,...`, parsed and checked together.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use anyhow::{Context, bail};
use sluice_proto::security::SecurityProtocol;

/// One listener after merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Its name (`PLAINTEXT`, `SASL_SSL`, or a name from the protocol map).
    pub name: String,
    /// Its security protocol.
    pub protocol: SecurityProtocol,
    /// Where it binds.
    pub bind: SocketAddr,
    /// The host clients are told (Metadata).
    pub advertised_host: String,
    /// The port clients are told.
    pub advertised_port: u16,
}

/// `NAME://HOST:PORT` split into (name, "HOST:PORT").
fn split_listener(s: &str) -> anyhow::Result<(String, String)> {
    let (name, addr) = s
        .split_once("://")
        .with_context(|| format!("'{s}' is not NAME://HOST:PORT"))?;
    if name.is_empty() {
        bail!("'{s}' has no listener name");
    }
    Ok((name.to_ascii_uppercase(), addr.to_string()))
}

/// Parses `NAME:PROTOCOL,...`.
pub fn parse_protocol_map(s: &str) -> anyhow::Result<BTreeMap<String, SecurityProtocol>> {
    let mut map = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, proto) = item
            .split_once(':')
            .with_context(|| format!("'{item}' is not NAME:PROTOCOL"))?;
        let p = SecurityProtocol::from_name(proto).with_context(|| {
            format!(
                "'{proto}' is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
            )
        })?;
        map.insert(name.to_ascii_uppercase(), p);
    }
    Ok(map)
}

/// Parses and checks `--listeners` and `--advertised-listeners`.
pub fn parse(
    listeners: &str,
    advertised: Option<&str>,
    protocol_map: &BTreeMap<String, SecurityProtocol>,
) -> anyhow::Result<Vec<ListenerConfig>> {
    let mut out: Vec<ListenerConfig> = Vec::new();
    let mut names = HashSet::new();
    for item in listeners
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let (name, addr) = split_listener(item)?;
        let protocol = match protocol_map.get(&name) {
            Some(p) => *p,
            None => SecurityProtocol::from_name(&name).with_context(|| {
                format!(
                    "listener name '{name}' is not a security protocol: add it to --listener-security-protocol-map (e.g. {name}:SASL_SSL)"
                )
            })?,
        };
        if !names.insert(name.clone()) {
            bail!("listener name '{name}' appears twice in --listeners");
        }
        let bind =
            crate::config::resolve_addr(&addr).with_context(|| format!("listener {name}"))?;
        if bind.port() != 0 && out.iter().any(|l| l.bind.port() == bind.port()) {
            bail!("two listeners bind port {}", bind.port());
        }
        let (host, port) = crate::config::split_host_port(&addr)?;
        out.push(ListenerConfig {
            name,
            protocol,
            bind,
            advertised_host: host,
            advertised_port: port,
        });
    }
    if out.is_empty() {
        bail!("--listeners names no listener");
    }
    let mut advertised_given = HashSet::new();
    if let Some(adv) = advertised {
        for item in adv.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, addr) = split_listener(item)?;
            let Some(l) = out.iter_mut().find(|l| l.name == name) else {
                bail!("--advertised-listeners names '{name}', which is not in --listeners");
            };
            let (host, port) = crate::config::split_host_port(&addr)
                .with_context(|| format!("advertised listener {name}"))?;
            l.advertised_host = host;
            l.advertised_port = port;
            advertised_given.insert(name);
        }
    }
    for l in &out {
        if l.bind.ip().is_unspecified() && !advertised_given.contains(&l.name) {
            bail!(
                "listener {} binds all interfaces ({}): set --advertised-listeners {}://HOST:PORT to the address clients should use",
                l.name,
                l.bind,
                l.name
            );
        }
    }
    Ok(out)
}

/// Whether an address is reachable from other machines (not loopback).
pub fn exposed(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_advertised() {
        let l = parse(
            "PLAINTEXT://127.0.0.1:9092,sasl_ssl://0.0.0.0:9093",
            Some("SASL_SSL://broker.example:19093"),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].name, "SASL_SSL");
        assert_eq!(l[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(l[1].advertised_host, "broker.example");
        assert_eq!(l[1].advertised_port, 19093);
        assert_eq!(l[0].advertised_host, "127.0.0.1");
    }

    #[test]
    fn refusals() {
        let none = BTreeMap::new();
        assert!(parse("INTERNAL://127.0.0.1:1", None, &none).is_err());
        assert!(parse("PLAINTEXT://0.0.0.0:9092", None, &none).is_err());
        assert!(
            parse(
                "PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2",
                None,
                &none
            )
            .is_err()
        );
        assert!(parse("PLAINTEXT://127.0.0.1:1,SSL://127.0.0.1:1", None, &none).is_err());
        assert!(parse("PLAINTEXT://127.0.0.1:1", Some("SSL://h:1"), &none).is_err());
        assert!(parse("127.0.0.1:9092", None, &none).is_err());
        let map = parse_protocol_map("INTERNAL:SASL_PLAINTEXT").unwrap();
        let l = parse("INTERNAL://127.0.0.1:1", None, &map).unwrap();
        assert_eq!(l[0].protocol, SecurityProtocol::SaslPlaintext);
        assert!(parse_protocol_map("X:NOPE").is_err());
    }
}
