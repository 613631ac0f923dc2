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
    /// Not an absolute URL with a host, or one carrying credentials (`user@host`).
    Url(&'static str),
    /// The name resolved to no address.
    Unresolved,
}

/// Where a vetted URL points: an address given literally, or a name still to resolve
/// (whose every address must then pass `check_resolved`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Literal(IpAddr),
    Name(String),
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
            Refusal::Url(why) => write!(f, "the URL is refused: {why}"),
            Refusal::Unresolved => write!(f, "the host resolves to no address"),
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

    /// Checks a URL before any connection: the scheme, no credentials, and a host that is
    /// a name or an allowed address. An IPv4 literal counts in every form a resolver
    /// accepts (`2130706433`, `0177.0.0.1`, `0x7f.1`), so no spelling slips past as a
    /// "name".
    pub fn check_url(&self, uri: &hyper::Uri) -> Result<Host, Refusal> {
        self.check_scheme(uri.scheme_str())?;
        let authority = uri.authority().ok_or(Refusal::Url("no host"))?;
        if authority.as_str().contains('@') {
            return Err(Refusal::Url("credentials in the URL"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(Refusal::Url("no host"));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let literal = bare
            .parse::<IpAddr>()
            .ok()
            .or_else(|| parse_ipv4_loose(bare).map(IpAddr::V4));
        match literal {
            Some(ip) => self.check_ip(ip).map(|()| Host::Literal(ip)),
            None => Ok(Host::Name(bare.to_ascii_lowercase())),
        }
    }

    /// Checks every address a name resolved to: one refused address refuses the name
    /// (mixing public and private answers is how rebinding attacks begin).
    pub fn check_resolved(&self, addrs: &[IpAddr]) -> Result<(), Refusal> {
        if addrs.is_empty() {
            return Err(Refusal::Unresolved);
        }
        addrs.iter().try_for_each(|ip| self.check_ip(*ip))
    }
}

/// An IPv4 address as `inet_aton` reads it: one to four parts, each decimal, octal
/// (leading `0`) or hexadecimal (`0x`), the last part filling the remaining bytes.
pub fn parse_ipv4_loose(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let value = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            u64::from_str_radix(hex, 16).ok()?
        } else if part.len() > 1 && part.starts_with('0') {
            u64::from_str_radix(&part[1..], 8).ok()?
        } else if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()?
        } else {
            return None;
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 255) {
        return None;
    }
    let last_bytes = 4 - leading.len();
    if *last >= 1u64 << (8 * last_bytes) {
        return None;
    }
    let mut n: u64 = 0;
    for v in leading {
        n = (n << 8) | v;
    }
    n = (n << (8 * last_bytes)) | last;
    u32::try_from(n).ok().map(Ipv4Addr::from)
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

    /// The whole decision for a URL, with a fake resolver: what Sluice would connect to.
    fn vet(
        policy: &DestinationPolicy,
        url: &str,
        resolve: &dyn Fn(&str) -> Vec<IpAddr>,
    ) -> Result<(), Refusal> {
        let uri: hyper::Uri = url.parse().map_err(|_| Refusal::Url("unparseable"))?;
        match policy.check_url(&uri)? {
            Host::Literal(_) => Ok(()),
            Host::Name(name) => policy.check_resolved(&resolve(&name)),
        }
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "a table reads best whole")]
    fn destination_table() {
        let ip = |t: &str| -> IpAddr { t.parse().expect("ip") };
        let dns = move |name: &str| -> Vec<IpAddr> {
            match name {
                "example.com" | "xn--bcher-kva.example" => vec![ip("93.184.216.34")],
                "v6.example" => vec![ip("2606:4700::1111")],
                "internal.example" => vec![ip("10.0.0.5")],
                "metadata.example" => vec![ip("169.254.169.254")],
                "localhost" => vec![ip("127.0.0.1"), ip("::1")],
                "mixed.example" => vec![ip("93.184.216.34"), ip("192.168.0.10")],
                "mapped.example" => vec![ip("::ffff:10.0.0.1")],
                _ => vec![],
            }
        };
        let policy = DestinationPolicy::default();
        let ok = |url: &str| (url.to_owned(), true);
        let no = |url: &str| (url.to_owned(), false);
        let cases = [
            ok("https://example.com/hook"),
            ok("https://example.com:8443/hook?x=1"),
            ok("https://v6.example/"),
            ok("https://xn--bcher-kva.example/"),
            ok("https://93.184.216.34/"),
            ok("https://[2606:4700::1111]/"),
            ok("https://[::ffff:8.8.8.8]/"),
            ok("https://1572395042/"), // 93.184.216.34 as one decimal number
            no("http://example.com/"), // http is off by default
            no("ftp://example.com/"),
            no("https://internal.example/"),
            no("https://metadata.example/latest/meta-data"),
            no("https://localhost/"),
            no("https://mixed.example/"), // one private answer refuses the name
            no("https://mapped.example/"),
            no("https://unknown.example/"), // resolves to nothing
            no("https://user:pass@example.com/"),
            no("https://example.com@127.0.0.1/"),
            no("https://127.0.0.1/"),
            no("https://127.1/"),
            no("https://2130706433/"), // 127.0.0.1, decimal
            no("https://0177.0.0.1/"), // 127.0.0.1, octal
            no("https://0x7f.0.0.1/"), // 127.0.0.1, hex
            no("https://0x7f000001/"),
            no("https://10.0.0.1/"),
            no("https://012.0.0.1/"), // 10.0.0.1, octal
            no("https://172.16.5.4/"),
            no("https://192.168.1.1/"),
            no("https://169.254.169.254/"),
            no("https://100.64.0.1/"), // CGNAT
            no("https://198.18.0.1/"), // benchmarking
            no("https://192.0.2.1/"),  // documentation
            no("https://224.0.0.1/"),  // multicast
            no("https://240.0.0.1/"),  // reserved
            no("https://0.0.0.0/"),
            no("https://255.255.255.255/"),
            no("https://[::1]/"),
            no("https://[::]/"),
            no("https://[fd00::1]/"),                // unique local
            no("https://[fe80::1]/"),                // link-local
            no("https://[ff02::1]/"),                // multicast
            no("https://[::ffff:127.0.0.1]/"),       // IPv4-mapped
            no("https://[::ffff:169.254.169.254]/"), // IPv4-mapped metadata
            no("https://[::10.0.0.1]/"),             // IPv4-compatible
            no("https://[64:ff9b::a9fe:a9fe]/"),     // NAT64 of 169.254.169.254
            no("https://[2002:a9fe:a9fe::1]/"),      // 6to4 of 169.254.169.254
            no("https://[2001:db8::1]/"),            // documentation
            no("https://[2001::1]/"),                // Teredo
            no("https:///no-host"),
        ];
        assert!(cases.len() >= 40);
        for (url, want) in &cases {
            let got = vet(&policy, url, &dns);
            assert_eq!(got.is_ok(), *want, "{url}: {got:?}");
        }
        // Allow-lists open exactly what they name.
        let local = DestinationPolicy {
            allow_http: true,
            allowed_networks: vec!["127.0.0.0/8".parse().expect("net")],
        };
        assert!(vet(&local, "http://2130706433/", &dns).is_ok());
        assert!(
            vet(&local, "http://localhost/", &dns).is_err(),
            "::1 is not listed"
        );
        assert!(vet(&local, "http://10.0.0.1/", &dns).is_err());
    }

    #[test]
    fn loose_ipv4_forms() {
        let cases = [
            ("127.0.0.1", Some([127, 0, 0, 1])),
            ("127.1", Some([127, 0, 0, 1])),
            ("2130706433", Some([127, 0, 0, 1])),
            ("0x7f.1", Some([127, 0, 0, 1])),
            ("0177.0.0.01", Some([127, 0, 0, 1])),
            ("10.0x10.1", Some([10, 16, 0, 1])),
            ("256.0.0.1", None),
            ("1.2.3.4.5", None),
            ("4294967296", None),
            ("08.0.0.1", None), // 8 is not an octal digit
            ("example", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_ipv4_loose(text), want.map(Ipv4Addr::from), "{text}");
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
