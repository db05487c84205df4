//! Table-driven checks of every field rule in docs/API.md §2, through the real stack: each case
//! is one HTTP request with a description, and either the 201 body's normalised fields or
//! the exact list of `(field, code)` errors is asserted.

use customers_shared::wire::protocol::Endpoint;
use customers_tests::spawn_app;
use customers_tests::subject;
use serde_json::{Map, Value, json};

enum Expect {
    /// 201, and these keys of the body have these values.
    Created(Value),
    /// 400 `validation_failed` with exactly these `(field, code)` errors, in order.
    Invalid(&'static [(&'static str, &'static str)]),
}

struct Case {
    description: &'static str,
    /// Keys set on (or, with `null` under `REMOVE`, removed from) a valid base request.
    changes: Value,
    expect: Expect,
}

const REMOVE: &str = "__remove__";

fn case(description: &'static str, changes: Value, expect: Expect) -> Case {
    Case {
        description,
        changes,
        expect,
    }
}

fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "n": inner }))
}

fn many_keys(n: usize) -> Value {
    Value::Object(
        (0..n)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect::<Map<_, _>>(),
    )
}

fn cases() -> Vec<Case> {
    use Expect::{Created, Invalid};
    let long_email_local = "a".repeat(64);
    // 64 + 1 + 63 + 1 + 63 + 1 + 61 = 254 characters.
    let email_254 = format!(
        "{long_email_local}@{}.{}.{}",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    let email_255 = format!(
        "{long_email_local}@{}.{}.{}",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(62)
    );
    vec![
        // name
        case(
            "name missing",
            json!({"name": REMOVE}),
            Invalid(&[("name", "required")]),
        ),
        case(
            "name null",
            json!({"name": null}),
            Invalid(&[("name", "required")]),
        ),
        case(
            "name a number",
            json!({"name": 5}),
            Invalid(&[("name", "invalid_type")]),
        ),
        case(
            "name only white space",
            json!({"name": "  \t "}),
            Invalid(&[("name", "too_short")]),
        ),
        case(
            "name empty",
            json!({"name": ""}),
            Invalid(&[("name", "too_short")]),
        ),
        case(
            "name 201 characters",
            json!({"name": "é".repeat(201)}),
            Invalid(&[("name", "too_long")]),
        ),
        case(
            "name 200 multi-byte characters",
            json!({"name": "é".repeat(200)}),
            Created(json!({"name": "é".repeat(200)})),
        ),
        case(
            "name with a control character",
            json!({"name": "Ada\u{1}Lovelace"}),
            Invalid(&[("name", "invalid")]),
        ),
        case(
            "name with a C1 control character",
            json!({"name": "Ada\u{85}x"}),
            Invalid(&[("name", "invalid")]),
        ),
        case(
            "name trimmed",
            json!({"name": "  Ada Lovelace \n"}),
            Created(json!({"name": "Ada Lovelace"})),
        ),
        // email
        case(
            "email missing",
            json!({"email": REMOVE}),
            Invalid(&[("email", "required")]),
        ),
        case(
            "email null",
            json!({"email": null}),
            Invalid(&[("email", "required")]),
        ),
        case(
            "email a boolean",
            json!({"email": true}),
            Invalid(&[("email", "invalid_type")]),
        ),
        case(
            "email without @",
            json!({"email": "plain.example.com"}),
            Invalid(&[("email", "invalid")]),
        ),
        case(
            "email empty",
            json!({"email": ""}),
            Invalid(&[("email", "invalid")]),
        ),
        case(
            "email single-label domain",
            json!({"email": "a@localhost"}),
            Invalid(&[("email", "invalid")]),
        ),
        case(
            "email local part starts with a dot",
            json!({"email": ".a@example.com"}),
            Invalid(&[("email", "invalid")]),
        ),
        case(
            "email local part with two dots",
            json!({"email": "a..b@example.com"}),
            Invalid(&[("email", "invalid")]),
        ),
        case(
            "email domain label starts with a hyphen",
            json!({"email": "a@-example.com"}),
            Invalid(&[("email", "invalid")]),
        ),
        case(
            "email non-ASCII",
            json!({"email": "jos\u{e9}@example.com"}),
            Invalid(&[("email", "invalid")]),
        ),
        case(
            "email local part of 65 characters",
            json!({"email": format!("{}@example.com", "a".repeat(65))}),
            Invalid(&[("email", "invalid")]),
        ),
        case(
            "email of 255 characters",
            json!({"email": email_255}),
            Invalid(&[("email", "too_long")]),
        ),
        case(
            "email of exactly 254 characters",
            json!({"email": email_254.clone()}),
            Created(json!({"email": email_254})),
        ),
        case(
            "email trimmed, case kept",
            json!({"email": "  Mixed.Case+tag@Example.COM "}),
            Created(json!({"email": "Mixed.Case+tag@Example.COM"})),
        ),
        // phone
        case(
            "phone absent",
            json!({"phone": REMOVE}),
            Created(json!({"phone": null})),
        ),
        case(
            "phone null",
            json!({"phone": null}),
            Created(json!({"phone": null})),
        ),
        case(
            "phone with separators",
            json!({"phone": " +1 (555) 123-45.67 "}),
            Created(json!({"phone": "+1 (555) 123-45.67"})),
        ),
        case(
            "phone of 7 digits",
            json!({"phone": "1234567"}),
            Created(json!({"phone": "1234567"})),
        ),
        case(
            "phone of 15 digits",
            json!({"phone": "+123456789012345"}),
            Created(json!({"phone": "+123456789012345"})),
        ),
        case(
            "phone of 6 digits",
            json!({"phone": "123456"}),
            Invalid(&[("phone", "invalid")]),
        ),
        case(
            "phone of 16 digits",
            json!({"phone": "1234567890123456"}),
            Invalid(&[("phone", "invalid")]),
        ),
        case(
            "phone empty",
            json!({"phone": ""}),
            Invalid(&[("phone", "invalid")]),
        ),
        case(
            "phone with letters",
            json!({"phone": "555-CALL-NOW"}),
            Invalid(&[("phone", "invalid")]),
        ),
        case(
            "phone with + in the middle",
            json!({"phone": "12+34567890"}),
            Invalid(&[("phone", "invalid")]),
        ),
        case(
            "phone over 32 characters",
            json!({"phone": "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7"}),
            Invalid(&[("phone", "invalid")]),
        ),
        case(
            "phone a number",
            json!({"phone": 5551234567u64}),
            Invalid(&[("phone", "invalid_type")]),
        ),
        // address
        case(
            "address null",
            json!({"address": null}),
            Created(json!({"address": null})),
        ),
        case(
            "address with the seed's country name",
            json!({"address": {"city": " Dar es Salaam ", "country": "Tanzania"}}),
            Created(json!({"address": {"city": "Dar es Salaam", "country": "TZ"}})),
        ),
        case(
            "address with a lower-case code",
            json!({"address": {"city": "Nairobi", "country": "ke"}}),
            Created(json!({"address": {"city": "Nairobi", "country": "KE"}})),
        ),
        case(
            "address with ISO's inverted name",
            json!({"address": {"city": "Dodoma", "country": "Tanzania, United Republic of"}}),
            Created(json!({"address": {"city": "Dodoma", "country": "TZ"}})),
        ),
        case(
            "address with the official name",
            json!({"address": {"city": "Arusha", "country": "UNITED REPUBLIC OF TANZANIA"}}),
            Created(json!({"address": {"city": "Arusha", "country": "TZ"}})),
        ),
        case(
            "address a string",
            json!({"address": "Dar"}),
            Invalid(&[("address", "invalid_type")]),
        ),
        case(
            "address empty object",
            json!({"address": {}}),
            Invalid(&[
                ("address.city", "required"),
                ("address.country", "required"),
            ]),
        ),
        case(
            "address city null",
            json!({"address": {"city": null, "country": "TZ"}}),
            Invalid(&[("address.city", "required")]),
        ),
        case(
            "address city empty",
            json!({"address": {"city": " ", "country": "TZ"}}),
            Invalid(&[("address.city", "too_short")]),
        ),
        case(
            "address city 101 characters",
            json!({"address": {"city": "c".repeat(101), "country": "TZ"}}),
            Invalid(&[("address.city", "too_long")]),
        ),
        case(
            "address city a number",
            json!({"address": {"city": 7, "country": "TZ"}}),
            Invalid(&[("address.city", "invalid_type")]),
        ),
        case(
            "address unknown country",
            json!({"address": {"city": "Cair Paravel", "country": "Narnia"}}),
            Invalid(&[("address.country", "invalid")]),
        ),
        case(
            "address unassigned code",
            json!({"address": {"city": "X", "country": "ZZ"}}),
            Invalid(&[("address.country", "invalid")]),
        ),
        case(
            "address country a number",
            json!({"address": {"city": "X", "country": 834}}),
            Invalid(&[("address.country", "invalid_type")]),
        ),
        case(
            "address unknown key",
            json!({"address": {"city": "X", "country": "TZ", "zip": "11101"}}),
            Invalid(&[("address.zip", "unknown_field")]),
        ),
        // payment_method
        case(
            "payment_method kept as given",
            json!({"payment_method": "card_01h3vjs3b16yc3f9q8q9pfrb79"}),
            Created(json!({"payment_method": "card_01h3vjs3b16yc3f9q8q9pfrb79"})),
        ),
        case(
            "payment_method empty",
            json!({"payment_method": ""}),
            Invalid(&[("payment_method", "too_short")]),
        ),
        case(
            "payment_method with a space",
            json!({"payment_method": "card 123"}),
            Invalid(&[("payment_method", "invalid")]),
        ),
        case(
            "payment_method 256 characters",
            json!({"payment_method": "p".repeat(256)}),
            Invalid(&[("payment_method", "too_long")]),
        ),
        case(
            "payment_method an object",
            json!({"payment_method": {"card": 1}}),
            Invalid(&[("payment_method", "invalid_type")]),
        ),
        // status
        case(
            "status absent defaults to active",
            json!({"status": REMOVE}),
            Created(json!({"status": "active"})),
        ),
        case(
            "status null defaults to active",
            json!({"status": null}),
            Created(json!({"status": "active"})),
        ),
        case(
            "status suspended",
            json!({"status": "suspended"}),
            Created(json!({"status": "suspended"})),
        ),
        case(
            "status inactive",
            json!({"status": "inactive"}),
            Created(json!({"status": "inactive"})),
        ),
        case(
            "status upper case",
            json!({"status": "ACTIVE"}),
            Invalid(&[("status", "invalid")]),
        ),
        case(
            "status unknown",
            json!({"status": "deleted"}),
            Invalid(&[("status", "invalid")]),
        ),
        case(
            "status a number",
            json!({"status": 1}),
            Invalid(&[("status", "invalid_type")]),
        ),
        // custom_data
        case(
            "custom_data kept",
            json!({"custom_data": {"tier": "Gold", "n": [1, 2.5, null, true]}}),
            Created(json!({"custom_data": {"tier": "Gold", "n": [1, 2.5, null, true]}})),
        ),
        case(
            "custom_data null",
            json!({"custom_data": null}),
            Created(json!({"custom_data": null})),
        ),
        case(
            "custom_data an array",
            json!({"custom_data": [1]}),
            Invalid(&[("custom_data", "invalid_type")]),
        ),
        case(
            "custom_data a string",
            json!({"custom_data": "x"}),
            Invalid(&[("custom_data", "invalid_type")]),
        ),
        case(
            "custom_data 50 keys",
            json!({"custom_data": many_keys(50)}),
            Created(json!({"custom_data": many_keys(50)})),
        ),
        case(
            "custom_data 51 keys",
            json!({"custom_data": many_keys(51)}),
            Invalid(&[("custom_data", "invalid")]),
        ),
        case(
            "custom_data key of 65 characters",
            json!({"custom_data": {"k".repeat(65): 1}}),
            Invalid(&[("custom_data", "invalid")]),
        ),
        case(
            "custom_data empty key",
            json!({"custom_data": {"": 1}}),
            Invalid(&[("custom_data", "invalid")]),
        ),
        case(
            "custom_data nested 8 levels",
            json!({"custom_data": {"n": nested(8)}}),
            Created(json!({"custom_data": {"n": nested(8)}})),
        ),
        case(
            "custom_data nested 9 levels",
            json!({"custom_data": {"n": nested(9)}}),
            Invalid(&[("custom_data", "invalid")]),
        ),
        case(
            "custom_data over 8 KiB",
            json!({"custom_data": {"blob": "x".repeat(8 * 1024)}}),
            Invalid(&[("custom_data", "too_long")]),
        ),
        // unknown keys
        case(
            "id is not accepted",
            json!({"id": "cus_01h3vjs3b16yc3f9q8q9pfrb80"}),
            Invalid(&[("id", "unknown_field")]),
        ),
        case(
            "created_at is not accepted",
            json!({"created_at": "2024-09-01T15:00:00.000Z"}),
            Invalid(&[("created_at", "unknown_field")]),
        ),
        case(
            "updated_at is not accepted",
            json!({"updated_at": "2024-09-01T15:00:00.000Z"}),
            Invalid(&[("updated_at", "unknown_field")]),
        ),
        case(
            "a typo is not dropped",
            json!({"emial": "x@example.com"}),
            Invalid(&[("emial", "unknown_field")]),
        ),
        // several at once
        case(
            "every error of the request together",
            json!({"name": 5, "email": "nope", "phone": "1", "address": {"city": "", "country": "Narnia", "zip": 1}, "payment_method": "a b", "status": "gone", "custom_data": [], "id": 1}),
            Invalid(&[
                ("name", "invalid_type"),
                ("email", "invalid"),
                ("phone", "invalid"),
                ("address.city", "too_short"),
                ("address.country", "invalid"),
                ("address.zip", "unknown_field"),
                ("payment_method", "invalid"),
                ("status", "invalid"),
                ("custom_data", "invalid_type"),
                ("id", "unknown_field"),
            ]),
        ),
    ]
}

#[tokio::test]
async fn every_field_rule() {
    let app = spawn_app().await;
    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let mut body = json!({"name": "Ada Lovelace", "email": format!("case{i}@example.com")});
        for (key, value) in case.changes.as_object().expect("changes are an object") {
            if value == REMOVE {
                body.as_object_mut().unwrap().remove(key);
            } else {
                body[key] = value.clone();
            }
        }
        let response = app.http.create(&body.to_string()).await;
        let json = response.json();
        match &case.expect {
            Expect::Created(fields) => {
                if response.status != 201 {
                    failures.push(format!(
                        "{}: expected 201, got {} {json}",
                        case.description, response.status
                    ));
                    continue;
                }
                for (key, expected) in fields.as_object().unwrap() {
                    if &json[key] != expected {
                        failures.push(format!(
                            "{}: {key} is {}, expected {expected}",
                            case.description, json[key]
                        ));
                    }
                }
            }
            Expect::Invalid(expected) => {
                let got: Vec<(String, String)> = json["errors"]
                    .as_array()
                    .map(|errors| {
                        errors
                            .iter()
                            .map(|e| {
                                (
                                    e["field"].as_str().unwrap_or("").to_owned(),
                                    e["code"].as_str().unwrap_or("").to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let expected: Vec<(String, String)> = expected
                    .iter()
                    .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
                    .collect();
                if response.status != 400 || json["code"] != "validation_failed" || got != expected
                {
                    failures.push(format!(
                        "{}: expected 400 {expected:?}, got {} {json}",
                        case.description, response.status
                    ));
                    continue;
                }
                assert_eq!(json["type"], "/problems/validation_failed");
                assert_eq!(
                    response.header("content-type"),
                    Some("application/problem+json")
                );
                let messages_present = json["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty()));
                assert!(
                    messages_present,
                    "{}: every error has a message",
                    case.description
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn problem_detail_counts_the_errors() {
    let app = spawn_app().await;
    let one = app
        .http
        .create(r#"{"name": "A", "email": "x"}"#)
        .await
        .json();
    assert_eq!(one["detail"], "1 field is invalid");
    assert_eq!(one["title"], "The request has invalid fields");
    assert_eq!(one["status"], 400);
    let two = app
        .http
        .create(r#"{"name": "", "email": "x"}"#)
        .await
        .json();
    assert_eq!(two["detail"], "2 fields are invalid");
}

#[tokio::test]
async fn body_level_errors() {
    let app = spawn_app().await;
    let cases: [(&str, &str, &str); 7] = [
        (
            "not JSON",
            "{\"name\": \"A\",\n  \"email\": }",
            "malformed_json",
        ),
        ("empty body", "", "malformed_json"),
        ("truncated JSON", "{\"name\": \"A\"", "malformed_json"),
        ("an array", "[]", "invalid_body"),
        ("a string", "\"customer\"", "invalid_body"),
        ("null", "null", "invalid_body"),
        ("a number", "42", "invalid_body"),
    ];
    for (description, body, code) in cases {
        let response = app.http.create(body).await;
        let json = response.json();
        assert_eq!(response.status, 400, "{description}: {json}");
        assert_eq!(json["code"], code, "{description}");
        assert_eq!(json["type"], format!("/problems/{code}"), "{description}");
        assert!(
            json.get("errors").is_none(),
            "{description}: errors only on validation_failed"
        );
    }
    let json = app
        .http
        .create("{\"name\": \"A\",\n  \"email\": }")
        .await
        .json();
    let detail = json["detail"].as_str().unwrap();
    assert!(
        detail.contains("line 2 column 12"),
        "malformed_json says where: {detail}"
    );
}

/// I-JSON: a key twice in any object is refused, naming its path, by HTTP and NATS alike, for
/// creates and list queries; nothing is created.
#[tokio::test]
async fn duplicate_keys_are_refused_at_every_level_through_both_doors() {
    let app = spawn_app().await;
    let cases = [
        (
            "top-level name (a gateway reading the first would see A, the store B)",
            r#"{"name":"A","name":"B","email":"dup1@example.com"}"#,
            "'name'",
        ),
        (
            "email, differing only in case",
            r#"{"name":"A","email":"dup2@example.com","email":"DUP2@example.com"}"#,
            "'email'",
        ),
        (
            "inside address",
            r#"{"name":"A","email":"dup3@example.com","address":{"city":"X","country":"TZ","city":"Y"}}"#,
            "'address.city'",
        ),
        (
            "nested inside custom_data",
            r#"{"name":"A","email":"dup4@example.com","custom_data":{"a":{"b":1,"b":2}}}"#,
            "'custom_data.a.b'",
        ),
        (
            "in an array inside custom_data",
            r#"{"name":"A","email":"dup5@example.com","custom_data":{"l":[{"k":1,"k":1}]}}"#,
            "'custom_data.l[0].k'",
        ),
    ];
    for (description, body, path) in cases {
        let http = app.http.create(body).await;
        let nats = app.nats_create(body.to_owned()).await;
        assert_eq!(http.status, 400, "{description}: {:?}", http.body);
        assert_eq!(http.json()["code"], "malformed_json", "{description}");
        let detail = http.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains(&format!("duplicate key {path}")),
            "{description}: {detail}"
        );
        assert_eq!(
            nats.payload, http.body,
            "{description}: the same answer over NATS"
        );
    }
    let list = app
        .nats_client
        .request(subject(Endpoint::List), r#"{"limit":1,"limit":100}"#.into())
        .await
        .unwrap();
    let problem: Value = serde_json::from_slice(&list.payload).unwrap();
    assert_eq!(problem["code"], "malformed_json");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("duplicate key 'limit'")
    );
    let page = app.http.get("/api/v1/customers?limit=100").await.json();
    assert_eq!(page["data"], json!([]), "nothing was created");
}
