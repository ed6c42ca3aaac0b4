//! Values as people write them in a config file: `"30s"`, `"5m"`,
//! `"50000-50100"`, `"2 MiB"`, `"10 MiB/s"`. Pure parsing; callers attach
//! the key to the error.

use std::ops::RangeInclusive;
use std::time::Duration;

/// `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}; write a duration such as \"30s\" or \"5m\""))?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

/// A duration that can be switched off: `"off"` or a zero duration give
/// `None`.
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as \"5m\", or \"off\""))?;
    Ok((!duration.is_zero()).then_some(duration))
}

/// `"50000-50100"` or a single port `"50000"`; ports below 1024 are refused
/// because passive ports are for data connections from untrusted clients.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let text = text.trim();
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (low.trim(), high.trim()),
        None => (text, text),
    };
    let port = |s: &str| {
        s.parse::<u16>().map_err(|_| {
            format!("{s:?} is not a port number; write a range such as \"50000-50100\"")
        })
    };
    let (low, high) = (port(low)?, port(high)?);
    if low < 1024 {
        return Err(format!("passive ports must be 1024 or above, got {low}"));
    }
    if low > high {
        return Err(format!("range {low}-{high} is empty"));
    }
    Ok(low..=high)
}

/// `"2 MiB"`, `"512KiB"`, `"1.5 GB"`, `"4096"` (bytes). Binary units
/// (KiB, MiB, GiB) are powers of 1024, decimal ones (kB, MB, GB) of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let hint = "write a size such as \"2 MiB\", \"512 KiB\" or \"1 GB\"";
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; {hint}"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown unit {other:?} in {text:?}; {hint}")),
    };
    let bytes = (number * multiplier as f64).round();
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("{text:?} must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// `"10 MiB/s"`, `"500 KB/s"`: bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let size = text.trim().strip_suffix("/s").ok_or_else(|| {
        format!(
            "{:?} is not a rate; write bytes per second such as \"10 MiB/s\"",
            text.trim()
        )
    })?;
    parse_size(size)
}

/// `host:port`, `[v6]:port`, or a bare host with `default_port`.
pub fn parse_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("address is empty".into());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: missing ']' after an IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => parse_port(port)?,
            None if after.is_empty() => default_port,
            None => return Err(format!("{text:?}: expected ':port' after ']'")),
        };
        return Ok((host.to_owned(), port));
    }
    match text.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Ok((text.to_owned(), default_port)),
        Some((host, port)) => Ok((host.to_owned(), parse_port(port)?)),
        None => Ok((text.to_owned(), default_port)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{text:?} is not a valid port")),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn optional_durations_can_be_off() {
        assert_eq!(
            parse_optional_duration("5m"),
            Ok(Some(Duration::from_secs(300)))
        );
        assert_eq!(parse_optional_duration("off"), Ok(None));
        assert_eq!(parse_optional_duration("0s"), Ok(None));
        assert!(parse_optional_duration("later").is_err());
    }

    #[test]
    fn port_ranges_read_as_written() {
        assert_eq!(parse_port_range("50000-50100"), Ok(50000..=50100));
        assert_eq!(parse_port_range(" 50000 - 50001 "), Ok(50000..=50001));
        assert_eq!(parse_port_range("50000"), Ok(50000..=50000));
    }

    #[test]
    fn bad_port_ranges_say_why() {
        assert!(
            parse_port_range("50100-50000")
                .unwrap_err()
                .contains("empty")
        );
        assert!(parse_port_range("21-30").unwrap_err().contains("1024"));
        assert!(parse_port_range("a-b").unwrap_err().contains("not a port"));
        assert!(parse_port_range("50000-70000").is_err());
    }

    #[test]
    fn sizes_and_rates_read_as_written() {
        assert_eq!(parse_size("2 MiB"), Ok(2 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64 kB"), Ok(64_000));
        assert_eq!(parse_rate("10 MiB/s"), Ok(10 << 20));
        assert_eq!(parse_rate(" 8MiB/s "), Ok(8 << 20));
    }

    #[test]
    fn bad_sizes_and_rates_say_why() {
        assert!(parse_size("2 MiBs").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(
            parse_size("0 MiB")
                .unwrap_err()
                .contains("at least one byte")
        );
        assert!(parse_rate("10 MiB").unwrap_err().contains("/s"));
        assert!(parse_rate("-1 MiB/s").is_err());
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("sftp.internal:2222", 22),
            Ok(("sftp.internal".into(), 2222))
        );
        assert_eq!(
            parse_host_port("sftp.internal", 22),
            Ok(("sftp.internal".into(), 22))
        );
        assert_eq!(parse_host_port("[::1]:2222", 22), Ok(("::1".into(), 2222)));
        assert_eq!(parse_host_port("::1", 22), Ok(("::1".into(), 22)));
        assert!(parse_host_port("host:0", 22).is_err());
        assert!(parse_host_port("host:x", 22).is_err());
    }
}
