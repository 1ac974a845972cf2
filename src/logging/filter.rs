//! Which records are written, and at which level.
//!
//! `KEYGATE_LOG` (or `RUST_LOG`) holds directives in env_logger's syntax, parsed by the
//! `env_filter` crate env_logger itself uses: a bare level for every target, and
//! `target=level` for a target and the targets below it (`info,keygate::access=off`;
//! the longest matching target wins; a target no directive matches is off). Then two
//! rules no directive can change:
//!
//! - a record from outside keygate (Pingora's) at `debug` or `trace` is never written:
//!   at those levels Pingora prints request headers and raw header buffers, which carry
//!   client keys and the shared secret;
//! - Pingora's `info` records (server bootstrap, services starting and stopping,
//!   signals received) are lifecycle chatter keygate reports in its own words: they are
//!   shown as `debug` records. Its `warn` and `error` records keep their level.

use log::{Level, LevelFilter, Metadata};

/// The directives used when `KEYGATE_LOG` and `RUST_LOG` are unset, empty, or hold no
/// valid directive.
pub const DEFAULT_DIRECTIVES: &str = "info";

/// Highest level a record from outside keygate may have and still be written.
const FOREIGN_MAX: Level = Level::Info;

/// The levels a directive may name, for messages.
const LEVELS: &str = "off, error, warn, info, debug, trace";

/// Whether `target` is one of keygate's own (the library's and the binary's modules,
/// and the named targets such as `keygate::access`).
pub fn is_own(target: &str) -> bool {
    target == "keygate" || target.starts_with("keygate::")
}

/// Whether a directive for `name` can match any record keygate writes: keygate's own
/// targets, or Pingora's crates (`pingora_core`, `pingora_proxy`, …).
fn names_a_target(name: &str) -> bool {
    name == "keygate" || name.starts_with("keygate::") || name.starts_with("pingora")
}

/// The parsed directives plus the rules above.
#[derive(Debug, Clone)]
pub struct Filter {
    directives: env_filter::Filter,
    max: LevelFilter,
}

