//! Persistence templates (facts §8.1–§8.3, §3.7): which template a new flow of a persistent service looks up,
//! and which port the template and the conn get.

use core::net::IpAddr;

use ipvs_conn::TemplateKey;
use ipvs_proto::{Protocol, ServiceKey};

/// The FTP control port: a persistent FTP service's templates are port-less so its data connections share
/// them (facts §8.4).
pub(crate) const FTP_PORT: u16 = 21;

/// The template a new flow of a persistent service uses, and how the template's destination port is chosen.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct TemplatePlan {
    /// The template's lookup key.
    pub(crate) key: TemplateKey,
    /// Whether a new template's `dport` is the chosen destination's port (`true`) or 0 (`false`).
    pub(crate) dport_from_dest: bool,
}

/// The template of a flow `protocol` `client` → `vaddr:vport` of the persistent service `service` with
/// `netmask` (IPv4 mask bits, or IPv6 prefix length) — facts §8.1:
///
/// | case | protocol | vaddr | vport | template dport |
/// |---|---|---|---|---|
/// | vport = service port ≠ 21 | packet's | VIP | service port | dest port |
/// | vport = service port = 21 | packet's | VIP | 0 | 0 |
/// | port-0 service (or FTP data through the port-21 service) | packet's | VIP | 0 | 0 |
/// | fwmark service | 0 (`IPPROTO_IP`) | the mark | 0 | 0 |
pub(crate) fn template_for(
    service: &ServiceKey,
    netmask: u32,
    protocol: Protocol,
    client: IpAddr,
    vaddr: IpAddr,
    vport: u16,
) -> TemplatePlan {
    match *service {
        ServiceKey::Fwmark { mark, .. } => {
            TemplatePlan { key: TemplateKey::fwmark(client, netmask, mark), dport_from_dest: false }
        }
        ServiceKey::Addr { addr, .. } => {
            let svc_port = addr.port();
            let (tpl_vport, dport_from_dest) =
                if vport == svc_port && svc_port != FTP_PORT { (vport, true) } else { (0, false) };
            TemplatePlan { key: TemplateKey::for_service(protocol, client, netmask, vaddr, tpl_vport), dport_from_dest }
        }
    }
}

/// The destination port of a conn created through a template (facts §8.2 step 3): the packet's destination
/// port, replaced by the destination's port when the packet went to the service port and the destination has
/// a port.
pub(crate) fn conn_dport(service: &ServiceKey, vport: u16, dest_port: u16) -> u16 {
    let svc_port = match service {
        ServiceKey::Addr { addr, .. } => addr.port(),
        ServiceKey::Fwmark { .. } => 0,
    };
    if vport == svc_port && dest_port != 0 {
        dest_port
    } else {
        vport
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_proto::AddressFamily;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn svc(proto: Protocol, addr: &str) -> ServiceKey {
        ServiceKey::Addr { protocol: proto, addr: addr.parse().unwrap() }
    }

    #[test]
    fn template_cases_of_facts_8_1() {
        let client = ip("192.168.7.9");
        let vip = ip("10.0.0.1");
        // Service port, not FTP: vport kept, dport from the dest; client masked.
        let p = template_for(&svc(Protocol::Tcp, "10.0.0.1:80"), 0xFFFF_FF00, Protocol::Tcp, client, vip, 80);
        assert_eq!(p.key, TemplateKey::for_service(Protocol::Tcp, ip("192.168.7.0"), u32::MAX, vip, 80));
        assert!(p.dport_from_dest);
        // FTP: port-less.
        let p = template_for(&svc(Protocol::Tcp, "10.0.0.1:21"), u32::MAX, Protocol::Tcp, client, vip, 21);
        assert_eq!((p.key.vport, p.dport_from_dest), (0, false));
        // FTP data through the FTP service, and port-0 services: port-less.
        let p = template_for(&svc(Protocol::Tcp, "10.0.0.1:21"), u32::MAX, Protocol::Tcp, client, vip, 40000);
        assert_eq!((p.key.vport, p.dport_from_dest), (0, false));
        let p = template_for(&svc(Protocol::Udp, "10.0.0.1:0"), u32::MAX, Protocol::Udp, client, vip, 53);
        assert_eq!((p.key.vport, p.key.protocol, p.dport_from_dest), (0, Protocol::Udp, false));
        // Fwmark: protocol 0, the mark in the address.
        let fw = ServiceKey::Fwmark { mark: 5, family: AddressFamily::Inet };
        let p = template_for(&fw, u32::MAX, Protocol::Udp, client, vip, 53);
        assert!(p.key.is_fwmark());
        assert_eq!(p.key.vaddr, ip("0.0.0.5"));
    }

    #[test]
    fn conn_dport_rule() {
        let s = svc(Protocol::Tcp, "10.0.0.1:80");
        assert_eq!(conn_dport(&s, 80, 8080), 8080);
        assert_eq!(conn_dport(&s, 80, 0), 80);
        let s0 = svc(Protocol::Tcp, "10.0.0.1:0");
        assert_eq!(conn_dport(&s0, 443, 8080), 443);
        let fw = ServiceKey::Fwmark { mark: 1, family: AddressFamily::Inet };
        assert_eq!(conn_dport(&fw, 443, 8080), 443);
    }
}
