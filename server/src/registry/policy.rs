//! Which registries herd may talk to: the `HERD_REGISTRIES` allow-list, and addresses that are
//! never fetched from (link-local, cloud metadata, loopback, unspecified) unless allow-listed,
//! so a pull cannot be turned into a request against the machine itself or its cloud
//! metadata service (CVE-2026-5530).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::RegistryError;

/// Host names of cloud metadata services, refused whatever they resolve to.
const METADATA_HOSTS: &[&str] = &["metadata.google.internal", "metadata.goog", "metadata"];

/// The registry allow-list and the address checks every connection goes through.
#[derive(Clone, Debug, Default)]
pub struct RegistryPolicy {
    /// `host[:port]` entries of `HERD_REGISTRIES`, lower case; `None` allows any public host.
    allowed: Option<Arc<Vec<String>>>,
}

impl RegistryPolicy {
    /// A policy from `HERD_REGISTRIES` (comma- or space-separated `host[:port]`; `None` when unset).
    pub fn new(allow_list: Option<&str>) -> Self {
        let allowed = allow_list.map(|list| {
            Arc::new(
                list.split([',', ' '])
                    .map(|entry| entry.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|entry| !entry.is_empty())
                    .collect(),
            )
        });
        Self { allowed }
    }

    /// Whether `authority` (`host` or `host:port`) is named in `HERD_REGISTRIES`: exactly, or
    /// by its host alone.
    fn is_listed(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        let host = host_of(&authority);
        self.allowed
            .as_ref()
            .is_some_and(|list| list.iter().any(|entry| *entry == authority || entry == host))
    }

    /// Whether any `HERD_REGISTRIES` entry has this host, whatever its port (the resolver
    /// sees host names only).
    fn host_is_listed(&self, host: &str) -> bool {
        self.allowed
            .as_ref()
            .is_some_and(|list| list.iter().any(|entry| host_of(entry).eq_ignore_ascii_case(host)))
    }

    /// Checks the registry named in a model name (`host[:port]`) before anything is sent.
    pub fn check_registry(&self, authority: &str) -> Result<(), RegistryError> {
        if self.is_listed(authority) {
            return Ok(());
        }
        if self.allowed.is_some() {
            return Err(RegistryError::NotAllowed {
                host: authority.to_string(),
                reason: "it is not in HERD_REGISTRIES".into(),
            });
        }
        self.check_host(authority)
    }

    /// Checks any host herd is about to connect to (a registry, a token realm, a redirect
    /// target) by its name and, when it is an IP literal, its address.
    pub fn check_host(&self, authority: &str) -> Result<(), RegistryError> {
        if self.is_listed(authority) {
            return Ok(());
        }
        let host = host_of(authority);
        if METADATA_HOSTS.iter().any(|m| host.eq_ignore_ascii_case(m)) || host.eq_ignore_ascii_case("localhost") {
            return Err(refused(authority, "it is a local or cloud-metadata host"));
        }
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) if is_forbidden(ip) => Err(refused(
                authority,
                &format!("{ip} is a loopback, link-local or metadata address"),
            )),
            _ => Ok(()),
        }
    }

    /// Checks an address the host name `host` resolved to (called by the resolver for every
    /// connection).
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), RegistryError> {
        if self.host_is_listed(host) || !is_forbidden(ip) {
            Ok(())
        } else {
            Err(refused(
                host,
                &format!("it is at {ip}, a loopback, link-local or metadata address"),
            ))
        }
    }
}

fn refused(authority: &str, why: &str) -> RegistryError {
    RegistryError::NotAllowed {
        host: authority.to_string(),
        reason: format!("{why}; name it in HERD_REGISTRIES to allow it"),
    }
}

/// `host` of `host:port`, `[v6]:port` or `host`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') => host,
        _ => authority,
    }
}

/// Loopback, unspecified, link-local (which holds 169.254.169.254) and the IPv6 metadata
/// addresses.
fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xffc0) == 0xfe80
                || v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
        }
    }
}

/// A DNS resolver for reqwest that drops the addresses [`RegistryPolicy`] forbids, so a
/// registry name that resolves (or re-resolves) to a local address is refused too.
pub struct PolicyResolver {
    /// The policy to apply.
    pub policy: RegistryPolicy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addresses
                .iter()
                .copied()
                .filter(|a| policy.check_ip(&host, a.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                let error = match addresses.first() {
                    Some(a) => policy.check_ip(&host, a.ip()).err().map(|e| e.to_string()),
                    None => None,
                }
                .unwrap_or_else(|| format!("{host} has no address"));
                return Err(error.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_local_and_metadata_addresses_by_default() {
        let policy = RegistryPolicy::new(None);
        for host in [
            "169.254.169.254",
            "127.0.0.1:22",
            "[::1]:6379",
            "0.0.0.0:5000",
            "localhost:5000",
            "metadata.google.internal",
            "[fe80::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[fd00:ec2::254]",
        ] {
            assert!(policy.check_registry(host).is_err(), "{host} allowed");
        }
        for host in ["registry.ollama.ai", "10.0.0.5:5000", "192.168.1.2", "ghcr.io"] {
            assert!(policy.check_registry(host).is_ok(), "{host} refused");
        }
    }

    #[test]
    fn the_allow_list_admits_only_what_it_names() {
        let policy = RegistryPolicy::new(Some("127.0.0.1:5000, registry.example.com"));
        assert!(policy.check_registry("127.0.0.1:5000").is_ok());
        assert!(policy.check_registry("registry.example.com:443").is_ok());
        assert!(policy.check_registry("127.0.0.1:5001").is_err());
        assert!(policy.check_registry("registry.ollama.ai").is_err());
        // A redirect target outside the list still passes if it is a public host.
        assert!(policy.check_host("cdn.example.net").is_ok());
        assert!(policy.check_host("169.254.169.254").is_err());
    }
}
