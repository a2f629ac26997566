//! `--config FILE`: the flags as a YAML file. Every flag has a key of the same name
//! (`upstream_timeout` or `upstream-timeout`); a list is a YAML sequence, and a mapping is
//! passed on as JSON (for flags that take JSON). The file is the weakest source:
//! a flag on the command line wins over `TRUSTMESH_<FLAG>`, which wins over the file, which
//! wins over the built-in default.
//!
//! Mistakes are reported with where they are: an unknown key or a bad value in the file as
//! `FILE:LINE:COL: ...`, a bad value in the environment with the variable's name. The file
//! values are handed to clap as the flags' defaults, so they go through the same parsers as
//! the command line and nothing can be valid in one source and not in another.
//!
//! Both binaries (`trustmesh serve` and `trustmesh-proxy`) read their `--config` through this
//! crate, so the two cannot disagree on the file's format.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

/// The flag that names the file, and its environment variable.
pub const CONFIG_FLAG: &str = "config";
/// The environment variable of `--config`.
pub const CONFIG_ENV: &str = "TRUSTMESH_CONFIG";

/// A loaded config file: its keys in order, each with its values and where it is.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    values: Vec<String>,
    line: usize,
    col: usize,
}

/// Why the flags could not be read.
#[derive(Debug)]
pub enum ConfigError {
    /// clap's own error (also `--help` and `--version`): print it as clap does.
    Clap(clap::Error),
    /// A problem in the file or the environment, with where it is.
    Source(String),
}

