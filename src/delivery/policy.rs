//! Destination policy: which URLs and addresses Sluice may deliver to.
//!
//! By default only `https://` URLs whose every resolved address is globally routable are
//! allowed; the config can allow `http://` and name networks (CIDRs) that are allowed even
//! though they are not global (such as `127.0.0.0/8` for tests and benchmarks). The check
//! runs on IP-literal URLs before connecting and on every address a name resolves to
//! (`resolve.rs`), so a name cannot smuggle a private address past it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The policy in force (from `[delivery]` in the config).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    pub allow_http: bool,
    pub allowed_networks: Vec<IpNet>,
}

/// Why a destination was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Scheme,
    Address(IpAddr),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Scheme => write!(
                f,
                "http:// destinations are not allowed (delivery.allow_http)"
            ),
            Refusal::Address(ip) => write!(
                f,
                "{ip} is not a public address (delivery.allowed_networks)"
            ),
        }
    }
}

impl DestinationPolicy {
    pub fn check_scheme(&self, scheme: Option<&str>) -> Result<(), Refusal> {
        match scheme {
            Some("https") => Ok(()),
            Some("http") if self.allow_http => Ok(()),
            _ => Err(Refusal::Scheme),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.allowed_networks.iter().any(|net| net.contains(&ip)) || is_global(ip) {
            Ok(())
        } else {
            Err(Refusal::Address(ip))
        }
    }
}

/// Whether `ip` is globally routable: not private, loopback, link-local, shared, reserved,
/// documentation, benchmarking or multicast, including IPv4 hidden in IPv6 forms.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network"
        || a == 10                             // private
        || a == 127                            // loopback
        || (a == 100 && (64..128).contains(&b)) // shared (CGNAT)
        || (a == 169 && b == 254)              // link-local (cloud metadata)
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)      // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)      // documentation
        || (a == 192 && b == 88 && c == 99)    // 6to4 relay anycast
        || (a == 192 && b == 168)              // private
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100)   // documentation
        || (a == 203 && b == 0 && c == 113)    // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_global_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || s[0] & 0xff00 == 0xff00              // multicast
        || s[0] & 0xfe00 == 0xfc00              // unique local
        || s[0] & 0xffc0 == 0xfe80              // link-local
        || s[0] & 0xffc0 == 0xfec0              // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8)   // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard
        || (s[0] == 0x2001 && s[1] < 0x0200)    // IETF protocol assignments (Teredo, …)
        || s[0] == 0x5f00) // SRv6 SIDs
}

/// The IPv4 address inside mapped (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`) forms, which must be judged as IPv4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail()),
        [0, 0, 0, 0, 0, 0, _, _] if ip.segments()[6] != 0 => Some(tail()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => Some(tail()),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_table() {
        let cases = [
            ("93.184.216.34", true),
            ("8.8.8.8", true),
            ("10.1.2.3", false),
            ("127.0.0.1", false),
            ("169.254.169.254", false),
            ("172.16.0.1", false),
            ("172.32.0.1", true),
            ("192.168.1.1", false),
            ("100.64.0.1", false),
            ("198.18.0.1", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("0.0.0.0", false),
            ("2606:4700::1111", true),
            ("::1", false),
            ("::", false),
            ("fc00::1", false),
            ("fe80::1", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("::127.0.0.1", false),
            ("64:ff9b::10.0.0.1", false),
            ("64:ff9b::8.8.8.8", true),
            ("2002:c0a8:0101::1", false),
            ("2002:0808:0808::1", true),
        ];
        for (text, want) in cases {
            let ip: IpAddr = text.parse().expect("ip");
            assert_eq!(is_global(ip), want, "{text}");
        }
    }

    #[test]
    fn allow_lists_and_schemes() {
        let strict = DestinationPolicy::default();
        assert_eq!(strict.check_scheme(Some("http")), Err(Refusal::Scheme));
        assert_eq!(strict.check_scheme(Some("https")), Ok(()));
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(strict.check_ip(loopback).is_err());
        let local = DestinationPolicy {
            allow_http: true,
            allowed_networks: vec!["127.0.0.0/8".parse().expect("net")],
        };
        assert_eq!(local.check_ip(loopback), Ok(()));
        assert!(local.check_ip("10.0.0.1".parse().expect("ip")).is_err());
        assert_eq!(local.check_scheme(Some("http")), Ok(()));
    }
}
