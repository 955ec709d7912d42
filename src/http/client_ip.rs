//! Who the client is: the socket's peer, or, when that peer is a trusted
//! proxy, the nearest untrusted address of `X-Forwarded-For` (every line
//! of it, in order: the caller joins them).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The client's address. From a trusted peer, the chain is walked from the
/// nearest hop outwards: the first hop not trusted is the client; the walk
/// stops at the first hop that does not parse, and the client is then the
/// last hop that did (a proxy we trust), so nothing beyond a broken hop is
/// believed. When every hop is trusted, the farthest is the client.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or_default().rsplit(',') {
        let Some(ip) = parse_hop(hop.trim()) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// One hop: an address, or an address with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The client's request id when it is a sane one, else a new one.
pub fn request_id(incoming: Option<&str>) -> String {
    match incoming {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_string()
        }
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted = nets(&["10.0.0.0/8"]);
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        // An untrusted peer's header is ignored (it could say anything).
        assert_eq!(
            client_ip(Some(client), Some("1.2.3.4"), &trusted),
            Some(client)
        );
        // A trusted proxy: the nearest untrusted hop.
        assert_eq!(
            client_ip(
                Some(proxy),
                Some("1.2.3.4, 203.0.113.7, 10.9.9.9"),
                &trusted
            ),
            Some(client)
        );
        assert_eq!(client_ip(Some(proxy), None, &trusted), Some(proxy));
        assert_eq!(
            client_ip(Some(proxy), Some("garbage"), &trusted),
            Some(proxy)
        );
        assert_eq!(client_ip(Some(client), None, &[]), Some(client));
        // A broken hop stops the walk: nothing beyond it is believed.
        assert_eq!(
            client_ip(Some(proxy), Some("1.2.3.4, garbage, 10.9.9.9"), &trusted),
            Some(ip("10.9.9.9"))
        );
        assert_eq!(
            client_ip(Some(proxy), Some("1.2.3.4, garbage"), &trusted),
            Some(proxy)
        );
        // Every hop trusted: the farthest; hops with ports are read.
        assert_eq!(
            client_ip(Some(proxy), Some("10.0.0.1, 10.0.0.2:443"), &trusted),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            client_ip(Some(proxy), Some("[2001:db8::1]:80"), &trusted),
            Some(ip("2001:db8::1"))
        );
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_eq!(request_id(None).len(), 32);
        assert_ne!(request_id(Some("has space")), "has space");
        assert_eq!(request_id(Some(&"x".repeat(200))).len(), 32);
    }
}

/// Hostile bytes: the `X-Forwarded-For` walk and the request id over
/// random and built input (the long run is `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;

    fn ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
            // A few addresses, so that hops fall inside the trusted nets.
            (0u8..4).prop_map(|last| IpAddr::from([10, 0, 0, last])),
        ]
    }

    fn hop() -> impl Strategy<Value = String> {
        prop_oneof![
            ip().prop_map(|ip| ip.to_string()),
            (ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port).to_string()),
            ip().prop_map(|ip| format!("  {ip}\t")),
            Just(String::new()),
            Just(String::from("unknown")),
            Just(String::from("[::1]")),
            Just(String::from("1.2.3.4:99999")),
            "[0-9a-fA-F:.\\[\\] ]{0,20}",
            any::<String>(),
        ]
    }

    fn header() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(hop(), 0..10).prop_map(|hops| hops.join(",")),
            any::<String>(),
        ]
    }

    fn trusted() -> impl Strategy<Value = Vec<IpNet>> {
        prop::collection::vec(
            prop_oneof![
                Just("10.0.0.0/30".parse::<IpNet>().unwrap()),
                Just("::/0".parse::<IpNet>().unwrap()),
                (ip(), 0u8..=128).prop_map(|(ip, len)| {
                    let len = if ip.is_ipv4() { len % 33 } else { len };
                    IpNet::new(ip, len).unwrap()
                }),
            ],
            0..4,
        )
    }

    proptest! {
        /// Never a panic; the client is the peer or one of the hops, an
        /// untrusted peer is believed, and every hop nearer than the
        /// client is a trusted proxy. No allocation but the hops' parse.
        #[test]
        fn forwarded_for_walk(peer in proptest::option::of(ip()), xff in proptest::option::of(header()), nets in trusted()) {
            let found = client_ip(peer, xff.as_deref(), &nets);
            prop_assert_eq!(found.is_some(), peer.is_some());
            let (Some(peer), Some(found)) = (peer, found) else { return Ok(()) };
            let is_trusted = |ip: &IpAddr| nets.iter().any(|n| n.contains(ip));
            if !is_trusted(&peer) {
                prop_assert_eq!(found, peer);
                return Ok(());
            }
            if found != peer {
                let hops: Vec<Option<IpAddr>> = xff
                    .as_deref()
                    .unwrap_or_default()
                    .rsplit(',')
                    .map(|h| parse_hop(h.trim()))
                    .collect();
                let at = hops.iter().position(|h| *h == Some(found));
                prop_assert!(at.is_some(), "{found} is not a hop of {xff:?}");
                let nearer = &hops[..at.unwrap_or_default()];
                prop_assert!(nearer.iter().all(|h| h.is_some_and(|ip| is_trusted(&ip))));
            }
        }

        /// A sane id comes back as sent; anything else is replaced by a
        /// new one: at most 128 bytes of `[A-Za-z0-9-_.:]` either way.
        #[test]
        fn request_ids(incoming in proptest::option::of(prop_oneof!["[A-Za-z0-9._:-]{0,140}", any::<String>()])) {
            let id = request_id(incoming.as_deref());
            prop_assert!(!id.is_empty() && id.len() <= 128);
            prop_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));
            if let Some(sent) = incoming.filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))) {
                prop_assert_eq!(id, sent);
            }
        }
    }
}
