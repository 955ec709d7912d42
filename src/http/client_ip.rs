//! Who the client is: the socket's peer, or, when that peer is a trusted
//! proxy, the nearest untrusted address of `X-Forwarded-For`.

use std::net::IpAddr;

use ipnet::IpNet;

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
    let Some(chain) = forwarded_for else {
        return Some(peer);
    };
    let hops: Vec<IpAddr> = chain
        .split(',')
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    // From the nearest hop outwards, the first one we do not trust.
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .or(Some(peer))
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
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_eq!(request_id(None).len(), 32);
        assert_ne!(request_id(Some("has space")), "has space");
        assert_eq!(request_id(Some(&"x".repeat(200))).len(), 32);
    }
}
