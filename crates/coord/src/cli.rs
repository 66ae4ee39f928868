//! The command line: every command and flag (the contract's first half),
//! parsed with clap. Parsing builds only the subcommand used (see
//! [`Cli::parse_args`]), an empty variable counts as unset, and a flag beats
//! its variable.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use coord_core::{
    ClaimRequest, CoordError, DEFAULT_MAX_ATTEMPTS, OnDependencyFailure, Priority, RetryPolicy,
    Status, parse_duration,
};

/// Claim work safely among many agents, through a shared coordination
/// directory (or, with --database-url, a PostgreSQL database).
///
/// Every command prints one line of JSON on stdout (`log` prints one line per
/// event); errors print one line of JSON on stderr and exit with the code of
/// their kind (see the README).
#[derive(Debug, Parser)]
#[command(
    name = "coord",
    version,
    max_term_width = 100,
    next_help_heading = "Global options"
)]
pub struct Cli {
    /// The coordination directory (default: the nearest agent_coordination/
    /// in the current directory or above it, else ./agent_coordination)
    #[arg(
        long,
        global = true,
        env = "COORD_DIR",
        default_value = "agent_coordination"
    )]
    pub dir: PathBuf,

    /// Keep work items in this PostgreSQL database instead of the directory,
    /// to coordinate agents on many machines (a libpq connection string,
    /// e.g. postgresql://coord@db.internal/coord or "host=/run/postgresql
    /// dbname=coord")
    #[arg(long, global = true, env = "COORD_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// The schema that holds coord's tables in that database (created if
    /// missing); stores in different schemas are independent
    #[arg(long, global = true, env = "COORD_SCHEMA", default_value = "coord")]
    pub schema: String,

    /// This agent's id (default: a new `agent_<unix nanos>` per call).
    #[arg(
        long,
        global = true,
        env = "COORD_AGENT_ID",
        help = "This agent's id [default: a new agent_<unix nanos>]"
    )]
    pub agent: Option<String>,

    /// How long to wait for the directory lock, or a database lock (e.g.
    /// 500ms, 10s, 1m)
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub lock_timeout: Duration,

    /// Run even on a network file system (NFS, SMB, FUSE). UNSAFE: file
    /// locks there may not exclude other machines; only one machine may use
    /// the directory.
    #[arg(long, global = true, env = "COORD_ALLOW_UNSAFE_FILESYSTEM")]
    pub allow_unsafe_filesystem: bool,

    /// Print short lines for people instead of JSON (never for scripts:
    /// the JSON output is the contract)
    #[arg(long, global = true)]
    pub human: bool,

    /// Do not hold the older shell tools' work_claims.json.lock while
    /// writing: faster, for directories no shell tool uses
    #[arg(long, global = true, env = "COORD_NO_SHELL_LOCK")]
    pub no_shell_lock: bool,

    /// fdatasync the event log before each change commits: its last lines
    /// then survive an OS crash or power loss too (the changes always do),
    /// at the cost of a third sync per change
    #[arg(long, global = true, env = "COORD_SYNC_EVENTS")]
    pub sync_events: bool,

    /// Automatic compaction: when more finished items than this are in the
    /// claims file, all but the newest --compact-keep move to the archive
    #[arg(
        long,
        global = true,
        env = "COORD_COMPACT_AT",
        value_name = "N",
        default_value_t = 256
    )]
    pub compact_at: usize,

    /// How many finished items automatic compaction leaves in the claims file
    #[arg(
        long,
        global = true,
        env = "COORD_COMPACT_KEEP",
        value_name = "N",
        default_value_t = 64
    )]
    pub compact_keep: usize,

    /// Do not append spans to telemetry_spans.jsonl in the coordination
    /// directory (the same as COORD_TELEMETRY=off)
    #[arg(long, global = true)]
    pub no_telemetry: bool,

    /// Append spans to this file: on PostgreSQL, where else none are
    /// written; on a directory, instead of its telemetry_spans.jsonl
    #[arg(long, global = true, env = "COORD_TELEMETRY_FILE", value_name = "PATH")]
    pub telemetry_file: Option<PathBuf>,

    /// COORD_TELEMETRY: `on` (the default) or `off`.
    #[arg(
        long = "telemetry",
        global = true,
        env = "COORD_TELEMETRY",
        value_name = "on|off",
        default_value = "on",
        value_parser = ["on", "off"],
        hide = true
    )]
    pub telemetry: String,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The whole command, every subcommand's arguments built (for
    /// completions and the man page).
    pub fn full_command() -> clap::Command {
        let mut command = Cli::command();
        command.build();
        command
    }

    /// Without `--dir` or `COORD_DIR`: the nearest `agent_coordination/` in
    /// the current directory or one of its parents, if there is one (else
    /// `./agent_coordination` stays).
    pub fn find_dir(&mut self) {
        if !DIR_DEFAULTED.load(Ordering::Relaxed) {
            return;
        }
        let Ok(cwd) = std::env::current_dir() else {
            return;
        };
        if let Some(found) = cwd
            .ancestors()
            .map(|d| d.join(SEARCHED))
            .find(|d| d.is_dir())
        {
            self.dir = found;
        }
    }

    /// Whether changes append their spans (`--no-telemetry`,
    /// `COORD_TELEMETRY=off`).
    pub fn telemetry_on(&self) -> bool {
        !self.no_telemetry && self.telemetry == "on"
    }
}

