//! IP address literals and CIDR prefixes, as event-ruler reads them.
//!
//! A string counts as an IP address only if it looks like one to event-ruler (four dot-separated
//! decimal numbers, or hex digits and colons with at least one colon) and then parses as a valid
//! address: `10.0.0.300` and `08:23` are plain strings. IPv6 may be upper-case or uncompressed;
//! an IPv4-mapped IPv6 address (`::ffff:a00:1`) is the IPv4 address it maps (as Java's
//! `InetAddress` reports it). Leading zeros in IPv4 parts are rejected as ambiguous.

/// Address family of an [`Ip`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// 32-bit IPv4.
    V4,
    /// 128-bit IPv6.
    V6,
}

/// A parsed IP address: family and numeric value (IPv4 in the low 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ip {
    /// Address family.
    pub family: Family,
    /// The address as an integer.
    pub value: u128,
}

/// An inclusive range of addresses of one family (a CIDR block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    /// Address family of both ends.
    pub family: Family,
    /// First address in the block (network address).
    pub lo: u128,
    /// Last address in the block.
    pub hi: u128,
}

impl IpRange {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: Ip) -> bool {
        ip.family == self.family && self.lo <= ip.value && ip.value <= self.hi
    }
}

/// Parse `s` as an IP address literal, or `None` if it is not one.
pub fn parse_ip(s: &str) -> Option<Ip> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 45 {
        return None;
    }
    if b.contains(&b'.') {
        return parse_v4(b).map(|v| Ip {
            family: Family::V4,
            value: v as u128,
        });
    }
    if b.contains(&b':') && b.iter().all(|c| c.is_ascii_hexdigit() || *c == b':') {
        let v = parse_v6(b)?;
        if v >> 32 == 0xffff {
            return Some(Ip {
                family: Family::V4,
                value: v & 0xffff_ffff,
            });
        }
        return Some(Ip {
            family: Family::V6,
            value: v,
        });
    }
    None
}

fn parse_v4(b: &[u8]) -> Option<u32> {
    let mut out: u32 = 0;
    let mut parts = 0;
    for part in b.split(|c| *c == b'.') {
        parts += 1;
        if parts > 4 || part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        if part.len() > 1 && part[0] == b'0' {
            return None;
        }
        let n = part.iter().fold(0u32, |a, d| a * 10 + (d - b'0') as u32);
        if n > 255 {
            return None;
        }
        out = (out << 8) | n;
    }
    (parts == 4).then_some(out)
}

fn parse_v6(b: &[u8]) -> Option<u128> {
    fn groups(side: &[u8]) -> Option<Vec<u16>> {
        if side.is_empty() {
            return Some(Vec::new());
        }
        side.split(|c| *c == b':')
            .map(|g| {
                if g.is_empty() || g.len() > 4 {
                    return None;
                }
                Some(
                    g.iter()
                        .fold(0u16, |a, d| (a << 4) | (*d as char).to_digit(16).unwrap_or(0) as u16),
                )
            })
            .collect()
    }
    let text = std::str::from_utf8(b).ok()?;
    let (head, tail, compressed) = match text.find("::") {
        Some(i) => {
            let rest = &text[i + 2..];
            if rest.contains("::") {
                return None;
            }
            (&text[..i], rest, true)
        }
        None => (text, "", false),
    };
    let h = groups(head.as_bytes())?;
    let t = groups(tail.as_bytes())?;
    let total = h.len() + t.len();
    if (compressed && total > 7) || (!compressed && total != 8) {
        return None;
    }
    let mut v: u128 = 0;
    for g in &h {
        v = (v << 16) | *g as u128;
    }
    let zeros = 8 - total;
    v = v.checked_shl(16 * zeros as u32).unwrap_or(0);
    for g in &t {
        v = (v << 16) | *g as u128;
    }
    Some(v)
}

