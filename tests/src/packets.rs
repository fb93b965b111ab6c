//! Test packets, built and checked with etherparse.

use std::net::{IpAddr, SocketAddr};

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, NetHeaders,
    PacketHeaders, SingleVlanHeader, TcpHeader, TransportHeader, UdpHeader, VlanId, VlanPcp,
};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp { syn: bool, ack: bool },
    Udp,
}

/// A packet to build: addresses, protocol and optional oddities.
#[derive(Clone, Debug)]
pub struct PacketSpec {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub l4: L4,
    pub payload: Vec<u8>,
    pub vlan: Option<u16>,
    /// IPv4 options bytes (a multiple of 4): makes IHL > 5.
    pub ipv4_options: Vec<u8>,
    /// IPv4 UDP without checksum (0).
    pub udp_no_checksum: bool,
}

impl PacketSpec {
    pub fn tcp_syn(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(src, dst, L4::Tcp { syn: true, ack: false })
    }

    pub fn tcp_ack(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(src, dst, L4::Tcp { syn: false, ack: true })
    }

    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(src, dst, L4::Udp)
    }

    pub fn new(src: SocketAddr, dst: SocketAddr, l4: L4) -> Self {
        Self {
            src,
            dst,
            l4,
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            vlan: None,
            ipv4_options: Vec::new(),
            udp_no_checksum: false,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let l3_type = if self.src.is_ipv4() { EtherType::IPV4 } else { EtherType::IPV6 };
        let eth = Ethernet2Header {
            source: CLIENT_MAC,
            destination: NODE_MAC,
            ether_type: if self.vlan.is_some() { EtherType::VLAN_TAGGED_FRAME } else { l3_type },
        };
        eth.write(&mut out).expect("write eth");
        if let Some(vid) = self.vlan {
            SingleVlanHeader {
                pcp: VlanPcp::ZERO,
                drop_eligible_indicator: false,
                vlan_id: VlanId::try_new(vid).expect("vlan id"),
                ether_type: l3_type,
            }
            .write(&mut out)
            .expect("write vlan");
        }
        let proto = match self.l4 {
            L4::Tcp { .. } => IpNumber::TCP,
            L4::Udp => IpNumber::UDP,
        };
        let l4_len = match self.l4 {
            L4::Tcp { .. } => TcpHeader::MIN_LEN,
            L4::Udp => UdpHeader::LEN,
        } + self.payload.len();
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut ip = Ipv4Header::new(l4_len as u16, 64, proto, s.octets(), d.octets())
                    .expect("ipv4 header");
                ip.options = self.ipv4_options.as_slice().try_into().expect("ipv4 options");
                ip.set_payload_len(l4_len).expect("payload length"); // total length with options
                ip.header_checksum = ip.calc_header_checksum();
                ip.write(&mut out).expect("write ipv4");
                self.write_l4(&mut out, |tcp, udp| match (tcp, udp) {
                    (Some(t), _) => t.calc_checksum_ipv4(&ip, &self.payload).expect("csum"),
                    (_, Some(u)) => u.calc_checksum_ipv4(&ip, &self.payload).expect("csum"),
                    _ => 0,
                });
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ip = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: l4_len as u16,
                    next_header: proto,
                    hop_limit: 64,
                    source: s.octets(),
                    destination: d.octets(),
                };
                ip.write(&mut out).expect("write ipv6");
                self.write_l4(&mut out, |tcp, udp| match (tcp, udp) {
                    (Some(t), _) => t.calc_checksum_ipv6(&ip, &self.payload).expect("csum"),
                    (_, Some(u)) => u.calc_checksum_ipv6(&ip, &self.payload).expect("csum"),
                    _ => 0,
                });
            }
            _ => panic!("test packet mixes address families: {} -> {}", self.src, self.dst),
        }
        out
    }

    fn write_l4(
        &self,
        out: &mut Vec<u8>,
        csum: impl Fn(Option<&TcpHeader>, Option<&UdpHeader>) -> u16,
    ) {
        match self.l4 {
            L4::Tcp { syn, ack } => {
                let mut tcp = TcpHeader::new(self.src.port(), self.dst.port(), 1000, 64240);
                tcp.syn = syn;
                tcp.ack = ack;
                if ack {
                    tcp.acknowledgment_number = 1;
                }
                tcp.checksum = csum(Some(&tcp), None);
                tcp.write(out).expect("write tcp");
            }
            L4::Udp => {
                let mut udp = UdpHeader {
                    source_port: self.src.port(),
                    destination_port: self.dst.port(),
                    length: (UdpHeader::LEN + self.payload.len()) as u16,
                    checksum: 0,
                };
                if !self.udp_no_checksum {
                    udp.checksum = csum(None, Some(&udp));
                }
                udp.write(out).expect("write udp");
            }
        }
        out.extend_from_slice(&self.payload);
    }
}