/// Which store an explicit flag beats a variable for: `--dir` on the
/// command line wins over a `COORD_DATABASE_URL` from the environment.
/// Whether `--dir` and `COORD_DIR` were both absent (see
/// [`Cli::find_dir`]); set once, by the parse.
static DIR_DEFAULTED: AtomicBool = AtomicBool::new(false);

/// The directory searched for from `start` up, as git looks for `.git`.
const SEARCHED: &str = "agent_coordination";

fn flags_beat_variables(mut cli: Cli, matches: &ArgMatches) -> Result<Cli, clap::Error> {
    use clap::parser::ValueSource::{CommandLine, DefaultValue, EnvVariable};
    let dir = matches.value_source("dir");
    DIR_DEFAULTED.store(dir == Some(DefaultValue), Ordering::Relaxed);
    let database = matches.value_source("database_url");
    match (dir, database) {
        (Some(CommandLine), Some(EnvVariable)) => cli.database_url = None,
        (Some(CommandLine), Some(CommandLine)) => {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                "--dir and --database-url name two different stores; give one of them\n",
            ));
        }
        _ => {}
    }
    Ok(cli)
}

// `claim`'s own arguments: what `run` claims with, and a key.
#[derive(Debug, Args)]
pub struct ClaimCommandArgs {
    #[command(flatten)]
    pub what: ClaimArgs,
    #[command(flatten)]
    pub key: KeyArg,
}

