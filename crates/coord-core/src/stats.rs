//! [`Stats`]: the board at a glance (`coord stats`), worked out from a
//! store's items, event log and agents, the same way for every store.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::agents::AgentRecord;
use crate::event::{Event, EventKind};
use crate::model::{Claim, Status};
use crate::time::Timestamp;

/// A lease that ends within this is "expiring".
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(60);

/// What `coord stats` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// When the figures were taken (the store's time).
    pub at: Timestamp,
    pub items: ItemCounts,
    /// The live claim held longest.
    pub oldest_live: Option<OldestLive>,
    /// Live claims whose lease ends within a minute (or has ended, not yet
    /// written down).
    pub expiring_within_minute: u64,
    pub agents: AgentCounts,
    /// What the event log says happened in the last hour and day.
    pub last_hour: Activity,
    pub last_day: Activity,
    /// How long queue items waited between `post` and being taken, over
    /// the last day.
    pub wait: WaitTimes,
    /// The work types `next` does not hand out (`coord pause`), by name;
    /// the store fills it in.
    pub paused: Vec<String>,
}

/// Items counted four ways: plain integers, keyed by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ItemCounts {
    pub total: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_priority: BTreeMap<String, u64>,
    pub by_work_type: BTreeMap<String, u64>,
    /// Live (in-progress) claims by owner.
    pub live_by_agent: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OldestLive {
    pub work_item_id: String,
    pub agent_id: Option<String>,
    pub work_type: String,
    pub claimed_at: Timestamp,
    pub age_s: u64,
}

/// Agents by whether they were seen within the stale-after time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentCounts {
    pub active: u64,
    pub stale: u64,
    /// Entries another tool wrote without a `last_seen`.
    pub unknown: u64,
}

/// Counts of events of a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Activity {
    pub posted: u64,
    pub claimed: u64,
    pub completed: u64,
    pub failed: u64,
    pub requeued: u64,
    pub released: u64,
    pub expired: u64,
    pub cancelled: u64,
    pub retried: u64,
}

impl Activity {
    fn tally(&mut self, kind: EventKind) {
        let slot = match kind {
            EventKind::Posted => &mut self.posted,
            EventKind::Claimed => &mut self.claimed,
            EventKind::Completed => &mut self.completed,
            EventKind::Failed | EventKind::DependencyFailed => &mut self.failed,
            EventKind::Cancelled => &mut self.cancelled,
            EventKind::Retried => &mut self.retried,
            EventKind::Requeued => &mut self.requeued,
            EventKind::Released => &mut self.released,
            EventKind::Expired => &mut self.expired,
            EventKind::Progress | EventKind::LockBroken => return,
        };
        *slot += 1;
    }
}

/// Percentiles of the wait between `post` and the first take.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WaitTimes {
    pub samples: u64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

/// The `p`th percentile (0-100) of sorted `values`, nearest rank.
fn percentile(sorted: &[u64], p: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as u64).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank - 1).ok()?).copied()
}

impl Stats {
    /// The figures for `items`, the `events` of the log, and `agents`, at
    /// `now`; an agent unseen for `stale_after` counts as stale.
    pub fn compute<'a>(
        items: impl IntoIterator<Item = &'a Claim>,
        events: impl IntoIterator<Item = &'a Event>,
        agents: &[AgentRecord],
        now: Timestamp,
        stale_after: Duration,
    ) -> Stats {
        let mut counts = ItemCounts::default();
        let mut oldest: Option<&Claim> = None;
        let mut expiring = 0;
        let soon = now.saturating_add(EXPIRING_WITHIN);
        for item in items {
            counts.total += 1;
            *counts
                .by_status
                .entry(item.status.as_str().to_owned())
                .or_default() += 1;
            *counts
                .by_priority
                .entry(item.priority.as_str().to_owned())
                .or_default() += 1;
            *counts
                .by_work_type
                .entry(item.work_type.clone())
                .or_default() += 1;
            if item.status != Status::InProgress {
                continue;
            }
            if let Some(owner) = &item.agent_id {
                *counts.live_by_agent.entry(owner.clone()).or_default() += 1;
            }
            if item.lease_expires_at.is_some_and(|end| end <= soon) {
                expiring += 1;
            }
            if item.claimed_at.is_some() && oldest.is_none_or(|o| item.claimed_at < o.claimed_at) {
                oldest = Some(item);
            }
        }
        let oldest_live = oldest.and_then(|o| {
            let claimed_at = o.claimed_at?;
            Some(OldestLive {
                work_item_id: o.work_item_id.clone(),
                agent_id: o.agent_id.clone(),
                work_type: o.work_type.clone(),
                claimed_at,
                age_s: now.saturating_duration_since(claimed_at).as_secs(),
            })
        });
        let mut agent_counts = AgentCounts::default();
        for agent in agents {
            match agent.last_seen {
                None => agent_counts.unknown += 1,
                Some(seen) if now.saturating_duration_since(seen) > stale_after => {
                    agent_counts.stale += 1
                }
                Some(_) => agent_counts.active += 1,
            }
        }
        let (hour, day) = (
            now.saturating_sub(Duration::from_secs(3600)),
            now.saturating_sub(Duration::from_secs(86_400)),
        );
        let (mut last_hour, mut last_day) = (Activity::default(), Activity::default());
        let mut posted_at: HashMap<&str, Timestamp> = HashMap::new();
        let mut waits = Vec::new();
        for event in events {
            if event.time <= day {
                continue;
            }
            let id = event.work_item_id.as_deref();
            match (event.event, id) {
                (EventKind::Posted, Some(id)) => {
                    posted_at.insert(id, event.time);
                }
                // The first take of a posted item: its wait.
                (EventKind::Claimed, Some(id)) if event.from == Some(Status::Pending) => {
                    if let Some(posted) = posted_at.remove(id) {
                        waits.push(
                            u64::try_from(event.time.saturating_duration_since(posted).as_millis())
                                .unwrap_or(u64::MAX),
                        );
                    }
                }
                _ => {}
            }
            last_day.tally(event.event);
            if event.time > hour {
                last_hour.tally(event.event);
            }
        }
        waits.sort_unstable();
        Stats {
            at: now,
            items: counts,
            oldest_live,
            expiring_within_minute: expiring,
            agents: agent_counts,
            last_hour,
            last_day,
            wait: WaitTimes {
                samples: waits.len() as u64,
                p50_ms: percentile(&waits, 50),
                p95_ms: percentile(&waits, 95),
            },
            paused: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50), Some(10));
        assert_eq!(percentile(&v, 95), Some(19));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }
}