/// What a packet says, after every checksum in it was verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub l4: L4,
    pub vlan: Option<u16>,
    pub ttl: u8,
    pub payload: Vec<u8>,
    pub l4_checksum: u16,
}

enum Ip<'a> {
    V4(&'a Ipv4Header),
    V6(&'a Ipv6Header),
}

/// Parses a packet and checks the IPv4 header checksum and the TCP/UDP checksum against
/// values recomputed from scratch. Errors say which one is wrong.
pub fn parse_verified(bytes: &[u8]) -> Result<Seen, String> {
    let h = PacketHeaders::from_ethernet_slice(bytes).map_err(|e| format!("unparsable: {e}"))?;
    let payload = h.payload.slice().to_vec();
    let vlan = match &h.vlan() {
        Some(etherparse::VlanHeader::Single(v)) => Some(v.vlan_id.value()),
        Some(_) => return Err("double VLAN".into()),
        None => None,
    };
    let ip = match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => Ip::V4(ip),
        Some(NetHeaders::Ipv6(ip, _)) => Ip::V6(ip),
        _ => return Err("no IP header".into()),
    };
    let (src_ip, dst_ip, ttl): (IpAddr, IpAddr, u8) = match ip {
        Ip::V4(ip) => {
            let want = ip.calc_header_checksum();
            if ip.header_checksum != want {
                return Err(format!(
                    "IPv4 header checksum {:#06x}, recomputed {want:#06x}",
                    ip.header_checksum
                ));
            }
            (ip.source.into(), ip.destination.into(), ip.time_to_live)
        }
        Ip::V6(ip) => (ip.source.into(), ip.destination.into(), ip.hop_limit),
    };
    let (sport, dport, l4, l4_checksum) = match &h.transport {
        Some(TransportHeader::Tcp(t)) => {
            let want = match ip {
                Ip::V4(ip) => t.calc_checksum_ipv4(ip, &payload),
                Ip::V6(ip) => t.calc_checksum_ipv6(ip, &payload),
            }
            .map_err(|e| e.to_string())?;
            if t.checksum != want {
                return Err(format!("TCP checksum {:#06x}, recomputed {want:#06x}", t.checksum));
            }
            (t.source_port, t.destination_port, L4::Tcp { syn: t.syn, ack: t.ack }, t.checksum)
        }
        Some(TransportHeader::Udp(u)) => {
            let want = match ip {
                Ip::V4(ip) => u.calc_checksum_ipv4(ip, &payload),
                Ip::V6(ip) => u.calc_checksum_ipv6(ip, &payload),
            }
            .map_err(|e| e.to_string())?;
            let v4_without_checksum = u.checksum == 0 && src_ip.is_ipv4();
            if !v4_without_checksum && u.checksum != want {
                return Err(format!("UDP checksum {:#06x}, recomputed {want:#06x}", u.checksum));
            }
            (u.source_port, u.destination_port, L4::Udp, u.checksum)
        }
        _ => return Err("no TCP/UDP header".into()),
    };
    Ok(Seen {
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        l4,
        vlan,
        ttl,
        payload,
        l4_checksum,
    })
}
