//! `herd run MODEL` interactive, driven through a real pseudo-terminal (util-linux `script`
//! gives the child its own terminal, so Ctrl-C is a real SIGINT and line editing is live).

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_tests::{binary, TestServer, MODEL};
use serde_json::json;

/// A `herd run` in a terminal: what it printed so far, and its keyboard.
struct Terminal {
    child: Child,
    keys: ChildStdin,
    screen: Arc<Mutex<String>>,
    /// How much of the screen the last `expect` consumed.
    seen: usize,
    _home: tempfile::TempDir,
}

impl Terminal {
    /// `herd run` with `args` in a terminal `columns` wide.
    fn run(server: &TestServer, args: &str, columns: u16) -> Self {
        let home = tempfile::tempdir().unwrap();
        // `exec`, so that no shell sits between the terminal and herd: a shell that catches the
        // test's Ctrl-C (dash does) would kill itself with it once herd has left.
        let command = format!(
            "stty cols {columns} rows 24; exec {} run {args}",
            binary("herd").display()
        );
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env(
                "HERD_HOST",
                server.url("").trim_start_matches("http://").trim_end_matches('/'),
            )
            .env("HOME", home.path())
            .env("TERM", "xterm")
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux) is installed");
        let keys = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let screen = Arc::new(Mutex::new(String::new()));
        let filled = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                filled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            keys,
            screen,
            seen: 0,
            _home: home,
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    /// Types a line and Enter.
    fn line(&mut self, text: &str) {
        self.type_keys(&format!("{text}\r"));
    }

    /// Waits until `text` appears after what was already seen; returns what came before it.
    fn expect(&mut self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            {
                let screen = self.screen.lock().unwrap();
                if let Some(at) = screen[self.seen..].find(text) {
                    let before = screen[self.seen..self.seen + at].to_string();
                    self.seen += at + text.len();
                    return before;
                }
            }
            if Instant::now() > deadline {
                let rest = self.screen.lock().unwrap()[self.seen..].to_string();
                panic!("{text:?} did not appear; the screen since the last match:\n{rest}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

const SHORT: Duration = Duration::from_secs(30);

#[test]
fn the_interactive_chat_takes_commands_multi_line_input_and_ctrl_c() {
    let server = TestServer::with_model();
    let mut term = Terminal::run(&server, MODEL, 120);
    term.expect(">>> ", SHORT);

    term.line("/set parameter num_predict 8");
    term.expect("Set parameter 'num_predict' to '8'", SHORT);
    term.line("/set system You are terse.");
    term.expect("Set system message.", SHORT);
    term.line("/show system");
    term.expect("/show system", SHORT);
    term.expect("You are terse.", SHORT);
    term.line("/show parameters");
    term.expect("User defined parameters:", SHORT);
    term.expect("num_predict", SHORT);
    term.expect("Model defined parameters:", SHORT);
    term.expect("temperature", SHORT);
    term.line("/?");
    term.expect("Use \"\"\" to begin a multi-line message.", SHORT);
    term.line("/show info");
    term.expect("Model", SHORT);
    term.expect("quantization", SHORT);
    term.line("/show modelfile");
    term.expect("FROM ", SHORT);
    term.line("/nonsense");
    term.expect("Unknown command '/nonsense'. Type /? for help", SHORT);

    // Multi-line input between triple quotes is one message.
    term.line("\"\"\"Tell me");
    term.expect("... ", SHORT);
    term.line("about cats\"\"\"");
    term.expect(">>> ", Duration::from_secs(60));

    // Ctrl-C stops a long answer and returns to the prompt; the server cancels it.
    term.line("/set parameter num_predict 4000");
    term.expect("Set parameter 'num_predict' to '4000'", SHORT);
    term.expect(">>> ", SHORT);
    term.line("Write a very long story about the sea.");
    term.expect("about the sea.", SHORT);
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    term.type_keys("\u{3}");
    term.expect(">>> ", SHORT);
    assert!(started.elapsed() < Duration::from_secs(10));
    server.wait_for("the runner to cancel", SHORT, || {
        server.log().contains("request cancelled")
    });

    // The session (without the cancelled question) saves as a model.
    term.line("/save saved:1");
    term.expect("Created new model 'saved:1'", SHORT);
    let (status, shown) = server.post("/api/show", &json!({ "model": "saved:1" }));
    assert_eq!(status, 200, "{shown}");
    let messages = shown["messages"].as_array().unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(messages.len(), 2, "{shown}");
    assert_eq!(messages[0]["content"], "Tell me\nabout cats");
    assert_eq!(shown["system"], "You are terse.");

    // Ctrl-C at the prompt does not leave; /clear empties the session; /bye leaves.
    term.type_keys("\u{3}");
    term.expect("Use Ctrl + d or /bye to exit.", SHORT);
    term.line("/clear");
    term.expect("Cleared session context", SHORT);
    term.line("/load saved:1");
    term.expect("Loading model 'saved:1'", SHORT);
    term.line("/show license");
    term.expect("No license was specified for this model.", SHORT);
    term.line("/bye");
    let deadline = Instant::now() + SHORT;
    let status = loop {
        if let Some(status) = term.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "/bye did not leave");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// The text with terminal escape sequences and carriage returns taken out.
fn plain(screen: &str) -> String {
    let mut out = String::new();
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final letter (or `~`).
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() || c == '~' {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn answers_wrap_at_the_terminal_width_unless_told_not_to() {
    let server = TestServer::start();
    server.import_model_with(MODEL, "PARAMETER num_predict 60\nPARAMETER temperature 0");
    for (args, wrapped) in [(MODEL.to_string(), true), (format!("{MODEL} --nowordwrap"), false)] {
        let mut term = Terminal::run(&server, &args, 40);
        term.expect(">>> ", SHORT);
        term.line("Tell me about the history of the Roman Empire.");
        term.expect("Roman Empire.", SHORT);
        let answer = plain(&term.expect(">>> ", Duration::from_secs(60)));
        let widest = answer.lines().map(|l| l.chars().count()).max().unwrap_or_default();
        if wrapped {
            // 40 columns less Ollama's margin of 5; a word longer than that may stand alone.
            assert!(
                answer
                    .lines()
                    .all(|l| l.chars().count() <= 35 || !l.trim().contains(' ')),
                "{answer}"
            );
            assert!(answer.trim().lines().count() > 1, "{answer}");
        } else {
            assert!(widest > 35, "not wrapped, the answer runs past the margin: {answer}");
        }
        term.line("/bye");
    }
}