impl Filter {
    /// Parse `spec` (`None`: unset). Every directive that is not valid, or names no
    /// target keygate or Pingora logs under, is left out and described in the returned
    /// problems (one sentence each); the others apply. With no valid directive left, the
    /// [`DEFAULT_DIRECTIVES`] apply.
    pub fn parse(spec: Option<&str>) -> (Filter, Vec<String>) {
        let mut problems = Vec::new();
        let spec = spec.unwrap_or("");
        // env_filter reads text after `/` as a filter on messages: not offered here (the
        // access log is written without formatting a log record, so it would not apply).
        let (directives, message_filter) = match spec.split_once('/') {
            Some((d, m)) => (d, Some(m)),
            None => (spec, None),
        };
        if let Some(m) = message_filter {
            problems.push(format!(
                "`/{m}`: message filters are not supported; ignoring it"
            ));
        }
        let mut valid = Vec::new();
        for part in directives
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            // The target a directive names, if any (a bare level names none).
            let name = match part.split_once('=') {
                Some((n, _)) => Some(n.trim()),
                None if part.parse::<LevelFilter>().is_ok() => None,
                None => Some(part),
            };
            if env_filter::Builder::new().try_parse(part).is_err() {
                problems.push(format!(
                    "`{part}` is not a directive (LEVEL or TARGET=LEVEL, LEVEL one of {LEVELS}); ignoring it"
                ));
            } else if name.is_some_and(|n| !names_a_target(n)) {
                problems.push(format!(
                    "`{part}` names neither a level ({LEVELS}) nor a target keygate logs under (keygate, keygate::access, keygate::reload, keygate::upstream, keygate::service, keygate::logging, pingora_*); ignoring it"
                ));
            } else {
                valid.push(part);
            }
        }
        let valid = if valid.is_empty() {
            DEFAULT_DIRECTIVES.to_string()
        } else {
            valid.join(",")
        };
        let mut builder = env_filter::Builder::new();
        if let Err(e) = builder.try_parse(&valid) {
            // Each part parsed alone, so together they do too; never seen, but never silent.
            problems.push(format!("{e}; using `{DEFAULT_DIRECTIVES}`"));
            builder = env_filter::Builder::new();
            builder.filter_level(LevelFilter::Info);
        }
        let directives = builder.build();
        let max = directives.filter();
        (Filter { directives, max }, problems)
    }

    /// The level a record from `target` at `level` is written at, or `None` when it is
    /// not written (see the module documentation).
    pub fn shown_as(&self, target: &str, level: Level) -> Option<Level> {
        let shown = if is_own(target) {
            level
        } else if level > FOREIGN_MAX {
            return None;
        } else if level == Level::Info {
            Level::Debug
        } else {
            level
        };
        let meta = Metadata::builder().target(target).level(shown).build();
        self.directives.enabled(&meta).then_some(shown)
    }

    /// The most verbose level any directive allows (for `log::set_max_level`).
    pub fn max_level(&self) -> LevelFilter {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(spec: &str) -> Filter {
        let (f, problems) = Filter::parse(Some(spec));
        assert!(problems.is_empty(), "{spec}: {problems:?}");
        f
    }

    #[test]
    fn unset_or_empty_means_info() {
        for spec in [None, Some(""), Some("  "), Some(",")] {
            let (f, problems) = Filter::parse(spec);
            assert!(problems.is_empty());
            assert_eq!(
                f.shown_as("keygate::access", Level::Info),
                Some(Level::Info)
            );
            assert_eq!(f.shown_as("keygate::reload", Level::Debug), None);
        }
    }

    #[test]
    fn targets_take_their_own_levels() {
        let f = filter("info,keygate::access=off");
        assert_eq!(f.shown_as("keygate::access", Level::Info), None);
        assert_eq!(f.shown_as("keygate::access", Level::Error), None);
        assert_eq!(
            f.shown_as("keygate::reload", Level::Info),
            Some(Level::Info)
        );
        assert_eq!(f.shown_as("keygate", Level::Warn), Some(Level::Warn));

        let f = filter("warn,keygate::reload=debug");
        assert_eq!(
            f.shown_as("keygate::reload", Level::Debug),
            Some(Level::Debug)
        );
        assert_eq!(f.shown_as("keygate::reload", Level::Trace), None);
        assert_eq!(f.shown_as("keygate::service", Level::Info), None);
        assert_eq!(
            f.shown_as("keygate::service", Level::Warn),
            Some(Level::Warn)
        );
        assert_eq!(f.max_level(), LevelFilter::Debug);

        // The longest match wins, whatever the order; a bare target means every level.
        let f = filter("keygate::upstream=trace,keygate=error");
        assert_eq!(
            f.shown_as("keygate::upstream", Level::Trace),
            Some(Level::Trace)
        );
        assert_eq!(f.shown_as("keygate::reload", Level::Warn), None);
        let f = filter("keygate");
        assert_eq!(
            f.shown_as("keygate::proxy", Level::Trace),
            Some(Level::Trace)
        );
        // Without a bare level, targets no directive names are off (as in env_logger).
        assert_eq!(f.shown_as("pingora_proxy", Level::Error), None);
    }

    #[test]
    fn levels_are_case_insensitive() {
        let f = filter("WARN,keygate::access=Off");
        assert_eq!(f.shown_as("keygate::access", Level::Info), None);
        assert_eq!(
            f.shown_as("keygate::reload", Level::Warn),
            Some(Level::Warn)
        );
    }

    #[test]
    fn no_directive_lifts_pingoras_cap() {
        for spec in [
            "trace",
            "pingora_proxy=trace",
            "trace,pingora_proxy=trace,pingora_core=trace,pingora=trace",
            "pingora_core::protocols::http::v1::server=debug",
        ] {
            let f = filter(spec);
            for target in [
                "pingora_proxy",
                "pingora_proxy::proxy_h1",
                "pingora_core::protocols::http::v1::server",
                "pingora",
                "h2",
            ] {
                for level in [Level::Debug, Level::Trace] {
                    assert_eq!(f.shown_as(target, level), None, "{spec}: {target} {level}");
                }
            }
        }
    }

    #[test]
    fn pingoras_info_is_shown_as_debug() {
        let f = filter("info");
        assert_eq!(f.shown_as("pingora_core::server", Level::Info), None);
        assert_eq!(
            f.shown_as("pingora_proxy", Level::Error),
            Some(Level::Error)
        );
        assert_eq!(
            f.shown_as("pingora_core::listeners::l4", Level::Warn),
            Some(Level::Warn)
        );
        for spec in [
            "debug",
            "info,pingora_core=debug",
            "pingora_core::server=trace",
        ] {
            let f = filter(spec);
            assert_eq!(
                f.shown_as("pingora_core::server", Level::Info),
                Some(Level::Debug),
                "{spec}"
            );
        }
        // keygate's own info stays info.
        assert_eq!(
            filter("info").shown_as("keygate::service", Level::Info),
            Some(Level::Info)
        );
    }

    #[test]
    fn bad_directives_are_reported_and_the_rest_applies() {
        let (f, problems) = Filter::parse(Some("info,keygate::reload=loud,keygate::access=off"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`keygate::reload=loud`"),
            "{problems:?}"
        );
        assert_eq!(f.shown_as("keygate::access", Level::Info), None);
        assert_eq!(
            f.shown_as("keygate::reload", Level::Info),
            Some(Level::Info)
        );

        // A word that is neither a level nor a target would silence everything.
        let (f, problems) = Filter::parse(Some("verbose"));
        assert!(problems[0].contains("`verbose`"), "{problems:?}");
        assert_eq!(
            f.shown_as("keygate::access", Level::Info),
            Some(Level::Info)
        );

        for bad in [
            "a=b=c",
            "keygate::access=loud",
            "keygate:access=off",
            "info/secret",
            "=info",
        ] {
            let (_, problems) = Filter::parse(Some(bad));
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        }
        let (f, problems) = Filter::parse(Some("debug/x"));
        assert_eq!(problems.len(), 1);
        assert_eq!(f.shown_as("keygate", Level::Debug), Some(Level::Debug));
    }
}