// Making a change once, however often it is sent.
#[derive(Debug, Args)]
pub struct KeyArg {
    /// Your name for this change: sent again with the same key by the same
    /// agent within 24 hours, it answers as the first time and changes
    /// nothing (a different call with the key is refused)
    #[arg(long, env = "COORD_IDEMPOTENCY_KEY", value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

// A description from a file, and a payload (`claim`, `post`, `run`).
#[derive(Debug, Args)]
pub struct TextArgs {
    /// Read the description from this file (`-`: standard input)
    #[arg(long, value_name = "PATH", conflicts_with = "description")]
    pub description_file: Option<PathBuf>,
    /// JSON the work needs, kept as the item's `payload` (a child of
    /// `coord run`/`coord work` finds it in the file COORD_PAYLOAD_FILE)
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub payload: Option<serde_json::Value>,
    /// Read the payload's JSON from this file (`-`: standard input)
    #[arg(long, value_name = "PATH", conflicts_with = "payload")]
    pub payload_file: Option<PathBuf>,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

/// The bytes of `path`, or of standard input for `-`.
fn read_text(path: &std::path::Path) -> Result<String, CoordError> {
    use std::io::Read;
    let mut text = String::new();
    let read = if path == std::path::Path::new("-") {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map(|_| text).map_err(|e| CoordError::FileRead {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

impl TextArgs {
    /// The description (`given`, or the file's) and the payload.
    pub fn resolve(
        &self,
        given: Option<&str>,
    ) -> Result<(String, Option<serde_json::Value>), CoordError> {
        let description = match &self.description_file {
            Some(path) => read_text(path)?,
            None => given.unwrap_or_default().to_owned(),
        };
        let payload = match &self.payload_file {
            Some(path) => Some(serde_json::from_str(&read_text(path)?).map_err(|e| {
                CoordError::invalid_input(format!(
                    "--payload-file {}: not JSON: {e}",
                    path.display()
                ))
            })?),
            None => self.payload.clone(),
        };
        Ok((description, payload))
    }
}

// What to claim, and how hard to try (`claim` and `run`).
#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// The kind of work (high and critical work is exclusive per type)
    pub work_type: String,
    /// What the work is about
    pub description: Option<String>,
    #[command(flatten)]
    pub text: TextArgs,
    /// How urgent (high and critical work is exclusive per work type)
    #[arg(long, short, default_value = "medium", value_parser = priority_parser())]
    pub priority: Priority,
    #[command(flatten)]
    pub lease: LeaseArg,
    #[command(flatten)]
    pub retry: RetryArgs,
}

impl ClaimArgs {
    pub fn request(&self, agent: &str) -> Result<ClaimRequest, CoordError> {
        let (description, payload) = self.text.resolve(self.description.as_deref())?;
        Ok(ClaimRequest::new(agent, self.work_type.as_str())
            .description(description)
            .priority(self.priority)
            .lease(self.lease.lease)
            .payload(payload))
    }
}

// How to hold on to a claim.
#[derive(Debug, Args)]
pub struct LeaseArg {
    /// How long the claim holds without a heartbeat (e.g. 90s, 30m)
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub lease: Duration,
}

// Retrying a blocked claim with exponential backoff and full jitter.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// On a conflict, a busy lock or nothing to take, retry up to N times
    #[arg(long, value_name = "N", conflicts_with = "wait_for")]
    pub retry: Option<u32>,
    /// On a conflict, a busy lock or nothing to take, keep retrying for this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_for: Option<Duration>,
}

impl RetryArgs {
    pub fn policy(&self) -> RetryPolicy {
        match (self.retry, self.wait_for) {
            (Some(n), _) => RetryPolicy::retries(n),
            (None, Some(wait)) => RetryPolicy::wait_for(wait),
            (None, None) => RetryPolicy::default(),
        }
    }
}

// Who may change a claim.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The fence you got with the claim; the change is refused (lease_expired)
    /// if the item has moved on since
    #[arg(long, env = "COORD_FENCE", value_name = "N")]
    pub fence: Option<u64>,
    /// Act even if you are not the owner or the lease has passed (recorded in
    /// the event log)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub key: KeyArg,
}

/// A subcommand's arguments, defined only when that subcommand is the one
/// used. clap otherwise builds every subcommand's arguments on every run,
/// about a tenth of a millisecond of each `coord` call (see
/// docs/benchmarks.md); the help and the parsing are the same either way.
#[derive(Debug)]
pub struct Lazy<T>(pub T);

impl<T> std::ops::Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args_for_update)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Claim a work item on the spot; prints the new claim
    Claim(Lazy<ClaimCommandArgs>),
    /// Add a pending work item to the queue; prints it
    Post(Lazy<PostArgs>),
    /// Take the best ready pending item (highest priority, then oldest); prints it
    Next(Lazy<NextArgs>),
    /// Renew the lease of a claim you hold; prints the claim
    Heartbeat(Lazy<HeartbeatArgs>),
    /// Report progress on a claim you hold (also renews the lease); prints it
    Progress(Lazy<ProgressArgs>),
    /// Mark a claim you hold completed; prints it
    Complete(Lazy<CompleteArgs>),
    /// Mark a claim you hold failed; prints it
    Fail(Lazy<FailArgs>),
    /// Hand a claim you hold back to the queue; prints it
    Release(Lazy<ReleaseArgs>),
    /// Cancel a pending item (with --force, one in progress too), or every
    /// item the filters select; prints what it cancelled
    ///
    /// Recorded in the event log (`cancelled`); items that depend on a
    /// cancelled one fail with it unless they were posted with
    /// --on-dependency-failure wait. By id: the item, or an error saying
    /// why not. By filter: a JSON array of every item changed, in one change.
    Cancel(Lazy<CancelArgs>),
    /// Send a failed, expired or cancelled queue item (or every one the
    /// filters select) back to the queue; prints what it sent back
    ///
    /// The item gets one more attempt (--reset-attempts: all of them
    /// again); its history stays in the event log (`retried`).
    Retry(Lazy<RetryItemArgs>),
    /// Stop `next` handing out a work type (claims held go on, `post` still
    /// queues it); prints the paused work types
    Pause(Lazy<PauseArgs>),
    /// Let `next` hand out a paused work type again; prints the paused
    /// work types
    Resume(Lazy<PauseArgs>),
    /// Write down every lapsed lease now; prints the items it changed
    Reap,
    /// Move finished items to the archive (work_claims.archive.jsonl, or the
    /// coord_archive table); prints what moved
    Cleanup(Lazy<CleanupArgs>),
    /// List work items as a JSON array, oldest first
    List(Lazy<ListArgs>),
    /// Print one work item
    Show(Lazy<ShowArgs>),
    /// Manage this agent's entry in the registry
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// List registered and recently seen agents as a JSON array
    Agents(Lazy<AgentsArgs>),
    /// The board at a glance: items by status, priority, work type and
    /// owner, the oldest live claim, leases about to end, agents, the last
    /// hour and day from the event log; one JSON object
    Stats(Lazy<AgentsArgs>),
    /// The board live in the terminal: counts, live claims, the queue,
    /// agents, the latest events; Tab switches pane, q quits
    Dashboard(Lazy<DashboardArgs>),
    /// Claim work, run COMMAND under the claim, and record how it ended
    ///
    /// The child gets COORD_WORK_ITEM_ID, COORD_AGENT_ID, COORD_FENCE,
    /// COORD_WORK_TYPE and COORD_DIR; the lease is renewed every third of its
    /// length while it runs. Exit 0 completes the claim (result: the last
    /// line of output, or --result), anything else fails it. Exits with the
    /// child's status (128 + N if killed by signal N).
    Run(Lazy<RunArgs>),
    /// Take queued work and run COMMAND for each item, until stopped
    ///
    /// SIGTERM or SIGINT stops taking new work; running children get
    /// --grace to finish, then are stopped and their items released.
    /// A second signal stops at once. Failed items go back to the queue with
    /// backoff until their max attempts are used.
    Work(Lazy<WorkArgs>),
    /// Print the event log, one JSON object per line
    Log(Lazy<LogArgs>),
    /// Print a shell's completion script for coord (bash, zsh, fish,
    /// elvish, powershell), e.g. `coord completions bash > /etc/bash_completion.d/coord`
    Completions { shell: clap_complete::Shell },
    /// Print coord's man page (roff), e.g. `coord man > coord.1`
    Man,
    /// Copy a coordination directory into the database (--database-url):
    /// items, archive, event log, agents; prints what was new
    ///
    /// One transaction: all or nothing. The directory is only read. What
    /// the database already holds is not imported again.
    Import(Lazy<ImportArgs>),
}

// The arguments of each subcommand. (Plain comments: a doc comment on an
// `Args` struct would become the subcommand's about text.)

#[derive(Debug, Args)]
pub struct PostArgs {
    /// The kind of work (high and critical work is exclusive per type)
    pub work_type: String,
    /// What the work is about
    #[arg(required_unless_present = "description_file")]
    pub description: Option<String>,
    #[command(flatten)]
    pub text: TextArgs,
    /// How urgent (high and critical work is exclusive per work type)
    #[arg(long, short, default_value = "medium", value_parser = priority_parser())]
    pub priority: Priority,
    /// Items that must be completed before this one can be taken
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub after: Vec<String>,
    /// How many times the item may be taken before a failure is final
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// If an item of --after fails, expires or is cancelled: fail this one
    /// too (the default), or wait (blocked) until it is retried
    #[arg(long, value_name = "WHAT", value_parser = on_dependency_failure_parser())]
    pub on_dependency_failure: Option<OnDependencyFailure>,
    #[command(flatten)]
    pub key: KeyArg,
}

#[derive(Debug, Args)]
pub struct NextArgs {
    /// Only items of these work types (repeatable)
    #[arg(long = "work-type", value_name = "T")]
    pub work_types: Vec<String>,
    #[command(flatten)]
    pub lease: LeaseArg,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub key: KeyArg,
}

#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// The work item (its `work_item_id`), a claim you hold
    pub id: String,
    /// A new lease length (default: the claim's own)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    #[command(flatten)]
    pub hold: HoldArgs,
}

