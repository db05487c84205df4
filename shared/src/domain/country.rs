//! Country normalisation: an ISO 3166-1 alpha-2 code in any case, or a country's English
//! name or common alias in any case (including the ISO "Tanzania, United Republic of" form),
//! becomes the upper-case alpha-2 code. The data comes from the `celes` crate.

use std::fmt;

use celes::Country;
use schemars::JsonSchema;
use serde::{Serialize, Serializer};

use crate::domain::violation::{Violation, echoed};

/// An assigned ISO 3166-1 alpha-2 code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(
    transparent,
    description = "ISO 3166-1 alpha-2 code, upper case",
    extend("pattern" = "^[A-Z]{2}$")
)]
pub struct CountryCode(#[schemars(with = "String")] &'static str);

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, Violation> {
        let value = raw.trim();
        lookup(value)
            .map(|country| Self(country.alpha2))
            .ok_or_else(|| Violation::invalid(unknown_country_message(value)))
    }

    /// The upper-case alpha-2 code.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for CountryCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

fn lookup(value: &str) -> Option<Country> {
    if value.len() == 2 {
        return Country::from_alpha2(value).ok();
    }
    by_name(&squash(value)).or_else(|| {
        // ISO's own list writes "Tanzania, United Republic of": read it as
        // "United Republic of Tanzania".
        let (head, tail) = value.rsplit_once(',')?;
        by_name(&squash(&format!("{tail} {head}")))
    })
}

/// Looks a squashed name up among official names (with or without a leading "the") and aliases.
fn by_name(squashed: &str) -> Option<Country> {
    if squashed.is_empty() {
        return None;
    }
    Country::from_name(squashed)
        .or_else(|_| Country::from_name(format!("the{squashed}")))
        .or_else(|_| Country::from_alias(squashed))
        .ok()
}

/// The form celes keys its tables by: lower case, letters and digits only.
fn squash(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn unknown_country_message(value: &str) -> String {
    if value.chars().any(char::is_control) {
        return "country must not contain control characters".to_owned();
    }
    let shown = echoed(value);
    format!("unknown country '{shown}'; use an ISO 3166-1 alpha-2 code such as TZ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_normalise_to_alpha2() {
        let cases = [
            ("TZ", "TZ"),
            ("tz", "TZ"),
            ("Tz", "TZ"),
            ("Tanzania", "TZ"),
            ("tanzania", "TZ"),
            ("United Republic of Tanzania", "TZ"),
            ("Tanzania, United Republic of", "TZ"),
            ("  Kenya ", "KE"),
            ("Germany", "DE"),
            ("united states of america", "US"),
            ("Korea, Republic of", "KR"),
            ("Bahamas", "BS"),
            ("The Netherlands", "NL"),
        ];
        for (raw, code) in cases {
            let parsed = CountryCode::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
            assert_eq!(parsed.as_str(), code, "{raw}");
        }
    }

    #[test]
    fn unknown_countries_are_rejected() {
        for raw in ["Narnia", "XX", "ZZ", "", "T", "TZA1", "??"] {
            assert!(
                CountryCode::parse(raw).is_err(),
                "{raw:?} should be rejected"
            );
        }
        let err = CountryCode::parse("Narnia").unwrap_err();
        assert_eq!(
            err.message,
            "unknown country 'Narnia'; use an ISO 3166-1 alpha-2 code such as TZ"
        );
    }
}
