//! End-to-end tests of the `coord` binary, with real processes. One test
//! binary (modules below) so the suite links once.

mod contract;
mod crash;
mod dashboard;
mod extremes;
mod finding;
mod history;
mod human;
mod import;
mod keys;
mod lifecycle;
mod operate;
mod payload;
mod pg;
mod runner;
mod stats;
mod support;
mod telemetry;
mod tls;
mod wake;