#[derive(Debug, Args)]
pub struct ProgressArgs {
    /// The work item (its `work_item_id`), a claim you hold
    pub id: String,
    /// Percent done, 0 to 100
    #[arg(allow_negative_numbers = true)]
    pub percent: i64,
    #[command(flatten)]
    pub hold: HoldArgs,
}

#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// The work item (its `work_item_id`), a claim you hold
    pub id: String,
    /// A short summary of the outcome
    #[arg(long)]
    pub result: Option<String>,
    #[command(flatten)]
    pub hold: HoldArgs,
}

#[derive(Debug, Args)]
pub struct FailArgs {
    /// The work item (its `work_item_id`), a claim you hold
    pub id: String,
    /// Why it failed
    #[arg(long)]
    pub reason: Option<String>,
    /// Put it back on the queue while attempts are left
    #[arg(long)]
    pub requeue: bool,
    /// With --requeue: not to be taken again before this much time
    #[arg(long, value_name = "DURATION", requires = "requeue", value_parser = parse_duration)]
    pub retry_after: Option<Duration>,
    #[command(flatten)]
    pub hold: HoldArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The item to cancel (or select items with the filters instead)
    #[arg(required_unless_present_any = SELECTORS)]
    pub id: Option<String>,
    /// Why (kept as the item's reason and in the event)
    #[arg(long)]
    pub reason: Option<String>,
    /// Cancel items in progress too: their owners' next acts are refused
    /// (lease_expired)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(Debug, Args)]
pub struct RetryItemArgs {
    /// The item to retry (or select items with the filters instead)
    #[arg(required_unless_present_any = SELECTORS)]
    pub id: Option<String>,
    /// Give it all its attempts again, not just one more
    #[arg(long)]
    pub reset_attempts: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// The filters of a bulk `cancel` or `retry` (the ids of their args).
const SELECTORS: [&str; 4] = ["work_type", "status", "owner", "older_than"];

#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Every item of this work type
    #[arg(long, value_name = "T", conflicts_with = "id")]
    pub work_type: Option<String>,
    /// Every item with this status
    #[arg(long, value_parser = status_parser(), conflicts_with = "id")]
    pub status: Option<Status>,
    /// Every item this agent holds (or held last)
    #[arg(long, value_name = "AGENT", conflicts_with = "id")]
    pub owner: Option<String>,
    /// Every item last changed longer ago than this (e.g. 1h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "id")]
    pub older_than: Option<Duration>,
    /// Print what would change (the items as they are now) and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

impl SelectArgs {
    /// The target: `id`, or the items these filters select.
    pub fn target(&self, id: Option<&str>) -> coord_core::operate::Target {
        use coord_core::operate::{Match, Target};
        match id {
            Some(id) => Target::Item(id.to_owned()),
            None => Target::Matching(Match {
                work_type: self.work_type.clone(),
                status: self.status,
                owner: self.owner.clone(),
                older_than: self.older_than,
            }),
        }
    }
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The work type
    pub work_type: String,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The work item (its `work_item_id`), a claim you hold
    pub id: String,
    #[command(flatten)]
    pub hold: HoldArgs,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Only items that finished longer ago than this
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Duration,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only items in this status
    #[arg(long, value_parser = status_parser())]
    pub status: Option<Status>,
    /// Only items of this work type
    #[arg(long)]
    pub work_type: Option<String>,
    /// Only items held by this agent id
    #[arg(long, value_name = "AGENT")]
    pub owner: Option<String>,
    /// Only items changed at or after this time: RFC 3339, or a duration
    /// meaning that long ago (1h)
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Only the newest N of the items that match (still oldest first)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The work item (its `work_item_id`), live or archived
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The coordination directory to copy
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Print one frame as text and exit (for scripts and tests)
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Agents not seen for this long are shown as stale
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub stale_after: Duration,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub what: ClaimArgs,
    /// The result to record (default: the child's last line of output)
    #[arg(long)]
    pub result: Option<String>,
    /// After SIGTERM, how long the child has before SIGKILL
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Only items of these work types (repeatable)
    #[arg(long = "work-type", value_name = "T")]
    pub work_types: Vec<String>,
    #[command(flatten)]
    pub lease: LeaseArg,
    /// How many items to work on at once (at most 1024)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=MAX_CONCURRENCY))]
    pub concurrency: u16,
    /// Stop after taking this many items
    #[arg(long, value_name = "N")]
    pub max_items: Option<usize>,
    /// Stop when there was nothing to take for this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_exit: Option<Duration>,
    /// How long a stop request waits for running children (and SIGTERM
    /// for SIGKILL)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// The first retry delay of a failed item; it doubles per attempt
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub retry_backoff: Duration,
    /// Serve metrics in Prometheus' text format at this address (e.g.
    /// 127.0.0.1:9464) while working
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Keep printing new events as they are written
    #[arg(long, short)]
    pub follow: bool,
    /// Only the events of this work item
    #[arg(long, value_name = "ID")]
    pub work_item: Option<String>,
    /// Only events at or after this time: RFC 3339 (2026-12-05T14:00:00Z),
    /// or a duration meaning that long ago (1h, 30m)
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Only the last N of the events there are (then, with --follow, every
    /// new one)
    #[arg(long = "last", short = 'n', value_name = "N")]
    pub last: Option<usize>,
}

/// `--since`: a point in time, or how long ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    At(coord_core::Timestamp),
    Ago(Duration),
}

impl Since {
    /// The point in time, `now` being now.
    pub fn at(self, now: coord_core::Timestamp) -> coord_core::Timestamp {
        match self {
            Since::At(t) => t,
            Since::Ago(d) => now.saturating_sub(d),
        }
    }
}

fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(t) = text.parse::<coord_core::Timestamp>() {
        return Ok(Since::At(t));
    }
    parse_duration(text)
        .map(Since::Ago)
        .map_err(|e| format!("neither an RFC 3339 time nor a duration: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register (or update) this agent; prints its entry
    Register {
        /// The team the agent works for (kept in its entry)
        #[arg(long)]
        team: Option<String>,
        /// How many items it works on at once
        #[arg(long, value_name = "N")]
        capacity: Option<u32>,
    },
}

impl Cli {
    /// Parses `args` (the program's name first) as `Cli::try_parse_from`
    /// does, with less work in the common case.
    ///
    /// Before it parses, clap copies the 11 global options into each of the
    /// 17 subcommands: about 0.15 ms and 45 page faults of every `coord` call
    /// (see docs/benchmarks.md). So a parse first tries a command that holds
    /// only the subcommand the arguments name, with the same options and
    /// settings. Only its success is kept: it is the parse the full command
    /// makes, which differs only in subcommands this one never reached. Help,
    /// `--version` and every error come from the full command, so they read
    /// as clap writes them.
    ///
    /// An environment variable that is set but empty counts as unset, as
    /// most command-line tools treat it (`COORD_DIR= coord list` lists the
    /// default directory); a flag given on the command line always wins.
    pub fn parse_args(args: Vec<OsString>) -> Result<Cli, clap::Error> {
        match Self::parse_with_one_subcommand(&args) {
            Some(cli) => Ok(cli),
            None => {
                let mut full = Self::for_people();
                if an_env_variable_is_empty() {
                    full = without_empty_env(full);
                }
                let matches = full.try_get_matches_from(args)?;
                flags_beat_variables(Cli::from_arg_matches(&matches)?, &matches)
            }
        }
    }

    /// The full command as people read its help and errors: built (the
    /// global options copied into every subcommand), then those copies
    /// hidden, so a subcommand's help lists its own options and points to
    /// `coord --help` for the global ones (they still parse there).
    fn for_people() -> clap::Command {
        let mut full = Cli::command();
        full.build();
        hide_global_options(full)
    }

    fn parse_with_one_subcommand(args: &[OsString]) -> Option<Cli> {
        let full = Cli::command();
        let used = args.iter().skip(1).find_map(|a| full.find_subcommand(a))?;
        // Built first, so the subcommand's own (deferred) arguments are
        // there to lose their empty variables too.
        let mut command = Self::root_of(&full).subcommand(used.clone());
        command.build();
        let matches = without_empty_env(command).try_get_matches_from(args).ok()?;
        flags_beat_variables(Cli::from_arg_matches(&matches).ok()?, &matches).ok()
    }

    /// `full`'s own options and the settings the derive gives it that bear
    /// on a successful parse, without its subcommands. (Without a version,
    /// `--version` is an error here, and so goes to the full command.)
    fn root_of(full: &clap::Command) -> clap::Command {
        clap::Command::new("coord")
            .subcommand_required(full.is_subcommand_required_set())
            .arg_required_else_help(full.is_arg_required_else_help_set())
            .args(full.get_arguments().cloned())
    }

    /// The agent id to act as, and whether it was given (not generated).
    pub fn agent_id(&self) -> (String, bool) {
        match &self.agent {
            Some(agent) => (agent.clone(), true),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                (format!("agent_{nanos}"), false)
            }
        }
    }
}

/// `command` (built) with the global options its subcommands were given
/// hidden from their help (they still parse there), and a line saying
/// where they are listed.
fn hide_global_options(command: clap::Command) -> clap::Command {
    fn hide(sub: clap::Command) -> clap::Command {
        sub.mut_args(|arg| {
            if arg.is_global_set() {
                arg.hide(true)
            } else {
                arg
            }
        })
        .after_help("Global options (--dir, --agent, --database-url, ...): see `coord --help`.")
        .mut_subcommands(hide)
    }
    command.mut_subcommands(hide)
}

/// Whether one of coord's variables (`COORD_*`) is set but empty.
fn an_env_variable_is_empty() -> bool {
    std::env::vars_os().any(|(name, value)| {
        value.is_empty() && name.to_str().is_some_and(|n| n.starts_with("COORD_"))
    })
}

/// `command` (built) with every argument whose environment variable is
/// set but empty no longer reading it.
fn without_empty_env(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| match arg.get_env() {
            Some(name) if std::env::var_os(name).is_some_and(|v| v.is_empty()) => {
                arg.env(None::<&'static str>)
            }
            _ => arg,
        })
        .mut_subcommands(without_empty_env)
}

/// The most slots `coord work` runs: each is a thread with a child, and a
/// number past any machine's means a mistake, not a wish.
const MAX_CONCURRENCY: i64 = 1024;

fn priority_parser() -> impl TypedValueParser<Value = Priority> {
    PossibleValuesParser::new(Priority::NAMES).map(|s| s.parse().expect("a possible value"))
}

fn on_dependency_failure_parser() -> impl TypedValueParser<Value = OnDependencyFailure> {
    PossibleValuesParser::new(["fail", "wait"]).map(|s| match s.as_str() {
        "wait" => OnDependencyFailure::Wait,
        _ => OnDependencyFailure::Fail,
    })
}

fn status_parser() -> impl TypedValueParser<Value = Status> {
    PossibleValuesParser::new(Status::NAMES).map(|s| s.parse().expect("a possible value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn deferred_arguments_keep_each_subcommands_own_help_text() {
        // A doc comment on an `Args` struct would replace the about text of
        // the subcommand when its deferred arguments are built.
        let unbuilt = Cli::command();
        let mut built = Cli::command();
        built.build();
        for sub in unbuilt.get_subcommands() {
            let after = built.find_subcommand(sub.get_name()).unwrap();
            let text = |c: &clap::Command| {
                (
                    c.get_about().map(ToString::to_string),
                    c.get_long_about().map(ToString::to_string),
                )
            };
            assert_eq!(text(after), text(sub), "{}", sub.get_name());
            assert!(sub.get_about().is_some(), "{}", sub.get_name());
        }
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn common_calls_parse_with_their_subcommand_alone() {
        for args in [
            &["coord", "claim", "build"][..],
            &[
                "coord", "--dir", "d", "--agent", "a", "claim", "build", "-p", "high",
            ],
            &[
                "coord", "claim", "build", "--dir", "d", "--human", "--lease", "5m",
            ],
            &["coord", "--agent", "claim", "claim", "x"],
            &["coord", "agent", "register", "--team", "t", "--dir", "d"],
            &[
                "coord",
                "complete",
                "work_1",
                "--fence",
                "3",
                "--no-shell-lock",
            ],
            &[
                "coord",
                "--database-url",
                "host=/tmp",
                "next",
                "--wait-for",
                "2s",
            ],
        ] {
            let pruned = Cli::parse_with_one_subcommand(&os(args));
            let full = Cli::try_parse_from(args).unwrap();
            assert_eq!(
                format!("{pruned:?}"),
                format!("{:?}", Some(full)),
                "{args:?}"
            );
        }
    }

    /// The full command's parse, as people see it (`Cli::for_people`).
    fn reference_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let matches = Cli::for_people().try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
    }

    #[test]
    fn a_subcommands_help_lists_its_own_options_and_points_to_the_global_ones() {
        let help = Cli::parse_args(os(&["coord", "claim", "--help"]))
            .unwrap_err()
            .to_string();
        assert!(help.contains("--priority"), "{help}");
        assert!(!help.contains("--lock-timeout"), "{help}");
        assert!(help.contains("see `coord --help`"), "{help}");
        let top = Cli::parse_args(os(&["coord", "--help"]))
            .unwrap_err()
            .to_string();
        assert!(top.contains("--lock-timeout"), "{top}");
        // Hidden from the help, still parsed.
        let cli = Cli::parse_args(os(&["coord", "list", "--lock-timeout", "2s"])).unwrap();
        assert_eq!(cli.lock_timeout, Duration::from_secs(2));
    }

    #[test]
    fn help_version_and_errors_come_from_the_full_command() {
        for args in [
            &["coord", "claim", "--help"][..],
            &["coord", "--version", "claim", "x"],
            &["coord", "help", "claim"],
            &["coord", "claim"],
            &["coord", "claim", "x", "--bogus"],
            &["coord", "claim", "x", "-p", "urgent"],
            &["coord"],
            &["coord", "clam", "x"],
        ] {
            let ours = Cli::parse_args(os(args)).unwrap_err();
            let clap = reference_parse(args).unwrap_err();
            assert_eq!(
                (ours.kind(), ours.to_string()),
                (clap.kind(), clap.to_string()),
                "{args:?}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the arguments, the parse is clap's: the same value or
        /// the same error as the full command's.
        #[test]
        fn parse_args_is_the_full_commands_parse(
            words in proptest::collection::vec(proptest::sample::select(vec![
                "claim", "post", "next", "complete", "list", "agent", "register", "run", "work",
                "log", "help", "--dir", "--agent", "--schema", "--human", "--no-shell-lock",
                "--lock-timeout", "--compact-at", "-p", "--priority", "--lease", "--retry",
                "--wait-for", "--fence", "--team", "--", "x", "high", "3", "2s", "--version",
                "--help",
            ]), 0..7)
        ) {
            let mut args = vec!["coord"];
            args.extend(words);
            let ours = Cli::parse_args(os(&args));
            let clap = reference_parse(&args);
            proptest::prop_assert_eq!(
                ours.map(|c| format!("{c:?}")).map_err(|e| (e.kind(), e.to_string())),
                clap.map(|c| format!("{c:?}")).map_err(|e| (e.kind(), e.to_string()))
            );
        }
    }

    #[test]
    fn retry_flags_make_the_policy() {
        let cli = Cli::try_parse_from(["coord", "claim", "t", "--retry", "4"]).unwrap();
        let Command::Claim(what) = cli.command else {
            panic!()
        };
        assert_eq!(what.what.retry.policy().max_retries, Some(4));
        let cli = Cli::try_parse_from(["coord", "next", "--wait-for", "2s"]).unwrap();
        let Command::Next(next) = cli.command else {
            panic!()
        };
        assert_eq!(next.retry.policy().max_wait, Some(Duration::from_secs(2)));
        assert!(
            Cli::try_parse_from(["coord", "claim", "t", "--retry", "1", "--wait-for", "1s"])
                .is_err()
        );
    }
}
