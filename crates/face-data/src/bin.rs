//! insightface's verification `.bin` files (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`): a pickle of
//! `(list of encoded images, list of bools)`, consecutive images paired. Read and written here
//! without Python: the reader understands the pickle opcodes those files use (protocols 2 to 5,
//! Python 2 `str` and Python 3 `bytes`), the writer emits protocol 4.

use std::path::Path;

use crate::error::{io, DataError, Result};

/// Pairs for 1:1 verification: images `2k` and `2k + 1` are pair `k`, `issame[k]` says whether
/// they show the same person.
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationBin {
    /// Encoded images, two per pair.
    pub images: Vec<Vec<u8>>,
    /// Whether each pair is one person.
    pub issame: Vec<bool>,
}

impl VerificationBin {
    /// The number of pairs.
    pub fn num_pairs(&self) -> usize {
        self.issame.len()
    }

    /// Reads and checks a `.bin` (twice as many images as pairs).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(io(path))?;
        Self::parse(&bytes).map_err(|reason| DataError::Bin {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the pickle.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let value = Unpickler::new(bytes).run()?;
        let Value::Tuple(parts) = value else {
            return Err("top level is not a tuple".into());
        };
        let [images, issame] = <[Value; 2]>::try_from(parts)
            .map_err(|p| format!("tuple of {} items, expected 2", p.len()))?;
        let Value::List(images) = images else {
            return Err("first item is not a list of images".into());
        };
        let Value::List(issame) = issame else {
            return Err("second item is not a list of bools".into());
        };
        let images = images
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Bytes(b) => Ok(b),
                other => Err(format!("image {i} is {} instead of bytes", other.kind())),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let issame = issame
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Bool(b) => Ok(b),
                Value::Int(n) => Ok(n != 0),
                other => Err(format!(
                    "pair {i} label is {} instead of a bool",
                    other.kind()
                )),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if images.len() != 2 * issame.len() {
            return Err(format!(
                "{} images for {} pairs (need two per pair)",
                images.len(),
                issame.len()
            ));
        }
        Ok(Self { images, issame })
    }

    /// The pickle bytes (protocol 4), which Python reads with `pickle.load(f, encoding='bytes')`
    /// as insightface does.
    pub fn to_pickle(&self) -> Vec<u8> {
        let mut out = vec![0x80, 4]; // PROTO 4
        out.push(b']'); // EMPTY_LIST (the tuple is built with TUPLE2 at the end)
        for chunk in self.images.chunks(1000) {
            out.push(b'('); // MARK
            for img in chunk {
                if img.len() < 256 {
                    out.push(b'C'); // SHORT_BINBYTES
                    out.push(img.len() as u8);
                } else if img.len() <= u32::MAX as usize {
                    out.push(b'B'); // BINBYTES
                    out.extend_from_slice(&(img.len() as u32).to_le_bytes());
                } else {
                    out.push(0x8e); // BINBYTES8
                    out.extend_from_slice(&(img.len() as u64).to_le_bytes());
                }
                out.extend_from_slice(img);
            }
            out.push(b'e'); // APPENDS
        }
        out.push(b']');
        for chunk in self.issame.chunks(1000) {
            out.push(b'(');
            out.extend(chunk.iter().map(|&b| if b { 0x88 } else { 0x89 })); // NEWTRUE / NEWFALSE
            out.push(b'e');
        }
        out.push(0x86); // TUPLE2
        out.push(b'.'); // STOP
        out
    }

    /// Writes the `.bin` atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        atomic_file::write(path, &self.to_pickle()).map_err(io(path))
    }
}

/// The subset of pickle values these files hold.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Bytes(Vec<u8>),
    Bool(bool),
    Int(i64),
    None,
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Str(String),
    Global(String),
    Mark,
}

/// Deepest nesting of lists and tuples a `.bin` may hold: it needs 2 (a tuple of two lists).
/// Checked as each container is built, so the recursive helpers below (and dropping a value)
/// never recurse deeper than this (issue 20 reports a 2 MB pickle of nested lists overflowing
/// the stack).
const MAX_DEPTH: usize = 8;

