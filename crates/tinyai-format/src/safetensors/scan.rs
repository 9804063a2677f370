//! The fast path of [`super::SafetensorsHeader::parse`]: a strict scanner for the
//! JSON shape safetensors writers produce — one object of
//! `"name": {"dtype": "…", "shape": [u64, …], "data_offsets": [u64, u64]}` entries
//! and an optional `"__metadata__"` object of string values, whitespace anywhere.
//!
//! It reads only a subset of JSON and gives up ([`None`]) on anything else: an
//! escape in a string, a metadata value that is not a string, a number that is not
//! a plain decimal `u64`, a missing, unknown or repeated field, a repeated
//! metadata key or `__metadata__`, a rank above [`limits::MAX_RANK`], text that
//! is not UTF-8, anything that is not valid JSON; repeated tensor names are the
//! caller's to find (`has_duplicate_names`), and it gives up on them too. The caller then parses with serde_json, which reads every valid
//! JSON document and reports every error. So whatever this accepts, serde_json
//! accepts too and reads the same way (`tests::fast_and_serde_paths_agree`
//! checks that on mutated headers).

use crate::limits;

/// One tensor entry, not yet validated.
pub(super) struct Entry<'a, 's> {
    pub name: &'a str,
    pub dtype: &'a str,
    pub shape: &'s [u64],
    pub begin: u64,
    pub end: u64,
}

/// A shape of at most [`limits::MAX_RANK`] dimensions, read in place (one
/// buffer for all entries, not a copy per entry).
struct Shape {
    dimensions: [u64; limits::MAX_RANK],
    rank: usize,
}

impl Shape {
    /// The dimensions, outermost first.
    fn as_slice(&self) -> &[u64] {
        self.dimensions.get(..self.rank).unwrap_or_default()
    }
}

/// An entry's fields but its shape.
struct Fields<'a> {
    dtype: &'a str,
    begin: u64,
    end: u64,
}

/// Reads `json` if it has the plain shape described in the module docs, passing
/// each tensor entry to `tensor` in document order, and returns the metadata
/// entries sorted by key. Gives up when `tensor` does ([`None`]).
///
/// Repeated tensor names are the caller's to find; a repeated metadata key or
/// `__metadata__` key makes this give up.
pub(super) fn scan<'a>(
    json: &'a [u8],
    mut tensor: impl FnMut(&Entry<'a, '_>) -> Option<()>,
) -> Option<Vec<(&'a str, &'a str)>> {
    let text = std::str::from_utf8(json).ok()?;
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        position: 0,
    };
    scanner.expect(b'{')?;
    let mut metadata = None;
    let mut shape = Shape {
        dimensions: [0; limits::MAX_RANK],
        rank: 0,
    };
    if !scanner.eat(b'}') {
        loop {
            let key = scanner.string()?;
            scanner.expect(b':')?;
            if key == "__metadata__" {
                if metadata.is_some() {
                    return None;
                }
                metadata = Some(scanner.metadata()?);
            } else {
                let fields = scanner.tensor(&mut shape)?;
                tensor(&Entry {
                    name: key,
                    dtype: fields.dtype,
                    shape: shape.as_slice(),
                    begin: fields.begin,
                    end: fields.end,
                })?;
            }
            if !scanner.eat(b',') {
                break;
            }
        }
        scanner.expect(b'}')?;
    }
    scanner.skip_whitespace();
    if scanner.position != scanner.bytes.len() {
        return None;
    }
    let mut metadata = metadata.unwrap_or_default();
    metadata.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if metadata.windows(2).any(|pair| pair[0].0 == pair[1].0) {
        return None;
    }
    Some(metadata)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that is zero; the lowest one set is exact
/// (bytes above a zero byte may be flagged too, through the borrow).
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGH_BITS
}

/// The high bit of each byte of the little-endian `word` that ends a plain
/// string (`"`), or that a plain string may not hold (`\`, a control
/// character below 0x20); as with [`zero_bytes`] the lowest one set is exact.
fn string_stops(word: u64) -> u64 {
    // Flipping bit 1 maps `"` (0x22) to 0x20 and keeps bytes below 0x20 below
    // it (and every other byte at 0x21 or above): one test of "below 0x21"
    // finds both. A borrow starts only at a byte found.
    let flipped = word ^ (ONES * 0x02);
    (flipped.wrapping_sub(ONES * 0x21) & !flipped & HIGH_BITS)
        | zero_bytes(word ^ (ONES * u64::from(b'\\')))
}

/// The high bit of each byte of the little-endian `word` that is not an ASCII
/// digit; as with [`zero_bytes`] the lowest one set is exact (a carry or borrow
/// starts only at a byte that is not a digit).
fn non_digits(word: u64) -> u64 {
    (word.wrapping_add(ONES * 0x46) | word.wrapping_sub(ONES * u64::from(b'0'))) & HIGH_BITS
}

