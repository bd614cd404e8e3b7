//! Kafka connection settings and the client configuration built from them.

use rdkafka::ClientConfig;

/// Kafka settings shared by the producer and the consumer.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Comma-separated `host:port` list of Kafka brokers.
    #[arg(long = "kafka-brokers", env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:19092")]
    pub bootstrap_servers: String,
    /// The topic usage events are published to and consumed from.
    #[arg(long = "kafka-topic", env = "TOKENUSAGE_TOPIC", default_value = tokenusage_contract::wire::DEFAULT_TOPIC)]
    pub topic: String,
    /// Extra librdkafka properties as `key=value`, repeatable (or
    /// comma-separated in the env var): TLS (`security.protocol=ssl`,
    /// `ssl.ca.location=...`), SASL (`sasl.mechanism=SCRAM-SHA-512`, ...),
    /// or broker quirks (`broker.address.family=v4`). Values are never
    /// logged, since they may hold SASL passwords.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_kv, hide_env_values = true)]
    pub options: Vec<(String, String)>,
    /// Partitions of the events topic when tokenusage creates it (it is
    /// created when absent; an existing topic is never changed).
    #[arg(long = "topic-partitions", env = "TOKENUSAGE_TOPIC_PARTITIONS", default_value_t = 6,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub topic_partitions: i32,
    /// Replication factor of the events topic when tokenusage creates it.
    #[arg(long = "topic-replication", env = "TOKENUSAGE_TOPIC_REPLICATION", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=100))]
    pub topic_replication: i32,
    /// The topic is known to exist (the embedded broker made it, and does
    /// not implement CreateTopics): do not try to create it.
    #[arg(skip)]
    pub topic_exists: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.to_owned(), v.trim().to_owned()))
}

impl KafkaArgs {
    /// A client config for one role: the brokers, our general defaults,
    /// the role's `defaults`, then the user's pass-through options, which
    /// win, except over the `fixed` keys the role's guarantees rest on
    /// (those keep the role's value and a warning is logged).
    pub fn client_config_for(&self, defaults: &[(&str, String)], fixed: &[&str]) -> ClientConfig {
        let mut cfg = self.base_config();
        for (k, v) in defaults {
            cfg.set(*k, v);
        }
        for (k, v) in &self.options {
            if fixed.contains(&k.as_str()) {
                tracing::warn!(option = %k, "this Kafka option is fixed by tokenusage; the configured value is ignored");
            } else {
                cfg.set(k, v);
            }
        }
        cfg
    }

    /// A client config with the brokers, our defaults and the user's
    /// pass-through options (which win).
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_for(&[], &[])
    }

    fn base_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers)
            // KIP-714 client-metrics push: not every Kafka-protocol broker
            // implements it, and we export our own metrics.
            .set("enable.metrics.push", "false")
            .set("client.id", "tokenusage");
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(options: &[(&str, &str)]) -> KafkaArgs {
        KafkaArgs {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic: "t".into(),
            options: options.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            topic_partitions: 1,
            topic_replication: 1,
            topic_exists: false,
        }
    }

    #[test]
    fn pass_through_options_win_except_over_fixed_keys() {
        let a = args(&[("acks", "1"), ("linger.ms", "50"), ("security.protocol", "ssl")]);
        let cfg = a.client_config_for(&[("acks", "all".into()), ("linger.ms", "5".into())], &["acks"]);
        assert_eq!(cfg.get("acks"), Some("all"), "a fixed key keeps the role's value");
        assert_eq!(cfg.get("linger.ms"), Some("50"), "other defaults yield to the user");
        assert_eq!(cfg.get("security.protocol"), Some("ssl"));
        assert_eq!(cfg.get("enable.metrics.push"), Some("false"));
    }

    #[test]
    fn options_parse_as_key_value_pairs() {
        assert_eq!(parse_kv(" sasl.mechanism = PLAIN "), Ok(("sasl.mechanism".into(), "PLAIN".into())));
        assert!(parse_kv("novalue").is_err());
        assert!(parse_kv("=x").is_err());
    }
}
