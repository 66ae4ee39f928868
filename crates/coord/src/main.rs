//! `coord`: the command-line face of coord. Parses arguments, calls the
//! store, prints JSON, maps errors to exit codes. Nothing else.
//!
//! Architecture invariant: only this crate decides exit codes and prints.

mod cli;
mod output;

use std::process::ExitCode;

use clap::Parser;
use coord_core::{ClaimRequest, CoordError, Filter, Store, Update};
use coord_file::{FileStore, FileStoreOptions};

use cli::{Cli, Command};
use output::Output;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let store = FileStore::with_options(
        &cli.dir,
        FileStoreOptions {
            lock_timeout: cli.lock_timeout,
            ..FileStoreOptions::default()
        },
    );
    match run(&cli, &store) {
        Ok(out) => output::print(&out),
        Err(error) => output::fail(&error),
    }
}

fn run(cli: &Cli, store: &dyn Store) -> Result<Output, CoordError> {
    Ok(match &cli.command {
        Command::Claim {
            work_type,
            description,
            priority,
        } => {
            let request = ClaimRequest::new(cli.agent_id(), work_type.as_str())
                .description(description.clone().unwrap_or_default())
                .priority(*priority);
            Output::One(Box::new(store.claim(&request)?))
        }
        Command::Progress { id, percent } => Output::One(Box::new(
            store.update(id, &Update::Progress { percent: *percent })?,
        )),
        Command::Complete { id, result } => {
            let update = Update::Complete {
                result: result.clone(),
            };
            Output::One(Box::new(store.update(id, &update)?))
        }
        Command::Fail { id, reason } => {
            let update = Update::Fail {
                reason: reason.clone(),
            };
            Output::One(Box::new(store.update(id, &update)?))
        }
        Command::List {
            status,
            work_type,
            owner,
        } => Output::Many(store.list(&Filter {
            status: *status,
            work_type: work_type.clone(),
            owner: owner.clone(),
        })?),
        Command::Show { id } => Output::One(Box::new(store.get(id)?)),
    })
}

/// Logs go to stderr, and only when asked for with `COORD_LOG` (for example
/// `COORD_LOG=debug`), so the JSON contract on stdout and stderr stays clean.
fn init_tracing() {
    let Ok(spec) = std::env::var("COORD_LOG") else {
        return;
    };
    match spec.parse::<tracing_subscriber::filter::Targets>() {
        Ok(filter) => {
            use tracing_subscriber::prelude::*;
            tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_filter(filter),
                )
                .init();
        }
        Err(e) => eprintln!("coord: ignoring COORD_LOG={spec:?}: {e}"),
    }
}
