//! Operator rules: what they match, how they are written into the maps, and
//! how the configuration's rules and `befundctl`'s rules combine.

use std::{collections::BTreeMap, fmt, num::NonZeroU16, str::FromStr};

use aya::maps::lpm_trie::Key;
use befund_common::{ALLOW_RULE_FIXED_BITS, Addr, AllowRuleKey};
use serde::{Deserialize, Serialize};

use super::state::FirewallState;
use crate::{cidr::Cidr, config::FirewallConfig};

/// Transport protocol of an allow rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(format!("`{s}` is not a protocol; use tcp or udp")),
        }
    }
}

/// A service opened to a source prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AllowRule {
    /// Who may connect.
    pub source: Cidr,
    /// Over which transport.
    pub protocol: Protocol,
    /// To which destination port on the gateway.
    pub port: NonZeroU16,
}

/// One operator rule. Two rules are the same rule exactly when they have the
/// same map key, so a rule is also the identity of its map entry and counter
/// slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Rule {
    /// Drop everything addressed to this prefix.
    Protect {
        /// The protected destinations.
        destination: Cidr,
    },
    /// Drop everything from this prefix.
    Block {
        /// The blocked sources.
        source: Cidr,
    },
    /// Admit a protocol and port from a source prefix.
    Allow(AllowRule),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protect { destination } => write!(f, "protect {destination}"),
            Self::Block { source } => write!(f, "block {source}"),
            Self::Allow(AllowRule {
                source,
                protocol,
                port,
            }) => write!(f, "allow {protocol}/{port} from {source}"),
        }
    }
}

/// The LPM key of an address rule (protect, block).
pub fn address_key(cidr: &Cidr) -> Key<Addr> {
    Key::new(u32::from(cidr.mapped_prefix_len()), cidr.mapped_addr())
}

/// The LPM key of an allow rule: protocol and port in full, then the source
/// prefix.
pub fn allow_key(rule: &AllowRule) -> Key<AllowRuleKey> {
    let AllowRule {
        source,
        protocol,
        port,
    } = rule;
    let data = AllowRuleKey {
        proto: protocol.number(),
        reserved: 0,
        port: port.get().to_be_bytes(),
        source: source.mapped_addr(),
    };
    Key::new(
        ALLOW_RULE_FIXED_BITS + u32::from(source.mapped_prefix_len()),
        data,
    )
}

/// The prefix an address key stands for, if it is well formed.
pub fn cidr_from_key(key: &Key<Addr>) -> Option<Cidr> {
    cidr_from_parts(key.data(), key.prefix_len())
}

/// The allow rule an allow key stands for, if it is well formed.
pub fn allow_rule_from_key(key: &Key<AllowRuleKey>) -> Option<AllowRule> {
    let data = key.data();
    let source = cidr_from_parts(
        data.source,
        key.prefix_len().checked_sub(ALLOW_RULE_FIXED_BITS)?,
    )?;
    Some(AllowRule {
        source,
        protocol: Protocol::from_number(data.proto)?,
        port: NonZeroU16::new(u16::from_be_bytes(data.port))?,
    })
}

fn cidr_from_parts(addr: Addr, mapped_len: u32) -> Option<Cidr> {
    let ip = crate::cidr::unmapped(addr);
    let len = match ip {
        std::net::IpAddr::V4(_) => mapped_len.checked_sub(96)?,
        std::net::IpAddr::V6(_) => mapped_len,
    };
    Cidr::new(ip, u8::try_from(len).ok()?)
}

/// Where a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The `[firewall]` section of the configuration file.
    Config,
    /// Added with `befundctl fw` and kept in the state file.
    Befundctl,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "config",
            Self::Befundctl => "befundctl",
        })
    }
}

/// What the filter should enforce besides its fixed verdicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// Every rule with its origin and comment. A rule in both the config and
    /// the state file counts as the config's.
    pub rules: BTreeMap<Rule, RuleMeta>,
    /// Effective lockdown and where it was decided.
    pub lockdown: (bool, Origin),
}

/// Origin and comment of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMeta {
    /// Where the rule comes from.
    pub origin: Origin,
    /// The operator's note, if any.
    pub comment: Option<String>,
}

impl RuleSet {
    /// Combines the configuration (the baseline) with `befundctl`'s rules
    /// from the state file (layered on top).
    ///
    /// `befundctl` can only add rules and remove the rules it added; rules
    /// from the configuration change only by editing the file. Lockdown set
    /// with `befundctl` overrides the configuration's until it is handed back
    /// with `befundctl fw lockdown config`.
    pub fn combine(config: &FirewallConfig, state: &FirewallState) -> Self {
        let mut rules = BTreeMap::new();
        let config_rules = config_rules(config);
        for (rule, comment) in &state.rules {
            rules.insert(
                *rule,
                RuleMeta {
                    origin: Origin::Befundctl,
                    comment: comment.clone(),
                },
            );
        }
        for (rule, comment) in config_rules {
            rules.insert(
                rule,
                RuleMeta {
                    origin: Origin::Config,
                    comment,
                },
            );
        }
        let lockdown = match state.lockdown {
            Some(on) => (on, Origin::Befundctl),
            None => (config.lockdown, Origin::Config),
        };
        Self { rules, lockdown }
    }
}

