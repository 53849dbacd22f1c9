//! `ConfigError` (what `load` returns) and `FieldPath` (the dotted path of a config field,
//! such as `ports[1].mtu`, used both to name the field and to find its line in the file).

use std::fmt;

/// A refused configuration. Display is `FILE:LINE:COLUMN: FIELD: MESSAGE`; line and column
/// are 1-based. `field` is a dotted path (`ports[1].mtu`), or `(file)` when the problem is
/// not tied to a field (unreadable file, empty document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

/// The `field` of errors that concern the whole file.
pub const FILE_FIELD: &str = "(file)";

impl ConfigError {
    /// An error about the file as a whole, reported at line 1 column 1.
    pub fn whole_file(file: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            line: 1,
            column: 1,
            field: FILE_FIELD.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.field, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// One step of a `FieldPath`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A mapping key (`mtu`).
    Key(String),
    /// A sequence index (`[1]`).
    Index(usize),
}

/// The location of a value inside the config document: `ports[1].mtu`. The empty path is the
/// document root. Build one with `FieldPath::parse("ports[1].mtu")`, `"ports[1].mtu".into()`,
/// or `FieldPath::root().key("ports").index(1).key("mtu")`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }

    /// The enclosing path (`ports[1]` for `ports[1].mtu`), `None` at the root.
    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            None
        } else {
            Some(FieldPath(self.0[..self.0.len() - 1].to_vec()))
        }
    }

    pub fn push(&mut self, seg: Segment) {
        self.0.push(seg);
    }

    /// Parses `a.b[2].c` (also `[0]`, `a[1][2]`). Keys cannot contain `.` or `[`; an
    /// unparsable index is kept as a key so that nothing is lost.
    pub fn parse(s: &str) -> Self {
        let mut p = FieldPath::root();
        for part in s.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !name.is_empty() {
                p.0.push(Segment::Key(name.to_string()));
            }
            while let Some(stripped) = rest.strip_prefix('[') {
                let end = stripped.find(']').unwrap_or(stripped.len());
                let idx = &stripped[..end];
                match idx.parse::<usize>() {
                    Ok(i) => p.0.push(Segment::Index(i)),
                    Err(_) => p.0.push(Segment::Key(format!("[{idx}]"))),
                }
                rest = stripped.get(end + 1..).unwrap_or("");
            }
        }
        p
    }

    /// The path as written in `ConfigError::field`: `ports[1].mtu`, or `(file)` for the root.
    pub fn to_field(&self) -> String {
        if self.is_root() {
            FILE_FIELD.to_string()
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for FieldPath {
    /// `ports[1].mtu`; the root displays as the empty string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl From<&str> for FieldPath {
    fn from(s: &str) -> Self {
        FieldPath::parse(s)
    }
}

impl From<String> for FieldPath {
    fn from(s: String) -> Self {
        FieldPath::parse(&s)
    }
}

impl From<&String> for FieldPath {
    fn from(s: &String) -> Self {
        FieldPath::parse(s)
    }
}

impl From<&FieldPath> for FieldPath {
    fn from(p: &FieldPath) -> Self {
        p.clone()
    }
}
