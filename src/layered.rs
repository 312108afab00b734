//! Settings of the long-running worker processes (`marill worker`, `marill dealer`), in
//! increasing precedence: built-in defaults < a TOML or YAML file (`--config PATH`, read with
//! the `config` crate) < environment variables `MARILL_<COMMAND>_<KEY>` < command-line flags.
//! A key is a flag's long name with `_` for `-` (`--peer-endpoint` ↔ `peer_endpoint` ↔
//! `MARILL_WORKER_PEER_ENDPOINT`); list values are TOML/YAML arrays in a file and
//! comma-separated in the environment. The layers are clap's own: a file's values become the
//! flags' defaults and every flag reads its variable, so each value goes through the flag's
//! parser. Unknown keys and invalid values stop the process at start, naming the key and where
//! it came from. Relations between flags (one of two, not both) belong in the commands: clap
//! does not count a default, hence a file's value, as given. [`reference_markdown`] lists
//! every key (kept in `docs/configuration.md`).

use anyhow::{anyhow, bail, Result};
use clap::{Arg, ArgAction, Command};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;

/// The subcommands whose flags are layered this way.
pub const LAYERED: [&str; 2] = ["worker", "dealer"];

/// `cmd` with the environment and, when `argv` names one, the configuration file layered under
/// the flags of the subcommand `argv` runs.
pub fn apply(mut cmd: Command, argv: &[OsString]) -> Result<Command> {
    for name in LAYERED {
        if cmd.find_subcommand(name).is_none() {
            continue;
        }
        cmd = cmd.mut_subcommand(name, |sc| {
            let ids: Vec<String> = keyed(&sc).map(|a| a.get_id().to_string()).collect();
            ids.iter().fold(sc, |sc, id| {
                sc.mut_arg(id, |a| {
                    let var = env_var(name, &a);
                    a.env(var)
                })
            })
        });
    }
    let Some(name) = argv.get(1).and_then(|s| s.to_str()) else {
        return Ok(cmd);
    };
    let Some(sc) = LAYERED
        .contains(&name)
        .then(|| cmd.find_subcommand(name))
        .flatten()
    else {
        return Ok(cmd);
    };
    check_env(sc, name)?;
    let file = config_flag(&argv[2..]).or_else(|| std::env::var_os(config_var(name)));
    let Some(file) = file else {
        return Ok(cmd);
    };
    let values = from_file(sc, name, Path::new(&file))?;
    Ok(cmd.mut_subcommand(name, |sc| {
        values.into_iter().fold(sc, |sc, (id, vals)| {
            sc.mut_arg(id, |a| a.default_values(vals).required(false))
        })
    }))
}

/// The arguments that are settings (not `--help`, `--version` or `--config` itself).
fn keyed(sc: &Command) -> impl Iterator<Item = &Arg> {
    sc.get_arguments().filter(|a| {
        a.get_long().is_some()
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
            && a.get_id() != "config"
    })
}

/// `peer_endpoint` for `--peer-endpoint`.
fn key(a: &Arg) -> String {
    a.get_long().unwrap_or_default().replace('-', "_")
}

fn env_var(command: &str, a: &Arg) -> String {
    format!(
        "MARILL_{}_{}",
        command.to_uppercase(),
        key(a).to_uppercase()
    )
}

fn config_var(command: &str) -> String {
    format!("MARILL_{}_CONFIG", command.to_uppercase())
}

/// The value of `--config PATH` / `--config=PATH` among the subcommand's arguments.
fn config_flag(args: &[OsString]) -> Option<OsString> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(v.into());
        }
    }
    None
}

/// Every set variable must parse as its flag's value (so the message names the variable).
fn check_env(sc: &Command, name: &str) -> Result<()> {
    for a in keyed(sc) {
        let var = env_var(name, a);
        if let Some(v) = std::env::var_os(&var) {
            parse(a, &v).map_err(|e| anyhow!("invalid {name} configuration: {var}: {e}"))?;
        }
    }
    Ok(())
}

/// Parses `v` as `a`'s value with clap itself (a one-flag command), so the file and the
/// environment get exactly the flag's checks.
fn parse(a: &Arg, v: &OsStr) -> Result<(), String> {
    let long = a.get_long().unwrap_or_default();
    let one = Command::new("check")
        .no_binary_name(true)
        .arg(a.clone().required(false).env(None::<&str>));
    let mut flag = OsString::from(format!("--{long}="));
    flag.push(v);
    one.try_get_matches_from([flag])
        .map(drop)
        .map_err(|e| first_line(&e.to_string()))
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string()
}

