//! The destination policy on arbitrary URLs and addresses: endpoint URLs come from tenants,
//! so the check must never panic, and its verdicts must agree with each other — a literal
//! it lets through passes the address check, and every IPv4 spelling it reads back as an
//! address is judged as that address.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use sluice::delivery::policy::{DestinationPolicy, Host, is_global, parse_ipv4_loose};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let strict = DestinationPolicy::default();
    let local = DestinationPolicy {
        allow_http: true,
        allowed_networks: vec!["127.0.0.0/8".parse().expect("net")],
    };
    if let Ok(uri) = text.parse::<hyper::Uri>() {
        for policy in [&strict, &local] {
            if let Ok(Host::Literal(ip)) = policy.check_url(&uri) {
                assert!(policy.check_ip(ip).is_ok(), "{text}: literal {ip} let through");
                let authority = uri.authority().map_or("", |a| a.as_str());
                assert!(!authority.contains('@'), "{text}: credentials let through");
            }
        }
    }
    if let Some(v4) = parse_ipv4_loose(text) {
        // The canonical spelling reads back as the same address.
        assert_eq!(parse_ipv4_loose(&v4.to_string()), Some(v4));
        assert_eq!(strict.check_ip(IpAddr::V4(v4)).is_ok(), is_global(IpAddr::V4(v4)));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        assert_eq!(strict.check_ip(ip).is_ok(), is_global(ip));
    }
});
