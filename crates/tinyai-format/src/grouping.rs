//! Grouping tensors into layers by the layer number in their names.
//!
//! # Rules
//!
//! **Numbered tensors.** By default a tensor belongs to a numbered layer when its
//! name contains `layers.N`, `layer.N`, `blk.N`, `h.N`, `block.N` or `blocks.N`
//! as whole dot-separated components (the leftmost such match counts), e.g.
//! `encoder.layer.3.attention.self.query.weight`, `model.layers.12.mlp.up_proj.weight`,
//! `blk.0.attn_q.weight`, `transformer.h.5.ln_1.weight`. The part of the name up to
//! and including the word (`encoder.layer`, `model.layers`, `blk`) is its *family*.
//! When all numbered tensors share one family the layers are named `layer.N`;
//! when there are several (an encoder and a decoder stack), `FAMILY.N`
//! (`encoder.block.0`, `decoder.block.0`).
//!
//! **`--group-by REGEX`** replaces that rule: a tensor whose name matches the regex
//! (search, not full match) belongs to the layer named by the text of the first
//! capture group; a purely decimal capture `N` names the layer `layer.N`.
//!
//! **Other tensors** (no number, or no regex match) go into their own layers, one
//! per *prefix*: the name's first dot-separated component, extended past leading
//! wrapper components (`model`, `transformer`, `bert`, `roberta`, `base_model`,
//! `language_model`, `gpt_neox`, `backbone`) as long as a non-final component
//! follows. So `embeddings.word_embeddings.weight` → `embeddings`,
//! `model.embed_tokens.weight` → `model.embed_tokens`, `model.norm.weight` →
//! `model.norm`, `lm_head.weight` → `lm_head`, `token_embd.weight` → `token_embd`,
//! `output_norm.weight` → `output_norm`, `pooler.dense.bias` → `pooler`.
//!
//! **Order.** First the "pre" layers: unnumbered layers whose name (lower-cased)
//! contains `embed`, `embd`, `wte`, `wpe`, `shared`, `token`, `tok_`, `patch` or
//! `position`, in order of first appearance in the source. Then the numbered layers:
//! by family (first appearance), then numerically; with `--group-by`, by natural
//! order of the layer name (digit runs compared as numbers). Then every other
//! unnumbered layer (final norms, heads, poolers) in order of first appearance.
//! Inside a layer, tensors keep their source order and their full original names.
//! Layers that end up with the same name are merged.
//!
//! "Source order" is data-offset order for safetensors (shard by shard, shards in
//! file-name order) and tensor-info order for GGUF.
//!
//! `tmai convert` and the direct safetensors and GGUF readers
//! ([`crate::foreign::group_layers`]) share this one implementation.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// How tensors are assigned to layers.
#[derive(Clone, Debug, Default)]
pub enum Grouping {
    /// The built-in `layers.N` / `layer.N` / `blk.N` / `h.N` / `block.N` / `blocks.N` rule.
    #[default]
    Default,
    /// `--group-by`: the first capture group of this regex names the layer.
    Regex(Regex),
}

/// One layer to write: its name and the indices of its tensors in source order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedLayer {
    /// Layer name.
    pub name: String,
    /// Indices into the source tensor list, in source order.
    pub tensors: Vec<usize>,
}

static DEFAULT_PATTERN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?:^|\.)(layers|layer|blk|h|block|blocks)\.(\d+)(?:\.|$)").ok());

const WRAPPERS: &[&str] = &[
    "model",
    "transformer",
    "bert",
    "roberta",
    "base_model",
    "language_model",
    "gpt_neox",
    "backbone",
];

