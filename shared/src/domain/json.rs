//! Reading a request body as JSON, strictly. A body must be one JSON object (`malformed_json`
//! with serde_json's line and column when it is not JSON, `invalid_body` when it is JSON but
//! not an object), and no object anywhere in it may have the same member name twice: I-JSON
//! (RFC 7493 §2.3) forbids it, and a parser that keeps the last occurrence (serde_json's
//! `Value`) disagrees with one that keeps the first, so a gateway or audit log could read a
//! different customer than the one stored. A duplicate is `malformed_json` naming the key's
//! path (`custom_data.tier`, `address.city`, `tags[2].name`).
//!
//! Creates and list queries both read their bodies here, over HTTP and NATS alike.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::domain::violation::{BodyError, echoed};

/// The body's top-level object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    let malformed = |e: serde_json::Error| BodyError::Malformed(e.to_string());
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = Strict(Path::Root)
        .deserialize(&mut deserializer)
        .map_err(malformed)?;
    deserializer.end().map_err(malformed)?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(BodyError::NotAnObject),
    }
}

/// Where a value sits in the body, for naming a duplicate key.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => Ok(()),
            Self::Key(Self::Root, key) => f.write_str(key),
            Self::Key(parent, key) => write!(f, "{parent}.{key}"),
            Self::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// Builds a `Value` like serde_json's own, but refuses a member name seen before in the same
/// object.
struct Strict<'a>(Path<'a>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut array = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(item) = items.next_element_seed(Strict(Path::Index(&self.0, array.len())))? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = members.next_key::<String>()? {
            let path = Path::Key(&self.0, &key);
            let value = members.next_value_seed(Strict(path))?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key '{}' (each key may appear once in an object)",
                    echoed(&path.to_string())
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_twice_in_any_object_is_refused_by_its_path() {
        let cases = [
            ("top level", r#"{"name":"A","name":"B"}"#, "'name'"),
            (
                "top level, null then a value",
                r#"{"phone":null,"phone":"1"}"#,
                "'phone'",
            ),
            (
                "inside address",
                r#"{"address":{"city":"A","city":"B"}}"#,
                "'address.city'",
            ),
            (
                "inside custom_data",
                r#"{"custom_data":{"tier":1,"tier":2}}"#,
                "'custom_data.tier'",
            ),
            (
                "deep inside custom_data",
                r#"{"custom_data":{"a":{"b":{"c":1,"c":1}}}}"#,
                "'custom_data.a.b.c'",
            ),
            (
                "in an object inside an array",
                r#"{"custom_data":{"tags":[{"x":1},{"k":1,"k":2}]}}"#,
                "'custom_data.tags[1].k'",
            ),
            ("a list query", r#"{"limit":1,"limit":2}"#, "'limit'"),
            ("an empty key twice", r#"{"":1,"":2}"#, "''"),
        ];
        for (description, body, path) in cases {
            match object(body.as_bytes()) {
                Err(BodyError::Malformed(message)) => {
                    assert!(
                        message.contains(&format!("duplicate key {path}")),
                        "{description}: {message}"
                    );
                    assert!(
                        message.contains("line 1 column"),
                        "{description}: {message}"
                    );
                }
                other => panic!("{description}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_same_key_in_different_objects_is_fine_and_values_are_kept() {
        let body =
            r#"{"a":{"k":1},"b":{"k":[1.5,-2,true,null,"s",{"k":{}}]},"k":18446744073709551615}"#;
        let parsed = Value::Object(object(body.as_bytes()).unwrap());
        assert_eq!(parsed, serde_json::from_str::<Value>(body).unwrap());
        assert_eq!(
            object(r#"{"b":1,"a":2}"#.as_bytes())
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["b", "a"],
            "member order is kept"
        );
    }

    #[test]
    fn not_an_object_and_not_json_are_told_apart() {
        assert_eq!(object(b"[1]"), Err(BodyError::NotAnObject));
        assert!(matches!(object(b"{} x"), Err(BodyError::Malformed(_))));
        assert!(matches!(object(b"{\"a\":"), Err(BodyError::Malformed(_))));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            matches!(object(format!(r#"{{"a":{deep}}}"#).as_bytes()), Err(BodyError::Malformed(m)) if m.contains("recursion")),
            "serde_json's depth limit still applies"
        );
    }
}
