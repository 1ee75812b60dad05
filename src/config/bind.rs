//! The listen address: `bind` (`loopback`, `lan`, `tailnet`, `auto` or a
//! literal IP) resolved against this host's interfaces.

use super::{BindMode, Config, ConfigError};
use std::net::{IpAddr, Ipv4Addr};

/// True for 100.64.0.0/10, the CGNAT range Tailscale assigns from.
fn is_tailnet(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 100 && (o[1] & 0xC0) == 64
        }
        IpAddr::V6(_) => false,
    }
}

fn first_tailnet(addrs: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
    addrs.into_iter().find(|ip| is_tailnet(*ip))
}

fn tailnet_addr() -> Result<Option<IpAddr>, ConfigError> {
    let interfaces = if_addrs::get_if_addrs()
        .map_err(|e| ConfigError::new("bind", format!("cannot list network interfaces: {e}")))?;
    Ok(first_tailnet(
        interfaces.iter().map(if_addrs::Interface::ip),
    ))
}

impl Config {
    /// The IP to bind. `tailnet` fails when no interface has a
    /// 100.64.0.0/10 address; `auto` then falls back to loopback.
    pub fn bind_addr(&self) -> Result<IpAddr, ConfigError> {
        match self.bind {
            BindMode::Loopback => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            BindMode::Lan => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            BindMode::Addr(ip) => Ok(ip),
            BindMode::Tailnet => tailnet_addr()?.ok_or_else(|| {
                ConfigError::new(
                    "bind",
                    "tailnet: no local interface has an address in 100.64.0.0/10 (is Tailscale up?)",
                )
            }),
            BindMode::Auto => Ok(tailnet_addr()
                .ok()
                .flatten()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        }
    }

    /// True when [`Config::bind_addr`] is a loopback address (false when it
    /// cannot be resolved, the safe answer for security checks).
    pub fn is_loopback(&self) -> bool {
        self.bind_addr().is_ok_and(|ip| ip.is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::config::test_support::*;

    #[test]
    fn bind_literal_ip_from_env_and_file() {
        let c = load_env(&[("SWITCHYARD_BIND", "127.0.0.2")]).unwrap();
        assert_eq!(c.bind, BindMode::Addr("127.0.0.2".parse().unwrap()));
        assert!(c.is_loopback());
        let c = load(&with_file("bind = \"::1\"\n"), &env(&[])).unwrap();
        assert_eq!(c.bind, BindMode::Addr("::1".parse().unwrap()));
        let err = load_env(&[("SWITCHYARD_BIND", "moon")]).unwrap_err();
        assert_eq!(err.field, "bind");
    }

    #[test]
    fn bind_addresses() {
        let mut c = Config::default();
        assert_eq!(c.bind_addr().unwrap(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        c.bind = BindMode::Lan;
        assert_eq!(c.bind_addr().unwrap(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        c.bind = BindMode::Auto;
        let auto = c.bind_addr().unwrap();
        assert!(auto.is_loopback() || is_tailnet(auto));
        let ips: Vec<IpAddr> = ["10.0.0.1", "100.63.255.255", "100.101.2.3", "100.64.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(first_tailnet(ips), Some("100.101.2.3".parse().unwrap()));
        assert!(!is_tailnet("100.128.0.1".parse().unwrap()));
    }
}
