//! The layering every setting goes through, whoever owns it: a command-line
//! flag beats an `ONAIR_*` environment variable, which beats the TOML file,
//! which beats the key's default. A value that does not parse names its key,
//! the value, where it came from and what the key takes.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a setting's value came from, so that an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// The named environment variable.
    Env(String),
    /// The config file at this path.
    File(PathBuf),
    /// The setting's built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => write!(f, "command line"),
            Origin::Env(variable) => write!(f, "environment variable {variable}"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Default => write!(f, "default"),
        }
    }
}

/// Why the settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting's value does not parse as what the setting takes.
    #[error("invalid value {value:?} for `{key}` (from {origin}): expected {expected}")]
    InvalidValue {
        /// The setting's key, such as `user.access_token_ttl_seconds`.
        key: String,
        /// The value as it was given.
        value: String,
        /// Where the value came from.
        origin: Origin,
        /// What the setting takes, in words.
        expected: String,
    },
    /// The config file names a setting that does not exist.
    #[error("unknown setting `{key}` in config file {}: known settings are {known}", path.display())]
    UnknownKey {
        /// The unknown key, dotted as tables nest.
        key: String,
        /// The config file.
        path: PathBuf,
        /// Every known key, comma-separated.
        known: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    Unreadable {
        /// The config file.
        path: PathBuf,
        /// The error reading it.
        reason: String,
    },
    /// The config file is not valid TOML.
    #[error("config file {} is not valid TOML: {reason}", path.display())]
    Malformed {
        /// The config file.
        path: PathBuf,
        /// What the TOML parser said is wrong.
        reason: String,
    },
}

/// One setting: its key and its default.
#[derive(Debug)]
pub struct Key {
    /// The dotted key, such as `comment.max_chars`; in a TOML file the part
    /// before the last dot is the table.
    pub name: &'static str,
    /// The value when none is given; `None` leaves the setting unset.
    pub default: Option<&'static str>,
}

impl Key {
    /// A setting that is `default` unless given.
    pub const fn with_default(name: &'static str, default: &'static str) -> Key {
        Key {
            name,
            default: Some(default),
        }
    }

    /// A setting that is unset unless given.
    pub const fn optional(name: &'static str) -> Key {
        Key {
            name,
            default: None,
        }
    }
}

/// The environment variable that carries a key: `user.access_token_ttl_seconds`
/// is `ONAIR_USER_ACCESS_TOKEN_TTL_SECONDS`.
pub fn env_var_name(key: &str) -> String {
    format!("ONAIR_{}", key.replace('.', "_").to_uppercase())
}

/// Reads environment variables. Tests pass a map instead of touching the
/// process environment.
pub trait Environment {
    /// The value of the variable `name`, or `None` when it is not set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<const N: usize> Environment for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

/// Values given on the command line, by key. Absent keys fall through to the
/// environment, the file and the defaults.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    values: BTreeMap<String, String>,
}

impl Flags {
    /// Gives `key` the value `value`, replacing any value given before.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.values.insert(key.to_owned(), value.into());
        self
    }

    /// Gives `key` the value `value` if there is one; `None` leaves the key
    /// as it was.
    pub fn set_opt(&mut self, key: &str, value: Option<impl Into<String>>) -> &mut Self {
        if let Some(value) = value {
            self.set(key, value);
        }
        self
    }
}

/// The raw value of every known key with where it came from: what each
/// section parses its own settings out of.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    resolved: BTreeMap<&'static str, (String, Origin)>,
}

impl Layers {
    /// Resolves `keys` from flags, the environment, the config file (from
    /// `config_file` or `ONAIR_CONFIG`) and their defaults. A key in the
    /// file that is not among `keys` is refused.
    pub(crate) fn resolve(
        keys: &[&'static Key],
        flags: &Flags,
        environment: &dyn Environment,
        config_file: Option<&Path>,
    ) -> Result<Layers, ConfigError> {
        let env_config = environment.var("ONAIR_CONFIG").map(PathBuf::from);
        let config_file = config_file.map(Path::to_path_buf).or(env_config);
        let file_values = match &config_file {
            Some(path) => read_config_file(path, keys)?,
            None => BTreeMap::new(),
        };

        let mut resolved = BTreeMap::new();
        for key in keys {
            let env_name = env_var_name(key.name);
            let value = if let Some(value) = flags.values.get(key.name) {
                Some((value.clone(), Origin::Flag))
            } else if let Some(value) = environment.var(&env_name) {
                Some((value, Origin::Env(env_name)))
            } else if let Some(value) = file_values.get(key.name) {
                let path = config_file.clone().unwrap_or_default();
                Some((value.clone(), Origin::File(path)))
            } else {
                key.default.map(|value| (value.to_owned(), Origin::Default))
            };
            if let Some(value) = value {
                resolved.insert(key.name, value);
            }
        }
        Ok(Layers { resolved })
    }

    /// The value of `key` and where it came from; `None` when it is unset.
    pub fn get(&self, key: &str) -> Option<&(String, Origin)> {
        self.resolved.get(key)
    }

    /// The value of `key` parsed by `parse`, `None` when it is unset; a
    /// value `parse` refuses is an error saying it takes `expected`.
    pub fn parse<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((value, _)) = self.get(key) else {
            return Ok(None);
        };
        match parse(value) {
            Some(parsed) => Ok(Some(parsed)),
            None => Err(self.invalid(key, expected)),
        }
    }

