//! A compact set of IP addresses: sorted, disjoint, inclusive ranges per address family.
//! What a snapshot's `withheld_ips` is made of: the addresses of a mesh are often handed out
//! in runs (a pod CIDR, a service range), so a set of thousands of addresses is usually a
//! few ranges on the wire, and a lookup is a binary search.
//!
//! On the wire it is a JSON array of strings, each an address (`"10.0.0.7"`) or an inclusive
//! range (`"10.0.0.1-10.0.0.9"`). A list of plain addresses (what older control planes sent)
//! reads as the same set. Whatever order or overlap arrives, the set is normalized on read.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of IP addresses as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRanges {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// Why a string is not an address or a range of `withheld_ips`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRangeError {
    /// Not an IP address.
    #[error("{0:?} is not an IP address or a range FIRST-LAST")]
    Address(String),
    /// A range whose ends are of different families or in the wrong order.
    #[error("{0:?}: a range's first address must not be above its last, in one family")]
    Range(String),
}

impl IpRanges {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(*a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(*a)),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The lowest address of the set (IPv4 before IPv6).
    pub fn first(&self) -> Option<IpAddr> {
        match (self.v4.first(), self.v6.first()) {
            (Some(&(a, _)), _) => Some(Ipv4Addr::from(a).into()),
            (None, Some(&(a, _))) => Some(Ipv6Addr::from(a).into()),
            (None, None) => None,
        }
    }

    /// Number of ranges (what the wire form's length is).
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The set without the addresses in `holes` (in any order).
    pub fn without(&self, holes: &[IpAddr]) -> Self {
        let mut h4: Vec<u32> = Vec::new();
        let mut h6: Vec<u128> = Vec::new();
        for ip in holes {
            match ip {
                IpAddr::V4(a) => h4.push(u32::from(*a)),
                IpAddr::V6(a) => h6.push(u128::from(*a)),
            }
        }
        h4.sort_unstable();
        h6.sort_unstable();
        Self {
            v4: subtract(&self.v4, &h4),
            v6: subtract(&self.v6, &h6),
        }
    }

    /// Adds the inclusive range `first..=last` (both of one family, `first <= last`).
    fn add(&mut self, first: IpAddr, last: IpAddr, text: &str) -> Result<(), IpRangeError> {
        let bad = || IpRangeError::Range(text.to_owned());
        match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => self.v4.push((a.into(), b.into())),
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => self.v6.push((a.into(), b.into())),
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Sorts and merges overlapping or adjacent ranges.
    fn normalize(&mut self) {
        merge(&mut self.v4);
        merge(&mut self.v6);
    }
}

impl FromIterator<IpAddr> for IpRanges {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        let mut set = Self::new();
        for ip in iter {
            match ip {
                IpAddr::V4(a) => set.v4.push((a.into(), a.into())),
                IpAddr::V6(a) => set.v6.push((a.into(), a.into())),
            }
        }
        set.normalize();
        set
    }
}

/// Binary search for `x` in sorted disjoint ranges.
fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|&(_, last)| last < x);
    ranges.get(i).is_some_and(|&(first, _)| first <= x)
}

/// A step of one address, for merging adjacent ranges.
trait Addr: Ord + Copy {
    fn next(self) -> Option<Self>;
    fn prev(self) -> Option<Self>;
}

impl Addr for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn prev(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

impl Addr for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn prev(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

fn merge<T: Addr>(ranges: &mut Vec<(T, T)>) {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for &(first, last) in ranges.iter() {
        match out.last_mut() {
            // Overlapping or adjacent (the previous range ends just before this one starts).
            Some(prev) if prev.1.next().is_none_or(|n| n >= first) => {
                prev.1 = prev.1.max(last);
            }
            _ => out.push((first, last)),
        }
    }
    *ranges = out;
}

/// `ranges` without the sorted addresses `holes`.
fn subtract<T: Addr>(ranges: &[(T, T)], holes: &[T]) -> Vec<(T, T)> {
    let mut out = Vec::with_capacity(ranges.len() + holes.len());
    let mut h = 0;
    for &(first, last) in ranges {
        let mut start = Some(first);
        while h < holes.len() && holes[h] < first {
            h += 1;
        }
        while let (Some(s), Some(&hole)) = (start, holes.get(h)) {
            if hole > last {
                break;
            }
            if let Some(end) = hole.prev().filter(|&e| e >= s) {
                out.push((s, end));
            }
            start = hole.next().filter(|&n| n <= last);
            h += 1;
        }
        if let Some(s) = start {
            out.push((s, last));
        }
    }
    out
}

/// One range as its wire string.
struct Wire(IpAddr, IpAddr);

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == self.1 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{}-{}", self.0, self.1)
        }
    }
}