const PRE_MARKERS: &[&str] = &[
    "embed", "embd", "wte", "wpe", "shared", "token", "tok_", "patch", "position",
];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NaturalPart {
    Text(String),
    Number(u128),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Order {
    Pre(usize),
    Numbered(usize, u128),
    Custom(Vec<NaturalPart>),
    Post(usize),
}

enum Key<'a> {
    Numbered { family: &'a str, number: u128 },
    Custom(&'a str),
    Ungrouped(&'a str),
}

/// A [`Key`] with its family replaced by its position in the family list.
#[derive(PartialEq, Eq)]
enum Interned<'a> {
    Numbered { family: usize, number: u128 },
    Custom(&'a str),
    Ungrouped(&'a str),
}

/// The words that, followed by a number component, make a layer (the default rule).
const LAYER_WORDS: &[&str] = &["layers", "layer", "blk", "h", "block", "blocks"];

/// The layer prefix of an unnumbered tensor name (see the module docs).
pub fn ungrouped_prefix(name: &str) -> String {
    prefix_of(name).to_owned()
}

/// [`ungrouped_prefix`] as a slice of `name`.
fn prefix_of(name: &str) -> &str {
    let count = name.bytes().filter(|&byte| byte == b'.').count() + 1;
    let mut components = name.split('.');
    let mut current = components.next().unwrap_or_default();
    let mut length = current.len();
    let mut index = 0;
    while index + 2 < count && WRAPPERS.contains(&current) {
        current = components.next().unwrap_or_default();
        length += 1 + current.len();
        index += 1;
    }
    name.get(..length).unwrap_or(name)
}

fn is_pre(prefix: &str) -> bool {
    let lower = prefix.to_lowercase();
    PRE_MARKERS.iter().any(|marker| lower.contains(marker))
}

fn natural_key(text: &str) -> Vec<NaturalPart> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut digits = false;
    let flush = |current: &mut String, digits: bool, parts: &mut Vec<NaturalPart>| {
        if current.is_empty() {
            return;
        }
        let part = if digits {
            NaturalPart::Number(current.parse().unwrap_or(u128::MAX))
        } else {
            NaturalPart::Text(current.clone())
        };
        parts.push(part);
        current.clear();
    };
    for character in text.chars() {
        let is_digit = character.is_ascii_digit();
        if is_digit != digits {
            flush(&mut current, digits, &mut parts);
            digits = is_digit;
        }
        current.push(character);
    }
    flush(&mut current, digits, &mut parts);
    parts
}

/// The default rule's match in `name`: the family (the name up to and including
/// the word) and the layer number text. Equivalent to [`DEFAULT_PATTERN`]'s
/// leftmost match, without running the regex: a match is a component that is
/// one of [`LAYER_WORDS`] followed by a component of digits only. The regex's
/// `\d` also takes Unicode digits other than ASCII ones, so when the component
/// after a word holds a byte that is not ASCII (the first such place, left to
/// right), the regex decides for the whole name.
fn default_match(name: &str) -> Option<(&str, &str)> {
    let (family_end, number, _) = default_match_at(name)?;
    Some((name.get(..family_end)?, name.get(number)?))
}

/// [`default_match`] as byte positions in `name`: the family's end and the
/// layer number's range; `true` if found without the regex (every component
/// before the number is ASCII up to where it was found, and no earlier
/// component is a layer word followed by digits).
fn default_match_at(name: &str) -> Option<(usize, Range<usize>, bool)> {
    let bytes = name.as_bytes();
    let component_end = |start: usize| {
        bytes
            .get(start..)
            .and_then(|rest| rest.iter().position(|&byte| byte == b'.'))
            .map_or(bytes.len(), |length| start + length)
    };
    let mut start = 0;
    let mut end = component_end(0);
    // A word needs a following component: stop at the last one.
    while end < bytes.len() {
        let next_start = end + 1;
        let next_end = component_end(next_start);
        if bytes.get(start..end).is_some_and(is_layer_word) && next_end > next_start {
            let next = bytes.get(next_start..next_end).unwrap_or_default();
            if next.iter().all(u8::is_ascii_digit) {
                return Some((end, next_start..next_end, true));
            }
            if !next.is_ascii() {
                let captures = DEFAULT_PATTERN.as_ref()?.captures(name)?;
                let (word, number) = (captures.get(1)?, captures.get(2)?);
                return Some((word.end(), number.range(), false));
            }
        }
        (start, end) = (next_start, next_end);
    }
    None
}

/// Whether `component` is one of [`LAYER_WORDS`].
fn is_layer_word(component: &[u8]) -> bool {
    // By length first: most components are no word's length.
    matches!(component.len(), 1 | 3 | 5 | 6)
        && LAYER_WORDS.iter().any(|word| word.as_bytes() == component)
}

fn key_of<'a>(name: &'a str, grouping: &Grouping) -> Key<'a> {
    match grouping {
        Grouping::Default => {
            if let Some((family, number)) = default_match(name)
                && let Ok(number) = number.parse::<u128>()
            {
                return Key::Numbered { family, number };
            }
        }
        Grouping::Regex(pattern) => {
            if let Some(capture) = pattern.captures(name).and_then(|c| c.get(1)) {
                return Key::Custom(capture.as_str());
            }
        }
    }
    Key::Ungrouped(prefix_of(name))
}

/// Assigns tensors (given by name, in source order) to layers, in file order.
pub fn plan<S: AsRef<str>>(names: &[S], grouping: &Grouping) -> Vec<PlannedLayer> {
    match grouping {
        Grouping::Default => {
            let plan = plan_default(names.len(), |index| names[index].as_ref());
            plan.layers
                .iter()
                .map(|(name, range)| {
                    let mut text = String::new();
                    name.write_to(&mut text);
                    PlannedLayer {
                        name: text,
                        tensors: plan.members(range.clone()).collect(),
                    }
                })
                .collect()
        }
        Grouping::Regex(_) => plan_by_name(names, grouping),
    }
}

/// A tensor's layer under the default rule, with its family interned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DefaultKey<'a> {
    Numbered { family: usize, number: u128 },
    Ungrouped(&'a str),
}

/// Families whose layers are found by number in a table (numbers below the
/// tensor count) rather than by hashing: at most this many tables of at most
/// one entry per tensor each.
const DENSE_FAMILIES: usize = 4;

/// Families looked up by a linear search before a hash map is made.
const LISTED_FAMILIES: usize = 8;

/// No layer yet (in a dense table).
const NO_SLOT: usize = usize::MAX;

/// A planned layer's name, made only when asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LayerName<'a> {
    /// `FAMILY.N` (`family` is `layer` when there is one family).
    Numbered { family: &'a str, number: u128 },
    /// A name as it is.
    Text(&'a str),
    /// A name made while planning (`--group-by`).
    Owned(String),
}

impl LayerName<'_> {
    /// Appends the name to `out`.
    pub(crate) fn write_to(&self, out: &mut String) {
        match self {
            LayerName::Numbered { family, number } => push_numbered_name(out, family, *number),
            LayerName::Text(text) => out.push_str(text),
            LayerName::Owned(text) => out.push_str(text),
        }
    }
}

/// Layers planned without an allocation per layer: layer `i` holds the tensors
/// of the runs `runs[layers[i].1.clone()]` (ranges of source indices), in
/// source order. Neighbours in the source mostly share a layer, so a run
/// usually holds a layer's tensors, or many of them.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompactPlan<'a> {
    pub(crate) layers: Vec<(LayerName<'a>, Range<usize>)>,
    pub(crate) runs: Vec<Range<usize>>,
}

impl<'a> CompactPlan<'a> {
    /// Plans `count` tensors named by `name_of(0..count)`, in source order, as [`plan`].
    pub(crate) fn new(
        count: usize,
        name_of: impl Fn(usize) -> &'a str,
        grouping: &Grouping,
    ) -> CompactPlan<'a> {
        match grouping {
            Grouping::Default => plan_default(count, name_of),
            Grouping::Regex(_) => {
                let names: Vec<&str> = (0..count).map(name_of).collect();
                let mut plan = CompactPlan::default();
                for layer in plan_by_name(&names, grouping) {
                    let start = plan.runs.len();
                    for &index in &layer.tensors {
                        let in_layer = plan.runs.len() > start;
                        match plan.runs.last_mut() {
                            Some(run) if in_layer && run.end == index => run.end += 1,
                            _ => plan.runs.push(index..index + 1),
                        }
                    }
                    let range = start..plan.runs.len();
                    plan.layers.push((LayerName::Owned(layer.name), range));
                }
                plan
            }
        }
    }

    /// The tensors of the runs `runs` (a layer's), in order.
    pub(crate) fn members(&self, runs: Range<usize>) -> impl Iterator<Item = usize> + '_ {
        self.runs
            .get(runs)
            .unwrap_or_default()
            .iter()
            .flat_map(Clone::clone)
    }
}

