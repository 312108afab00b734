//! `marill coordinator`'s configuration (the `config` crate), in increasing precedence:
//! built-in defaults < a TOML or YAML file (`--config PATH`) < environment variables
//! `MARILL_COORDINATOR_<KEY>` (e.g. `MARILL_COORDINATOR_STEP_TIMEOUT_S=120`; lists separated by
//! `;`) < command-line flags. Unknown keys and invalid values fail at start with the key named.
//! [`REFERENCE`] is the one list of every key with its default (`docs/configuration.md` is
//! generated from it by `marill coordinator --print-reference`, and a test keeps them equal).

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// Every key: name, default (as TOML), meaning.
pub const REFERENCE: &[(&str, &str, &str)] = &[
    (
        "brokers",
        "(required)",
        "Kafka bootstrap servers, e.g. \"kafka-0:9092,kafka-1:9092\"",
    ),
    (
        "keys",
        "(required)",
        "key directory: coordinator.key, provider.pub, helper.pub",
    ),
    (
        "pairs",
        "(required)",
        "worker pairs' control endpoints, each \"PROVIDER,HELPER\"",
    ),
    (
        "model_name",
        "\"default\"",
        "the model name jobs must carry",
    ),
    ("group", "\"marill-coordinator\"", "Kafka consumer group"),
    (
        "job_partitions",
        "4",
        "partitions of the jobs topic when the coordinator creates it (the most coordinators \
         that share the jobs; an existing topic keeps its own) (≥ 1)",
    ),
    (
        "step_timeout_s",
        "300",
        "a step not answered in this many seconds fails and retires its pair (≥ 1)",
    ),
    (
        "session_idle_s",
        "60",
        "an open session with no step for this many seconds is closed (≥ 1)",
    ),
    (
        "exit_when_idle_s",
        "(none)",
        "exit after this many seconds with nothing to do",
    ),
    (
        "metrics_addr",
        "(none)",
        "serve Prometheus metrics on GET /metrics here, e.g. \"0.0.0.0:9100\"",
    ),
    (
        "kafka",
        "[]",
        "extra librdkafka properties, each \"key=value\"",
    ),
];

/// The coordinator's resolved settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorSettings {
    /// Kafka bootstrap servers
    pub brokers: String,
    /// key directory
    pub keys: PathBuf,
    /// pairs, "PROVIDER,HELPER"
    pub pairs: Vec<String>,
    /// model name
    pub model_name: String,
    /// consumer group
    pub group: String,
    /// partitions of the jobs topic when created
    pub job_partitions: u32,
    /// step timeout, seconds
    pub step_timeout_s: u64,
    /// session idle limit, seconds
    pub session_idle_s: u64,
    /// exit when idle this long, seconds
    pub exit_when_idle_s: Option<u64>,
    /// metrics endpoint
    pub metrics_addr: Option<String>,
    /// extra librdkafka properties "key=value"
    pub kafka: Vec<String>,
}

/// What the command line gave (None: not given).
#[derive(Clone, Debug, Default)]
pub struct CliOverrides {
    /// a configuration file
    pub file: Option<PathBuf>,
    /// `key → value` pairs from flags, values as strings or lists
    pub values: Vec<(&'static str, config::Value)>,
}

impl CoordinatorSettings {
    /// Resolves defaults < file < environment < command line, then validates.
    pub fn load(cli: &CliOverrides) -> Result<Self> {
        Self::load_with_env(cli, config::Environment::with_prefix("MARILL_COORDINATOR"))
    }

    fn load_with_env(cli: &CliOverrides, env: config::Environment) -> Result<Self> {
        let mut b = config::Config::builder()
            .set_default("model_name", "default")?
            .set_default("group", "marill-coordinator")?
            .set_default("job_partitions", 4)?
            .set_default("step_timeout_s", 300)?
            .set_default("session_idle_s", 60)?
            .set_default("kafka", Vec::<String>::new())?;
        if let Some(f) = &cli.file {
            if !f.exists() {
                bail!("configuration file {} does not exist", f.display());
            }
            b = b.add_source(config::File::from(f.as_path()));
        }
        b = b.add_source(
            env.prefix_separator("_")
                .try_parsing(true)
                .list_separator(";")
                .with_list_parse_key("pairs")
                .with_list_parse_key("kafka"),
        );
        for (k, v) in &cli.values {
            b = b.set_override(*k, v.clone())?;
        }
        let c = b
            .build()
            .context("reading the coordinator's configuration")?;
        let s: CoordinatorSettings = c
            .try_deserialize()
            .map_err(|e| anyhow!("invalid coordinator configuration: {e}"))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| {
            Err(anyhow!("invalid coordinator configuration: {key}: {why}"))
        };
        if self.brokers.trim().is_empty() {
            return bad("brokers", "empty".into());
        }
        if self.pairs.is_empty() {
            return bad("pairs", "at least one worker pair is needed".into());
        }
        for p in &self.pairs {
            if p.split_once(',')
                .is_none_or(|(a, b)| a.trim().is_empty() || b.trim().is_empty())
            {
                return bad("pairs", format!("{p:?} is not \"PROVIDER,HELPER\""));
            }
        }
        for (key, v) in [
            ("step_timeout_s", self.step_timeout_s),
            ("session_idle_s", self.session_idle_s),
            ("job_partitions", self.job_partitions.into()),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        for kv in &self.kafka {
            if kv.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()) {
                return bad("kafka", format!("{kv:?} is not \"key=value\""));
            }
        }
        Ok(())
    }

