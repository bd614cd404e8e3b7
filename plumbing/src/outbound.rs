//! Outbound HTTP that cannot be aimed inward: the one client for every call
//! the server makes on a user's or admin's say-so (budget webhooks today,
//! provider report imports next).
//!
//! A URL someone typed must not reach the database port, the cloud
//! metadata service or anything else on the server's own network. So the
//! client resolves names itself ([`GuardedResolver`]) and refuses an answer
//! holding any loopback, private, link-local, CGNAT, unique-local,
//! multicast, documentation, reserved or unspecified address; it connects
//! only to the addresses it checked (no DNS-rebinding window, since the
//! check and the connect use the same answer). A URL whose host is an
//! address literal (any notation the URL standard reads: `2130706433`,
//! `0x7f.1`, `127.1`, `[::ffff:127.0.0.1]`) is checked the same way before
//! the request is made. Redirects are not followed and proxies from the
//! environment are not used (either would move the connection past the
//! check). Operators allow in-house receivers explicitly with
//! `--outbound-allow <CIDR>`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Which inward ranges outbound calls may reach anyway.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutboundArgs {
    /// Inward address ranges (CIDR, comma-separated) that outbound calls
    /// (webhooks) may reach although they are loopback, private or
    /// link-local: in-house receivers. Everything else inward is refused.
    #[arg(long = "outbound-allow", env = "TOKENUSAGE_OUTBOUND_ALLOW", value_delimiter = ',')]
    pub allow: Vec<IpNet>,
}

impl OutboundArgs {
    pub fn policy(&self) -> Arc<Policy> {
        Arc::new(Policy::allowing(self.allow.clone()))
    }
}

/// A URL as it may be shown in a listing or a log: a password in it and
/// every query value replaced by `***` (receivers often take their token
/// there). The user name, host and path stay, so the endpoint is still
/// recognisable; text that is not a URL is shown as `***`.
pub fn redacted(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else { return "***".into() };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        let pairs: Vec<String> = u.query_pairs().map(|(k, _)| format!("{k}=***")).collect();
        u.set_query(Some(&pairs.join("&")));
    }
    u.to_string()
}

/// Why an outbound address or URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("must be an http:// or https:// URL with a host")]
    NotHttp,
    #[error(
        "{host} is {what} ({addr}); outbound calls may not reach the server's own network (an operator can allow a range with --outbound-allow)"
    )]
    Inward { host: String, addr: IpAddr, what: &'static str },
    #[error("{host} does not resolve to any address")]
    Unresolvable { host: String },
}

/// Which addresses outbound calls may reach.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Ranges an operator allows although they are inward (in-house receivers).
    allow: Vec<IpNet>,
}

/// Ranges no outbound call may reach unless allowed, with what they are.
const INWARD: &[(&str, &str)] = &[
    ("0.0.0.0/8", "an unspecified (\"this network\") address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT (shared) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address (cloud metadata lives here)"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a local NAT64 address"),
    ("100::/64", "a discard address"),
    ("2001:db8::/32", "a documentation address"),
    ("fc00::/7", "a unique-local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
];

/// The IPv4 address an IPv6 address stands for, where it embeds one
/// (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`): it is checked as that IPv4 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST {
        return Some(tail());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    None
}

impl Policy {
    /// A policy allowing these ranges besides the public internet.
    pub fn allowing(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Whether `addr` may be called; if not, what it is.
    pub fn check_addr(&self, addr: IpAddr) -> Result<(), &'static str> {
        let canonical = match addr {
            IpAddr::V6(v6) => embedded_v4(v6).map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        if self.allow.iter().any(|n| n.contains(&addr) || n.contains(&canonical)) {
            return Ok(());
        }
        for (net, what) in INWARD {
            let net: IpNet = net.parse().expect("the inward ranges are valid CIDRs");
            if net.contains(&canonical) || net.contains(&addr) {
                return Err(what);
            }
        }
        if canonical == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return Err("the broadcast address");
        }
        Ok(())
    }

    /// Checks a URL before any request: http(s) with a host; an address
    /// literal must be allowed; `localhost` names are refused without asking
    /// DNS. Other names are checked when resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::NotHttp);
        }
        let host = url.host().ok_or(Refused::NotHttp)?;
        let addr = match host {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(Refused::Inward {
                        host: name,
                        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                        what: "a loopback address",
                    });
                }
                return Ok(());
            }
        };
        self.check_addr(addr).map_err(|what| Refused::Inward { host: host.to_string(), addr, what })
    }

    /// Resolves `host` and checks every address it answers with: one inward
    /// address refuses the name (a name that answers both ways could be
    /// aimed either way).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Refused::Unresolvable { host: host.to_owned() })?
            .collect();
        if addrs.is_empty() {
            return Err(Refused::Unresolvable { host: host.to_owned() });
        }
        for a in &addrs {
            self.check_addr(a.ip()).map_err(|what| Refused::Inward { host: host.to_owned(), addr: a.ip(), what })?;
        }
        Ok(addrs)
    }

    /// The outbound client: names resolved and checked by this policy, no
    /// redirects, no proxies from the environment.
    pub fn client(self: &Arc<Self>) -> reqwest::Result<Client> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy: self.clone() }))
            .build()?;
        Ok(Client { http, policy: self.clone() })
    }
}

