//! Addresses and CIDRs.

use std::{fmt, net::IpAddr, str::FromStr};

/// An IP prefix such as `198.18.0.0/15` or `fd00::/8`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct CidrError {
    pub input: String,
    pub reason: &'static str,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(CidrError {
                input: format!("{addr}/{prefix_len}"),
                reason: "prefix too long",
            });
        }
        Ok(Self { addr: mask(addr, prefix_len), prefix_len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix_len) == self.addr
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError { input: s.to_owned(), reason };
        let (ip, len) = s.split_once('/').ok_or_else(|| err("missing /prefix-length"))?;
        let addr: IpAddr = ip.trim().parse().map_err(|_| err("not an IP address"))?;
        let len: u8 = len.trim().parse().map_err(|_| err("prefix length is not a number"))?;
        Self::new(addr, len).map_err(|e| err(e.reason))
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> Self {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let c: Cidr = "198.18.7.9/16".parse().unwrap();
        assert_eq!(c.to_string(), "198.18.0.0/16");
        assert!(c.contains("198.18.200.1".parse().unwrap()));
        assert!(!c.contains("198.19.0.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix_len, 0);
    }

    #[test]
    fn rejects_bad_input_with_the_input_named() {
        let e = "198.18.0.0/33".parse::<Cidr>().unwrap_err();
        assert_eq!(e.input, "198.18.0.0/33");
        assert!("198.18.0.0".parse::<Cidr>().is_err());
        assert!("nonsense/8".parse::<Cidr>().is_err());
    }
}