    /// Like [`Layers::parse`] for a key with a default: an unset key is an
    /// error too.
    pub fn required<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let parsed = self.parse(key, expected, parse)?;
        // Every required key has a default in its section's keys, so this
        // only fails if a section's keys and its code disagree.
        parsed.ok_or_else(|| self.invalid(key, expected))
    }

    /// The error for `key`'s value, which is not what it takes (`expected`):
    /// for checks a value fails after it parsed.
    pub fn invalid(&self, key: &str, expected: &str) -> ConfigError {
        let (value, origin) = self
            .get(key)
            .cloned()
            .unwrap_or((String::new(), Origin::Default));
        ConfigError::InvalidValue {
            key: key.to_owned(),
            value,
            origin,
            expected: expected.to_owned(),
        }
    }
}

/// Parses a whole number above zero.
pub fn positive(value: &str) -> Option<u64> {
    value.parse::<u64>().ok().filter(|number| *number > 0)
}

/// Parses a duration given in whole seconds, above zero.
pub fn positive_seconds(value: &str) -> Option<Duration> {
    positive(value).map(Duration::from_secs)
}

/// Parses a duration given in whole milliseconds, above zero.
pub fn positive_milliseconds(value: &str) -> Option<Duration> {
    positive(value).map(Duration::from_millis)
}

/// Parses a duration given in whole milliseconds within `range`.
pub fn milliseconds_within(range: RangeInclusive<u64>) -> impl Fn(&str) -> Option<Duration> {
    move |value| {
        value
            .parse::<u64>()
            .ok()
            .filter(|millis| range.contains(millis))
            .map(Duration::from_millis)
    }
}

/// Parses a whole number within `range`.
pub fn count_within<T>(range: RangeInclusive<T>) -> impl Fn(&str) -> Option<T>
where
    T: std::str::FromStr + PartialOrd,
{
    move |value| {
        value
            .parse::<T>()
            .ok()
            .filter(|count| range.contains(count))
    }
}

/// Parses a URL whose scheme is one of `schemes`.
pub fn url_with_scheme(value: &str, schemes: &[&str]) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    (schemes.contains(&scheme) && !rest.is_empty()).then(|| value.to_owned())
}

/// Reads a TOML file into key → string, flattening tables into dotted keys,
/// lists into comma-separated values and the `peers` table into SERVICE=URL.
fn read_config_file(
    path: &Path,
    keys: &[&'static Key],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Unreadable {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    let table: toml::Table =
        text.parse()
            .map_err(|error: toml::de::Error| ConfigError::Malformed {
                path: path.to_path_buf(),
                reason: error.to_string().trim_end().to_owned(),
            })?;
    let mut values = BTreeMap::new();
    flatten_toml(path, keys, "", &table, &mut values)?;
    Ok(values)
}

fn flatten_toml(
    path: &Path,
    keys: &[&'static Key],
    prefix: &str,
    table: &toml::Table,
    values: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let text = match value {
            toml::Value::Table(inner) if key == "peers" => inner
                .iter()
                .map(|(service, url)| match url {
                    toml::Value::String(url) => format!("{service}={url}"),
                    other => format!("{service}={other}"),
                })
                .collect::<Vec<_>>()
                .join(","),
            toml::Value::Table(inner) => {
                flatten_toml(path, keys, &key, inner, values)?;
                continue;
            }
            toml::Value::String(text) => text.clone(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        if !keys.iter().any(|known| known.name == key) {
            let known: Vec<&str> = keys.iter().map(|known| known.name).collect();
            return Err(ConfigError::UnknownKey {
                key,
                path: path.to_path_buf(),
                known: known.join(", "),
            });
        }
        values.insert(key, text);
    }
    Ok(())
}