    /// The pairs as (provider, helper) endpoints.
    pub fn pair_endpoints(&self) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .filter_map(|p| p.split_once(','))
            .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
            .collect()
    }

    /// The extra librdkafka properties as pairs.
    pub fn kafka_overrides(&self) -> Vec<(String, String)> {
        self.kafka
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }
}

/// The reference as a markdown table (what `docs/configuration.md` holds).
pub fn reference_markdown() -> String {
    let mut s = String::from("| key | default | meaning |\n|---|---|---|\n");
    for (k, d, m) in REFERENCE {
        s.push_str(&format!("| `{k}` | `{d}` | {m} |\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> config::Environment {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config::Environment::with_prefix("MARILL_COORDINATOR").source(Some(m))
    }

    fn file(body: &str, ext: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("marill-settings-{}-{n}.{ext}", std::process::id()));
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn precedence_is_defaults_file_env_cli() {
        let f = file(
            "brokers = \"file:9092\"\nkeys = \"/k\"\npairs = [\"tcp://a:1,tcp://b:2\"]\nstep_timeout_s = 10\nsession_idle_s = 11\n",
            "toml",
        );
        let cli = CliOverrides {
            file: Some(f.clone()),
            values: vec![("session_idle_s", 13.into())],
        };
        let s = CoordinatorSettings::load_with_env(
            &cli,
            env(&[
                ("MARILL_COORDINATOR_STEP_TIMEOUT_S", "12"),
                ("MARILL_COORDINATOR_SESSION_IDLE_S", "12"),
                (
                    "MARILL_COORDINATOR_PAIRS",
                    "tcp://a:1,tcp://b:2;tcp://c:3,tcp://d:4",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(s.brokers, "file:9092"); // file
        assert_eq!(s.group, "marill-coordinator"); // default
        assert_eq!(s.step_timeout_s, 12); // env over file
        assert_eq!(s.session_idle_s, 13); // cli over env
        assert_eq!(s.pair_endpoints().len(), 2);
        std::fs::remove_file(f).unwrap();
    }

    #[test]
    fn invalid_values_name_their_key() {
        let base = |extra: &str| {
            let pairs = if extra.starts_with("pairs") {
                ""
            } else {
                "pairs = [\"x,y\"]\n"
            };
            file(
                &format!("brokers = \"b:1\"\nkeys = \"/k\"\n{pairs}{extra}"),
                "toml",
            )
        };
        for (extra, key) in [
            ("step_timeout_s = \"soon\"\n", "step_timeout_s"),
            ("step_timeout_s = 0\n", "step_timeout_s"),
            ("colour = \"red\"\n", "colour"),
            ("kafka = [\"nokey\"]\n", "kafka"),
            ("pairs = [\"just-one\"]\n", "pairs"),
        ] {
            let f = base(extra);
            let cli = CliOverrides {
                file: Some(f.clone()),
                values: vec![],
            };
            let e = format!(
                "{:#}",
                CoordinatorSettings::load_with_env(&cli, env(&[])).unwrap_err()
            );
            assert!(e.contains(key), "{extra}: {e}");
            std::fs::remove_file(f).unwrap();
        }
        let e = CoordinatorSettings::load_with_env(&CliOverrides::default(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("brokers"), "{e}");
    }

    #[test]
    fn yaml_files_work_too() {
        let f = file(
            "brokers: b:1\nkeys: /k\npairs: [\"x,y\"]\nkafka: [\"session.timeout.ms=1000\"]\n",
            "yaml",
        );
        let s = CoordinatorSettings::load_with_env(
            &CliOverrides {
                file: Some(f.clone()),
                values: vec![],
            },
            env(&[]),
        )
        .unwrap();
        assert_eq!(
            s.kafka_overrides(),
            vec![("session.timeout.ms".into(), "1000".into())]
        );
        std::fs::remove_file(f).unwrap();
    }

    #[test]
    fn the_reference_document_is_current() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/configuration.md"
        ))
        .unwrap();
        assert!(
            doc.contains(&reference_markdown()),
            "docs/configuration.md is stale: run `marill coordinator --print-reference`"
        );
    }
}