/// The file's values by argument id, each checked by its flag's parser.
fn from_file(sc: &Command, name: &str, file: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    if !file.exists() {
        bail!("configuration file {} does not exist", file.display());
    }
    let c = config::Config::builder()
        .add_source(config::File::from(file))
        .build()
        .map_err(|e| anyhow!("reading {}: {e}", file.display()))?;
    let table: BTreeMap<String, config::Value> = c
        .try_deserialize()
        .map_err(|e| anyhow!("{}: not a table of settings: {e}", file.display()))?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        let Some(a) = keyed(sc).find(|a| key(a) == k) else {
            let known: Vec<String> = keyed(sc).map(key).collect();
            bail!(
                "invalid {name} configuration: unknown key `{k}` in {} (known: {})",
                file.display(),
                known.join(", ")
            );
        };
        let bad = |why: String| {
            anyhow!(
                "invalid {name} configuration: `{k}` in {}: {why}",
                file.display()
            )
        };
        let vals: Vec<String> = match v.kind {
            config::ValueKind::Array(items) => items.into_iter().map(scalar).collect(),
            _ => vec![scalar(v)],
        }
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(bad)?;
        if vals.len() > 1 && a.get_value_delimiter().is_none() {
            return Err(bad("takes one value, not a list".into()));
        }
        for s in &vals {
            parse(a, OsStr::new(s)).map_err(bad)?;
        }
        out.insert(a.get_id().to_string(), vals);
    }
    Ok(out)
}

fn scalar(v: config::Value) -> Result<String, String> {
    match v.kind {
        config::ValueKind::Table(_) | config::ValueKind::Array(_) => {
            Err("a nested table or list where a value belongs".into())
        }
        config::ValueKind::Nil => Err("no value".into()),
        _ => Ok(v.to_string()),
    }
}

