//! Ollama model names (`types/model/name.go`): `[scheme://][host/][namespace/]model[:tag]`.
//!
//! A [`ModelName`] can only be built through [`ModelName::parse`] or
//! [`ModelName::from_manifest_components`], which check every part against Ollama's character and
//! length rules. Each part starts with an ASCII letter, digit or `_` and contains only ASCII
//! letters, digits and `_ - .` (plus `:` in the host, no `.` in the namespace), and no part holds
//! `..`. So no valid name can yield a path component that is empty, `.`, `..`, absolute, or that
//! holds a separator: the four parts are safe to join under `manifests/`.

use std::fmt;

/// Host used when a name gives none.
pub const DEFAULT_HOST: &str = "registry.ollama.ai";
/// Namespace used when a name gives none.
pub const DEFAULT_NAMESPACE: &str = "library";
/// Tag used when a name gives none.
pub const DEFAULT_TAG: &str = "latest";

/// Longest host, in bytes.
pub const MAX_HOST_LEN: usize = 350;
/// Longest namespace, model or tag, in bytes.
pub const MAX_PART_LEN: usize = 80;

/// Why a string is not a valid model name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("invalid model name: the name is empty")]
    Empty,
    /// A separator promised a part that is missing (`a/`, `/a`, `a:`, `a//b`).
    #[error("invalid model name {name:?}: the {part} is empty")]
    EmptyPart {
        /// The name as given.
        name: String,
        /// Which part: host, namespace, model or tag.
        part: &'static str,
    },
    /// More than `host/namespace/model` path parts.
    #[error("invalid model name {name:?}: use at most host/namespace/model:tag")]
    TooManyParts {
        /// The name as given.
        name: String,
    },
    /// A part is longer than Ollama allows.
    #[error("invalid model name {name:?}: the {part} is longer than {max} characters")]
    TooLong {
        /// The name as given.
        name: String,
        /// Which part.
        part: &'static str,
        /// The limit.
        max: usize,
    },
    /// A part holds a character it may not hold.
    #[error(
        "invalid model name {name:?}: the {part} may only contain {allowed}, and must start with a letter, digit or '_'"
    )]
    InvalidCharacter {
        /// The name as given.
        name: String,
        /// Which part.
        part: &'static str,
        /// The characters the part accepts.
        allowed: &'static str,
    },
    /// A part holds `..`.
    #[error("invalid model name {name:?}: '..' is not allowed")]
    DotDot {
        /// The name as given.
        name: String,
    },
    /// A scheme other than `http://` or `https://`, or a scheme without a host.
    #[error("invalid model name {name:?}: only http:// or https:// may precede host/namespace/model")]
    InvalidScheme {
        /// The name as given.
        name: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Host,
    Namespace,
    Model,
    Tag,
}

impl Part {
    fn label(self) -> &'static str {
        match self {
            Part::Host => "host",
            Part::Namespace => "namespace",
            Part::Model => "model",
            Part::Tag => "tag",
        }
    }

    fn max_len(self) -> usize {
        match self {
            Part::Host => MAX_HOST_LEN,
            _ => MAX_PART_LEN,
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            Part::Host => "letters, digits, '_', '-', '.' and ':'",
            Part::Namespace => "letters, digits, '_' and '-'",
            Part::Model | Part::Tag => "letters, digits, '_', '-' and '.'",
        }
    }

    fn accepts(self, c: u8) -> bool {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => true,
            b'.' => self != Part::Namespace,
            b':' => self == Part::Host,
            _ => false,
        }
    }
}