/// Parse a `cidr` block such as `10.0.0.0/24` or `2001:db8::/32` into its address range
/// (host bits of the address are ignored). The error text says what is wrong, for users.
pub fn parse_cidr(s: &str) -> Result<IpRange, String> {
    let mut it = s.split('/');
    let (addr, mask) = match (it.next(), it.next(), it.next()) {
        (Some(a), Some(m), None) => (a, m),
        _ => {
            return Err(format!(
                "`cidr` needs an address and a prefix length separated by one `/`, e.g. \"10.0.0.0/24\" or \"2001:db8::/32\"; got {s:?}"
            ))
        }
    };
    let ip = parse_ip(addr).ok_or_else(|| format!("`cidr` address {addr:?} is not a valid IPv4 or IPv6 address"))?;
    if mask.is_empty() || mask.len() > 3 || !mask.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`cidr` prefix length {mask:?} must be a whole number, e.g. \"10.0.0.0/24\""
        ));
    }
    let bits: u32 = mask.parse().map_err(|_| "bad prefix length".to_string())?;
    let width = match ip.family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    if bits > width {
        return Err(format!(
            "`cidr` prefix length /{bits} is too long; an {} prefix is at most /{width}",
            if width == 32 { "IPv4" } else { "IPv6" }
        ));
    }
    let host_bits = width - bits;
    let host_mask: u128 = if host_bits == 0 {
        0
    } else if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let lo = ip.value & !host_mask;
    let hi = lo | host_mask;
    Ok(IpRange {
        family: ip.family,
        lo,
        hi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u128 {
        let ip = parse_ip(s).unwrap();
        assert_eq!(ip.family, Family::V4);
        ip.value
    }

    #[test]
    fn ipv4_literals() {
        assert_eq!(v4("10.0.0.33"), 0x0A000021);
        assert_eq!(v4("255.255.255.255"), 0xFFFFFFFF);
        for bad in [
            "10.0.0.300",
            "10.0.0",
            "10.0.0.0.1",
            "1.2.3.-1",
            "01.2.3.4",
            "a.b.c.d",
            "1..2.3",
            "",
        ] {
            assert!(parse_ip(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ipv6_literals() {
        let a = parse_ip("2001:db8::ff00:42:8329").unwrap();
        let b = parse_ip("2001:0DB8:0000:0000:0000:FF00:0042:8329").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.family, Family::V6);
        assert_eq!(a.value, 0x20010DB8000000000000FF0000428329);
        assert_eq!(parse_ip("::1").unwrap().value, 1);
        assert_eq!(parse_ip("::").unwrap().value, 0);
        assert_eq!(parse_ip("2600:9000::").unwrap().value, 0x26009000u128 << 96);
        for bad in [
            "08:23",
            "1:2:3:4:5:6:7:8:9",
            "1::2::3",
            "12345::",
            ":1:2:3:4:5:6:7",
            "g::1",
            "1:2:3:4:5:6:7:",
        ] {
            assert!(parse_ip(bad).is_none(), "{bad}");
        }
        // IPv4-mapped addresses are their IPv4 address.
        assert_eq!(
            parse_ip("::ffff:a00:1").unwrap(),
            Ip {
                family: Family::V4,
                value: 0x0A000001
            }
        );
    }

    #[test]
    fn cidr_blocks() {
        let r = parse_cidr("10.0.0.0/24").unwrap();
        assert!(r.contains(parse_ip("10.0.0.33").unwrap()));
        assert!(!r.contains(parse_ip("10.0.1.0").unwrap()));
        let r = parse_cidr("220.160.153.171/31").unwrap();
        assert!(r.contains(parse_ip("220.160.153.170").unwrap()));
        assert!(!r.contains(parse_ip("220.160.153.172").unwrap()));
        let r = parse_cidr("220.160.154.255/24").unwrap();
        assert!(r.contains(parse_ip("220.160.154.0").unwrap()));
        assert!(!r.contains(parse_ip("220.160.155.0").unwrap()));
        let r = parse_cidr("2001:db8::/32").unwrap();
        assert!(r.contains(parse_ip("2001:DB8:0:0:0:0:0:1").unwrap()));
        assert!(!r.contains(parse_ip("10.0.0.1").unwrap()));
        assert!(parse_cidr("0.0.0.0/0").unwrap().contains(parse_ip("1.2.3.4").unwrap()));
        assert!(parse_cidr("::/0").unwrap().contains(parse_ip("::1").unwrap()));
        assert_eq!(
            parse_cidr("1.2.3.4/32").unwrap().lo,
            parse_cidr("1.2.3.4/32").unwrap().hi
        );
    }

    #[test]
    fn cidr_rejects() {
        for bad in [
            "192.168.0.1/33",
            "foo",
            "foo/bar/baz",
            "192.168.0.1/foo",
            "192.168.0.1/-3424",
            "snorkle/3",
            "10.10.10.10.10/3",
            "2.1.0.-1/3",
            "2400:6500:FF00::36FB:1F80/222",
            "10.0.0.0",
            "10.0.0.300/24",
            "10.0.0.0/",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