/// The configuration's rules with their comments.
pub fn config_rules(config: &FirewallConfig) -> Vec<(Rule, Option<String>)> {
    let protect = config
        .protected
        .iter()
        .map(|c| (Rule::Protect { destination: *c }, None));
    let block = config
        .blocked
        .iter()
        .map(|c| (Rule::Block { source: *c }, None));
    let allow = config
        .allow
        .iter()
        .map(|a| (Rule::Allow(a.rule()), a.comment.clone()));
    protect.chain(block).chain(allow).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::firewall::parse_section;

    fn allow(source: &str, protocol: Protocol, port: u16) -> AllowRule {
        AllowRule {
            source: source.parse().unwrap(),
            protocol,
            port: NonZeroU16::new(port).unwrap(),
        }
    }

    fn config(extra: &str) -> FirewallConfig {
        let text = format!(
            "[firewall]\ninterface = \"wan0\"\nproxy_addresses = [\"192.0.2.10\"]\n{extra}"
        );
        parse_section(Path::new("test.toml"), &text).unwrap()
    }

    #[test]
    fn allow_key_has_fixed_bits_then_the_mapped_source_prefix() {
        let key = allow_key(&allow("198.51.100.0/24", Protocol::Tcp, 22));
        assert_eq!(key.prefix_len(), 32 + 96 + 24);
        let data = key.data();
        assert_eq!(data.proto, 6);
        assert_eq!(data.port, [0, 22]);
        assert_eq!(&data.source[10..], &[0xff, 0xff, 198, 51, 100, 0]);
    }

    #[test]
    fn keys_convert_back_to_the_same_rules() {
        for rule in [
            allow("198.51.100.0/24", Protocol::Udp, 1194),
            allow("2001:db8:1::/48", Protocol::Tcp, 22),
            allow("0.0.0.0/0", Protocol::Tcp, 8443),
        ] {
            assert_eq!(allow_rule_from_key(&allow_key(&rule)), Some(rule));
        }
        for text in ["203.0.113.0/24", "10.0.0.5", "2001:db8::/32", "::/0"] {
            let cidr: Cidr = text.parse().unwrap();
            assert_eq!(cidr_from_key(&address_key(&cidr)), Some(cidr));
        }
    }

    #[test]
    fn ipv4_key_shorter_than_the_mapped_range_is_not_a_rule() {
        let key = Key::new(64, Ipv4Mapped::of("10.0.0.0"));
        assert_eq!(cidr_from_key(&key), None);
    }

    struct Ipv4Mapped;
    impl Ipv4Mapped {
        fn of(text: &str) -> Addr {
            crate::cidr::mapped(text.parse().unwrap())
        }
    }

    #[test]
    fn rules_display_as_operators_write_them() {
        assert_eq!(
            Rule::Allow(allow("198.51.100.0/24", Protocol::Tcp, 22)).to_string(),
            "allow tcp/22 from 198.51.100.0/24"
        );
        let cidr: Cidr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            Rule::Protect { destination: cidr }.to_string(),
            "protect 10.0.0.5/32"
        );
        assert_eq!(
            Rule::Block { source: cidr }.to_string(),
            "block 10.0.0.5/32"
        );
    }

    #[test]
    fn combine_layers_befundctl_rules_over_the_config() {
        let config = config("blocked = [\"203.0.113.0/24\"]\n");
        let mut state = FirewallState::default();
        let extra = Rule::Block {
            source: "198.51.100.0/24".parse().unwrap(),
        };
        let dup = Rule::Block {
            source: "203.0.113.0/24".parse().unwrap(),
        };
        state.rules.insert(extra, Some("incident 7".into()));
        state.rules.insert(dup, None);

        let set = RuleSet::combine(&config, &state);
        assert_eq!(set.rules.len(), 2);
        assert_eq!(set.rules[&extra].origin, Origin::Befundctl);
        assert_eq!(set.rules[&extra].comment.as_deref(), Some("incident 7"));
        assert_eq!(set.rules[&dup].origin, Origin::Config);
        assert_eq!(set.lockdown, (false, Origin::Config));
    }

    #[test]
    fn befundctl_lockdown_overrides_the_config() {
        let config = config("lockdown = true\n");
        let state = FirewallState {
            lockdown: Some(false),
            ..Default::default()
        };
        assert_eq!(
            RuleSet::combine(&config, &state).lockdown,
            (false, Origin::Befundctl)
        );
    }

    #[test]
    fn protocol_parses_case_insensitively() {
        assert_eq!("TCP".parse::<Protocol>(), Ok(Protocol::Tcp));
        assert!("icmp".parse::<Protocol>().is_err());
    }
}
