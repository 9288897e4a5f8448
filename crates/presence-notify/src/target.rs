//! Which webhook targets are acceptable: the server-side request forgery rules.
//!
//! By default a target must be `https://`, carry no user name or password, and name neither an internal
//! address literally nor a name that means this machine (`localhost`, `*.localhost`). Internal addresses are
//! loopback, private (RFC 1918, unique-local IPv6), link-local, carrier-grade NAT, unspecified, broadcast,
//! multicast, documentation and benchmarking ranges, and IPv4 addresses mapped or embedded in IPv6. Because
//! a public name can resolve to an internal address, the delivery layer checks every resolved address with
//! [`check_address`] too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Which targets are acceptable beyond public https ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Accept `http://` targets (local development).
    pub allow_http: bool,
    /// Accept loopback, private, link-local and other internal targets (local development).
    pub allow_internal: bool,
}

impl TargetPolicy {
    /// Public https targets only.
    pub const STRICT: TargetPolicy = TargetPolicy { allow_http: false, allow_internal: false };
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    /// Not an absolute URL.
    #[error("'{0}' is not an absolute URL")]
    NotAUrl(String),
    /// A scheme other than https (or http when allowed).
    #[error("the scheme '{0}' is not allowed; use https")]
    Scheme(String),
    /// A user name or password in the URL.
    #[error("a notification URL must not carry credentials")]
    Credentials,
    /// An internal address or a name of this machine.
    #[error("the target '{0}' is an internal address; notifications go only to public addresses")]
    Internal(String),
}

/// True for addresses that must not be reached from outside input.
pub fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(address: Ipv4Addr) -> bool {
    let [a, b, c, _] = address.octets();
    address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240
}

fn is_internal_v6(address: Ipv6Addr) -> bool {
    if let Some(v4) = address.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let segments = address.segments();
    address.is_loopback()
        || address.is_unspecified()
        || address.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        || (segments[0] == 0x0064 && segments[1] == 0xff9b)
        || segments[0] == 0x2002
        || (segments[0] == 0x2001 && segments[1] == 0)
        || segments[..6] == [0, 0, 0, 0, 0, 0]
}

/// Checks a notification URL as written; returns it parsed.
pub fn check_url(text: &str, policy: TargetPolicy) -> Result<Url, TargetRefused> {
    let url = Url::parse(text).map_err(|_| TargetRefused::NotAUrl(text.to_owned()))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        other => return Err(TargetRefused::Scheme(other.to_owned())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetRefused::Credentials);
    }
    let internal = match url.host() {
        None => return Err(TargetRefused::NotAUrl(text.to_owned())),
        Some(Host::Ipv4(v4)) => is_internal_v4(v4),
        Some(Host::Ipv6(v6)) => is_internal_v6(v6),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if internal && !policy.allow_internal {
        return Err(TargetRefused::Internal(url.host_str().unwrap_or_default().to_owned()));
    }
    Ok(url)
}

/// Checks one address a target's name resolved to, before connecting to it.
pub fn check_address(address: IpAddr, policy: TargetPolicy) -> Result<(), TargetRefused> {
    if is_internal(address) && !policy.allow_internal {
        return Err(TargetRefused::Internal(address.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, policy: TargetPolicy, expected: Result<(), &str>) {
        let got = check_url(url, policy).map(drop).map_err(|error| match error {
            TargetRefused::NotAUrl(_) => "url",
            TargetRefused::Scheme(_) => "scheme",
            TargetRefused::Credentials => "credentials",
            TargetRefused::Internal(_) => "internal",
        });
        assert_eq!(got, expected, "{url}");
    }

    #[test]
    fn the_default_policy_accepts_public_https_only() {
        let strict = TargetPolicy::STRICT;
        check("https://hooks.example.com/presence?tenant=1", strict, Ok(()));
        check("https://203.0.113.7/hook", strict, Err("internal"));
        check("https://8.8.8.8/hook", strict, Ok(()));
        check("https://[2606:4700::1111]/hook", strict, Ok(()));
        check("http://hooks.example.com/", strict, Err("scheme"));
        check("ftp://hooks.example.com/", strict, Err("scheme"));
        check("https://user:pw@hooks.example.com/", strict, Err("credentials"));
        check("hooks.example.com/path", strict, Err("url"));
        for internal in [
            "https://127.0.0.1/",
            "https://127.1.2.3:8443/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
            "https://10.0.0.1/",
            "https://172.16.5.4/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:10.1.2.3]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://2130706433/",
            "https://0x7f.1/",
        ] {
            check(internal, strict, Err("internal"));
        }
    }

    #[test]
    fn configuration_can_allow_local_development() {
        let local = TargetPolicy { allow_http: true, allow_internal: true };
        check("http://127.0.0.1:9000/hook", local, Ok(()));
        check("https://localhost/hook", local, Ok(()));
        check("http://localhost/hook", TargetPolicy { allow_http: true, allow_internal: false }, Err("internal"));
    }

    #[test]
    fn resolved_addresses_are_checked_too() {
        let strict = TargetPolicy::STRICT;
        assert!(check_address("93.184.215.14".parse().unwrap(), strict).is_ok());
        assert!(check_address("10.1.1.1".parse().unwrap(), strict).is_err());
        assert!(check_address("::ffff:192.168.0.1".parse().unwrap(), strict).is_err());
        assert!(check_address("64:ff9b::a00:1".parse().unwrap(), strict).is_err());
        assert!(check_address("2002:a00:1::1".parse().unwrap(), strict).is_err(), "6to4");
        assert!(check_address("2001:0:4136:e378::1".parse().unwrap(), strict).is_err(), "Teredo");
        assert!(check_address("10.1.1.1".parse().unwrap(), TargetPolicy { allow_http: false, allow_internal: true })
            .is_ok());
    }
}
