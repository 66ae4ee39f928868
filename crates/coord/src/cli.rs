use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use coord_core::{Priority, Status};

/// Claim work safely among many agents, through a shared coordination
/// directory.
///
/// Every command prints one line of JSON on stdout; errors print one line
/// of JSON on stderr and exit with the code of their kind (see the README).
#[derive(Debug, Parser)]
#[command(name = "coord", version, max_term_width = 100)]
pub struct Cli {
    /// The coordination directory
    #[arg(
        long,
        global = true,
        env = "COORD_DIR",
        default_value = "agent_coordination"
    )]
    pub dir: PathBuf,

    /// This agent's id [default: a new agent_<unix nanos>]
    #[arg(long, global = true, env = "COORD_AGENT_ID")]
    pub agent: Option<String>,

    /// How long to wait for the directory lock (e.g. 500ms, 10s, 1m)
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub lock_timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Claim a work item; prints the new claim
    Claim {
        /// The kind of work (high and critical work is exclusive per type)
        work_type: String,
        /// What the work is about
        description: Option<String>,
        #[arg(long, short, default_value = "medium", value_parser = priority_parser())]
        priority: Priority,
    },
    /// Report progress on an in-progress claim; prints the claim
    Progress {
        id: String,
        /// Percent done, 0 to 100
        #[arg(allow_negative_numbers = true)]
        percent: i64,
    },
    /// Mark an in-progress claim completed; prints the claim
    Complete {
        id: String,
        /// A short summary of the outcome
        #[arg(long)]
        result: Option<String>,
    },
    /// Mark an in-progress claim failed; prints the claim
    Fail {
        id: String,
        /// Why it failed
        #[arg(long)]
        reason: Option<String>,
    },
    /// List claims as a JSON array, oldest first
    List {
        #[arg(long, value_parser = status_parser())]
        status: Option<Status>,
        #[arg(long)]
        work_type: Option<String>,
        /// Only claims held by this agent id
        #[arg(long, value_name = "AGENT")]
        owner: Option<String>,
    },
    /// Print one claim
    Show { id: String },
}

impl Cli {
    /// The agent id to act as: given, or a fresh `agent_<unix nanos>`.
    pub fn agent_id(&self) -> String {
        self.agent.clone().unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("agent_{nanos}")
        })
    }
}

fn priority_parser() -> impl TypedValueParser<Value = Priority> {
    PossibleValuesParser::new(Priority::NAMES).map(|s| s.parse().expect("a possible value"))
}

fn status_parser() -> impl TypedValueParser<Value = Status> {
    PossibleValuesParser::new(Status::NAMES).map(|s| s.parse().expect("a possible value"))
}

/// `10s`, `250ms`, `1m 30s`, ISO 8601 `PT10S`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed = match text.trim().parse::<u64>() {
        Ok(secs) => return Ok(Duration::from_secs(secs)),
        Err(_) => text
            .parse::<jiff::SignedDuration>()
            .map_err(|e| format!("`{text}` is not a duration like 500ms, 10s or 1m: {e}"))?,
    };
    Duration::try_from(signed)
        .map_err(|_| format!("`{text}` is negative; a duration must be positive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
