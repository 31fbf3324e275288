//! The command parser: multibulk and inline commands, with every length checked
//! before it is trusted.
//!
//! The parser is stateless: it looks at the whole unparsed input each time and says
//! whether a complete command sits at its front. A command still arriving is parsed
//! again from its start when more bytes come; that costs a scan of its length lines
//! only (bulk bodies are skipped by their length), never of the bodies.

use std::ops::Range;

use bytes::Bytes;

/// Bounds on what one command may announce or take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespLimits {
    /// Longest bulk string (a key or a value): the server's frame limit.
    pub bulk_bytes_max: u32,
    /// Most arguments one multibulk may announce.
    pub args_max: u32,
    /// Longest inline command line, end of line excluded.
    pub inline_bytes_max: u32,
    /// Most bytes one whole command may take (what a connection buffers at most).
    pub command_bytes_max: u64,
}

/// Longest `*<n>` or `$<len>` line: a sign, 19 digits, CRLF, with room to spare. A
/// longer one is not a number RESP can carry.
const LENGTH_LINE_BYTES_MAX: usize = 32;

/// One argument of a parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// Bytes `range` of the command (a multibulk's bulk string: zero-copy).
    Range(Range<usize>),
    /// Bytes made by the parser (an inline word, after its quotes and escapes).
    Owned(Vec<u8>),
}

impl Arg {
    /// The argument's bytes, given the command's bytes (`len` bytes taken from the
    /// input the command was parsed from).
    pub fn resolve(self, command: &Bytes) -> Bytes {
        match self {
            Arg::Range(range) => command.slice(range),
            Arg::Owned(bytes) => Bytes::from(bytes),
        }
    }
}

/// What sits at the front of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// One whole command: its arguments (at least one) and the bytes it took.
    Command { args: Vec<Arg>, len: usize },
    /// `len` bytes that hold no command (an empty inline line, `*0`, `*-1`): skip them.
    Nothing { len: usize },
    /// The input ends inside a command: at least `needed` more bytes are wanted.
    Incomplete { needed: usize },
}

/// The input is not RESP, or announces more than [`RespLimits`] allows. The message
/// is what Redis says after `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn error<T>(message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(message.into()))
}

/// Parses the command at the front of `input`. Never panics.
pub fn parse(input: &[u8], limits: &RespLimits) -> Result<Parsed, ProtocolError> {
    match input.first() {
        None => Ok(Parsed::Incomplete { needed: 1 }),
        Some(b'*') => parse_multibulk(input, limits),
        Some(_) => parse_inline(input, limits),
    }
}

fn parse_multibulk(input: &[u8], limits: &RespLimits) -> Result<Parsed, ProtocolError> {
    let Some((count, mut at)) = length_line(input, 1, "multibulk length")? else {
        return Ok(Parsed::Incomplete { needed: 1 });
    };
    if count <= 0 {
        return Ok(Parsed::Nothing { len: at });
    }
    if count > i64::from(limits.args_max) {
        return error(format!(
            "invalid multibulk length {count} (at most {} arguments)",
            limits.args_max
        ));
    }
    // Never trust the count for the allocation: it grows with the bytes that came.
    let mut args = Vec::with_capacity((count as usize).min(16));
    for _ in 0..count {
        let Some(&first) = input.get(at) else {
            return Ok(Parsed::Incomplete { needed: 1 });
        };
        if first != b'$' {
            return error(format!("expected '$', got '{}'", char::from(first)));
        }
        let Some((len, body)) = length_line(input, at + 1, "bulk length")? else {
            return Ok(Parsed::Incomplete { needed: 1 });
        };
        if len < 0 || len > i64::from(limits.bulk_bytes_max) {
            return error(format!(
                "invalid bulk length {len} (at most {} bytes)",
                limits.bulk_bytes_max
            ));
        }
        let end = body + len as usize;
        if (end + 2) as u64 > limits.command_bytes_max {
            return error(format!(
                "command of more than {} bytes",
                limits.command_bytes_max
            ));
        }
        if input.len() < end + 2 {
            return Ok(Parsed::Incomplete {
                needed: end + 2 - input.len(),
            });
        }
        if &input[end..end + 2] != b"\r\n" {
            return error("bulk string not followed by CRLF");
        }
        args.push(Arg::Range(body..end));
        at = end + 2;
    }
    Ok(Parsed::Command { args, len: at })
}

