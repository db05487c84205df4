//! Search (docs/API.md §4, "Search"): Stripe's query language over HTTP and NATS, its exact
//! `total_count` and pages, its refusals with the position, and read-your-writes: each write
//! is found (or no longer found) by the search that follows its reply.

use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::{HttpClient, spawn_app, subject};
use futures_util::future::join_all;
use serde_json::{Value, json};

fn search_path(query: &str, extra: &str) -> String {
    let query: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/api/v1/customers/search?query={query}{extra}")
}

/// Every page of the search for `query` (pages of 2, following `next_page`): the names found
/// newest first, and the `total_count` every page gave.
async fn names_found(http: &HttpClient, query: &str) -> (Vec<String>, u64) {
    let (mut names, mut totals) = (Vec::new(), Vec::new());
    let mut page_token: Option<String> = None;
    loop {
        let extra = match &page_token {
            Some(token) => format!("&limit=2&page={token}"),
            None => "&limit=2".to_owned(),
        };
        let response = http.get(&search_path(query, &extra)).await;
        assert_eq!(response.status, 200, "{query}: {:?}", response.body);
        let page = response.json();
        let data = page["data"].as_array().expect("data").clone();
        names.extend(data.iter().map(|c| c["name"].as_str().unwrap().to_owned()));
        totals.push(page["total_count"].as_u64().expect("total_count"));
        assert_eq!(
            page["has_more"].as_bool().unwrap(),
            page["next_page"].is_string(),
            "{query}: has_more says whether next_page is given"
        );
        match page["next_page"].as_str() {
            Some(token) => page_token = Some(token.to_owned()),
            None => break,
        }
    }
    assert!(
        totals.windows(2).all(|w| w[0] == w[1]),
        "{query}: {totals:?}"
    );
    (names, totals[0])
}

#[tokio::test]
async fn search_finds_by_every_kind_of_clause_with_its_count() {
    let app = spawn_app().await;
    let http = &app.http;
    // Created in this order, so newest first is the reverse.
    let people = [
        json!({"name": "Ada Lovelace", "email": "ada@engine.example", "phone": "+44 20 7946 0958",
               "address": {"city": "London", "country": "GB"}, "custom_data": {"tier": "gold"}}),
        json!({"name": "Adam Smith", "email": "Adam.Smith@Market.example", "status": "inactive",
               "address": {"city": "Kirkcaldy", "country": "GB"}, "custom_data": {"tier": "silver", "seats": 3}}),
        json!({"name": "Grace Hopper", "email": "grace@navy.example", "phone": "555-0100",
               "payment_method": "card_1", "address": {"city": "Arlington", "country": "US"}}),
        json!({"name": "Katherine Johnson", "email": "kj@nasa.example", "status": "suspended",
               "custom_data": {"tier": "gold"}}),
        json!({"name": "Alan Turing", "email": "alan@bletchley.example", "phone": "+44 1908 640404"}),
    ];
    let mut ids = Vec::new();
    for person in &people {
        let created = http.create(&person.to_string()).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        ids.push(created.json()["id"].as_str().unwrap().to_owned());
    }
    let first_created = http
        .get(&format!("/api/v1/customers/{}", ids[0]))
        .await
        .json();
    let after_first = first_created["created_at"].as_str().unwrap();
    // Alan changes his name, so `updated` tells him apart; Katherine is deleted.
    let renamed = http
        .patch(&ids[4], r#"{"name":"Alan M. Turing"}"#, &[])
        .await;
    assert_eq!(renamed.status, 200, "{:?}", renamed.body);
    let updated_at = renamed.json()["updated_at"].as_str().unwrap().to_owned();
    let deleted = http.delete(&ids[3], &[]).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);

    let table: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "a substring of names, any case",
            "name~'ADA'".into(),
            vec!["Adam Smith", "Ada Lovelace"],
        ),
        (
            "an exact name, any case",
            "name:'ada lovelace'".into(),
            vec!["Ada Lovelace"],
        ),
        (
            "an exact email, any case",
            "email:'adam.smith@market.example'".into(),
            vec!["Adam Smith"],
        ),
        (
            "a substring of emails",
            "email~'.example'".into(),
            vec![
                "Alan M. Turing",
                "Grace Hopper",
                "Adam Smith",
                "Ada Lovelace",
            ],
        ),
        (
            "a phone's digits, whatever the separators",
            "phone~'7946-0958'".into(),
            vec!["Ada Lovelace"],
        ),
        (
            "a whole phone",
            "phone:'5550100'".into(),
            vec!["Grace Hopper"],
        ),
        ("status", "status:'inactive'".into(), vec!["Adam Smith"]),
        (
            "country by name",
            "country:'United Kingdom'".into(),
            vec!["Adam Smith", "Ada Lovelace"],
        ),
        (
            "custom_data, a string",
            "custom_data['tier']:'gold'".into(),
            vec!["Ada Lovelace"],
        ),
        (
            "custom_data, a number",
            "custom_data['seats']:3".into(),
            vec!["Adam Smith"],
        ),
        ("a missing phone", "phone:null".into(), vec!["Adam Smith"]),
        (
            "a missing address",
            "address:null".into(),
            vec!["Alan M. Turing"],
        ),
        (
            "a missing payment method, negated",
            "-payment_method:null".into(),
            vec!["Grace Hopper"],
        ),
        (
            "negation with AND",
            "name~'ada' AND -status:'inactive'".into(),
            vec!["Ada Lovelace"],
        ),
        (
            "AND across indexes",
            "country:'GB' AND custom_data['tier']:'silver'".into(),
            vec!["Adam Smith"],
        ),
        (
            "OR of indexed clauses",
            "status:'inactive' OR phone:'5550100'".into(),
            vec!["Grace Hopper", "Adam Smith"],
        ),
        (
            "OR with a negated clause",
            "-email~'.example' OR name~'grace'".into(),
            vec!["Grace Hopper"],
        ),
        (
            "created after the first",
            format!("created>'{after_first}'"),
            vec!["Alan M. Turing", "Grace Hopper", "Adam Smith"],
        ),
        (
            "updated at the rename",
            format!("updated>='{updated_at}'"),
            vec!["Alan M. Turing"],
        ),
        (
            "a deleted customer is never found",
            "name~'katherine'".into(),
            vec![],
        ),
        (
            "the old name after a change is not found",
            "name:'Alan Turing'".into(),
            vec![],
        ),
        ("nothing", "name~'zzz'".into(), vec![]),
    ];
    for (description, query, expected) in table {
        let (names, total) = names_found(http, &query).await;
        assert_eq!(names, expected, "{description}: {query}");
        assert_eq!(total, expected.len() as u64, "{description}: total_count");
    }

    // The default page is 10, and the body has exactly the four members.
    let everyone = http.get(&search_path("email~'example'", "")).await.json();
    let mut keys: Vec<&str> = everyone
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["data", "has_more", "next_page", "total_count"]);
    assert_eq!(everyone["total_count"], 4);
    assert_eq!(everyone["next_page"], Value::Null);

    // Over NATS, the same reply for the same JSON payload.
    let payload = json!({"query": "name~'ada'", "limit": 1}).to_string();
    let reply = app
        .nats_client
        .request(subject(Endpoint::Search), payload.into())
        .await
        .expect("a reply");
    assert!(
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::SERVICE_ERROR_CODE))
            .is_none()
    );
    let page: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(page["data"][0]["name"], "Adam Smith");
    assert_eq!(
        (page["has_more"].clone(), page["total_count"].clone()),
        (json!(true), json!(2))
    );
}