impl Serialize for IpRanges {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v4 = self
            .v4
            .iter()
            .map(|&(a, b)| Wire(Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into()));
        let v6 = self
            .v6
            .iter()
            .map(|&(a, b)| Wire(Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into()));
        s.collect_seq(v4.chain(v6).map(|w| w.to_string()))
    }
}

impl<'de> Deserialize<'de> for IpRanges {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        Self::parse_all(items.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

impl IpRanges {
    /// Reads wire strings: each an address or an inclusive range `FIRST-LAST`, in any order.
    pub fn parse_all<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, IpRangeError> {
        let mut set = IpRanges::new();
        for text in items {
            let addr = |s: &str| {
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| IpRangeError::Address(text.to_owned()))
            };
            let (first, last) = match text.split_once('-') {
                Some((a, b)) => (addr(a)?, addr(b)?),
                None => (addr(text)?, addr(text)?),
            };
            set.add(first, last, text)?;
        }
        set.normalize();
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn wire(set: &IpRanges) -> String {
        serde_json::to_string(set).unwrap()
    }

    #[test]
    fn runs_of_addresses_become_ranges_and_lookups_match_the_plain_list() {
        let mut addrs: Vec<IpAddr> = (0..600u32)
            .filter(|i| i % 100 != 7)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        addrs.push(ip("::1"));
        addrs.push(ip("::2"));
        addrs.push(ip("10.0.0.3"));
        let set: IpRanges = addrs.iter().copied().collect();
        assert_eq!(set.ranges(), 7 + 1);
        for i in 0..700u32 {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(set.contains(&a), addrs.contains(&a), "{a}");
        }
        assert!(set.contains(&ip("::2")) && !set.contains(&ip("::3")));
        assert_eq!(set.first(), Some(ip("10.0.0.0")));
        assert!(!set.contains(&ip("0.0.0.0")) && !set.contains(&ip("255.255.255.255")));
    }

    #[test]
    fn the_wire_form_round_trips_and_reads_plain_addresses() {
        let set: IpRanges = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9", "fe80::1"]
            .into_iter()
            .map(ip)
            .collect();
        assert_eq!(wire(&set), r#"["10.0.0.1-10.0.0.3","10.0.0.9","fe80::1"]"#);
        let back: IpRanges = serde_json::from_str(&wire(&set)).unwrap();
        assert_eq!(back, set);
        // Unsorted, overlapping and plain entries read as the same set.
        let messy: IpRanges = serde_json::from_str(
            r#"["fe80::1","10.0.0.9","10.0.0.2-10.0.0.3","10.0.0.1","10.0.0.2"]"#,
        )
        .unwrap();
        assert_eq!(messy, set);
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for bad in [
            r#"["10.0.0.9-10.0.0.1"]"#,
            r#"["10.0.0.1-::1"]"#,
            r#"["10.0.0.1-"]"#,
            r#"["host"]"#,
            r#"["1-2-3"]"#,
            r#"[7]"#,
        ] {
            assert!(serde_json::from_str::<IpRanges>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn holes_split_ranges_at_the_edges_and_inside() {
        let set =
            IpRanges::parse_all(["10.0.0.0-10.0.0.255", "0.0.0.0", "255.255.255.255"]).unwrap();
        let cut = set.without(&[
            ip("10.0.0.255"),
            ip("10.0.0.0"),
            ip("10.0.0.5"),
            ip("10.0.0.6"),
            ip("0.0.0.0"),
            ip("255.255.255.255"),
            ip("192.168.0.1"),
        ]);
        assert_eq!(wire(&cut), r#"["10.0.0.1-10.0.0.4","10.0.0.7-10.0.0.254"]"#);
        assert!(IpRanges::new().without(&[ip("::1")]).is_empty());
    }
}