/// The number on the line that starts at `start` (after its `*` or `$`) and where the
/// next line starts; `None` if the line has not fully arrived.
fn length_line(
    input: &[u8],
    start: usize,
    what: &str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &input[start.min(input.len())..input.len().min(start + LENGTH_LINE_BYTES_MAX)];
    let Some(cr) = window.windows(2).position(|pair| pair == b"\r\n") else {
        if window.len() >= LENGTH_LINE_BYTES_MAX {
            return error(format!("too long {what} line"));
        }
        return Ok(None);
    };
    match parse_i64(&window[..cr]) {
        Some(number) => Ok(Some((number, start + cr + 2))),
        None => error(format!("invalid {what}")),
    }
}

/// A decimal integer, optionally negative: nothing else (no `+`, no spaces).
fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: i64 = 0;
    for &digit in digits {
        value = value
            .checked_mul(10)?
            .checked_add(i64::from(digit - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

fn parse_inline(input: &[u8], limits: &RespLimits) -> Result<Parsed, ProtocolError> {
    let max = limits.inline_bytes_max as usize;
    let window = &input[..input.len().min(max + 1)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if input.len() > max {
            return error("too big inline request");
        }
        return Ok(Parsed::Incomplete { needed: 1 });
    };
    let line = match &input[..newline] {
        [line @ .., b'\r'] => line,
        line => line,
    };
    let words = split_words(line)?;
    let len = newline + 1;
    if words.is_empty() {
        return Ok(Parsed::Nothing { len });
    }
    Ok(Parsed::Command {
        args: words.into_iter().map(Arg::Owned).collect(),
        len,
    })
}

/// Splits an inline line into words as Redis does (`sdssplitargs`): blanks separate
/// words; `"..."` takes `\n \r \t \b \a \\ \" \xHH` escapes, `'...'` takes `\'`; a
/// closing quote must end its word.
fn split_words(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut words = Vec::new();
    let mut at = 0;
    loop {
        while line.get(at).is_some_and(|&b| is_blank(b)) {
            at += 1;
        }
        if at >= line.len() {
            return Ok(words);
        }
        let (word, next) = match line[at] {
            b'"' => double_quoted(line, at + 1)?,
            b'\'' => single_quoted(line, at + 1)?,
            _ => {
                let end = line[at..]
                    .iter()
                    .position(|&b| is_blank(b) || b == b'"' || b == b'\'')
                    .map_or(line.len(), |n| at + n);
                // A quote inside a bare word starts a quoted part, as in Redis.
                if line.get(end).is_some_and(|&b| b == b'"' || b == b'\'') {
                    let (quoted, next) = if line[end] == b'"' {
                        double_quoted(line, end + 1)?
                    } else {
                        single_quoted(line, end + 1)?
                    };
                    let mut word = line[at..end].to_vec();
                    word.extend_from_slice(&quoted);
                    (word, next)
                } else {
                    (line[at..end].to_vec(), end)
                }
            }
        };
        words.push(word);
        at = next;
    }
}

fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | b'\0' | 0x0b | 0x0c)
}

/// A closing quote at `at - 1` must be followed by a blank or the end of the line.
fn check_word_end(line: &[u8], at: usize) -> Result<(), ProtocolError> {
    match line.get(at) {
        Some(&b) if !is_blank(b) => error("unbalanced quotes in request"),
        _ => Ok(()),
    }
}

/// The word inside `"..."` starting at `at` (after the quote), and where the line goes on.
fn double_quoted(line: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut word = Vec::new();
    loop {
        match line.get(at..) {
            None | Some([]) => return error("unbalanced quotes in request"),
            Some([b'\\', b'x', high, low, ..])
                if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() =>
            {
                word.push(hex_value(*high) << 4 | hex_value(*low));
                at += 4;
            }
            Some([b'\\', escaped, ..]) => {
                word.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => *other,
                });
                at += 2;
            }
            Some([b'"', ..]) => {
                check_word_end(line, at + 1)?;
                return Ok((word, at + 1));
            }
            Some([byte, ..]) => {
                word.push(*byte);
                at += 1;
            }
        }
    }
}

/// The word inside `'...'` starting at `at` (after the quote), and where the line goes on.
fn single_quoted(line: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut word = Vec::new();
    loop {
        match line.get(at..) {
            None | Some([]) => return error("unbalanced quotes in request"),
            Some([b'\\', b'\'', ..]) => {
                word.push(b'\'');
                at += 2;
            }
            Some([b'\'', ..]) => {
                check_word_end(line, at + 1)?;
                return Ok((word, at + 1));
            }
            Some([byte, ..]) => {
                word.push(*byte);
                at += 1;
            }
        }
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit.to_ascii_lowercase() - b'a' + 10,
    }
}