#[tokio::test]
async fn a_bad_search_is_refused_with_where_and_what() {
    let app = spawn_app().await;
    let http = &app.http;
    // (description, path after `search?`, status, code, the field or the position)
    let table = [
        ("no query", "limit=2", "validation_failed", json!("query")),
        (
            "a limit over 100",
            "query=name~'ada'&limit=101",
            "validation_failed",
            json!("limit"),
        ),
        (
            "a page this service never gave",
            "query=name~'ada'&page=abc",
            "validation_failed",
            json!("page"),
        ),
        (
            "an unknown parameter",
            "query=name~'ada'&sort=name",
            "validation_failed",
            json!("sort"),
        ),
        (
            "an unknown field",
            "query=nickname:'x'",
            "invalid_query",
            json!(0),
        ),
        (
            "a substring too short",
            "query=name~'ad'",
            "invalid_query",
            json!(5),
        ),
        (
            "AND and OR mixed",
            "query=status:'active' AND name~'ada' OR phone:null",
            "invalid_query",
            json!(31),
        ),
        (
            "an unterminated quote",
            "query=name:'ada",
            "invalid_query",
            json!(5),
        ),
        (
            "a status that is none",
            "query=status:'gone'",
            "invalid_query",
            json!(7),
        ),
    ];
    for (description, parameters, code, at) in table {
        let parameters = parameters.replace(' ', "%20");
        let response = http
            .get(&format!("/api/v1/customers/search?{parameters}"))
            .await;
        assert_eq!(response.status, 400, "{description}: {:?}", response.body);
        let problem = response.json();
        assert_eq!(problem["code"], code, "{description}: {problem}");
        if code == "invalid_query" {
            assert_eq!(problem["position"], at, "{description}: {problem}");
            assert!(problem["expected"].is_string(), "{description}: {problem}");
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("at character"), "{description}: {detail}");
        } else {
            assert_eq!(
                problem["errors"][0]["field"], at,
                "{description}: {problem}"
            );
        }
    }
    // The path is the search's for reads only.
    let post = http
        .send_with("POST", "/api/v1/customers/search", "{}", &[])
        .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn every_write_is_seen_by_the_search_right_after_its_reply() {
    let app = spawn_app().await;
    let http = &app.http;
    let total = |query: String| async move {
        let response = http.get(&search_path(&query, "")).await;
        assert_eq!(response.status, 200, "{query}: {:?}", response.body);
        response.json()["total_count"].as_u64().unwrap()
    };
    // Four writers at once, each checking its own customer after each of its writes.
    join_all((0..4).map(|writer| async move {
        for round in 0..10 {
            let tag = format!("w{writer}r{round}");
            let created = http
                .create(&json!({"name": format!("Before {tag}"), "email": format!("{tag}@ryw.example")}).to_string())
                .await;
            assert_eq!(created.status, 201, "{:?}", created.body);
            let id = created.json()["id"].as_str().unwrap().to_owned();
            assert_eq!(total(format!("email:'{tag}@ryw.example'")).await, 1, "{tag} created");
            let patched = http
                .patch(&id, &json!({"name": format!("After {tag}")}).to_string(), &[])
                .await;
            assert_eq!(patched.status, 200, "{:?}", patched.body);
            assert_eq!(total(format!("name:'after {tag}'")).await, 1, "{tag} renamed");
            assert_eq!(total(format!("name~'before {tag}'")).await, 0, "{tag} old name");
            assert_eq!(http.delete(&id, &[]).await.status, 200);
            assert_eq!(total(format!("email~'{tag}@'")).await, 0, "{tag} deleted");
        }
    }))
    .await;
}