impl ConfigFile {
    /// Reads and checks the shape of `path` (a mapping of keys to scalars, sequences or
    /// mappings); keys are checked against the flags by [`apply`].
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: {e}", path.display()))?;
        let at = |loc: Option<serde_yaml::Location>| match loc {
            Some(l) => format!("{}:{}:{}", path.display(), l.line(), l.column()),
            None => path.display().to_string(),
        };
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", at(e.location())))?;
        let map = match doc {
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            serde_yaml::Value::Mapping(m) => m,
            _ => {
                return Err(format!(
                    "{}:1:1: expected a mapping of flag names to values",
                    path.display()
                ))
            }
        };
        let mut entries = Vec::new();
        for (k, v) in map {
            let key = match k {
                serde_yaml::Value::String(s) => s,
                other => {
                    return Err(format!(
                        "{}: keys are flag names, not {other:?}",
                        path.display()
                    ))
                }
            };
            let (line, col) = locate(&text, &key);
            let values = match values_of(&v) {
                Some(vals) => vals,
                None => {
                    return Err(format!(
                        "{}:{line}:{col}: {key}: expected a value, a list of values or a mapping",
                        path.display()
                    ))
                }
            };
            entries.push(Entry {
                key,
                values,
                line,
                col,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    fn entry(&self, arg: &Arg) -> Option<&Entry> {
        let long = arg.get_long().map(flag_id);
        self.entries.iter().find(|e| {
            let k = flag_id(&e.key);
            Some(&k) == long.as_ref() || k == arg.get_id().as_str()
        })
    }
}

/// The value of `--config FILE` (or `--config=FILE`) in `argv`, else `TRUSTMESH_CONFIG`.
pub fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let prefix = format!("--{CONFIG_FLAG}=");
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == flag {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix(&prefix) {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os(CONFIG_ENV).map(PathBuf::from)
}

/// Makes the file's values the defaults of `cmd`'s flags (or of its subcommand `sub`, with
/// the root's flags also allowed), after checking every key names a flag and every value
/// parses. Flags set from the file are no longer required on the command line.
pub fn apply(mut cmd: Command, sub: Option<&str>, file: &ConfigFile) -> Result<Command, String> {
    for e in &file.entries {
        let id = flag_id(&e.key);
        let at = format!("{}:{}:{}", file.path.display(), e.line, e.col);
        let target = sub.and_then(|s| cmd.find_subcommand(s)).unwrap_or(&cmd);
        let in_sub = sub.is_some() && find_arg(target, &id).is_some();
        let arg = find_arg(target, &id).or_else(|| find_arg(&cmd, &id));
        let Some(arg) = arg.filter(|a| a.get_long().is_some() && id != CONFIG_FLAG) else {
            return Err(format!("{at}: unknown key {:?}", e.key));
        };
        let values = split(arg, &e.values);
        for v in &values {
            check_value(arg, v).map_err(|msg| format!("{at}: {}: {msg}", e.key))?;
        }
        // clap keeps defaults as `&'static str` (without its `string` feature); a config file
        // is read once at start, so its few values live as long as the process anyway.
        let statics: Vec<&'static str> = values
            .into_iter()
            .map(|v| &*Box::leak(v.into_boxed_str()))
            .collect();
        let set = |a: Arg| a.default_values(statics.clone()).required(false);
        let real_id = arg.get_id().as_str().to_string();
        cmd = match (in_sub, sub) {
            (true, Some(s)) => cmd.mut_subcommand(s, |c| c.mut_arg(&real_id, set)),
            _ => cmd.mut_arg(&real_id, set),
        };
    }
    Ok(cmd)
}

/// Checks the environment variables of `cmd`'s flags that the command line does not
/// override, so that a bad one is reported by name (`TRUSTMESH_CERT_TTL: ...`).
pub fn check_env(cmd: &Command, argv: &[OsString]) -> Result<(), String> {
    for arg in cmd.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let on_cli = argv.iter().any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{long}") || a.starts_with(&format!("--{long}="))
        });
        if on_cli || !arg.get_action().takes_values() {
            continue;
        }
        let Some(value) = std::env::var_os(env) else {
            continue;
        };
        let value = value.to_string_lossy().into_owned();
        for v in split(arg, &[value]) {
            check_value(arg, &v)
                .map_err(|msg| format!("{} (--{long}): {msg}", env.to_string_lossy()))?;
        }
    }
    Ok(())
}

/// Parses `argv` into `T` with the file (if any) and the environment checked first.
/// With `sub`, the file is for that subcommand and is only read when `argv` names it.
/// Returns the matches too, for [`render`].
pub fn parse<T: clap::Parser>(
    argv: Vec<OsString>,
    sub: Option<&str>,
) -> Result<(T, ArgMatches, Option<ConfigFile>), ConfigError> {
    let mut cmd = T::command();
    let wanted = match sub {
        Some(s) => argv.iter().skip(1).any(|a| a == s),
        None => true,
    };
    let file = match config_path(&argv).filter(|_| wanted) {
        Some(path) => Some(ConfigFile::load(&path).map_err(ConfigError::Source)?),
        None => None,
    };
    if let Some(f) = &file {
        cmd = apply(cmd, sub, f).map_err(ConfigError::Source)?;
    }
    let target = sub.and_then(|s| cmd.find_subcommand(s)).unwrap_or(&cmd);
    check_env(target, &argv).map_err(ConfigError::Source)?;
    check_env(&cmd, &argv).map_err(ConfigError::Source)?;
    let matches = cmd.try_get_matches_from(argv).map_err(ConfigError::Clap)?;
    let parsed = T::from_arg_matches(&matches).map_err(ConfigError::Clap)?;
    Ok((parsed, matches, file))
}

/// The merged configuration as YAML that `--config` accepts, each key with its source:
/// `flag`, `env NAME`, `file PATH:LINE` or `default`.
pub fn render(cmd: &Command, matches: &ArgMatches, file: Option<&ConfigFile>) -> String {
    let mut out = String::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.get_long().is_none() || id == CONFIG_FLAG || id == "print_config" {
            continue;
        }
        let values: Vec<String> = match matches.try_get_raw(id) {
            Ok(Some(raw)) => raw.map(|v| v.to_string_lossy().into_owned()).collect(),
            _ => Vec::new(),
        };
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => format!(
                "env {}",
                arg.get_env()
                    .map(|e| e.to_string_lossy())
                    .unwrap_or_default()
            ),
            Some(ValueSource::DefaultValue) => {
                match file.and_then(|f| f.entry(arg).map(|e| (f, e))) {
                    Some((f, e)) => format!("file {}:{}", f.path.display(), e.line),
                    None => "default".to_string(),
                }
            }
            _ => "unset".to_string(),
        };
        let json = |s: &String| serde_json::to_string(s).unwrap_or_default();
        let value = match values.as_slice() {
            [] => "null".to_string(),
            [one] if !takes_many(arg) => json(one),
            many => format!("[{}]", many.iter().map(json).collect::<Vec<_>>().join(", ")),
        };
        let key = arg.get_long().map_or_else(|| id.to_string(), flag_id);
        let _ = writeln!(out, "{key}: {value}  # {source}");
    }
    out
}

fn takes_many(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.max_values() > 1)
        || matches!(arg.get_action(), clap::ArgAction::Append)
}

/// The flag a key names: by its long name (`k8s_jwks` for `--k8s-jwks`) or its id.
fn find_arg<'a>(cmd: &'a Command, key: &str) -> Option<&'a Arg> {
    cmd.get_arguments()
        .find(|a| a.get_long().map(flag_id).as_deref() == Some(key) || a.get_id().as_str() == key)
}

/// `upstream-timeout` and `upstream_timeout` both name the flag `--upstream-timeout`.
fn flag_id(key: &str) -> String {
    key.replace('-', "_")
}