fn check_part(name: &str, part: Part, s: &str) -> Result<(), NameError> {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(NameError::EmptyPart {
            name: name.to_string(),
            part: part.label(),
        });
    };
    if bytes.len() > part.max_len() {
        return Err(NameError::TooLong {
            name: name.to_string(),
            part: part.label(),
            max: part.max_len(),
        });
    }
    let first_ok = first.is_ascii_alphanumeric() || first == b'_';
    if !first_ok || !bytes.iter().all(|&c| part.accepts(c)) {
        return Err(NameError::InvalidCharacter {
            name: name.to_string(),
            part: part.label(),
            allowed: part.allowed(),
        });
    }
    if s.contains("..") {
        return Err(NameError::DotDot { name: name.to_string() });
    }
    Ok(())
}

/// A valid Ollama model name, each part stored as typed (lookups compare case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelName {
    /// `http` or `https` when the name was written with a scheme (`http://` means an insecure
    /// registry); `None` otherwise (Ollama's default is `https`).
    pub scheme: Option<String>,
    /// Registry host, possibly with a port (`registry.ollama.ai`, `localhost:5000`).
    pub host: String,
    /// Namespace (`library` for official models).
    pub namespace: String,
    /// Model name (`gemma3`).
    pub model: String,
    /// Tag (`latest`, `270m`).
    pub tag: String,
}

impl ModelName {
    /// Parses `[scheme://][host/][namespace/]model[:tag]`, filling in Ollama's defaults.
    ///
    /// The tag is cut at the last `:` only when it comes after the last `/` (so `host:port/ns/m`
    /// works). Then, from the right, `/` separates model, namespace and host.
    pub fn parse(s: &str) -> Result<ModelName, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        let mut rest = s;
        let mut tag = None;
        if let Some(colon) = rest.rfind(':') {
            if rest.rfind('/').is_none_or(|slash| colon > slash) {
                tag = Some(&rest[colon + 1..]);
                rest = &rest[..colon];
            }
        }
        let (model, namespace, host) = match rest.rsplit_once('/') {
            None => (rest, None, None),
            Some((before, model)) => match before.rsplit_once('/') {
                None => (model, Some(before), None),
                Some((host, namespace)) => (model, Some(namespace), Some(host)),
            },
        };
        let (scheme, host) = match host {
            Some(h) => match h.split_once("://") {
                Some((scheme, host)) => {
                    if scheme != "http" && scheme != "https" {
                        return Err(NameError::InvalidScheme { name: s.to_string() });
                    }
                    (Some(scheme.to_string()), Some(host))
                }
                None => (None, Some(h)),
            },
            None => (None, None),
        };
        if host.is_some_and(|h| h.contains('/')) {
            return Err(NameError::TooManyParts { name: s.to_string() });
        }
        if scheme.is_none() && s.contains("://") {
            return Err(NameError::InvalidScheme { name: s.to_string() });
        }
        let name = ModelName {
            scheme,
            host: host.unwrap_or(DEFAULT_HOST).to_string(),
            namespace: namespace.unwrap_or(DEFAULT_NAMESPACE).to_string(),
            model: model.to_string(),
            tag: tag.unwrap_or(DEFAULT_TAG).to_string(),
        };
        name.validate(s)?;
        Ok(name)
    }

    /// Builds a name from the four directory levels under `manifests/` (host, namespace, model,
    /// tag), as found when walking the store; every part must be valid.
    pub fn from_manifest_components(
        host: &str,
        namespace: &str,
        model: &str,
        tag: &str,
    ) -> Result<ModelName, NameError> {
        let name = ModelName {
            scheme: None,
            host: host.to_string(),
            namespace: namespace.to_string(),
            model: model.to_string(),
            tag: tag.to_string(),
        };
        let shown = format!("{host}/{namespace}/{model}:{tag}");
        name.validate(&shown)?;
        Ok(name)
    }

    fn validate(&self, shown: &str) -> Result<(), NameError> {
        check_part(shown, Part::Host, &self.host)?;
        check_part(shown, Part::Namespace, &self.namespace)?;
        check_part(shown, Part::Model, &self.model)?;
        check_part(shown, Part::Tag, &self.tag)
    }

    /// The shortest form, as Ollama shows it: the host is left out when it is the default, and
    /// then the namespace when it is `library`; `model:tag` is always shown
    /// (`gemma3:270m`, `ns/m:tag`, `host/ns/m:tag`).
    pub fn display_shortest(&self) -> String {
        if !self.host.eq_ignore_ascii_case(DEFAULT_HOST) {
            format!("{}/{}/{}:{}", self.host, self.namespace, self.model, self.tag)
        } else if !self.namespace.eq_ignore_ascii_case(DEFAULT_NAMESPACE) {
            format!("{}/{}:{}", self.namespace, self.model, self.tag)
        } else {
            format!("{}:{}", self.model, self.tag)
        }
    }

    /// The full form, `host/namespace/model:tag` (`registry.ollama.ai/library/gemma3:270m`).
    pub fn display_long(&self) -> String {
        format!("{}/{}/{}:{}", self.host, self.namespace, self.model, self.tag)
    }

    /// The relative path of the manifest under `manifests/`: host, namespace, model, tag.
    /// Each is a single safe path component.
    pub fn manifest_components(&self) -> [&str; 4] {
        [&self.host, &self.namespace, &self.model, &self.tag]
    }

    /// Case-insensitive equality of the four parts (the scheme is not compared), as Ollama's
    /// `EqualFold`.
    #[cfg(test)]
    pub fn eq_fold(&self, other: &ModelName) -> bool {
        self.manifest_components()
            .iter()
            .zip(other.manifest_components())
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }

    /// Whether the name asked for plain `http://` (an insecure registry).
    #[cfg(test)]
    pub fn is_insecure(&self) -> bool {
        self.scheme.as_deref() == Some("http")
    }
}