/// The keys of subcommand `name` as a markdown table: key, default, variable, meaning.
pub fn reference_markdown(cmd: &Command, name: &str) -> String {
    let sc = cmd.find_subcommand(name).expect("a layered subcommand");
    let mut s = String::from("| key | default | environment | meaning |\n|---|---|---|---|\n");
    for a in keyed(sc) {
        let defaults: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match (defaults.is_empty(), a.is_required_set()) {
            (false, _) => defaults.join(","),
            (true, true) => "(required)".into(),
            (true, false) => "(none)".into(),
        };
        let help = a
            .get_help()
            .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        s.push_str(&format!(
            "| `{}` | `{default}` | `{}` | {help} |\n",
            key(a),
            env_var(name, a)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ArgMatches;

    /// A stand-in for the binary: a `worker` subcommand with the kinds of flags the real one has.
    fn toy() -> Command {
        Command::new("marill").subcommand(
            Command::new("worker")
                .arg(Arg::new("config").long("config"))
                .arg(
                    Arg::new("peer_endpoint")
                        .long("peer-endpoint")
                        .required(true),
                )
                .arg(
                    Arg::new("max_seq")
                        .long("max-seq")
                        .default_value("256")
                        .value_parser(clap::value_parser!(u64)),
                )
                .arg(
                    Arg::new("lora_targets")
                        .long("lora-targets")
                        .value_delimiter(',')
                        .default_value("q,k"),
                )
                .arg(
                    Arg::new("lf")
                        .long("lf")
                        .default_value("0.5")
                        .value_parser(clap::value_parser!(f64)),
                ),
        )
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn run(cmd: Command, args: &[&str]) -> Result<ArgMatches> {
        let a = argv(args);
        let m = apply(cmd, &a)?.try_get_matches_from(&a)?;
        Ok(m.subcommand_matches("worker").expect("worker").clone())
    }

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("marill-layered-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_file_sets_what_the_flags_leave_and_flags_win() {
        let f = file(
            "w.toml",
            "peer_endpoint = \"tcp://p:1\"\nmax_seq = 512\nlora_targets = [\"q\", \"v\", \"o\"]\nlf = 0.25\n",
        );
        let fs = f.to_str().unwrap();
        let m = run(
            toy(),
            &["marill", "worker", "--config", fs, "--max-seq", "64"],
        )
        .unwrap();
        assert_eq!(m.get_one::<String>("peer_endpoint").unwrap(), "tcp://p:1");
        assert_eq!(*m.get_one::<u64>("max_seq").unwrap(), 64);
        assert_eq!(*m.get_one::<f64>("lf").unwrap(), 0.25);
        let t: Vec<&String> = m.get_many("lora_targets").unwrap().collect();
        assert_eq!(t, ["q", "v", "o"]);
        // YAML, and `--config=PATH`
        let y = file("w.yaml", "peer_endpoint: tcp://y:2\nmax_seq: 128\n");
        let arg = format!("--config={}", y.display());
        let m = run(toy(), &["marill", "worker", &arg]).unwrap();
        assert_eq!(m.get_one::<String>("peer_endpoint").unwrap(), "tcp://y:2");
        assert_eq!(*m.get_one::<u64>("max_seq").unwrap(), 128);
        // without a file the built-in defaults hold and required flags stay required
        assert!(run(toy(), &["marill", "worker"]).is_err());
        let m = run(toy(), &["marill", "worker", "--peer-endpoint", "x"]).unwrap();
        assert_eq!(*m.get_one::<u64>("max_seq").unwrap(), 256);
        std::fs::remove_file(f).unwrap();
        std::fs::remove_file(y).unwrap();
    }

    #[test]
    fn the_environment_sits_between_the_file_and_the_flags() {
        // the only test that sets variables, on a key no other command has (tests share the
        // process's environment)
        let cmd = || {
            toy().mut_subcommand("worker", |w| {
                w.arg(
                    Arg::new("toy_wait_s")
                        .long("toy-wait-s")
                        .default_value("300")
                        .value_parser(clap::value_parser!(u64)),
                )
            })
        };
        let f = file("e.toml", "peer_endpoint = \"p\"\ntoy_wait_s = 10\n");
        let fs = f.to_str().unwrap();
        std::env::set_var("MARILL_WORKER_TOY_WAIT_S", "20");
        let m = run(cmd(), &["marill", "worker", "--config", fs]).unwrap();
        assert_eq!(*m.get_one::<u64>("toy_wait_s").unwrap(), 20);
        let m = run(
            cmd(),
            &["marill", "worker", "--config", fs, "--toy-wait-s", "30"],
        )
        .unwrap();
        assert_eq!(*m.get_one::<u64>("toy_wait_s").unwrap(), 30);
        std::env::set_var("MARILL_WORKER_TOY_WAIT_S", "soon");
        let e = run(cmd(), &["marill", "worker", "--config", fs])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("MARILL_WORKER_TOY_WAIT_S") && e.contains("soon"),
            "{e}"
        );
        std::env::remove_var("MARILL_WORKER_TOY_WAIT_S");
        std::fs::remove_file(f).unwrap();
    }

    #[test]
    fn bad_files_fail_naming_the_key() {
        for (name, text, expect) in [
            (
                "u.toml",
                "peer_endpoint = \"p\"\nmax_sequence = 3\n",
                "unknown key `max_sequence`",
            ),
            ("v.toml", "max_seq = \"long\"\n", "`max_seq`"),
            ("n.toml", "max_seq = -4\n", "`max_seq`"),
            ("l.toml", "max_seq = [1, 2]\n", "takes one value"),
            ("t.toml", "[max_seq]\na = 1\n", "`max_seq`"),
            ("s.yaml", "- just\n- a list\n", "expected a map"),
        ] {
            let f = file(name, text);
            let e = run(
                toy(),
                &["marill", "worker", "--config", f.to_str().unwrap()],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(expect), "{name}: {e}");
            std::fs::remove_file(f).unwrap();
        }
        let e = run(
            toy(),
            &["marill", "worker", "--config", "/nonexistent/w.toml"],
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn other_subcommands_are_untouched() {
        let cmd = Command::new("marill")
            .subcommand(Command::new("bench").arg(Arg::new("config").long("config")));
        let a = argv(&["marill", "bench", "--config", "/nonexistent"]);
        assert!(apply(cmd, &a).unwrap().try_get_matches_from(&a).is_ok());
    }

    #[test]
    fn the_reference_lists_every_key_with_its_default_and_variable() {
        let r = reference_markdown(&toy(), "worker");
        assert!(
            r.contains("| `peer_endpoint` | `(required)` | `MARILL_WORKER_PEER_ENDPOINT` |"),
            "{r}"
        );
        assert!(r.contains("| `max_seq` | `256` |"), "{r}");
        assert!(r.contains("| `lora_targets` | `q,k` |"), "{r}");
        assert!(!r.contains("`config`"), "{r}");
    }
}