/// A flag with a value delimiter takes `a,b` as two values, as on the command line.
fn split(arg: &Arg, values: &[String]) -> Vec<String> {
    match arg.get_value_delimiter() {
        Some(d) => values
            .iter()
            .flat_map(|v| v.split(d).map(str::to_string))
            .collect(),
        None => values.to_vec(),
    }
}

/// Runs `value` through the flag's own parser, on a copy of the flag with nothing else
/// attached (no env, no requirements), and returns the parser's message on failure.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    if !arg.get_action().takes_values() {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("{value:?} is not true or false")),
        };
    }
    let probe = Arg::new("value")
        .long("value")
        .value_parser(arg.get_value_parser().clone());
    let cmd = Command::new("check").no_binary_name(true).arg(probe);
    match cmd.try_get_matches_from(["--value", value]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let why = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.kind().to_string());
            if why.contains(&format!("{value:?}")) {
                Err(why)
            } else {
                Err(format!("{value:?} is not valid: {why}"))
            }
        }
    }
}

/// A YAML value as flag values: a scalar is one, a sequence of scalars many, a mapping one
/// JSON object. `None` for anything else (nested sequences, null).
fn values_of(v: &serde_yaml::Value) -> Option<Vec<String>> {
    use serde_yaml::Value;
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Bool(b) => Some(vec![b.to_string()]),
        Value::Number(n) => Some(vec![n.to_string()]),
        Value::Sequence(items) => items
            .iter()
            .map(|i| match values_of(i)?.as_slice() {
                [one] if !i.is_sequence() => Some(one.clone()),
                _ => None,
            })
            .collect(),
        Value::Mapping(_) => serde_json::to_string(v).ok().map(|s| vec![s]),
        _ => None,
    }
}

/// Line and column (1-based) of a top-level `key:` in `text`; `(1, 1)` when not found.
fn locate(text: &str, key: &str) -> (usize, usize) {
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let bare = trimmed.trim_start_matches(['"', '\'']);
        if let Some(rest) = bare.strip_prefix(key) {
            if rest
                .trim_start_matches(['"', '\''])
                .trim_start()
                .starts_with(':')
            {
                return (n + 1, indent + 1);
            }
        }
    }
    (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[arg(long, env = "TRUSTMESH_TEST_CONFIG_NAME")]
        name: String,
        #[arg(long, env = "TRUSTMESH_TEST_CONFIG_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, value_delimiter = ',')]
        peer: Vec<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("config.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("t")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn file_fills_in_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "name: from-file\nttl: 5m\npeer: [a, b]\n");
        let ps = p.to_str().unwrap();
        let (f, m, file) = parse::<Flags>(argv(&["--config", ps]), None).unwrap();
        assert_eq!(f.name, "from-file");
        assert_eq!(f.ttl, Duration::from_secs(300));
        assert_eq!(f.peer, ["a", "b"]);
        let (f, _, _) = parse::<Flags>(argv(&["--config", ps, "--ttl", "2s"]), None).unwrap();
        assert_eq!(f.ttl, Duration::from_secs(2));
        let shown = render(
            &<Flags as clap::CommandFactory>::command(),
            &m,
            file.as_ref(),
        );
        assert!(shown.contains("ttl: \"5m\"  # file "), "{shown}");
        assert!(shown.contains("peer: [\"a\", \"b\"]"), "{shown}");
    }

    #[test]
    fn unknown_keys_and_bad_values_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "name: x\n\n  # c\nlisten_addr: 1\n");
        let ps = p.to_str().unwrap();
        let Err(ConfigError::Source(e)) = parse::<Flags>(argv(&["--config", ps]), None) else {
            panic!("unknown key accepted");
        };
        assert_eq!(e, format!("{ps}:4:1: unknown key \"listen_addr\""));
        let p = write(&dir, "name: x\nttl: 1x\n");
        let Err(ConfigError::Source(e)) = parse::<Flags>(argv(&["--config", ps]), None) else {
            panic!("bad value accepted");
        };
        assert!(e.starts_with(&format!("{ps}:2:1: ttl: ")), "{e}");
        let _ = p;
        let p = write(&dir, "name: [x\n");
        let Err(ConfigError::Source(e)) = parse::<Flags>(argv(&["--config", ps]), None) else {
            panic!("bad YAML accepted");
        };
        assert!(e.starts_with(&format!("{ps}:")), "{e}");
        let _ = p;
    }

    #[test]
    fn locate_finds_top_level_keys() {
        assert_eq!(locate("a: 1\n  b: 2\n'c': 3\n", "b"), (2, 3));
        assert_eq!(locate("a: 1\n  b: 2\n'c': 3\n", "c"), (3, 1));
    }
}