impl fmt::Display for ModelName {
    /// Same as [`ModelName::display_shortest`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_shortest())
    }
}

impl std::str::FromStr for ModelName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, String, String) {
        let n = ModelName::parse(s).unwrap_or_else(|e| panic!("{s:?} should be valid: {e}"));
        (n.host, n.namespace, n.model, n.tag)
    }

    fn t(h: &str, n: &str, m: &str, g: &str) -> (String, String, String, String) {
        (h.into(), n.into(), m.into(), g.into())
    }

    #[test]
    fn valid_names() {
        let cases = [
            ("gemma3", t(DEFAULT_HOST, "library", "gemma3", "latest")),
            ("gemma3:270m", t(DEFAULT_HOST, "library", "gemma3", "270m")),
            ("Gemma3:270M", t(DEFAULT_HOST, "library", "Gemma3", "270M")),
            (
                "llama3.2:3b-instruct-q4_K_M",
                t(DEFAULT_HOST, "library", "llama3.2", "3b-instruct-q4_K_M"),
            ),
            ("ns/m:tag", t(DEFAULT_HOST, "ns", "m", "tag")),
            ("ns/m", t(DEFAULT_HOST, "ns", "m", "latest")),
            ("host/ns/m:tag", t("host", "ns", "m", "tag")),
            ("example.com/ns/m", t("example.com", "ns", "m", "latest")),
            ("host:5000/ns/m:tag", t("host:5000", "ns", "m", "tag")),
            ("localhost:5000/a/b:c", t("localhost:5000", "a", "b", "c")),
            ("localhost:5000/a/b", t("localhost:5000", "a", "b", "latest")),
            ("http://localhost:5000/a/b", t("localhost:5000", "a", "b", "latest")),
            (
                "https://registry.ollama.ai/library/x:1",
                t(DEFAULT_HOST, "library", "x", "1"),
            ),
            ("_x/_y:_z", t(DEFAULT_HOST, "_x", "_y", "_z")),
            ("a-b_c/d.e-f:g.h_i-j", t(DEFAULT_HOST, "a-b_c", "d.e-f", "g.h_i-j")),
            (
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
                t("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"),
            ),
            ("m.", t(DEFAULT_HOST, "library", "m.", "latest")),
            ("0:0", t(DEFAULT_HOST, "library", "0", "0")),
        ];
        for (input, want) in cases {
            assert_eq!(parts(input), want, "{input}");
        }
    }

    #[test]
    fn invalid_names() {
        let long80 = "a".repeat(81);
        let host351 = "h".repeat(351);
        let cases: Vec<String> = [
            "",
            ":",
            ":latest",
            "a:",
            "/a",
            "a/",
            "a//b",
            "/",
            "//",
            "a/b/c/d",
            "a/b/c/d:e",
            "../../etc/passwd",
            "a/../../b",
            "..:latest",
            "..",
            ".",
            "./a",
            "a/./b",
            "registry.ollama.ai/../x",
            "registry.ollama.ai/library/..",
            "x:../y",
            "x:..",
            "x:.",
            "a..b",
            "x:a..b",
            "/etc/passwd",
            "/abs/ns/m",
            "a\\b",
            "..\\..\\x",
            "ns\\..\\m",
            "a\0b",
            "a\0",
            "%2e%2e/x",
            "%2e%2e",
            "a%2fb",
            "ns.x/m",
            "host:1/ns.dot/m",
            "localhost:5000/a",
            "a:b:c",
            "a b",
            " a",
            "a ",
            "a\n",
            "a\t",
            "-a",
            ".a",
            "a/-b",
            "a:-b",
            "-h/ns/m",
            ":5000/ns/m",
            "h/ns/m:t/x",
            "gemma3+Q4_0",
            "gemma3@sha256-abc",
            "ﾟa",
            "ａ",
            "gemma\u{200b}3",
            "gemm\u{0430}3",
            "a\u{2215}b",
            "a\u{ff0f}b",
            "ftp://h/ns/m",
            "http://m",
            "http://ns/m",
            "HTTP://h/ns/m",
            "http:///ns/m",
            "http://h/ns/m://x",
            "h://x/ns/m",
            "http://http://h/ns/m",
            "*",
            "a*",
            "a?",
            "~/a",
            "$HOME",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            long80.clone(),
            format!("ns/{long80}"),
            format!("{long80}/m"),
            format!("m:{long80}"),
            format!("{host351}/ns/m"),
        ])
        .collect();
        for input in cases {
            assert!(ModelName::parse(&input).is_err(), "{input:?} should be invalid");
        }
    }

    #[test]
    fn length_limits_are_inclusive() {
        let a80 = "a".repeat(80);
        assert!(ModelName::parse(&a80).is_ok());
        assert!(ModelName::parse(&format!("{a80}/{a80}:{a80}")).is_ok());
        let h350 = "h".repeat(350);
        assert!(ModelName::parse(&format!("{h350}/ns/m")).is_ok());
    }

    #[test]
    fn no_valid_name_yields_an_unsafe_component() {
        // Every printable ASCII pair and triple at every position of a few templates: whatever
        // parses must give safe components.
        let alphabet: Vec<char> = (0x20u8..0x7f).map(char::from).chain(['\\', '\0', '\u{2e}']).collect();
        for &a in &alphabet {
            for &b in &alphabet {
                for template in ["{}{}", "x/{}{}", "{}{}/y/z", "h/n/m:{}{}", "{}/{}", "{}:{}"] {
                    let s = template
                        .replacen("{}", &a.to_string(), 1)
                        .replacen("{}", &b.to_string(), 1);
                    if let Ok(name) = ModelName::parse(&s) {
                        for c in name.manifest_components() {
                            assert!(!c.is_empty() && c != "." && c != "..", "{s:?} -> {c:?}");
                            assert!(!c.contains(['/', '\\', '\0']) && !c.contains(".."), "{s:?} -> {c:?}");
                            assert!(!c.starts_with('.') && !c.starts_with('-'), "{s:?} -> {c:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn scheme_is_kept() {
        let n = ModelName::parse("http://localhost:5000/a/b").unwrap();
        assert_eq!(n.scheme.as_deref(), Some("http"));
        assert!(n.is_insecure());
        let n = ModelName::parse("https://localhost:5000/a/b").unwrap();
        assert_eq!(n.scheme.as_deref(), Some("https"));
        assert!(!n.is_insecure());
        let n = ModelName::parse("localhost:5000/a/b").unwrap();
        assert_eq!(n.scheme, None);
        assert_eq!(n.display_shortest(), "localhost:5000/a/b:latest");
    }

    #[test]
    fn display_forms() {
        let cases = [
            ("gemma3:270m", "gemma3:270m", "registry.ollama.ai/library/gemma3:270m"),
            ("gemma3", "gemma3:latest", "registry.ollama.ai/library/gemma3:latest"),
            ("ns/m:tag", "ns/m:tag", "registry.ollama.ai/ns/m:tag"),
            ("host/ns/m:tag", "host/ns/m:tag", "host/ns/m:tag"),
            ("host/library/m", "host/library/m:latest", "host/library/m:latest"),
            (
                "Registry.Ollama.AI/Library/M:T",
                "M:T",
                "Registry.Ollama.AI/Library/M:T",
            ),
            (
                "registry.ollama.ai/ns/m",
                "ns/m:latest",
                "registry.ollama.ai/ns/m:latest",
            ),
        ];
        for (input, short, long) in cases {
            let n = ModelName::parse(input).unwrap();
            assert_eq!(n.display_shortest(), short, "{input}");
            assert_eq!(n.to_string(), short, "{input}");
            assert_eq!(n.display_long(), long, "{input}");
            // Both forms parse back to the same name.
            assert!(ModelName::parse(short).unwrap().eq_fold(&n));
            assert_eq!(ModelName::parse(long).unwrap(), n);
        }
    }

    #[test]
    fn manifest_components_and_back() {
        let n = ModelName::parse("Gemma3:270M").unwrap();
        assert_eq!(
            n.manifest_components(),
            ["registry.ollama.ai", "library", "Gemma3", "270M"]
        );
        let [h, ns, m, t] = n.manifest_components();
        assert_eq!(ModelName::from_manifest_components(h, ns, m, t).unwrap(), n);
        assert!(ModelName::from_manifest_components("..", "library", "m", "t").is_err());
        assert!(ModelName::from_manifest_components("h", "library", "m", ".tmp-123").is_err());
        assert!(ModelName::from_manifest_components("h", "a/b", "m", "t").is_err());
        assert!(ModelName::from_manifest_components("h", "ns", "", "t").is_err());
        assert!(ModelName::from_manifest_components("h", "n.s", "m", "t").is_err());
    }

    #[test]
    fn case_insensitive_equality() {
        let a = ModelName::parse("Gemma3:270M").unwrap();
        let b = ModelName::parse("registry.ollama.ai/library/gemma3:270m").unwrap();
        assert!(a.eq_fold(&b));
        assert_ne!(a, b);
        assert!(!a.eq_fold(&ModelName::parse("gemma3:270").unwrap()));
        assert!(!a.eq_fold(&ModelName::parse("other/gemma3:270m").unwrap()));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(ModelName::parse("").unwrap_err(), NameError::Empty);
        assert!(matches!(
            ModelName::parse("a:").unwrap_err(),
            NameError::EmptyPart { part: "tag", .. }
        ));
        assert!(matches!(
            ModelName::parse("a/b/c/d").unwrap_err(),
            NameError::TooManyParts { .. }
        ));
        assert!(matches!(
            ModelName::parse("a..b").unwrap_err(),
            NameError::DotDot { .. }
        ));
        let e = ModelName::parse("ns.x/m").unwrap_err();
        assert!(e.to_string().contains("namespace may only contain"), "{e}");
        assert!(e.to_string().starts_with("invalid model name"), "{e}");
    }
}
