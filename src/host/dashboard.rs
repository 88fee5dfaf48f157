//! The TTY dashboard (SPEC §5.8): per service state, pid, port, uptime and
//! version; the pairing details; the last log lines; keys `q` quit, `d`
//! detach, `l` toggle the full log. The terminal is restored on every exit
//! path, panics included (the panic hook runs even with `panic = "abort"`).

use std::io::Stdout;
use std::time::Duration;

use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Starting,
    Healthy,
    Degraded,
    Unhealthy,
    Exited,
    Stopping,
}

impl ServiceState {
    fn label(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Healthy => "healthy",
            ServiceState::Degraded => "degraded",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Exited => "exited",
            ServiceState::Stopping => "stopping",
        }
    }

    fn color(self) -> Color {
        match self {
            ServiceState::Healthy => Color::Green,
            ServiceState::Degraded | ServiceState::Starting | ServiceState::Stopping => {
                Color::Yellow
            }
            ServiceState::Unhealthy | ServiceState::Exited => Color::Red,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub name: String,
    pub state: ServiceState,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub uptime: Option<Duration>,
    pub version: Option<String>,
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub run_id: String,
    pub services: Vec<ServiceRow>,
    /// Label and value of each pairing detail (empty until ready).
    pub pairing: Vec<(String, String)>,
    pub logs: Vec<String>,
    pub full_log: bool,
    /// A line of status above the key help (starting, stopping, …).
    pub status: String,
    pub ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Detach,
    ToggleLog,
}

/// The action a key press asks for (Ctrl-C quits: raw mode turns it into a key).
pub fn action_for(key: &KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Some(Action::Quit),
        KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Some(Action::Quit),
        KeyCode::Char('d') | KeyCode::Char('D') => Some(Action::Detach),
        KeyCode::Char('l') | KeyCode::Char('L') => Some(Action::ToggleLog),
        _ => None,
    }
}

/// `1h02m`, `3m04s`, `12s`.
pub fn format_uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