/// A resolver that answers only with addresses the policy allows.
struct GuardedResolver {
    policy: Arc<Policy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, host) = (self.policy.clone(), name.as_str().to_owned());
        Box::pin(async move {
            let addrs =
                policy.resolve(&host, 0).await.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The outbound HTTP client (cheap to clone).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: Arc<Policy>,
}

impl Client {
    /// A POST to `url`, refused before anything is sent if the URL names an
    /// inward address literal (names are checked as they are resolved).
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, Refused> {
        let parsed = reqwest::Url::parse(url).map_err(|_| Refused::NotHttp)?;
        self.policy.check_url(&parsed)?;
        Ok(self.http.post(parsed))
    }

    /// A GET, checked the same way.
    pub fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, Refused> {
        let parsed = reqwest::Url::parse(url).map_err(|_| Refused::NotHttp)?;
        self.policy.check_url(&parsed)?;
        Ok(self.http.get(parsed))
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> bool {
        let u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        Policy::default().check_url(&u).is_err()
    }

    /// Every notation of an inward address that the URL standard reads is
    /// refused: decimal, hex, octal and short IPv4, IPv4-mapped and
    /// -compatible IPv6, NAT64, and the names of loopback.
    #[test]
    fn inward_addresses_are_refused_in_every_notation() {
        for url in [
            "http://127.0.0.1:5432/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0177.0.0.1/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://100.100.100.200/",
            "http://10.1.2.3/",
            "http://172.31.255.255/",
            "http://192.168.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "ftp://example.com/",
        ] {
            assert!(refused(url), "{url} must be refused");
        }
        for url in ["https://hooks.slack.com/services/x", "http://93.184.216.34/", "http://[2606:4700::1111]/"] {
            assert!(!refused(url), "{url} is public");
        }
    }

    #[test]
    fn secrets_inside_a_url_are_redacted_for_listings() {
        assert_eq!(
            redacted("https://bot:s3cret@hooks.example.com/in?token=abc&x=1"),
            "https://bot:***@hooks.example.com/in?token=***&x=***"
        );
        assert_eq!(redacted("https://hooks.example.com/in"), "https://hooks.example.com/in");
        assert_eq!(redacted("not a url"), "***");
    }

    #[test]
    fn an_operator_can_allow_a_range() {
        let p = Policy::allowing(vec!["10.20.0.0/16".parse().unwrap()]);
        assert!(p.check_addr("10.20.3.4".parse().unwrap()).is_ok());
        assert!(p.check_addr("::ffff:10.20.3.4".parse().unwrap()).is_ok());
        assert!(p.check_addr("10.21.0.1".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn names_resolving_inward_are_refused_at_resolution() {
        let p = Policy::default();
        assert!(matches!(p.resolve("localhost", 80).await, Err(Refused::Inward { .. })));
        let client = Arc::new(p).client().unwrap();
        // IP literals never reach the resolver: refused before the request.
        assert!(client.post("http://[::ffff:127.0.0.1]:5432/").is_err());
    }

    proptest::proptest! {
        /// Any IPv4 loopback or private address, written as a dotted quad,
        /// one decimal number or hex, and IPv4-mapped in IPv6, is refused.
        #[test]
        fn private_ipv4_in_any_notation(last in 0u32..0x00ff_ffff, which in 0usize..3) {
            let base = [0x7f00_0000u32, 0x0a00_0000, 0xc0a8_0000][which];
            let n = base | (last & if which == 2 { 0xffff } else { 0x00ff_ffff });
            let v4 = Ipv4Addr::from(n);
            for url in [
                format!("http://{v4}/"),
                format!("http://{n}/"),
                format!("http://{n:#x}/"),
                format!("http://[::ffff:{v4}]/"),
            ] {
                proptest::prop_assert!(refused(&url), "{}", url);
            }
        }
    }
}