/// The value of the eight decimal digit values (0 to 9) in the bytes of the
/// little-endian `word` (first digit in the lowest byte).
fn eight_digits(word: u64) -> u64 {
    // Pairs, then fours, then all eight.
    let word = word.wrapping_mul(10).wrapping_add(word >> 8);
    let mask = 0x0000_00FF_0000_00FF;
    (((word & mask).wrapping_mul(100 + (1_000_000 << 32)))
        .wrapping_add(((word >> 16) & mask).wrapping_mul(1 + (10_000 << 32))))
        >> 32
}

/// The fields of a tensor entry.
enum Field {
    DType,
    Shape,
    DataOffsets,
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Scanner<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.position) {
            self.position += 1;
        }
    }

    /// Consumes `byte` (after whitespace) if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        // Compact headers have no whitespace: try the byte first.
        if self.bytes.get(self.position) != Some(&byte) {
            self.skip_whitespace();
        }
        if self.bytes.get(self.position) == Some(&byte) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        self.string_rest()
    }

    /// [`Scanner::string`] after its opening quote.
    fn string_rest(&mut self) -> Option<&'a str> {
        let start = self.position;
        let mut end = start;
        // Eight bytes at a time while eight are left, then byte by byte.
        while let Some(chunk) = self.bytes.get(end..end + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let stops = string_stops(u64::from_le_bytes(word));
            if stops != 0 {
                end += (stops.trailing_zeros() / 8) as usize;
                break;
            }
            end += 8;
        }
        while let Some(&byte) = self.bytes.get(end) {
            if byte == b'"' || byte == b'\\' || byte < 0x20 {
                break;
            }
            end += 1;
        }
        if self.bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.position = end + 1;
        self.text.get(start..end)
    }

    /// A plain decimal integer that fits a `u64` (no sign, fraction, exponent or leading zero).
    fn number(&mut self) -> Option<u64> {
        self.skip_whitespace();
        self.digits()
    }

    /// [`Scanner::number`] with no whitespace before it.
    #[inline(always)]
    fn digits(&mut self) -> Option<u64> {
        let first = *self.bytes.get(self.position)?;
        if !first.is_ascii_digit() {
            return None;
        }
        if first == b'0' {
            // A digit after a leading zero is invalid JSON; the caller's next
            // `expect` rejects it.
            self.position += 1;
            return Some(0);
        }
        // Up to eight digits at once, without a branch per digit, while eight
        // bytes are left.
        if let Some(chunk) = self.bytes.get(self.position..self.position + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            let stops = non_digits(word);
            if stops != 0 {
                // At least one digit (the first), at most seven.
                let count = (stops.trailing_zeros() / 8) as usize;
                self.position += count;
                // Digit values (a borrow starts only above the digits, at
                // the byte that ends them), moved to the top: the zeros
                // shifted in are leading zeros.
                let values = word.wrapping_sub(ONES * u64::from(b'0'));
                return Some(eight_digits(values << (8 * (8 - count))));
            }
        }
        self.position += 1;
        let mut value = u64::from(first - b'0');
        // Nineteen digits cannot overflow a u64; only a twentieth is checked.
        let mut digits = 1;
        while let Some(&byte) = self.bytes.get(self.position) {
            if !byte.is_ascii_digit() {
                break;
            }
            value = if digits < 19 {
                value * 10 + u64::from(byte - b'0')
            } else {
                value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?
            };
            digits += 1;
            self.position += 1;
        }
        Some(value)
    }

    /// One of the three field names, spelled plainly (any other key, or an
    /// escape in one of these, is [`None`]).
    fn field(&mut self) -> Option<Field> {
        self.skip_whitespace();
        let rest = self.bytes.get(self.position..)?;
        let (field, length) = if rest.starts_with(b"\"dtype\"") {
            (Field::DType, 7)
        } else if rest.starts_with(b"\"shape\"") {
            (Field::Shape, 7)
        } else if rest.starts_with(b"\"data_offsets\"") {
            (Field::DataOffsets, 14)
        } else {
            return None;
        };
        self.position += length;
        Some(field)
    }

    /// Consumes `literal` if it comes next (no whitespace before it).
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        let end = self.position + literal.len();
        (self.bytes.get(self.position..end)? == literal).then(|| self.position = end)
    }

    /// `{"dtype": …, "shape": …, "data_offsets": …}`, each field once, in any order.
    fn tensor(&mut self, shape: &mut Shape) -> Option<Fields<'a>> {
        let start = self.position;
        if let Some(fields) = self.compact_tensor(shape) {
            return Some(fields);
        }
        self.position = start;
        self.any_tensor(shape)
    }

    /// [`Scanner::tensor`] spelled as writers commonly spell it, the safetensors
    /// crate among them: `{"dtype":"…","shape":[…],"data_offsets":[…,…]}`, in
    /// that order, with no whitespace. [`None`] leaves the entry to
    /// [`Scanner::any_tensor`] (which reads this spelling too, only slower).
    fn compact_tensor(&mut self, shape: &mut Shape) -> Option<Fields<'a>> {
        self.literal(b"{\"dtype\":\"")?;
        let dtype = self.string_rest()?;
        self.literal(b",\"shape\":[")?;
        shape.rank = 0;
        if self.bytes.get(self.position) == Some(&b']') {
            self.position += 1;
        } else {
            loop {
                *shape.dimensions.get_mut(shape.rank)? = self.digits()?;
                shape.rank += 1;
                let next = *self.bytes.get(self.position)?;
                self.position += 1;
                match next {
                    b',' => {}
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.literal(b",\"data_offsets\":[")?;
        let begin = self.digits()?;
        self.literal(b",")?;
        let end = self.digits()?;
        self.literal(b"]}")?;
        Some(Fields { dtype, begin, end })
    }

    /// [`Scanner::tensor`] in any spelling.
    fn any_tensor(&mut self, shape: &mut Shape) -> Option<Fields<'a>> {
        self.expect(b'{')?;
        let mut dtype = None;
        let mut has_shape = false;
        let mut offsets = None;
        loop {
            let field = self.field()?;
            self.expect(b':')?;
            match field {
                Field::DType if dtype.is_none() => dtype = Some(self.string()?),
                Field::Shape if !has_shape => {
                    self.shape(shape)?;
                    has_shape = true;
                }
                Field::DataOffsets if offsets.is_none() => {
                    self.expect(b'[')?;
                    let begin = self.number()?;
                    self.expect(b',')?;
                    let end = self.number()?;
                    self.expect(b']')?;
                    offsets = Some((begin, end));
                }
                _ => return None,
            }
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b'}')?;
        let (begin, end) = offsets?;
        has_shape.then_some(())?;
        Some(Fields {
            dtype: dtype?,
            begin,
            end,
        })
    }

    /// `[u64, …]` of at most [`limits::MAX_RANK`] numbers.
    fn shape(&mut self, shape: &mut Shape) -> Option<()> {
        self.expect(b'[')?;
        shape.rank = 0;
        if self.eat(b']') {
            return Some(());
        }
        loop {
            *shape.dimensions.get_mut(shape.rank)? = self.number()?;
            shape.rank += 1;
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b']')?;
        Some(())
    }

    /// `{"key": "value", …}` with string values only.
    fn metadata(&mut self) -> Option<Vec<(&'a str, &'a str)>> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        if self.eat(b'}') {
            return Some(entries);
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            entries.push((key, self.string()?));
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b'}')?;
        Some(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::{Scanner, string_stops};

    #[test]
    fn string_stops_finds_the_first_quote_backslash_or_control_byte() {
        let stop = |byte: u8| byte == b'"' || byte == b'\\' || byte < 0x20;
        for byte in 0..=255u8 {
            for at in 0..8 {
                // One filler under Miri (an interpreter), six otherwise.
                let fillers: &[u8] = if cfg!(miri) { b"a" } else { b"a\xff !#\x80" };
                for &filler in fillers {
                    let mut word = [filler; 8];
                    word[at] = byte;
                    let expected = word.iter().position(|&b| stop(b));
                    let stops = string_stops(u64::from_le_bytes(word));
                    let found = (stops != 0).then(|| (stops.trailing_zeros() / 8) as usize);
                    assert_eq!(found, expected, "{word:?}");
                }
            }
        }
    }

    /// What [`Scanner::digits`] makes of `text`: the value and the bytes read.
    fn digits(text: &str) -> Option<(u64, usize)> {
        let mut scanner = Scanner {
            text,
            bytes: text.as_bytes(),
            position: 0,
        };
        scanner.digits().map(|value| (value, scanner.position))
    }

    #[test]
    fn digits_read_as_str_parse_reads_them() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for length in 1..=21 {
            for _ in 0..if cfg!(miri) { 5 } else { 200 } {
                let mut number = String::new();
                for index in 0..length {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let digit = (state % 10) as u8;
                    // Leading zeros sometimes, nines often (near overflow).
                    let digit = if index > 0 && state.is_multiple_of(3) {
                        9
                    } else {
                        digit
                    };
                    number.push(char::from(b'0' + digit));
                }
                for tail in [
                    "", ",", "]", "}", " ", "x", ".5", "e1", "\u{e9}", "0", "12345678",
                ] {
                    let text = format!("{number}{tail}");
                    let expected = if number.starts_with('0') {
                        Some((0, 1))
                    } else {
                        let run = text.bytes().take_while(u8::is_ascii_digit).count();
                        text[..run].parse::<u64>().ok().map(|value| (value, run))
                    };
                    assert_eq!(digits(&text), expected, "{text:?}");
                }
            }
        }
        for text in ["", "x", ",1", "-1", " 1", "\u{e9}1"] {
            assert_eq!(digits(text), None, "{text:?}");
        }
    }
}
