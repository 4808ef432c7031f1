//! How the command line prints what the API returns, as the `ollama` CLI does: tables padded
//! to their widest cell, sizes in decimal units, times relative to now.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// Space between table columns.
const COLUMN_GAP: &str = "    ";

/// Rows under a header, each column padded to its widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}{COLUMN_GAP}", width = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

/// Bytes as Ollama's `format.HumanBytes` prints them: `291 MB`, `1.5 GB`, `12 KB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "KB"),
    ];
    let Some(&(scale, unit)) = UNITS.iter().find(|(scale, _)| bytes >= *scale) else {
        return format!("{bytes} B");
    };
    let value = bytes as f64 / scale as f64;
    if value >= 10.0 || value.fract() == 0.0 {
        format!("{} {unit}", value as u64)
    } else {
        format!("{value:.1} {unit}")
    }
}

/// A duration in words, as Go's `units.HumanDuration` (which Ollama uses) says it.
fn human_duration(seconds: i64) -> String {
    let minutes = seconds / 60;
    let hours = ((seconds as f64) / 3600.0 + 0.5) as i64;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// An RFC 3339 time relative to `now`: `2 minutes ago`, `4 minutes from now`, or `Forever`
/// beyond twenty years ahead (a model kept loaded for good); `fallback` when unreadable.
pub fn human_time(rfc3339: &str, now: DateTime<Utc>, fallback: &str) -> String {
    let Ok(at) = DateTime::parse_from_rfc3339(rfc3339) else {
        return fallback.to_string();
    };
    let delta = now.signed_duration_since(at).num_seconds();
    if delta < -20 * 365 * 24 * 3600 {
        "Forever".into()
    } else if delta < 0 {
        format!("{} from now", human_duration(-delta))
    } else {
        format!("{} ago", human_duration(delta))
    }
}

/// Where a loaded model runs, from `/api/ps`'s `size` and `size_vram`: `100% CPU`,
/// `100% GPU`, or the split (`48%/52% CPU/GPU`).
pub fn processor(size: u64, size_vram: u64) -> String {
    if size_vram == 0 {
        "100% CPU".into()
    } else if size_vram == size {
        "100% GPU".into()
    } else if size_vram > size || size == 0 {
        "Unknown".into()
    } else {
        let cpu = ((size - size_vram) as f64 / size as f64 * 100.0).round() as u64;
        format!("{cpu}%/{}% CPU/GPU", 100 - cpu)
    }
}

/// The first 12 hex digits of a digest (`sha256:` dropped).
pub fn short_id(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// `herd show`'s summary of an `/api/show` answer: model facts, capabilities, parameters,
/// system prompt and license, as sections.
pub fn show_summary(info: &Value) -> String {
    let model_info = &info["model_info"];
    let architecture = model_info["general.architecture"].as_str().unwrap_or_default();
    let arch_value = |key: &str| model_info[format!("{architecture}.{key}")].to_string();
    let mut model_rows = vec![vec!["architecture".to_string(), architecture.to_string()]];
    if let Some(size) = info["details"]["parameter_size"].as_str().filter(|s| !s.is_empty()) {
        model_rows.push(vec!["parameters".into(), size.into()]);
    }
    for (label, key) in [
        ("context length", "context_length"),
        ("embedding length", "embedding_length"),
    ] {
        if !model_info[format!("{architecture}.{key}")].is_null() {
            model_rows.push(vec![label.into(), arch_value(key)]);
        }
    }
    if let Some(quantization) = info["details"]["quantization_level"].as_str() {
        model_rows.push(vec!["quantization".into(), quantization.into()]);
    }
    let mut sections = vec![("Model", model_rows)];
    // As `ollama show`: a vision projector's own section.
    let projector = &info["projector_info"];
    if projector.is_object() {
        let mut rows = vec![vec![
            "architecture".to_string(),
            projector["general.architecture"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ]];
        if let Some(count) = projector["general.parameter_count"].as_u64() {
            rows.push(vec!["parameters".into(), crate::gguf::human_number(count)]);
        }
        for (label, key) in [
            ("embedding length", "clip.vision.embedding_length"),
            ("dimensions", "clip.vision.projection_dim"),
        ] {
            if !projector[key].is_null() {
                rows.push(vec![label.into(), projector[key].to_string()]);
            }
        }
        sections.push(("Projector", rows));
    }
    let capabilities: Vec<Vec<String>> = info["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(|c| vec![c.to_string()]))
        .collect();
    sections.push(("Capabilities", capabilities));
    let parameters: Vec<Vec<String>> = info["parameters"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(char::is_whitespace)?;
            Some(vec![name.to_string(), value.trim().to_string()])
        })
        .collect();
    sections.push(("Parameters", parameters));
    for (title, key) in [("System", "system"), ("License", "license")] {
        let lines: Vec<Vec<String>> = info[key]
            .as_str()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(2)
            .map(|l| vec![l.trim().to_string()])
            .collect();
        sections.push((title, lines));
    }
    let mut out = String::new();
    for (title, rows) in sections.into_iter().filter(|(_, rows)| !rows.is_empty()) {
        out.push_str(&format!("  {title}\n"));
        let width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
        for row in rows {
            match row.as_slice() {
                [name, value] => out.push_str(&format!("    {name:<width$}{COLUMN_GAP}{value}\n")),
                [text] => out.push_str(&format!("    {text}\n")),
                _ => {}
            }
        }
        out.push('\n');
    }
    out
}

/// Nanoseconds as Go's `time.Duration.String()` writes them: `57.2174ms`, `5.4530945s`, `1m5s`.
pub fn go_duration(nanos: u64) -> String {
    let trimmed = |value: f64, decimals: usize| {
        let text = format!("{value:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        text.to_string()
    };
    match nanos {
        0 => "0s".into(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", trimmed(n as f64 / 1e3, 3)),
        n if n < 1_000_000_000 => format!("{}ms", trimmed(n as f64 / 1e6, 6)),
        n => {
            let hours = n / 3_600_000_000_000;
            let minutes = n / 60_000_000_000 % 60;
            let seconds = trimmed((n % 60_000_000_000) as f64 / 1e9, 9);
            match (hours, minutes) {
                (0, 0) => format!("{seconds}s"),
                (0, m) => format!("{m}m{seconds}s"),
                (h, m) => format!("{h}h{m}m{seconds}s"),
            }
        }
    }
}

/// `--verbose`'s statistics after an answer, from its final chunk, as `ollama run` prints them.
pub fn verbose_stats(last: &Value) -> String {
    let number = |key: &str| last[key].as_u64().unwrap_or(0);
    let rate = |count: u64, nanos: u64| {
        if nanos == 0 {
            0.0
        } else {
            count as f64 / (nanos as f64 / 1e9)
        }
    };
    let mut out = format!(
        "total duration:       {}
",
        go_duration(number("total_duration"))
    );
    out += &format!(
        "load duration:        {}
",
        go_duration(number("load_duration"))
    );
    let (prompt_count, prompt_nanos) = (number("prompt_eval_count"), number("prompt_eval_duration"));
    out += &format!(
        "prompt eval count:    {prompt_count} token(s)
"
    );
    out += &format!(
        "prompt eval duration: {}
",
        go_duration(prompt_nanos)
    );
    out += &format!(
        "prompt eval rate:     {:.2} tokens/s
",
        rate(prompt_count, prompt_nanos)
    );
    let (count, nanos) = (number("eval_count"), number("eval_duration"));
    out += &format!(
        "eval count:           {count} token(s)
"
    );
    out += &format!(
        "eval duration:        {}
",
        go_duration(nanos)
    );
    out += &format!(
        "eval rate:            {:.2} tokens/s
",
        rate(count, nanos)
    );
    out
}

/// Shows a pull's or push's status lines: one progress bar per blob (size, speed, ETA) on a
/// terminal, else plain lines, one per status and one per finished blob.
pub struct TransferProgress {
    bars: Option<MultiProgress>,
    blobs: HashMap<String, ProgressBar>,
    finished: HashSet<String>,
    last_status: String,
}

impl TransferProgress {
    /// Bars when `terminal`, plain lines otherwise.
    pub fn new(terminal: bool) -> Self {
        Self {
            bars: terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            blobs: HashMap::new(),
            finished: HashSet::new(),
            last_status: String::new(),
        }
    }

    /// Takes one status line of the API's stream.
    pub fn update(&mut self, line: &Value) {
        let status = line["status"].as_str().unwrap_or_default();
        let digest = line["digest"].as_str();
        let total = line["total"].as_u64();
        match (digest, total) {
            (Some(digest), Some(total)) => {
                let completed = line["completed"].as_u64().unwrap_or(0).min(total);
                self.blob(status, digest, total, completed);
            }
            _ if status != self.last_status => {
                match &self.bars {
                    Some(bars) => {
                        let _ = bars.println(status);
                    }
                    None => eprintln!("{status}"),
                }
                self.last_status = status.to_string();
            }
            _ => {}
        }
    }

    fn blob(&mut self, status: &str, digest: &str, total: u64, completed: u64) {
        let Some(bars) = &self.bars else {
            if completed == total && self.finished.insert(digest.to_string()) {
                eprintln!("{status}: {} done", human_bytes(total));
            }
            return;
        };
        let bar = self.blobs.entry(digest.to_string()).or_insert_with(|| {
            let style = ProgressStyle::with_template(
                "{prefix}: {percent:>3}% ▕{wide_bar}▏ {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("██ ");
            bars.add(ProgressBar::new(total).with_style(style).with_prefix(status.to_string()))
        });
        bar.set_position(completed);
        if completed == total && self.finished.insert(digest.to_string()) {
            bar.finish();
        }
    }

    /// Leaves the bars as they are on screen.
    pub fn finish(&mut self) {
        for bar in self.blobs.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// Prints a streamed answer: reasoning first, between `Thinking...` and `...done thinking.`
/// as Ollama prints it (or left out), then the answer.
pub struct AnswerPrinter {
    hide_thinking: bool,
    thinking: bool,
}

impl AnswerPrinter {
    /// A printer; `hide_thinking` leaves the reasoning out.
    pub fn new(hide_thinking: bool) -> Self {
        Self {
            hide_thinking,
            thinking: false,
        }
    }

    /// The text to print for one chunk's reasoning and answer pieces.
    pub fn piece(&mut self, thinking: &str, content: &str) -> String {
        let mut out = String::new();
        if !thinking.is_empty() && !self.hide_thinking {
            if !self.thinking {
                self.thinking = true;
                out.push_str("Thinking...\n");
            }
            out.push_str(thinking);
        }
        if !content.is_empty() {
            if self.thinking {
                self.thinking = false;
                out.push_str("\n...done thinking.\n\n");
            }
            out.push_str(content);
        }
        out
    }
}

/// Wraps streamed text at word boundaries to a terminal's width, as `ollama run` does: a
/// word that would cross the edge starts the next line. The word being written is held
/// until it ends, so it is never split.
pub struct WordWrap {
    width: usize,
    column: usize,
    /// Spaces after the last word, printed once the next word shows it fits the line.
    spaces: usize,
    word: String,
}

impl WordWrap {
    /// A wrapper for lines of `width` columns.
    pub fn new(width: usize) -> Self {
        Self {
            width: width.max(1),
            column: 0,
            spaces: 0,
            word: String::new(),
        }
    }

    /// The text to print for `piece`.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::new();
        for c in piece.chars() {
            match c {
                '\n' => {
                    self.flush_word(&mut out);
                    self.spaces = 0;
                    self.column = 0;
                    out.push('\n');
                }
                ' ' => {
                    self.flush_word(&mut out);
                    self.spaces += 1;
                }
                c => self.word.push(c),
            }
        }
        out
    }

    /// Whatever is still held, at the end of an answer.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.flush_word(&mut out);
        self.column = 0;
        self.spaces = 0;
        out
    }

    fn flush_word(&mut self, out: &mut String) {
        let length = self.word.chars().count();
        if length == 0 {
            return;
        }
        if self.column > 0 && self.column + self.spaces + length > self.width {
            // The spaces that ended the line go with the line break.
            out.push('\n');
            self.column = 0;
        } else {
            out.extend(std::iter::repeat_n(' ', self.spaces));
            self.column += self.spaces;
        }
        self.spaces = 0;
        out.push_str(&self.word);
        self.column += length;
        self.word.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projector_has_its_section_after_the_model() {
        let info = serde_json::json!({
            "model_info": {"general.architecture": "gemma3"},
            "projector_info": {"general.architecture": "clip", "general.parameter_count": 146_176,
                               "clip.vision.embedding_length": 64, "clip.vision.projection_dim": 640},
            "capabilities": ["completion", "vision"],
        });
        let shown = show_summary(&info);
        let projector = shown.find("  Projector\n").expect(&shown);
        assert!(shown.find("  Model\n").unwrap() < projector && projector < shown.find("  Capabilities").unwrap());
        for line in [
            "architecture        clip",
            "parameters          146K",
            "embedding length    64",
            "dimensions          640",
            "    vision",
        ] {
            assert!(shown.contains(line), "{line:?} in\n{shown}");
        }
        assert!(!show_summary(&serde_json::json!({"model_info": {}})).contains("Projector"));
    }

    #[test]
    fn sizes_follow_ollamas_human_bytes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(291_000_000), "291 MB");
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
        assert_eq!(human_bytes(2_000_000_000), "2 GB");
        assert_eq!(human_bytes(12_345), "12 KB");
    }

    #[test]
    fn times_follow_go_units() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z").unwrap().to_utc();
        let at = |s| human_time(s, now, "Never");
        assert_eq!(at("2026-12-02T11:58:00Z"), "2 minutes ago");
        assert_eq!(at("2026-12-02T12:04:30Z"), "4 minutes from now");
        assert_eq!(at("2026-12-02T11:59:59.5Z"), "Less than a second ago");
        assert_eq!(at("2026-12-02T11:59:00Z"), "About a minute ago");
        assert_eq!(at("2026-12-02T11:00:00Z"), "About an hour ago");
        assert_eq!(at("2026-11-29T12:00:00Z"), "3 days ago");
        assert_eq!(at("2318-01-01T00:00:00Z"), "Forever");
        assert_eq!(at("not a time"), "Never");
    }

    #[test]
    fn durations_follow_go() {
        assert_eq!(go_duration(57_217_400), "57.2174ms");
        assert_eq!(go_duration(5_453_094_500), "5.4530945s");
        assert_eq!(go_duration(65_000_000_000), "1m5s");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(0), "0s");
        let stats = verbose_stats(&serde_json::json!({
            "total_duration": 2_000_000_000u64, "load_duration": 1_000_000,
            "prompt_eval_count": 10, "prompt_eval_duration": 100_000_000,
            "eval_count": 20, "eval_duration": 1_000_000_000u64
        }));
        assert!(stats.contains("prompt eval rate:     100.00 tokens/s"), "{stats}");
        assert!(stats.contains("eval rate:            20.00 tokens/s"), "{stats}");
        assert!(stats.starts_with("total duration:       2s\n"), "{stats}");
    }

    #[test]
    fn processor_splits_like_ollama_ps() {
        assert_eq!(processor(1000, 0), "100% CPU");
        assert_eq!(processor(1000, 1000), "100% GPU");
        assert_eq!(processor(1000, 520), "48%/52% CPU/GPU");
        assert_eq!(processor(0, 5), "Unknown");
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = vec![vec!["gemma3:270m".into(), "291 MB".into(), "now".into()]];
        assert_eq!(
            table(&["NAME", "SIZE", "MODIFIED"], &rows),
            "NAME           SIZE      MODIFIED\ngemma3:270m    291 MB    now\n"
        );
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }

    #[test]
    fn reasoning_prints_between_ollamas_markers_or_not_at_all() {
        let mut printer = AnswerPrinter::new(false);
        let printed: String = [("Let me", ""), (" see.", ""), ("", "Blue."), ("", " Yes")]
            .iter()
            .map(|(t, c)| printer.piece(t, c))
            .collect();
        assert_eq!(printed, "Thinking...\nLet me see.\n...done thinking.\n\nBlue. Yes");
        let mut hidden = AnswerPrinter::new(true);
        assert_eq!(hidden.piece("hmm", "") + &hidden.piece("", "Blue."), "Blue.");
    }

    #[test]
    fn words_wrap_at_the_width_and_are_never_split() {
        let mut wrap = WordWrap::new(12);
        let text: String = ["The sky is bl", "ue because of ", "Rayleigh scattering.\nYes"]
            .iter()
            .map(|p| wrap.push(p))
            .collect::<String>()
            + &wrap.finish();
        assert_eq!(text, "The sky is\nblue because\nof Rayleigh\nscattering.\nYes");
        assert!(text.lines().all(|l| l.chars().count() <= 12), "{text}");
        // A word longer than the line stands alone.
        let mut wrap = WordWrap::new(4);
        assert_eq!(wrap.push("a abcdefgh b") + &wrap.finish(), "a\nabcdefgh\nb");
    }
}
