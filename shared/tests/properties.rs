//! Property tests of the request parser and validator, with a fixed seed and case count (the
//! same cases on every run; raise `CASES` locally to search further). Whatever the input:
//!
//! * arbitrary bytes, arbitrary JSON values, byte-mutated valid bodies and bodies built from
//!   the contract's keys with values of every type never panic and never give a 5xx; every
//!   refusal is a 4xx whose problem body stays under its bound;
//! * every accepted body round-trips: the stored customer shows the trimmed, normalised
//!   fields, and the stored customer sent back as a create body reads as the same customer
//!   (normalisation is a fixed point);
//! * list queries, likewise, are parsed or refused with a 4xx.

use customers_shared::wire::list::ListQuery;
use customers_shared::wire::problem::MAX_PROBLEM_BYTES;
use customers_shared::{ApiError, Customer, CustomerId, NewCustomer};
use proptest::collection::{btree_map, vec};
use proptest::option::weighted;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Map, Value, json};

const CASES: u32 = 2000;

fn config() -> Config {
    Config {
        cases: CASES,
        rng_seed: RngSeed::Fixed(0x00c0_ffee),
        failure_persistence: None,
        ..Config::default()
    }
}

/// A refusal must be a client error with a bounded body.
fn check_refusal(error: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!((400..500).contains(&error.status()), "{error:?}");
    let size = error.problem_json().len();
    prop_assert!(size <= MAX_PROBLEM_BYTES, "{size} bytes: {error:?}");
    Ok(())
}

/// Parses `body`; an accepted one must round-trip through the stored customer.
fn check_body(body: &[u8]) -> Result<(), TestCaseError> {
    match NewCustomer::parse(body) {
        Err(error) => check_refusal(&error.into()),
        Ok(new) => check_round_trip(body, new),
    }
}

fn check_round_trip(body: &[u8], new: NewCustomer) -> Result<(), TestCaseError> {
    let input: Value = serde_json::from_slice(body).expect("accepted, so JSON");
    let id = CustomerId::from_uuid(uuid::Uuid::now_v7());
    let stored: Value = serde_json::from_slice(&Customer::create(id, new.clone()).to_json())
        .expect("the stored customer is JSON");
    let trimmed = |key: &str| input[key].as_str().map(str::trim);
    prop_assert_eq!(stored["name"].as_str(), trimmed("name"));
    prop_assert_eq!(stored["email"].as_str(), trimmed("email"));
    prop_assert_eq!(stored["phone"].as_str(), trimmed("phone"));
    prop_assert_eq!(stored["payment_method"].as_str(), trimmed("payment_method"));
    prop_assert_eq!(
        &stored["custom_data"],
        &input.get("custom_data").cloned().unwrap_or(Value::Null)
    );
    prop_assert_eq!(
        stored["status"].as_str(),
        Some(trimmed("status").unwrap_or("active"))
    );
    let mut again = stored.as_object().expect("an object").clone();
    for generated in ["id", "created_at", "updated_at"] {
        again.remove(generated);
    }
    let reparsed = NewCustomer::parse(Value::Object(again).to_string().as_bytes());
    prop_assert_eq!(
        reparsed.as_ref(),
        Ok(&new),
        "the stored form reads as the same customer"
    );
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Strings near and far from valid: mostly `valid` (a regex of valid values), else padded,
/// empty, control characters, long, or anything.
fn text(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        40 => valid,
        2 => valid.prop_map(|s| format!("  {s}\t")),
        1 => Just(String::new()),
        1 => "[\\x00-\\x1f\\x7f-\\x9f]{1,3}",
        1 => ".{180,300}",
        1 => any::<String>(),
    ]
}

/// A field's value: nearly always a string from `strings`, sometimes another JSON type.
fn field(strings: impl Strategy<Value = String>) -> impl Strategy<Value = Value> {
    prop_oneof![
        40 => strings.prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(Value::from),
        1 => json_value(),
    ]
}