/// [`plan`] for [`Grouping::Default`]. Under that rule distinct keys always make
/// distinct layer names (a numbered name ends in a component of digits after
/// a layer word, which no wrapper is; an unnumbered prefix is wrappers and one
/// component; `family.N` splits at its last dot), so layers are found by key:
/// numbers index a table, the rest hash borrowed slices, and numbered layers
/// come out in order without a sort. Gives what [`plan_by_name`] gives
/// (`tests::the_default_plan_matches_the_plan_by_name` checks that).
fn plan_default<'a>(count: usize, name_of: impl Fn(usize) -> &'a str) -> CompactPlan<'a> {
    // Families in order of first appearance (found by search while few, then hashed).
    let mut families: Vec<&str> = Vec::new();
    let mut family_positions: HashMap<&str, usize> = HashMap::new();
    // Per layer ("slot", in order of first appearance): its key, run count
    // and whether it is a "pre" layer.
    let mut slots: Vec<(DefaultKey<'_>, usize, bool)> = Vec::new();
    // Runs of neighbours in one slot, in source order.
    let mut slot_runs: Vec<(usize, Range<usize>)> = Vec::new();
    // Numbered layers: slots by number for the first families, else hashed.
    let mut dense: [Vec<usize>; DENSE_FAMILIES] = Default::default();
    let mut sparse: HashMap<(usize, u128), usize> = HashMap::new();
    let mut ungrouped: HashMap<&str, usize> = HashMap::new();
    let mut last_family: Option<(&str, usize)> = None;
    let mut previous: Option<(DefaultKey<'_>, usize)> = None;
    // The last numbered name, where its number ends, and its slot.
    let mut last_numbered: Option<(&str, usize, usize)> = None;
    // The last numbered name found without the regex, where its family ends,
    // and the family's position.
    let mut family_prefix: Option<(&str, usize, usize)> = None;
    for index in 0..count {
        let name = name_of(index);
        // A name that repeats the last numbered name up to the end of its
        // number, then ends or goes on with a dot, has its match (every
        // component up to there is the same, and the number's component ends
        // there in both), so its key and slot: neighbours in a layer skip the
        // search and the lookup.
        if let Some((last, number_end, slot)) = last_numbered
            && name
                .as_bytes()
                .get(number_end)
                .is_none_or(|&byte| byte == b'.')
            && same_prefix(name.as_bytes(), last.as_bytes(), number_end)
        {
            add_to_run(&mut slot_runs, &mut slots, slot, index);
            continue;
        }
        let mut numbered_end = None;
        // A name that repeats the last name matched without the regex up to
        // the end of its family word, then has a dot and a component of ASCII
        // digits, has that family and number: the components before are the
        // same (none of them made a match or needed the regex), and a layer
        // word followed by digits is a match.
        let near = family_prefix.and_then(|(last, family_end, family)| {
            let bytes = name.as_bytes();
            if bytes.get(family_end) != Some(&b'.')
                || !same_prefix(bytes, last.as_bytes(), family_end)
            {
                return None;
            }
            let start = family_end + 1;
            let rest = bytes.get(start..)?;
            let length = rest
                .iter()
                .position(|&byte| byte == b'.')
                .unwrap_or(rest.len());
            if length == 0 || !rest.get(..length)?.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let number = layer_number(name.get(start..start + length)?)?;
            Some((family, number, start + length))
        });
        let key = if let Some((family, number, number_end)) = near {
            numbered_end = Some(number_end);
            DefaultKey::Numbered { family, number }
        } else if let Some((family, number, number_end, plain)) =
            default_match_at(name).and_then(|(family_end, number, plain)| {
                let number_end = number.end;
                Some((
                    name.get(..family_end)?,
                    layer_number(name.get(number)?)?,
                    number_end,
                    plain,
                ))
            })
        {
            let family_end = family.len();
            let family = match last_family {
                Some((text, position)) if text == family => position,
                _ => {
                    let position = if families.len() <= LISTED_FAMILIES {
                        families.iter().position(|known| *known == family)
                    } else {
                        family_positions.get(family).copied()
                    };
                    let position = position.unwrap_or_else(|| {
                        families.push(family);
                        if families.len() > LISTED_FAMILIES {
                            if family_positions.is_empty() {
                                family_positions
                                    .extend(families.iter().enumerate().map(|(i, f)| (*f, i)));
                            } else {
                                family_positions.insert(family, families.len() - 1);
                            }
                        }
                        families.len() - 1
                    });
                    last_family = Some((family, position));
                    position
                }
            };
            numbered_end = Some(number_end);
            family_prefix = plain.then_some((name, family_end, family));
            DefaultKey::Numbered { family, number }
        } else {
            DefaultKey::Ungrouped(prefix_of(name))
        };
        let slot = match previous {
            Some((previous_key, slot)) if previous_key == key => slot,
            _ => {
                let new_slot = slots.len();
                let slot = match key {
                    DefaultKey::Numbered { family, number } => {
                        match (dense.get_mut(family), usize::try_from(number)) {
                            (Some(table), Ok(small)) if small < count => {
                                if table.len() <= small {
                                    table.resize(small + 1, NO_SLOT);
                                }
                                if table[small] == NO_SLOT {
                                    table[small] = new_slot;
                                }
                                table[small]
                            }
                            _ => *sparse.entry((family, number)).or_insert(new_slot),
                        }
                    }
                    DefaultKey::Ungrouped(prefix) => *ungrouped.entry(prefix).or_insert(new_slot),
                };
                if slot == new_slot {
                    let pre = matches!(key, DefaultKey::Ungrouped(prefix) if is_pre(prefix));
                    slots.push((key, 0, pre));
                }
                previous = Some((key, slot));
                slot
            }
        };
        if let Some(number_end) = numbered_end {
            last_numbered = Some((name, number_end, slot));
        }
        add_to_run(&mut slot_runs, &mut slots, slot, index);
    }
    // Layer order: "pre" layers, numbered ones (by family, then number), the rest.
    let mut order: Vec<usize> = Vec::with_capacity(slots.len());
    order.extend((0..slots.len()).filter(|&slot| slots[slot].2));
    let mut sparse: Vec<((usize, u128), usize)> = sparse.into_iter().collect();
    sparse.sort_unstable();
    let mut sparse = sparse.into_iter().peekable();
    for family in 0..families.len() {
        if let Some(table) = dense.get(family) {
            order.extend(table.iter().copied().filter(|&slot| slot != NO_SLOT));
        }
        while let Some((_, slot)) = sparse.next_if(|((f, _), _)| *f == family) {
            order.push(slot);
        }
    }
    order.extend(
        (0..slots.len())
            .filter(|&slot| !slots[slot].2 && matches!(slots[slot].0, DefaultKey::Ungrouped(_))),
    );
    // Each slot's place in `runs`, then the runs by counting sort.
    let single_family = families.len() == 1;
    let mut next_run = vec![0usize; slots.len()];
    let mut layers = Vec::with_capacity(order.len());
    let mut start = 0;
    for &slot in &order {
        let (key, runs, _) = slots[slot];
        next_run[slot] = start;
        let name = match key {
            DefaultKey::Numbered { family, number } => LayerName::Numbered {
                family: if single_family {
                    "layer"
                } else {
                    families.get(family).copied().unwrap_or_default()
                },
                number,
            },
            DefaultKey::Ungrouped(prefix) => LayerName::Text(prefix),
        };
        layers.push((name, start..start + runs));
        start += runs;
    }
    let mut runs = vec![0..0; slot_runs.len()];
    for (slot, run) in slot_runs {
        if let Some(place) = runs.get_mut(next_run[slot]) {
            *place = run;
        }
        next_run[slot] += 1;
    }
    CompactPlan { layers, runs }
}

/// Adds tensor `index` (the next in source order) to `slot`: to the last run
/// if that is the slot's, else to a new run of the slot.
fn add_to_run(
    slot_runs: &mut Vec<(usize, Range<usize>)>,
    slots: &mut [(DefaultKey<'_>, usize, bool)],
    slot: usize,
    index: usize,
) {
    match slot_runs.last_mut() {
        Some((last, run)) if *last == slot => run.end = index + 1,
        _ => {
            if let Some(entry) = slots.get_mut(slot) {
                entry.1 += 1;
            }
            slot_runs.push((slot, index..index + 1));
        }
    }
}

/// Whether `a` and `b` both hold `length` bytes or more and agree on the
/// first `length`; eight bytes at a time, without a call (layer prefixes are
/// short).
fn same_prefix(a: &[u8], b: &[u8], length: usize) -> bool {
    let (Some(a), Some(b)) = (a.get(..length), b.get(..length)) else {
        return false;
    };
    let word = |bytes: &[u8], at: usize| {
        let mut word = [0u8; 8];
        if let Some(chunk) = bytes.get(at..at + 8) {
            word.copy_from_slice(chunk);
        }
        u64::from_ne_bytes(word)
    };
    if length < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    // Whole words from the start, then the last eight bytes (overlapping).
    let mut at = 0;
    while at + 8 < length {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    word(a, length - 8) == word(b, length - 8)
}

/// `text` as a `u128`, as `text.parse::<u128>()` reads it; up to 19 ASCII
/// digits (which cannot overflow a `u64`) without 128-bit arithmetic.
fn layer_number(text: &str) -> Option<u128> {
    if !text.is_empty() && text.len() <= 19 && text.bytes().all(|byte| byte.is_ascii_digit()) {
        let value = text
            .bytes()
            .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
        return Some(u128::from(value));
    }
    text.parse().ok()
}

/// Appends `FAMILY.N`, formatted without the formatting machinery when `N` fits a `u64`.
fn push_numbered_name(out: &mut String, family: &str, number: u128) {
    out.push_str(family);
    out.push('.');
    let Ok(mut rest) = u64::try_from(number) else {
        out.push_str(&number.to_string());
        return;
    };
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(digits.get(start..).unwrap_or_default()).unwrap_or_default());
}

/// [`plan`] by layer name: each tensor's layer is named, then found by that
/// name, so that keys that name one layer (`--group-by` captures `2` and
/// `layer.2`) merge. The reference for [`plan_default`].
fn plan_by_name<S: AsRef<str>>(names: &[S], grouping: &Grouping) -> Vec<PlannedLayer> {
    // Families in order of first appearance; keys refer to them by position, so
    // that neighbours compare without reading their names again.
    let mut families: Vec<&str> = Vec::new();
    let keys: Vec<Interned<'_>> = names
        .iter()
        .map(|name| match key_of(name.as_ref(), grouping) {
            Key::Numbered { family, number } => {
                let family = match families.iter().position(|known| *known == family) {
                    Some(position) => position,
                    None => {
                        families.push(family);
                        families.len() - 1
                    }
                };
                Interned::Numbered { family, number }
            }
            Key::Custom(capture) => Interned::Custom(capture),
            Key::Ungrouped(prefix) => Interned::Ungrouped(prefix),
        })
        .collect();
    let mut layers: Vec<(Order, PlannedLayer)> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // The key and layer of the previous tensor: neighbours mostly share a layer,
    // and the same key always names the same layer.
    let mut previous: Option<(&Interned<'_>, usize)> = None;
    for (index, key) in keys.iter().enumerate() {
        if let Some((previous_key, slot)) = previous
            && previous_key == key
        {
            layers[slot].1.tensors.push(index);
            continue;
        }
        let (name, order) = match key {
            Interned::Numbered {
                family: family_index,
                number,
            } => {
                let family = families.get(*family_index).copied().unwrap_or_default();
                // u64 formats faster than u128, and layer numbers fit one.
                let name = match (families.len(), u64::try_from(*number)) {
                    (1, Ok(small)) => format!("layer.{small}"),
                    (1, Err(_)) => format!("layer.{number}"),
                    (_, Ok(small)) => format!("{family}.{small}"),
                    (_, Err(_)) => format!("{family}.{number}"),
                };
                (name, Order::Numbered(*family_index, *number))
            }
            Interned::Custom(capture) => {
                let name = match capture.parse::<u128>() {
                    Ok(number) if capture.bytes().all(|b| b.is_ascii_digit()) => {
                        format!("layer.{number}")
                    }
                    _ => (*capture).to_owned(),
                };
                let order = Order::Custom(natural_key(&name));
                (name, order)
            }
            Interned::Ungrouped(prefix) => {
                let order = if is_pre(prefix) {
                    Order::Pre(layers.len())
                } else {
                    Order::Post(layers.len())
                };
                ((*prefix).to_owned(), order)
            }
        };
        let slot = match by_name.entry(name) {
            Entry::Occupied(entry) => {
                let slot = *entry.get();
                layers[slot].1.tensors.push(index);
                slot
            }
            Entry::Vacant(entry) => {
                // Room for the run of neighbours with this key (often the whole layer).
                let run = keys[index..].iter().take_while(|k| *k == key).count();
                let mut tensors = Vec::with_capacity(run);
                tensors.push(index);
                entry.insert(layers.len());
                layers.push((
                    order,
                    PlannedLayer {
                        // Moved out of `by_name` below.
                        name: String::new(),
                        tensors,
                    },
                ));
                layers.len() - 1
            }
        };
        previous = Some((key, slot));
    }
    for (name, slot) in by_name {
        layers[slot].1.name = name;
    }
    layers.sort_by(|a, b| a.0.cmp(&b.0));
    layers.into_iter().map(|(_, layer)| layer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic `0..bound` generator (xorshift64) for the differential tests.
    fn xorshift(mut state: u64) -> impl FnMut(usize) -> usize {
        move |bound| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        }
    }

    fn names_of(layers: &[PlannedLayer]) -> Vec<&str> {
        layers.iter().map(|layer| layer.name.as_str()).collect()
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "pure logic over the regex crate; compiling regexes under Miri takes minutes"
    )]
    fn bert_names_group_into_embeddings_layers_and_pooler() {
        let names = [
            "encoder.layer.10.output.dense.weight",
            "embeddings.word_embeddings.weight",
            "encoder.layer.2.output.dense.weight",
            "pooler.dense.weight",
            "embeddings.LayerNorm.bias",
            "encoder.layer.2.attention.self.query.weight",
        ];
        let layers = plan(&names, &Grouping::Default);
        assert_eq!(
            names_of(&layers),
            ["embeddings", "layer.2", "layer.10", "pooler"]
        );
        assert_eq!(layers[0].tensors, [1, 4]);
        assert_eq!(layers[1].tensors, [2, 5]);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "pure logic over the regex crate; compiling regexes under Miri takes minutes"
    )]
    fn gguf_and_llama_names() {
        let names = [
            "output.weight",
            "blk.1.attn_q.weight",
            "token_embd.weight",
            "blk.0.attn_q.weight",
            "output_norm.weight",
        ];
        let layers = plan(&names, &Grouping::Default);
        assert_eq!(
            names_of(&layers),
            ["token_embd", "layer.0", "layer.1", "output", "output_norm"]
        );
        let names = [
            "lm_head.weight",
            "model.embed_tokens.weight",
            "model.layers.0.mlp.up_proj.weight",
            "model.norm.weight",
        ];
        let layers = plan(&names, &Grouping::Default);
        assert_eq!(
            names_of(&layers),
            ["model.embed_tokens", "layer.0", "lm_head", "model.norm"]
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "pure logic over the regex crate; compiling regexes under Miri takes minutes"
    )]
    fn several_families_keep_their_prefix() {
        let names = [
            "encoder.block.1.x",
            "decoder.block.0.x",
            "encoder.block.0.x",
            "shared.weight",
        ];
        let layers = plan(&names, &Grouping::Default);
        assert_eq!(
            names_of(&layers),
            [
                "shared",
                "encoder.block.0",
                "encoder.block.1",
                "decoder.block.0"
            ]
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "pure logic over the regex crate; compiling regexes under Miri takes minutes"
    )]
    fn a_number_must_be_a_whole_component() {
        let names = ["blocks.3x.weight", "hh.2.weight", "hidden.h.2.weight"];
        let layers = plan(&names, &Grouping::Default);
        assert_eq!(names_of(&layers), ["layer.2", "blocks", "hh"]);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "pure logic over the regex crate; compiling regexes under Miri takes minutes"
    )]
    fn custom_regex_groups_by_its_first_capture() -> Result<(), regex::Error> {
        let names = ["stage10.a", "stage2.a", "stage2.b", "head.w", "stem.w"];
        let layers = plan(&names, &Grouping::Regex(Regex::new(r"^(stage\d+)\.")?));
        assert_eq!(names_of(&layers), ["stage2", "stage10", "head", "stem"]);
        let layers = plan(&names, &Grouping::Regex(Regex::new(r"^stage(\d+)\.")?));
        assert_eq!(names_of(&layers), ["layer.2", "layer.10", "head", "stem"]);
        Ok(())
    }

    /// The default rule as the regex alone reads it (the code before the scan).
    fn regex_key(name: &str) -> Option<(String, u128)> {
        let captures = DEFAULT_PATTERN.as_ref()?.captures(name)?;
        let (word, number) = (captures.get(1)?, captures.get(2)?);
        let number = number.as_str().parse::<u128>().ok()?;
        Some((name[..word.end()].to_owned(), number))
    }

    fn scanned_key(name: &str) -> Option<(String, u128)> {
        match key_of(name, &Grouping::Default) {
            Key::Numbered { family, number } => Some((family.to_owned(), number)),
            _ => None,
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "pure logic over the regex crate; compiling regexes under Miri takes minutes"
    )]
    fn the_default_scan_matches_the_regex() {
        let parts = [
            "layers",
            "layer",
            "blk",
            "h",
            "block",
            "blocks",
            "hh",
            "xlayers",
            "layers_",
            "0",
            "7",
            "12",
            "007",
            "3x",
            "",
            "model",
            "weight",
            "-1",
            "1e3",
            "340282366920938463463374607431768211455", // u128::MAX
            "340282366920938463463374607431768211456", // u128::MAX + 1
            "\u{663}", // Arabic-Indic digit three: `\d` but not ASCII
            "1\u{663}",
            "é",
            "layérs",
        ];
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15_u64);
        let mut checked = 0;
        for _ in 0..20_000 {
            let count = 1 + next(6);
            let mut name = String::new();
            for index in 0..count {
                if index > 0 {
                    name.push(if next(16) == 0 { '_' } else { '.' });
                }
                name.push_str(parts[next(parts.len())]);
            }
            assert_eq!(scanned_key(&name), regex_key(&name), "{name:?}");
            checked += usize::from(regex_key(&name).is_some());
        }
        assert!(checked > 1000, "only {checked} numbered names");
        for name in [
            "layers.1.layers.2",
            "a.blocks.3.blk.4",
            ".layers.5",
            "layers.6.",
            "layers..7",
            "h.\u{663}.layers.8",
            "h.1\u{663}.layers.9",
            "layers.99999999999999999999999999999999999999999.blk.1",
        ] {
            assert_eq!(scanned_key(name), regex_key(name), "{name:?}");
        }
    }

    #[test]
    fn layer_numbers_read_as_parse_reads_them() {
        for text in [
            "",
            "0",
            "7",
            "007",
            "+5",
            "-1",
            "1x",
            "\u{663}",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "340282366920938463463374607431768211455",
            "340282366920938463463374607431768211456",
        ] {
            assert_eq!(layer_number(text), text.parse::<u128>().ok(), "{text:?}");
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "30,000 random name lists; compiling regexes under Miri takes minutes"
    )]
    fn the_default_plan_matches_the_plan_by_name() {
        let parts = [
            "layers",
            "layer",
            "blk",
            "h",
            "block",
            "blocks",
            "model",
            "transformer",
            "bert",
            "encoder",
            "decoder",
            "embed_tokens",
            "Token",
            "norm",
            "weight",
            "0",
            "1",
            "2",
            "3",
            "007",
            "12",
            "99",
            "100000",
            "18446744073709551616",
            "",
            "x",
            "\u{663}",
            "TO\u{212a}EN",
        ];
        let mut next = xorshift(0x2545_f491_4f6c_dd1d_u64);
        let mut numbered = 0;
        for _ in 0..30_000 {
            let tensors = next(40);
            let mut names: Vec<String> = Vec::with_capacity(tensors);
            for _ in 0..tensors {
                let mut name = String::new();
                for index in 0..1 + next(5) {
                    if index > 0 {
                        name.push('.');
                    }
                    name.push_str(parts[next(parts.len())]);
                }
                // Neighbours often share a layer, as in real files, or
                // begin as the last name does and part from it anywhere.
                if let Some(last) = names.last() {
                    match next(3) {
                        0 => name = format!("{last}.weight"),
                        1 => {
                            let mut cut = next(last.len() + 1);
                            while !last.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            name = format!("{}{}", &last[..cut], parts[next(parts.len())]);
                        }
                        _ => {}
                    }
                }
                names.push(name);
            }
            let expected = plan_by_name(&names, &Grouping::Default);
            numbered += expected
                .iter()
                .filter(|layer| layer.name.ends_with(|c: char| c.is_ascii_digit()))
                .count();
            assert_eq!(plan(&names, &Grouping::Default), expected, "{names:?}");
        }
        assert!(numbered > 10_000, "only {numbered} numbered layers");
        // Many families, large and sparse numbers, layers split by other tensors.
        let names: Vec<String> = (0..3000u64)
            .map(|i| match i % 7 {
                0 => format!("f{}.blk.{}.w", i % 11, i * 7919 % 4000),
                1 => format!("model.layers.{}.w", u64::MAX - i % 5),
                2 => format!("f{}.h.{}.w", i % 3, i % 50),
                3 => format!("head{}.w", i % 13),
                _ => format!("f{}.blk.{}.w", i % 11, i % 40),
            })
            .collect();
        assert_eq!(
            plan(&names, &Grouping::Default),
            plan_by_name(&names, &Grouping::Default)
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "pure logic over the regex crate; compiling regexes under Miri takes minutes"
    )]
    fn neighbours_with_one_key_share_a_layer_and_merged_names_still_merge() {
        let names = [
            "model.layers.0.a",
            "model.layers.0.b",
            "model.layers.1.a",
            "model.layers.0.c",
            "lm_head.weight",
            "lm_head.bias",
        ];
        let layers = plan(&names, &Grouping::Default);
        assert_eq!(names_of(&layers), ["layer.0", "layer.1", "lm_head"]);
        assert_eq!(layers[0].tensors, [0, 1, 3]);
        assert_eq!(layers[1].tensors, [2]);
        assert_eq!(layers[2].tensors, [4, 5]);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "pure logic over the regex crate; compiling regexes under Miri takes minutes"
    )]
    fn prefixes() {
        assert_eq!(ungrouped_prefix("weight"), "weight");
        assert_eq!(ungrouped_prefix("model.weight"), "model");
        assert_eq!(ungrouped_prefix("model.norm.weight"), "model.norm");
        assert_eq!(
            ungrouped_prefix("model.language_model.norm.weight"),
            "model.language_model.norm"
        );
        assert_eq!(ungrouped_prefix(""), "");
        // The slice version against the component join it replaced.
        let joined = |name: &str| {
            let components: Vec<&str> = name.split('.').collect();
            let mut index = 0;
            while index + 2 < components.len() && WRAPPERS.contains(&components[index]) {
                index += 1;
            }
            components[..=index].join(".")
        };
        let parts = ["model", "transformer", "bert", "norm", "weight", "", "x.y"];
        for a in parts {
            for b in parts {
                for c in parts {
                    for name in [a.to_owned(), format!("{a}.{b}"), format!("{a}.{b}.{c}")] {
                        assert_eq!(ungrouped_prefix(&name), joined(&name), "{name:?}");
                    }
                }
            }
        }
    }
}
