//! `coord dashboard`: the board live in the terminal (ratatui over
//! crossterm), or one frame as text with `--once`.
//!
//! Counts by status and priority across the top; the live claims (owner,
//! work type, priority, age, lease left, progress); the queue in the order
//! `next` takes it; the agents; the latest events. It only reads (no lock),
//! reloads when the store changes (PostgreSQL's waiting connection wakes
//! it; a directory's log is looked at every quarter second) and at least
//! every two seconds, and puts the terminal back however it ends.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coord_core::{AgentRecord, Claim, CoordError, Event, Filter, Stats, Status, Store, Timestamp};
use ratatui::Frame;
use ratatui::Terminal;
use ratatui::backend::{CrosstermBackend, TestBackend};
use ratatui::crossterm::event::{self, Event as Key, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

/// How often the event log is looked at for news.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// The longest the board goes without a reload.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// A lease that ends within this is shown in red.
const EXPIRING: Duration = Duration::from_secs(60);
/// Events shown.
const LATEST_EVENTS: usize = 50;
/// The frame `--once` prints when stdout is not a terminal.
const ONCE_SIZE: (u16, u16) = (120, 40);
/// An agent unseen for this long is marked stale.
const STALE_AFTER: Duration = Duration::from_secs(300);

/// The panes, in the order Tab goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pane {
    Live,
    Queue,
    Agents,
    Events,
}

impl Pane {
    fn next(self) -> Pane {
        match self {
            Pane::Live => Pane::Queue,
            Pane::Queue => Pane::Agents,
            Pane::Agents => Pane::Events,
            Pane::Events => Pane::Live,
        }
    }
}

/// Everything a frame shows, read in one go.
struct Board {
    now: Timestamp,
    stats: Stats,
    live: Vec<Claim>,
    queue: Vec<Claim>,
    agents: Vec<AgentRecord>,
    events: Vec<Event>,
    /// Where the log was read to, to see when it grows.
    cursor: u64,
}

impl Board {
    fn load(store: &dyn Store) -> Result<Board, CoordError> {
        let items = store.list(&Filter::default())?;
        let page = store.events(0)?;
        let agents = store.agents()?;
        let now = store.now();
        let stats = Stats::compute(&items, &page.events, &agents, now, STALE_AFTER);
        let (mut live, mut queue): (Vec<Claim>, Vec<Claim>) = items
            .into_iter()
            .filter(|c| matches!(c.status, Status::InProgress | Status::Pending))
            .partition(|c| c.status == Status::InProgress);
        live.sort_by_key(|c| c.claimed_at);
        // The order `next` takes them in: ready first, then by priority and
        // age (items waiting on a retry time or a dependency come after).
        queue.sort_by(|a, b| {
            ready(a, now)
                .cmp(&ready(b, now))
                .reverse()
                .then(b.priority.cmp(&a.priority))
                .then(a.posted_at.cmp(&b.posted_at))
        });
        let skip = page.events.len().saturating_sub(LATEST_EVENTS);
        Ok(Board {
            now,
            stats,
            live,
            queue,
            agents,
            events: page.events.into_iter().skip(skip).collect(),
            cursor: page.cursor,
        })
    }
}

/// Whether `item` could be taken now as far as its own fields say (its
/// dependencies are not looked up here).
fn ready(item: &Claim, now: Timestamp) -> bool {
    item.retry_at.is_none_or(|t| t <= now) && item.depends_on.is_empty()
}

/// Text from the store, safe to print: control characters (which would
/// move the cursor or change colours) shown escaped.
fn clean(text: &str) -> String {
    crate::output::safe(text)
}

/// `95s` as `1m35s`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A progress bar ten cells wide: `[#####     ] 50%`.
fn bar(percent: u8) -> String {
    let p = percent.min(100);
    let full = usize::from(p / 10);
    format!("[{}{}] {p}%", "#".repeat(full), " ".repeat(10 - full))
}

fn name(value: impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

fn pane_block(title: String, pane: Pane, focus: Pane) -> Block<'static> {
    let style = if pane == focus {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(style)
}

fn draw(frame: &mut Frame, board: &Board, focus: Pane) {
    let [top, live, middle, events] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Percentage(35),
        Constraint::Percentage(35),
        Constraint::Min(5),
    ])
    .areas(frame.area());
    let [queue, agents] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(middle);
    draw_counts(frame, top, board);
    draw_live(frame, live, board, focus);
    draw_queue(frame, queue, board, focus);
    draw_agents(frame, agents, board, focus);
    draw_events(frame, events, board, focus);
}

