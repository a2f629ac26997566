//! Splitting a policy file into its YAML documents, and placing semantic errors.
//!
//! Each document is parsed on its own (serde_yaml then reports positions relative to it, which
//! we shift by the document's first line), so that one broken document does not hide the
//! errors of the others. A document starts at a line that is `---` (optionally followed by
//! content) and ends before the next such line or a `...` line.
//!
//! serde_yaml has no spans for values that parsed fine, so an error found after parsing (a bad
//! SPIFFE ID, a bad pattern, a duplicate name) is placed by [`Document::locate`]: it searches
//! the offending value's text within the document, after the line of the key that holds it,
//! then anywhere in the document, then the key alone, and falls back to the document's first
//! line.

/// One YAML document of a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Document<'a> {
    /// The document's text, including its leading `---` line if any.
    pub text: &'a str,
    /// The 1-based line in the file where `text` starts.
    pub first_line: usize,
}

/// The non-empty documents of `src`, in order.
pub(crate) fn split_documents(src: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize; // byte offset of the current document
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (i, line) in src.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let is_start =
            trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---\t");
        let is_end = trimmed == "..." || trimmed.starts_with("... ");
        if is_start || is_end {
            push(&mut docs, &src[start..offset], start_line);
            if is_start {
                start = offset;
                start_line = i + 1;
            } else {
                start = offset + line.len();
                start_line = i + 2;
            }
        }
        offset += line.len();
    }
    push(&mut docs, &src[start..], start_line);
    docs
}

fn push<'a>(docs: &mut Vec<Document<'a>>, text: &'a str, first_line: usize) {
    let has_content = text.lines().any(|l| {
        let l = l.trim();
        let l = l.strip_prefix("---").map_or(l, str::trim);
        !l.is_empty() && !l.starts_with('#')
    });
    if has_content {
        docs.push(Document { text, first_line });
    }
}

impl Document<'_> {
    /// The 1-based (line, column) in the file of `value` as the value of `key` (searched after
    /// the first line naming `key`, then anywhere), else of `key`, else the document's start.
    pub fn locate(&self, key: &str, value: Option<&str>) -> (usize, usize) {
        let lines: Vec<&str> = self.text.lines().collect();
        let key_line = lines.iter().position(|l| find_key(l, key).is_some());
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            let from = key_line.unwrap_or(0);
            let found = find_in(&lines[from..], value)
                .map(|(i, c)| (i + from, c))
                .or_else(|| find_in(&lines, value));
            if let Some((i, col)) = found {
                return (self.first_line + i, col);
            }
        }
        if let Some(i) = key_line {
            if let Some(col) = lines.get(i).and_then(|l| find_key(l, key)) {
                return (self.first_line + i, col);
            }
        }
        (self.first_line, 1)
    }

    /// Shifts a position relative to this document (as serde_yaml reports it) into the file.
    pub fn shift(&self, line: usize, col: usize) -> (usize, usize) {
        (self.first_line + line.saturating_sub(1), col.max(1))
    }
}

/// The first line in `lines` containing `needle` as a whole token, with its 1-based column.
fn find_in(lines: &[&str], needle: &str) -> Option<(usize, usize)> {
    lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| find_token(l, needle).map(|c| (i, c)))
}

/// The 1-based character column of `needle` in `line`, where the characters around it are not
/// part of a longer plain scalar.
fn find_token(line: &str, needle: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = line[from..].find(needle) {
        let at = from + pos;
        let before = line[..at].chars().next_back();
        let after = line[at + needle.len()..].chars().next();
        let boundary = |c: Option<char>| match c {
            None => true,
            Some(c) => {
                c.is_whitespace()
                    || matches!(c, '"' | '\'' | '[' | ']' | '{' | '}' | ',' | ':' | '#')
            }
        };
        if boundary(before) && boundary(after) {
            // Point at the opening quote of a quoted scalar, as serde_yaml does.
            let quoted = matches!(before, Some('"' | '\''));
            return Some(line[..at].chars().count() + 1 - usize::from(quoted));
        }
        from = at + needle.len().max(1);
        if from > line.len() {
            break;
        }
    }
    None
}

/// The 1-based column of `key` used as a mapping key (`key:` or `"key":`) in `line`.
fn find_key(line: &str, key: &str) -> Option<usize> {
    let code = line.split(" #").next().unwrap_or(line);
    let mut from = 0;
    while let Some(pos) = code[from..].find(key) {
        let at = from + pos;
        let before = code[..at].chars().next_back();
        let rest = &code[at + key.len()..];
        let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
        let ok_before = match before {
            None => true,
            Some(c) => c.is_whitespace() || matches!(c, '{' | ',' | '-' | '"' | '\''),
        };
        if ok_before && rest.starts_with(':') {
            let at = if matches!(before, Some('"' | '\'')) {
                at - 1
            } else {
                at
            };
            return Some(code[..at].chars().count() + 1);
        }
        from = at + key.len();
    }
    None
}

#[cfg(test)]
mod tests;
