//! Finds the line and column of a config field, for error messages.
//!
//! The text is run through `yaml-rust2`'s event parser, which reports a position (marker)
//! with every event. Walking the events with a path stack gives, for every value in the
//! document, its `FieldPath` and where it is written. serde_yaml itself does not expose
//! positions of values that parsed fine, hence this second, read-only pass.
//!
//! Where a field is reported:
//! - a scalar (`mtu: 9001`, a sequence item `- 10.0.0.1/24`, a flow item in `[1, 2]`):
//!   at the value, as serde_yaml reports type errors;
//! - a mapping or sequence under a key (`ports:`, `lcores:`): at the key;
//! - a mapping that is a sequence item (`- name: a`): at its first key.
//!
//! A path that is not written in the file (a defaulted field, a merge key) is reported at
//! its nearest written ancestor, and at 1:1 when there is none. A document that this parser
//! cannot read completely keeps what was recorded before the error.

use super::error::FieldPath;
use std::collections::HashMap;
use yaml_rust2::parser::Parser;
use yaml_rust2::scanner::Marker;
use yaml_rust2::Event;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(m: Marker) -> Pos {
        // yaml-rust2: line is 1-based, col is 0-based (in characters, as libyaml counts).
        Pos {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// Positions of every value written in a YAML document, by path.
#[derive(Debug, Default, Clone)]
pub struct Locator {
    spots: HashMap<FieldPath, Pos>,
}

impl Locator {
    pub fn new(text: &str) -> Self {
        let mut b = Builder {
            parser: Parser::new_from_str(text),
            spots: HashMap::new(),
        };
        // On a parse error the map holds everything recorded up to it; that is the point.
        let _ = b.document();
        Locator { spots: b.spots }
    }

    /// Where `path` itself is written, if it is.
    pub fn find(&self, path: &FieldPath) -> Option<Pos> {
        self.spots.get(path).copied()
    }

    /// Where `path` is written, or else its nearest written ancestor, or else 1:1.
    pub fn locate(&self, path: &FieldPath) -> Pos {
        let mut p = path.clone();
        loop {
            if let Some(pos) = self.find(&p) {
                return pos;
            }
            match p.parent() {
                Some(parent) => p = parent,
                None => return Pos::START,
            }
        }
    }
}

/// Nesting deeper than this is not followed (the config is a few levels deep).
const MAX_DEPTH: usize = 64;

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    spots: HashMap<FieldPath, Pos>,
}

/// The document could not be read to the end (syntax error, too deep).
struct Stop;

impl Builder<'_> {
    fn next(&mut self) -> Result<(Event, Marker), Stop> {
        self.parser.next_token().map_err(|_| Stop)
    }

    /// The first document of the stream.
    fn document(&mut self) -> Result<(), Stop> {
        loop {
            let (ev, m) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentStart | Event::Nothing => continue,
                Event::StreamEnd | Event::DocumentEnd => return Ok(()),
                ev => return self.node(ev, m, &FieldPath::root(), None, 0),
            }
        }
    }

    fn record(&mut self, path: &FieldPath, pos: Pos) {
        if !path.is_root() {
            self.spots.insert(path.clone(), pos);
        }
    }

    /// Consumes the node that starts with `ev` (at `m`), recording it and its descendants
    /// under `path`. `key` is where the key of this node is written, when it has one.
    fn node(
        &mut self,
        ev: Event,
        m: Marker,
        path: &FieldPath,
        key: Option<Pos>,
        depth: usize,
    ) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop);
        }
        let here = Pos::from_marker(m);
        match ev {
            Event::Scalar(..) | Event::Alias(_) => {
                self.record(path, here);
                Ok(())
            }
            Event::SequenceStart(..) => {
                self.record(path, key.unwrap_or(here));
                let mut i = 0;
                loop {
                    let (ev, m) = self.next()?;
                    if ev == Event::SequenceEnd {
                        return Ok(());
                    }
                    self.node(ev, m, &path.index(i), None, depth + 1)?;
                    i += 1;
                }
            }
            Event::MappingStart(..) => {
                // yaml-rust2 marks a block mapping's start after its first key, so a keyless
                // mapping (a sequence item) is placed at its first key instead.
                self.record(path, key.unwrap_or(here));
                let mut first = true;
                loop {
                    let (kev, km) = self.next()?;
                    if kev == Event::MappingEnd {
                        return Ok(());
                    }
                    let kpos = Pos::from_marker(km);
                    if first && key.is_none() {
                        self.record(path, kpos);
                    }
                    first = false;
                    let name = match kev {
                        Event::Scalar(s, ..) => Some(s),
                        other => {
                            // A complex key: consume it without recording.
                            self.skip(other, depth + 1)?;
                            None
                        }
                    };
                    let (vev, vm) = self.next()?;
                    match name {
                        Some(name) => {
                            self.node(vev, vm, &path.key(&name), Some(kpos), depth + 1)?
                        }
                        None => self.skip(vev, depth + 1)?,
                    }
                }
            }
            _ => Err(Stop),
        }
    }

    /// Consumes the node that starts with `ev` without recording anything.
    fn skip(&mut self, ev: Event, depth: usize) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop);
        }
        let end = match ev {
            Event::SequenceStart(..) => Event::SequenceEnd,
            Event::MappingStart(..) => Event::MappingEnd,
            Event::Scalar(..) | Event::Alias(_) => return Ok(()),
            _ => return Err(Stop),
        };
        loop {
            let (ev, _) = self.next()?;
            if ev == end {
                return Ok(());
            }
            self.skip(ev, depth + 1)?;
        }
    }
}