fn draw_counts(frame: &mut Frame, area: Rect, board: &Board) {
    let items = &board.stats.items;
    let mut spans = vec![Span::styled(
        format!("{} items  ", items.total),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (status, n) in &items.by_status {
        spans.push(Span::raw(format!("{}: {n}  ", clean(status))));
    }
    spans.push(Span::raw("| "));
    for (priority, n) in &items.by_priority {
        spans.push(Span::raw(format!("{}: {n}  ", clean(priority))));
    }
    let block = Block::default().borders(Borders::ALL).title(format!(
        "coord dashboard  {}  (Tab: pane, q: quit)",
        board.now
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)).block(block), area);
}

fn draw_live(frame: &mut Frame, area: Rect, board: &Board, focus: Pane) {
    let rows = board.live.iter().map(|c| {
        let left_text = match c.lease_expires_at {
            Some(end) if end <= board.now => "lapsed".to_owned(),
            Some(end) => short(end.saturating_duration_since(board.now)),
            None => "-".to_owned(),
        };
        let expiring = c
            .lease_expires_at
            .is_some_and(|end| end.saturating_duration_since(board.now) <= EXPIRING);
        let style = if expiring {
            Style::default().fg(Color::Red)
        } else {
            Style::default()
        };
        Row::new(vec![
            clean(&c.work_item_id),
            clean(c.agent_id.as_deref().unwrap_or("-")),
            clean(&c.work_type),
            c.priority.as_str().to_owned(),
            c.claimed_at.map_or_else(
                || "-".to_owned(),
                |t| short(board.now.saturating_duration_since(t)),
            ),
            left_text,
            c.progress.map_or_else(String::new, bar),
            clean(&c.description),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(26),
            Constraint::Length(14),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(16),
            Constraint::Min(20),
        ],
    )
    .header(
        Row::new(vec![
            "id",
            "owner",
            "work type",
            "priority",
            "age",
            "lease",
            "progress",
            "description",
        ])
        .style(Style::default().add_modifier(Modifier::UNDERLINED)),
    )
    .block(pane_block(
        format!("live claims ({})", board.live.len()),
        Pane::Live,
        focus,
    ));
    frame.render_widget(table, area);
}

fn draw_queue(frame: &mut Frame, area: Rect, board: &Board, focus: Pane) {
    let rows = board.queue.iter().map(|c| {
        let waiting = if ready(c, board.now) { "" } else { "waits" };
        Row::new(vec![
            clean(&c.work_item_id),
            clean(&c.work_type),
            c.priority.as_str().to_owned(),
            waiting.to_owned(),
            clean(&c.description),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(26),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(vec!["id", "work type", "priority", "", "description"])
            .style(Style::default().add_modifier(Modifier::UNDERLINED)),
    )
    .block(pane_block(
        format!("queue, in the order next takes it ({})", board.queue.len()),
        Pane::Queue,
        focus,
    ));
    frame.render_widget(table, area);
}

fn draw_agents(frame: &mut Frame, area: Rect, board: &Board, focus: Pane) {
    let rows = board.agents.iter().map(|a| {
        let (seen, stale) = match a.last_seen {
            Some(t) => {
                let ago = board.now.saturating_duration_since(t);
                (format!("{} ago", short(ago)), ago > STALE_AFTER)
            }
            None => ("never".to_owned(), false),
        };
        let style = if stale {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default()
        };
        Row::new(vec![
            clean(&a.agent_id),
            seen,
            if stale { "stale" } else { "" }.to_owned(),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Min(14),
            Constraint::Length(12),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new(vec!["agent", "last seen", ""])
            .style(Style::default().add_modifier(Modifier::UNDERLINED)),
    )
    .block(pane_block(
        format!("agents ({})", board.agents.len()),
        Pane::Agents,
        focus,
    ));
    frame.render_widget(table, area);
}

fn draw_events(frame: &mut Frame, area: Rect, board: &Board, focus: Pane) {
    // The newest that fit, newest last.
    let fit = usize::from(area.height.saturating_sub(2));
    let skip = board.events.len().saturating_sub(fit);
    let lines: Vec<Line> = board.events[skip..]
        .iter()
        .map(|e| {
            Line::raw(format!(
                "{}  {:<10} {}  {}  by {}",
                e.time,
                name(e.event),
                clean(e.work_item_id.as_deref().unwrap_or("-")),
                clean(e.work_type.as_deref().unwrap_or("")),
                clean(e.agent.as_deref().unwrap_or("-")),
            ))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(pane_block("latest events".to_owned(), Pane::Events, focus)),
        area,
    );
}

/// `--once`: one frame as plain text, the terminal's size (or 120x40).
pub fn once(store: &dyn Store) -> Result<String, CoordError> {
    let board = Board::load(store)?;
    let (width, height) = ratatui::crossterm::terminal::size()
        .ok()
        .filter(|(w, h)| *w > 0 && *h > 0 && io::IsTerminal::is_terminal(&io::stdout()))
        .unwrap_or(ONCE_SIZE);
    let mut terminal = Terminal::new(TestBackend::new(width, height)).map_err(io_error)?;
    terminal
        .draw(|frame| draw(frame, &board, Pane::Live))
        .map_err(io_error)?;
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width)
            .map(|x| buffer[(x, y)].symbol())
            .collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    Ok(text)
}

fn io_error(e: impl std::fmt::Display) -> CoordError {
    CoordError::internal(format!("cannot draw the dashboard: {e}"))
}

/// Puts the terminal back: on drop, on any way out.
struct Screen;

impl Screen {
    fn enter() -> io::Result<Screen> {
        enable_raw_mode()?;
        if let Err(e) = execute!(io::stdout(), EnterAlternateScreen) {
            let _ = disable_raw_mode();
            return Err(e);
        }
        // A panic puts the terminal back before its message prints.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        Ok(Screen)
    }
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen);
    let _ = io::stdout().flush();
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// The live dashboard, until `q`, Esc or Ctrl-C. Refused without a
/// terminal (`--once` is for that).
pub fn live(store: &dyn Store) -> Result<(), CoordError> {
    if !io::IsTerminal::is_terminal(&io::stdout()) || !io::IsTerminal::is_terminal(&io::stdin()) {
        return Err(CoordError::invalid_input(
            "coord dashboard draws on a terminal, and stdin or stdout is not one: use \
             --once to print one frame as text",
        ));
    }
    let mut board = Board::load(store)?;
    // A store that can wait for its next change (PostgreSQL) wakes the
    // board from a thread of its own; a directory's log is looked at.
    let waiter = store.wakeup().ok().flatten();
    let interrupt = waiter.as_ref().and_then(|w| w.interrupter());
    let woken = AtomicBool::new(false);
    let stopped = AtomicBool::new(false);
    let watched = waiter.is_some();
    let _screen = Screen::enter().map_err(io_error)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout())).map_err(io_error)?;
    terminal.clear().map_err(io_error)?;
    std::thread::scope(|scope| {
        if let Some(mut waiter) = waiter {
            let (woken, stopped) = (&woken, &stopped);
            scope.spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    match waiter.wait(RELOAD_EVERY) {
                        Ok(true) => woken.store(true, Ordering::SeqCst),
                        Ok(false) => {}
                        Err(_) => std::thread::sleep(LOOK_EVERY),
                    }
                }
            });
        }
        let mut focus = Pane::Live;
        let mut loaded = Instant::now();
        let mut looked = Instant::now();
        let ended = loop {
            if let Err(e) = terminal.draw(|frame| draw(frame, &board, focus)) {
                break Err(io_error(e));
            }
            match poll_key() {
                Err(e) => break Err(e),
                Ok(Some(Keypress::Quit)) => break Ok(()),
                Ok(Some(Keypress::NextPane)) => {
                    focus = focus.next();
                    continue;
                }
                Ok(Some(Keypress::Other)) => continue,
                Ok(None) => {}
            }
            // News in the log, or time for a reload anyway.
            let grown = if watched {
                woken.swap(false, Ordering::SeqCst)
            } else {
                looked.elapsed() >= LOOK_EVERY
                    && store
                        .events(board.cursor)
                        .is_ok_and(|page| !page.events.is_empty())
            };
            looked = Instant::now();
            if grown || loaded.elapsed() >= RELOAD_EVERY {
                if let Ok(fresh) = Board::load(store) {
                    board = fresh;
                }
                loaded = Instant::now();
            }
        };
        stopped.store(true, Ordering::SeqCst);
        if let Some(interrupt) = &interrupt {
            interrupt();
        }
        ended
    })
}

/// What a key asks for.
enum Keypress {
    Quit,
    NextPane,
    Other,
}

/// A key pressed within `LOOK_EVERY`, if any.
fn poll_key() -> Result<Option<Keypress>, CoordError> {
    if !event::poll(LOOK_EVERY).map_err(io_error)? {
        return Ok(None);
    }
    let Key::Key(key) = event::read().map_err(io_error)? else {
        return Ok(Some(Keypress::Other));
    };
    if key.kind != KeyEventKind::Press {
        return Ok(Some(Keypress::Other));
    }
    let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
    Ok(Some(match key.code {
        KeyCode::Char('q') | KeyCode::Esc => Keypress::Quit,
        _ if ctrl_c => Keypress::Quit,
        KeyCode::Tab => Keypress::NextPane,
        _ => Keypress::Other,
    }))
}
