//! Turns generated token bytes into text a client may see: whole UTF-8 characters only,
//! and never any part of a stop string, even when it spans several tokens.

/// What the next piece of output is, after feeding the bytes of one token.
#[derive(Debug, PartialEq, Eq)]
pub enum Emit {
    /// Text safe to send now (may be empty while bytes are held back).
    Text(String),
    /// A stop string was found: send this text, then end the generation.
    Stop(String),
}

/// Accumulates token bytes and releases text that is complete and free of stop strings.
pub struct TextOutput {
    stops: Vec<String>,
    /// Bytes of an incomplete UTF-8 character at the end of the last token.
    partial_utf8: Vec<u8>,
    /// Decoded text held back because its end could be the start of a stop string.
    pending: String,
}

impl TextOutput {
    /// An output filter that ends generation at any of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            partial_utf8: Vec::new(),
            pending: String::new(),
        }
    }

    /// Feeds the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Emit {
        self.partial_utf8.extend_from_slice(bytes);
        let decoded = take_complete_utf8(&mut self.partial_utf8);
        self.pending.push_str(&decoded);

        if let Some(at) = self.earliest_stop() {
            let text = self.pending[..at].to_string();
            self.pending.clear();
            self.partial_utf8.clear();
            return Emit::Stop(text);
        }
        let keep = self.longest_stop_prefix_suffix();
        let release = self.pending.len() - keep;
        let text = self.pending[..release].to_string();
        self.pending.drain(..release);
        Emit::Text(text)
    }

    /// Releases whatever is held back when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.pending);
        if !self.partial_utf8.is_empty() {
            text.push_str(&String::from_utf8_lossy(&self.partial_utf8));
            self.partial_utf8.clear();
        }
        text
    }

    fn earliest_stop(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min()
    }

    /// Length of the longest tail of `pending` that begins some stop string.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut longest = 0;
        for stop in &self.stops {
            let max = stop.len().saturating_sub(1).min(self.pending.len());
            for len in (longest + 1..=max).rev() {
                let start = self.pending.len() - len;
                if self.pending.is_char_boundary(start) && stop.starts_with(&self.pending[start..]) {
                    longest = len;
                    break;
                }
            }
        }
        longest
    }
}

/// Removes and returns the longest decodable prefix of `bytes`, leaving an incomplete trailing
/// character in place. Invalid sequences become U+FFFD rather than stalling the stream.
fn take_complete_utf8(bytes: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                bytes.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[..valid]).unwrap_or_default());
                match e.error_len() {
                    // Incomplete character at the end: keep it for the next token.
                    None => {
                        bytes.drain(..valid);
                        return out;
                    }
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        bytes.drain(..valid + bad);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], tokens: &[&[u8]]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut out = TextOutput::new(&stops);
        let mut text = String::new();
        for t in tokens {
            match out.push(t) {
                Emit::Text(s) => text.push_str(&s),
                Emit::Stop(s) => {
                    text.push_str(&s);
                    return (text, true);
                }
            }
        }
        text.push_str(&out.finish());
        (text, false)
    }

    #[test]
    fn holds_back_split_utf8_until_complete() {
        let euro = "€".as_bytes();
        let mut out = TextOutput::new(&[]);
        assert_eq!(out.push(&euro[..1]), Emit::Text(String::new()));
        assert_eq!(out.push(&euro[1..2]), Emit::Text(String::new()));
        assert_eq!(out.push(&euro[2..]), Emit::Text("€".into()));
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        assert_eq!(run(&[], &[b"a\xffb"]), ("a\u{fffd}b".into(), false));
        assert_eq!(run(&[], &[b"a\xe2\x82"]), ("a\u{fffd}".into(), false));
    }

    #[test]
    fn stop_string_across_tokens_is_never_emitted() {
        assert_eq!(
            run(&["<end>"], &[b"Hello <e", b"n", b"d> more"]),
            ("Hello ".into(), true)
        );
    }

    #[test]
    fn near_miss_of_a_stop_string_is_released() {
        assert_eq!(run(&["<end>"], &[b"a <e", b"nx", b" b"]), ("a <enx b".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["world", "lo"], &[b"hello world"]), ("hel".into(), true));
    }

    #[test]
    fn held_back_prefix_is_flushed_at_the_end() {
        assert_eq!(run(&["STOP"], &[b"ends with ST"]), ("ends with ST".into(), false));
    }

    #[test]
    fn multibyte_text_next_to_a_stop_prefix() {
        assert_eq!(run(&["éx"], &["aé".as_bytes(), b"y"]), ("aéy".into(), false));
        assert_eq!(run(&["éx"], &["aé".as_bytes(), b"x"]), ("a".into(), true));
    }
}