/// Bodies made of the contract's keys (each present or not), an address, custom_data and
/// sometimes an unknown key.
fn contract_body() -> impl Strategy<Value = Value> {
    let address = prop_oneof![
        12 => (
            weighted(0.95, field(text("[A-Za-z][A-Za-z ]{0,20}"))),
            weighted(0.95, field(text("TZ|tz|KE|US|gb|DE|Tanzania|United Republic of Tanzania|Kenya|Narnia"))),
        )
            .prop_map(|(city, country)| {
                let mut address = Map::new();
                city.map(|c| address.insert("city".into(), c));
                country.map(|c| address.insert("country".into(), c));
                Value::Object(address)
            }),
        1 => json_value(),
    ];
    let custom_data = prop_oneof![
        12 => btree_map("[a-z_]{1,10}", json_value(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        1 => json_value(),
    ];
    (
        weighted(0.95, field(text("[A-Za-z][A-Za-z .'-]{0,30}"))),
        weighted(
            0.95,
            field(text("[a-z0-9_+-]{1,12}@[a-z0-9]{1,10}\\.[a-z]{2,6}")),
        ),
        weighted(0.5, field(text("\\+?[0-9]{3}[ -]?[0-9]{4,10}"))),
        weighted(0.5, address),
        weighted(0.5, field(text("[a-z]{2,5}_[a-z0-9]{4,20}"))),
        weighted(0.5, field(text("active|inactive|suspended|Active"))),
        weighted(0.5, custom_data),
        weighted(0.05, ("[a-z_]{1,8}", json_value())),
    )
        .prop_map(
            |(name, email, phone, address, payment, status, custom, unknown)| {
                let mut body = Map::new();
                let fields = [
                    ("name", name),
                    ("email", email),
                    ("phone", phone),
                    ("address", address),
                    ("payment_method", payment),
                    ("status", status),
                    ("custom_data", custom),
                ];
                for (key, value) in fields {
                    if let Some(value) = value {
                        body.insert(key.into(), value);
                    }
                }
                if let Some((key, value)) = unknown {
                    body.insert(key, value);
                }
                Value::Object(body)
            },
        )
}

/// Run through a `TestRunner` to count: the round trip is only shown if the generator
/// reaches accepted bodies often enough.
#[test]
fn bodies_from_the_contracts_keys_round_trip_or_are_refused() {
    let accepted = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&contract_body(), |body| {
            let bytes = body.to_string().into_bytes();
            if NewCustomer::parse(&bytes).is_ok() {
                accepted.set(accepted.get() + 1);
            }
            check_body(&bytes)
        })
        .unwrap();
    assert!(
        accepted.get() >= CASES / 20,
        "only {} of {CASES} generated bodies were valid",
        accepted.get()
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_refused_with_a_4xx(body in vec(any::<u8>(), 0..512)) {
        check_body(&body)?;
    }

    #[test]
    fn arbitrary_json_is_accepted_or_refused_with_a_4xx(value in json_value()) {
        check_body(value.to_string().as_bytes())?;
    }

    #[test]
    fn a_valid_body_with_some_bytes_changed_never_gives_a_5xx(
        changes in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
    ) {
        let mut body = json!({
            "name": "Brighton Mboya",
            "email": "brighton@jani.com",
            "phone": "+2557881234567",
            "address": {"city": "Dar es Salaam", "country": "Tanzania"},
            "payment_method": "card_01h3vjs3b16yc3f9q8q9pfrb79",
            "status": "active",
            "custom_data": {"loyalty_program": "Gold"}
        })
        .to_string()
        .into_bytes();
        for (at, byte) in changes {
            let at = at.index(body.len());
            body[at] = byte;
        }
        check_body(&body)?;
    }

    #[test]
    fn list_queries_are_parsed_or_refused_with_a_4xx(
        query in prop_oneof![json_value().prop_map(|v| v.to_string().into_bytes()), vec(any::<u8>(), 0..256)]
    ) {
        if let Err(error) = ListQuery::parse(&query) {
            check_refusal(&error)?;
        }
    }
}