impl Value {
    /// Lists and tuples inside one another (scalars are 0).
    fn depth(&self) -> usize {
        match self {
            Value::List(items) | Value::Tuple(items) => {
                1 + items.iter().map(Value::depth).max().unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// Bytes and items it holds: what copying it out of the memo costs.
    fn size(&self) -> usize {
        match self {
            Value::Bytes(b) => b.len().max(1),
            Value::Str(s) | Value::Global(s) => s.len().max(1),
            Value::List(items) | Value::Tuple(items) => {
                1 + items.iter().map(Value::size).sum::<usize>()
            }
            _ => 1,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Bytes(_) => "bytes",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::None => "None",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Str(_) => "a str",
            Value::Global(_) => "a global",
            Value::Mark => "a mark",
        }
    }
}

/// A small pickle machine: stack, memo, and the opcodes of `(list of bytes, list of bool)`.
/// No code runs; nesting is bounded by [`MAX_DEPTH`] and what memo references may copy by
/// the file's size (issue 20 reports a few hundred bytes of them making a reader allocate until
/// killed).
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: std::collections::HashMap<u64, Value>,
    /// Bytes and items copied out of the memo so far, and how many may be.
    copied: usize,
    copy_budget: usize,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: Default::default(),
            copied: 0,
            copy_budget: 2 * data.len() + 4096,
        }
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated: need {n} bytes at offset {}, file has {}",
                    self.pos,
                    self.data.len()
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A newline-terminated ASCII line (GLOBAL's operands).
    fn line(&mut self) -> std::result::Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated GLOBAL")?;
        let text =
            std::str::from_utf8(&rest[..end]).map_err(|e| format!("bad GLOBAL name: {e}"))?;
        self.pos += end + 1;
        Ok(text.to_string())
    }

    fn pop(&mut self) -> std::result::Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| format!("stack underflow at offset {}", self.pos))
    }

    /// Items above the topmost mark (the mark is removed).
    fn pop_mark(&mut self) -> std::result::Result<Vec<Value>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or_else(|| format!("no mark on the stack at offset {}", self.pos))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn push_bytes(&mut self, n: usize) -> std::result::Result<(), String> {
        let b = self.take(n)?.to_vec();
        self.stack.push(Value::Bytes(b));
        Ok(())
    }

    /// Refuses to put `items` into a container past [`MAX_DEPTH`].
    fn nest(&self, items: &[Value]) -> std::result::Result<(), String> {
        // Each item was checked when built, so `depth` recurses at most MAX_DEPTH deep.
        if items.iter().any(|v| v.depth() >= MAX_DEPTH) {
            return Err(format!(
                "lists nested deeper than {MAX_DEPTH} at offset {}: not an insightface .bin",
                self.pos
            ));
        }
        Ok(())
    }

    /// Pushes a list or tuple of `items`.
    fn push_container(&mut self, items: Vec<Value>, list: bool) -> std::result::Result<(), String> {
        self.nest(&items)?;
        self.stack.push(if list {
            Value::List(items)
        } else {
            Value::Tuple(items)
        });
        Ok(())
    }

    fn extend_list(&mut self, items: Vec<Value>) -> std::result::Result<(), String> {
        self.nest(&items)?;
        match self.stack.last_mut() {
            Some(Value::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(format!(
                "APPEND(S) without a list below, at offset {}",
                self.pos
            )),
        }
    }

    fn run(mut self) -> std::result::Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if !(2..=5).contains(&proto) {
                        return Err(format!("pickle protocol {proto} (2 to 5 are read)"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: the length of the next frame; data is inline
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as i64;
                    self.stack.push(Value::Int(v));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap()) as i64;
                    self.stack.push(Value::Int(v));
                }
                // SHORT_BINSTRING / SHORT_BINBYTES: 1-byte length; BINSTRING / BINBYTES: 4;
                // BINBYTES8: 8. Python 2 `str` and Python 3 `bytes` both read as bytes.
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    self.push_bytes(n)?;
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    self.push_bytes(n)?;
                }
                0x8e => {
                    let n = usize::try_from(self.u64()?)
                        .map_err(|_| "BINBYTES8 length overflows".to_string())?;
                    self.push_bytes(n)?;
                }
                b'q' => {
                    let k = self.u8()? as u64;
                    let v = self.stack.last().ok_or("BINPUT on an empty stack")?.clone();
                    self.memo.insert(k, v);
                }
                b'r' => {
                    let k = self.u32()? as u64;
                    let v = self
                        .stack
                        .last()
                        .ok_or("LONG_BINPUT on an empty stack")?
                        .clone();
                    self.memo.insert(k, v);
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    let v = self
                        .stack
                        .last()
                        .ok_or("MEMOIZE on an empty stack")?
                        .clone();
                    self.memo.insert(k, v);
                }
                b'h' | b'j' => {
                    let k = if op == b'h' {
                        self.u8()? as u64
                    } else {
                        self.u32()? as u64
                    };
                    let v = self
                        .memo
                        .get(&k)
                        .ok_or_else(|| format!("memo {k} not set"))?;
                    self.copied = self.copied.saturating_add(v.size());
                    if self.copied > self.copy_budget {
                        return Err(format!(
                            "memo references at offset {} copy more than the file holds",
                            self.pos
                        ));
                    }
                    let v = v.clone();
                    self.stack.push(v);
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_list(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_container(items, true)?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_container(items, false)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(format!(
                            "TUPLE{n} with {} items on the stack",
                            self.stack.len()
                        ));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    if items.contains(&Value::Mark) {
                        return Err("TUPLE over a mark".into());
                    }
                    self.push_container(items, false)?;
                }
                // Python 3 pickles `bytes` at protocol 2 as `_codecs.encode(str, 'latin1')`.
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(format!("{module}.{name}")));
                }
                0x93 => {
                    let (Value::Str(name), Value::Str(module)) = (self.pop()?, self.pop()?) else {
                        return Err("STACK_GLOBAL without two strings".into());
                    };
                    self.stack.push(Value::Global(format!("{module}.{name}")));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32()? as usize,
                        0x8c => self.u8()? as usize,
                        _ => usize::try_from(self.u64()?)
                            .map_err(|_| "BINUNICODE8 length overflows".to_string())?,
                    };
                    let text = std::str::from_utf8(self.take(n)?)
                        .map_err(|e| format!("bad UTF-8 in a str: {e}"))?;
                    self.stack.push(Value::Str(text.to_string()));
                }
                b'R' => {
                    let (args, callable) = (self.pop()?, self.pop()?);
                    let value = match (callable, args) {
                        (Value::Global(g), Value::Tuple(a)) if g == "_codecs.encode" => {
                            match a.as_slice() {
                                [Value::Str(text), Value::Str(enc)]
                                    if enc == "latin1" || enc == "latin-1" =>
                                {
                                    let bytes: Option<Vec<u8>> =
                                        text.chars().map(|c| u8::try_from(c as u32).ok()).collect();
                                    Value::Bytes(
                                        bytes.ok_or("a latin1 str holds characters above 255")?,
                                    )
                                }
                                _ => return Err("_codecs.encode with unexpected arguments".into()),
                            }
                        }
                        (Value::Global(g), Value::Tuple(a))
                            if (g == "__builtin__.bytes" || g == "builtins.bytes")
                                && a.is_empty() =>
                        {
                            Value::Bytes(Vec::new())
                        }
                        (callable, _) => {
                            return Err(format!(
                                "REDUCE of {}: not an insightface .bin",
                                callable.kind()
                            ))
                        }
                    };
                    self.stack.push(value);
                }
                other => {
                    return Err(format!(
                    "unsupported pickle opcode {other:#04x} at offset {}: not an insightface .bin",
                    self.pos - 1
                ))
                }
            }
        }
    }
}
