//! The kernel's `/proc/net/ip_vs_conn`, read back.
//!
//! ```text
//! Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
//! TCP 0A090009 A028 0A320001 0050 0A010003 0050 SYN_RECV         59
//! ```
//!
//! IPv4 addresses are 8 upper-case hex digits, ports 4; IPv6 addresses are written in full (`%pI6`:
//! eight groups of four lower-case hex digits). From = client, To = virtual address, Dest = real server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipvs_proto::Protocol;

/// One connection.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ProcConn {
    /// `TCP`, `UDP`, `SCTP`, … as written.
    pub protocol: String,
    /// The client.
    pub from: SocketAddr,
    /// The virtual address (for a fwmark service, the packet's destination).
    pub to: SocketAddr,
    /// The real server.
    pub dest: SocketAddr,
    /// The state name.
    pub state: String,
    /// Remaining whole seconds.
    pub expires: u64,
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    if s.len() == 8 && !s.contains(':') {
        return u32::from_str_radix(s, 16).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v)));
    }
    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

fn parse_addr(ip: &str, port: &str) -> Option<SocketAddr> {
    Some(SocketAddr::new(parse_ip(ip)?, u16::from_str_radix(port, 16).ok()?))
}

/// Every connection line of the file (the header and unreadable lines skipped).
pub fn parse_conns(text: &str) -> Vec<ProcConn> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || f[0] == "Pro" {
                return None;
            }
            Some(ProcConn {
                protocol: f[0].to_string(),
                from: parse_addr(f[1], f[2])?,
                to: parse_addr(f[3], f[4])?,
                dest: parse_addr(f[5], f[6])?,
                state: f[7].to_string(),
                expires: f[8].parse().ok()?,
            })
        })
        .collect()
}

/// An address as the file writes it.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08X}", u32::from(v4)),
        IpAddr::V6(v6) => v6.segments().iter().map(|s| format!("{s:04x}")).collect::<Vec<_>>().join(":"),
    }
}

/// The protocol column.
pub fn protocol_text(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        _ => "IP",
    }
}

/// The first five columns of a conn (`TCP 0A090001 4E21 0A000264 0050`): the injector's `conn` key.
pub fn conn_key(p: Protocol, from: SocketAddr, to: SocketAddr) -> String {
    format!("{} {} {:04X} {} {:04X}", protocol_text(p), ip_text(from.ip()), from.port(), ip_text(to.ip()), to.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6_lines() {
        let text = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n\
            TCP 0A090009 A028 0A320001 0050 0A010003 0050 SYN_RECV         59\n\
            UDP 2001:0db8:0009:0000:0000:0000:0000:0001 9C41 2001:0db8:0000:0000:0000:0000:0000:0100 0035 \
            2001:0db8:0001:0000:0000:0000:0000:0005 0035 UDP             299\n";
        let c = parse_conns(text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].from, "10.9.0.9:41000".parse().unwrap());
        assert_eq!(c[0].to, "10.50.0.1:80".parse().unwrap());
        assert_eq!(c[0].dest, "10.1.0.3:80".parse().unwrap());
        assert_eq!((c[0].state.as_str(), c[0].expires), ("SYN_RECV", 59));
        assert_eq!(c[1].dest, "[2001:db8:1::5]:53".parse().unwrap());
        assert_eq!(
            conn_key(Protocol::Udp, c[1].from, c[1].to),
            "UDP 2001:0db8:0009:0000:0000:0000:0000:0001 9C41 2001:0db8:0000:0000:0000:0000:0000:0100 0035"
        );
        assert_eq!(conn_key(Protocol::Tcp, c[0].from, c[0].to), "TCP 0A090009 A028 0A320001 0050");
    }
}