pub fn render(frame: &mut Frame, view: &View) {
    let area = frame.area();
    let [body, footer] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    if view.full_log {
        render_logs(frame, body, view, "log (l: back)");
    } else {
        let services_height = view.services.len() as u16 + 3;
        let pairing_height = view.pairing.len().max(1) as u16 + 2;
        let [services, pairing, logs] = Layout::vertical([
            Constraint::Length(services_height),
            Constraint::Length(pairing_height),
            Constraint::Min(3),
        ])
        .areas(body);
        render_services(frame, services, view);
        render_pairing(frame, pairing, view);
        render_logs(frame, logs, view, "recent log (l: full log)");
    }
    let keys = if view.ready {
        "q quit  d detach  l log"
    } else {
        "q quit  l log  (d detach once ready)"
    };
    let footer_line = Line::from(vec![
        Span::styled(
            format!(" {} ", view.status),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(" "),
        Span::styled(keys, Style::default().fg(Color::DarkGray)),
    ]);
    frame.render_widget(Paragraph::new(footer_line), footer);
}

fn render_services(frame: &mut Frame, area: Rect, view: &View) {
    let header = Row::new(["service", "state", "pid", "port", "uptime", "version"])
        .style(Style::default().add_modifier(Modifier::BOLD));
    let dash = || "-".to_string();
    let rows = view.services.iter().map(|s| {
        Row::new(vec![
            Cell::from(s.name.clone()),
            Cell::from(s.state.label()).style(Style::default().fg(s.state.color())),
            Cell::from(s.pid.map_or_else(dash, |p| p.to_string())),
            Cell::from(s.port.map_or_else(dash, |p| p.to_string())),
            Cell::from(s.uptime.map_or_else(dash, format_uptime)),
            Cell::from(s.version.clone().unwrap_or_else(dash)),
        ])
    });
    let widths = [
        Constraint::Length(16),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Min(8),
    ];
    let table = Table::new(rows, widths).header(header).block(
        Block::default()
            .borders(Borders::ALL)
            .title(format!(" openwrk · run {} ", view.run_id)),
    );
    frame.render_widget(table, area);
}

fn render_pairing(frame: &mut Frame, area: Rect, view: &View) {
    let lines: Vec<Line> = if view.pairing.is_empty() {
        vec![Line::from("waiting for every service to be healthy…")]
    } else {
        view.pairing
            .iter()
            .map(|(label, value)| {
                Line::from(vec![
                    Span::styled(format!("{label:<14}"), Style::default().fg(Color::Cyan)),
                    Span::raw(value.clone()),
                ])
            })
            .collect()
    };
    let block = Block::default().borders(Borders::ALL).title(" pairing ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn render_logs(frame: &mut Frame, area: Rect, view: &View, title: &str) {
    let visible = area.height.saturating_sub(2) as usize;
    let start = view.logs.len().saturating_sub(visible);
    let lines: Vec<Line> = view.logs[start..]
        .iter()
        .map(|l| Line::from(l.as_str()))
        .collect();
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {title} "));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// Puts the terminal back: cooked mode, main screen, visible cursor.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

/// The dashboard's hold on the terminal; dropping it restores the terminal.
pub struct Session {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Session {
    /// Raw mode and the alternate screen, with a panic hook that undoes both.
    pub fn enter() -> std::io::Result<Session> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        let entered = execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .and_then(|_| Terminal::new(CrosstermBackend::new(std::io::stdout())));
        match entered {
            Ok(terminal) => Ok(Session { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    pub fn draw(&mut self, view: &View) -> std::io::Result<()> {
        draw(&mut self.terminal, view)
    }

    /// The next key action, waiting at most `wait`.
    pub fn next_action(&mut self, wait: Duration) -> std::io::Result<Option<Action>> {
        let mut wait = wait;
        while event::poll(wait)? {
            wait = Duration::ZERO;
            if let Event::Key(key) = event::read()? {
                if let Some(action) = action_for(&key) {
                    return Ok(Some(action));
                }
            }
        }
        Ok(None)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        restore();
    }
}

/// Draws `view` on any backend (the test backend in tests).
pub fn draw<B: Backend>(terminal: &mut Terminal<B>, view: &View) -> Result<(), B::Error> {
    terminal.draw(|f| render(f, view)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    fn view() -> View {
        View {
            run_id: "run-7".into(),
            services: vec![
                ServiceRow {
                    name: "opencode".into(),
                    state: ServiceState::Healthy,
                    pid: Some(4242),
                    port: Some(4096),
                    uptime: Some(Duration::from_secs(75)),
                    version: Some("1.2.3".into()),
                },
                ServiceRow {
                    name: "owpenbot".into(),
                    state: ServiceState::Degraded,
                    pid: Some(4343),
                    port: Some(3005),
                    uptime: None,
                    version: None,
                },
            ],
            pairing: vec![
                ("OpenWork URL".into(), "http://127.0.0.1:8787".into()),
                ("client token".into(), "tok123".into()),
            ],
            logs: (0..50).map(|i| format!("log line {i}")).collect(),
            full_log: false,
            status: "ready".into(),
            ready: true,
        }
    }

    fn screen(view: &View, w: u16, h: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        draw(&mut terminal, view).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn shows_services_pairing_and_recent_logs() {
        let s = screen(&view(), 100, 30);
        for needle in [
            "run-7",
            "opencode",
            "healthy",
            "4242",
            "4096",
            "1m15s",
            "1.2.3",
            "owpenbot",
            "degraded",
            "OpenWork URL",
            "http://127.0.0.1:8787",
            "tok123",
            "log line 49",
            "q quit  d detach  l log",
        ] {
            assert!(s.contains(needle), "missing {needle:?}:\n{s}");
        }
        assert!(!s.contains("log line 0 "), "old lines scroll away:\n{s}");
    }

    #[test]
    fn full_log_hides_the_rest_and_small_screens_do_not_panic() {
        let mut v = view();
        v.full_log = true;
        let s = screen(&v, 80, 40);
        assert!(!s.contains("OpenWork URL"));
        assert!(s.contains("log line 49"));
        assert!(s.contains("log line 20"));
        screen(&v, 10, 3);
        v.full_log = false;
        screen(&v, 12, 4);
        let starting = View {
            services: vec![ServiceRow {
                name: "opencode".into(),
                state: ServiceState::Starting,
                pid: None,
                port: None,
                uptime: None,
                version: None,
            }],
            ..View::default()
        };
        let s = screen(&starting, 80, 20);
        assert!(s.contains("starting"));
        assert!(s.contains("waiting for every service"));
        assert!(s.contains("d detach once ready"));
    }

    #[test]
    fn keys_map_to_actions() {
        let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        assert_eq!(action_for(&key('q')), Some(Action::Quit));
        assert_eq!(action_for(&key('d')), Some(Action::Detach));
        assert_eq!(action_for(&key('l')), Some(Action::ToggleLog));
        assert_eq!(action_for(&key('x')), None);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action_for(&ctrl_c), Some(Action::Quit));
        assert_eq!(format_uptime(Duration::from_secs(3725)), "1h02m");
    }
}
