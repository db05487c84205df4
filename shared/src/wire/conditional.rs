//! Conditional requests (RFC 9110 §8.8.3, §13.1.1, §13.1.2): a customer's version is its
//! strong entity tag (`ETag: "3"`); `If-Match` (`*`, or tags compared strongly) guards a change,
//! and `If-None-Match` (`*`, or tags compared weakly) turns a read of an unchanged customer
//! into `304`. Both headers are read the same way for HTTP and NATS, several field lines
//! combining into one list; a value that is neither `*` nor a list of entity tags is a
//! `validation_failed` naming the header, not a condition silently ignored.

use crate::domain::violation::Violation;
use crate::wire::error::ApiError;

/// The entity tag of a customer at `version`: the version in double quotes, strong.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// One entity tag of a condition: its opaque part (without the quotes) and whether it is
/// weak (`W/"…"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    weak: bool,
    opaque: String,
}

/// An `If-Match` or `If-None-Match` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any current version.
    Any,
    /// These tags, in the order sent.
    Tags(Vec<EntityTag>),
}

impl Condition {
    /// The condition in header `name`'s field lines; `None` when there are none.
    pub fn parse<'a>(
        name: &str,
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<Self>, ApiError> {
        let invalid = || {
            ApiError::ValidationFailed(vec![
                Violation::invalid(format!(
                    "{name} must be * or a list of entity tags such as \"3\""
                ))
                .at(name),
            ])
        };
        let mut tags = Vec::new();
        let mut any = false;
        let mut lines_seen = 0;
        for line in lines {
            lines_seen += 1;
            if trim(line) == b"*" {
                any = true;
                continue;
            }
            tags.extend(entity_tags(line).ok_or_else(invalid)?);
        }
        if lines_seen == 0 {
            return Ok(None);
        }
        match (any, tags.is_empty()) {
            // `*` stands alone (RFC 9110: `"*" / #entity-tag`).
            (true, true) if lines_seen == 1 => Ok(Some(Self::Any)),
            (false, false) => Ok(Some(Self::Tags(tags))),
            _ => Err(invalid()),
        }
    }

    /// `If-Match` on a customer at `version`: whether the request may proceed (strong
    /// comparison: a weak tag never matches).
    pub fn matches_strongly(&self, version: u64) -> bool {
        let current = version.to_string();
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| !t.weak && t.opaque == current),
        }
    }

    /// `If-None-Match` on a customer at `version`: whether the client already holds it, so
    /// that a read answers `304` (weak comparison: `W/"3"` matches version 3).
    pub fn matches_weakly(&self, version: u64) -> bool {
        let current = version.to_string();
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| t.opaque == current),
        }
    }
}

/// RFC 9110 §5.6.1's `#entity-tag` in one field line; empty elements are skipped, as the
/// list rule asks. `None` when the line holds anything else.
fn entity_tags(line: &[u8]) -> Option<Vec<EntityTag>> {
    let mut tags = Vec::new();
    let mut rest = line;
    loop {
        rest = skip(rest, |b| b == b' ' || b == b'\t' || b == b',');
        if rest.is_empty() {
            return Some(tags);
        }
        let weak = rest.starts_with(b"W/");
        if weak {
            rest = &rest[2..];
        }
        let quoted = rest.strip_prefix(b"\"")?;
        let end = quoted.iter().position(|&b| b == b'"')?;
        let opaque = &quoted[..end];
        // etagc: %x21 / %x23-7E / obs-text.
        if !opaque
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        tags.push(EntityTag {
            weak,
            opaque: String::from_utf8_lossy(opaque).into_owned(),
        });
        rest = skip(&quoted[end + 1..], |b| b == b' ' || b == b'\t');
        match rest.first() {
            None | Some(b',') => {}
            Some(_) => return None,
        }
    }
}

fn skip(bytes: &[u8], what: impl Fn(u8) -> bool) -> &[u8] {
    let start = bytes.iter().position(|&b| !what(b)).unwrap_or(bytes.len());
    &bytes[start..]
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = skip(bytes, |b| b == b' ' || b == b'\t');
    let end = start
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &start[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Option<Condition>, ApiError> {
        Condition::parse("If-Match", lines.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn a_version_is_a_strong_quoted_tag() {
        assert_eq!(etag(1), "\"1\"");
        assert_eq!(etag(42), "\"42\"");
    }

    #[test]
    fn conditions_match_as_rfc_9110_compares() {
        // (description, header lines, version, strong match, weak match)
        let cases: [(&str, &[&str], u64, bool, bool); 9] = [
            ("the current tag", &["\"3\""], 3, true, true),
            ("another tag", &["\"2\""], 3, false, false),
            ("a weak tag of it", &["W/\"3\""], 3, false, true),
            ("any version", &["*"], 3, true, true),
            ("one of a list", &["\"1\", \"3\""], 3, true, true),
            (
                "a list across two lines",
                &["\"1\"", "\"3\""],
                3,
                true,
                true,
            ),
            ("empty list elements", &[" , \"3\" ,, "], 3, true, true),
            ("a tag that is no version", &["\"abc\""], 3, false, false),
            (
                "leading zeros are another tag",
                &["\"03\""],
                3,
                false,
                false,
            ),
        ];
        for (description, lines, version, strong, weak) in cases {
            let condition = parse(lines)
                .unwrap_or_else(|e| panic!("{description}: {e:?}"))
                .expect("a condition");
            assert_eq!(condition.matches_strongly(version), strong, "{description}");
            assert_eq!(condition.matches_weakly(version), weak, "{description}");
        }
    }

    #[test]
    fn no_header_is_no_condition() {
        assert_eq!(parse(&[]).unwrap(), None);
    }

    #[test]
    fn anything_else_is_refused_naming_the_header() {
        let cases: [(&str, &[&str]); 8] = [
            ("an unquoted version", &["3"]),
            ("an unterminated quote", &["\"3"]),
            ("text after a tag", &["\"3\" x"]),
            ("a quote inside", &["\"3\"\"\""]),
            ("a space inside", &["\"3 4\""]),
            ("a star with tags", &["*, \"3\""]),
            ("a star beside another line", &["*", "\"3\""]),
            ("nothing but commas", &[", ,"]),
        ];
        for (description, lines) in cases {
            let Err(ApiError::ValidationFailed(errors)) = parse(lines) else {
                panic!("{description}: accepted");
            };
            assert_eq!(errors.len(), 1, "{description}");
            assert_eq!(errors[0].field, "If-Match", "{description}");
        }
    }
}
