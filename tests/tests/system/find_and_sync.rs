//! Finding and mirroring customers (docs/API.md §4): filtered newest-first lists and the
//! change feed (`order=updated_asc`) over HTTP, with writes going on while a mirror follows
//! the feed, and across a restart.

use std::collections::BTreeMap;

use customers_tests::{HttpClient, spawn_app};
use futures_util::future::join_all;
use serde_json::{Value, json};

async fn create(http: &HttpClient, body: Value) -> Value {
    let created = http.create(&body.to_string()).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.json()
}

/// Every page of a newest-first list for `query` (pages of 2, so cursors and `has_more` are
/// exercised at every step); the names found, newest first.
async fn names_listed(http: &HttpClient, query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.as_ref().map(|id| format!("&starting_after={id}"));
        let path = format!(
            "/api/v1/customers?limit=2&{query}{}",
            cursor.unwrap_or_default()
        );
        let page = http.get(&path).await;
        assert_eq!(page.status, 200, "{query}: {:?}", page.body);
        let page = page.json();
        let data = page["data"].as_array().expect("data").clone();
        names.extend(data.iter().map(|c| c["name"].as_str().unwrap().to_owned()));
        if !page["has_more"].as_bool().unwrap() {
            return names;
        }
        after = Some(
            data.last().expect("a page with more is not empty")["id"]
                .as_str()
                .unwrap()
                .into(),
        );
    }
}

#[tokio::test]
async fn lists_filter_by_status_country_times_and_custom_data_combined() {
    let app = spawn_app().await;
    let http = &app.http;
    let people = [
        ("Ana", "active", "TZ", json!({"tier": "gold", "seats": 3})),
        ("Ben", "suspended", "KE", json!({"tier": "gold"})),
        (
            "Cai",
            "active",
            "KE",
            json!({"tier": "silver", "vip": true}),
        ),
        ("Dia", "inactive", "TZ", json!({"seats": "3"})),
        ("Eli", "active", "TZ", json!({"tier": "gold"})),
    ];
    let mut created = Vec::new();
    for (i, (name, status, country, custom_data)) in people.iter().enumerate() {
        created.push(
            create(
                http,
                json!({"name": name, "email": format!("p{i}@find.example"), "status": status,
                       "address": {"city": "X", "country": country}, "custom_data": custom_data}),
            )
            .await,
        );
    }
    // Cai moves to Tanzania and loses the vip flag; Eli is deleted.
    let cai = created[2]["id"].as_str().unwrap();
    let moved = http
        .patch(
            cai,
            r#"{"address":{"country":"Tanzania"},"custom_data":{"vip":null}}"#,
            &[],
        )
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    assert_eq!(
        http.delete(created[4]["id"].as_str().unwrap(), &[])
            .await
            .status,
        200
    );
    let after_ben = created[1]["created_at"].as_str().unwrap();
    let cases: [(&str, String, &[&str]); 12] = [
        ("status", "status=active".into(), &["Cai", "Ana"]),
        (
            "country by name, after a move",
            "country=tanzania".into(),
            &["Dia", "Cai", "Ana"],
        ),
        ("country as a code", "country=KE".into(), &["Ben"]),
        (
            "custom_data string",
            "custom_data%5Btier%5D=gold".into(),
            &["Ben", "Ana"],
        ),
        (
            "custom_data number or string alike",
            "custom_data[seats]=3".into(),
            &["Dia", "Ana"],
        ),
        (
            "a custom_data key removed",
            "custom_data[vip]=true".into(),
            &[],
        ),
        (
            "combined",
            "status=active&country=TZ&custom_data[tier]=gold".into(),
            &["Ana"],
        ),
        (
            // The rarer value drives; the country is probed from memory, as moved.
            "combined, after a move",
            "custom_data[tier]=silver&country=TZ".into(),
            &["Cai"],
        ),
        (
            "combined with gold, after a delete",
            "custom_data[tier]=gold&country=TZ".into(),
            &["Ana"],
        ),
        (
            "created from Ben on",
            format!("created[gte]={after_ben}"),
            &["Dia", "Cai", "Ben"],
        ),
        (
            "created after Ben, active",
            format!("created[gt]={after_ben}&status=active"),
            &["Cai"],
        ),
        (
            "updated before the epoch's first second",
            "updated[lt]=1".into(),
            &[],
        ),
    ];
    for (description, query, expected) in cases {
        assert_eq!(names_listed(http, &query).await, expected, "{description}");
    }
    // Cai changed last: an updated range from its change on finds only it.
    let cai_updated = moved.json()["updated_at"].as_str().unwrap().to_owned();
    let query = format!("updated[gte]={cai_updated}");
    assert_eq!(names_listed(http, &query).await, ["Cai"]);
}

#[tokio::test]
async fn bad_list_parameters_are_refused_naming_each() {
    let app = spawn_app().await;
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "bad values",
            "status=gone&country=Atlantis&created[gte]=soon",
            &["status", "country", "created[gte]"],
        ),
        (
            "unknown parameters",
            "colour=red&created[eq]=1",
            &["colour", "created[eq]"],
        ),
        (
            "a feed cursor on a newest-first list",
            "cursor=f1000000000000000000000000000000000000000000000000",
            &["cursor"],
        ),
        (
            "an id cursor on the feed",
            "order=updated_asc&starting_after=cus_01h3vjs3b16yc3f9q8q9pfrb80",
            &["starting_after"],
        ),
        (
            "a malformed feed cursor",
            "order=updated_asc&cursor=nope",
            &["cursor"],
        ),
    ];
    for (description, query, fields) in cases {
        let response = app.http.get(&format!("/api/v1/customers?{query}")).await;
        assert_eq!(response.status, 400, "{description}: {:?}", response.body);
        let problem = response.json();
        assert_eq!(problem["code"], "validation_failed", "{description}");
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{description}");
    }
}

/// One feed page from `cursor` (none: the start), with tombstones.
async fn feed_page(http: &HttpClient, cursor: Option<&str>, limit: usize) -> Value {
    let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
    let path =
        format!("/api/v1/customers?order=updated_asc&include_deleted=true&limit={limit}{cursor}");
    let page = http.get(&path).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    page.json()
}

/// A copy kept with nothing but the feed: id → the item last seen (a customer or a tombstone).
#[derive(Default)]
struct Mirror {
    items: BTreeMap<String, Value>,
    cursor: Option<String>,
    /// Every (id, updated_at or deleted_at) delivered, to catch a change delivered twice.
    seen: Vec<(String, String)>,
}

impl Mirror {
    /// Reads pages until the feed has nothing more now.
    async fn catch_up(&mut self, http: &HttpClient) {
        loop {
            let page = feed_page(http, self.cursor.as_deref(), 7).await;
            for item in page["data"].as_array().unwrap() {
                let id = item["id"].as_str().unwrap().to_owned();
                let at = item.get("deleted_at").or(item.get("updated_at")).unwrap();
                let change = (id.clone(), at.as_str().unwrap().to_owned());
                assert!(!self.seen.contains(&change), "delivered twice: {change:?}");
                self.seen.push(change);
                self.items.insert(id, item.clone());
            }
            self.cursor = Some(
                page["next_cursor"]
                    .as_str()
                    .expect("a next_cursor")
                    .to_owned(),
            );
            if !page["has_more"].as_bool().unwrap() {
                return;
            }
        }
    }
}

/// What the service holds for every id the mirror or the writers know: the customer as a get
/// shows it, or its tombstone's shape (`deleted` only: a get does not tell the time).
async fn service_state(http: &HttpClient, ids: &[String]) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    for id in ids {
        let got = http.get(&format!("/api/v1/customers/{id}")).await;
        let value = match got.status {
            200 => got.json(),
            410 => json!({"deleted": true}),
            other => panic!("{id}: {other}"),
        };
        state.insert(id.clone(), value);
    }
    state
}

#[tokio::test]
async fn a_mirror_kept_by_the_change_feed_alone_misses_nothing_while_writes_go_on() {
    let app = spawn_app().await;
    let http = &app.http;
    let mut mirror = Mirror::default();
    let mut ids: Vec<String> = Vec::new();
    for round in 0..6 {
        // A burst of creates, updates of earlier customers and deletes, all at once, while
        // the mirror reads the feed.
        let creates = (0..12).map(|i| {
            let body = json!({"name": format!("R{round}-{i}"), "email": format!("r{round}-{i}@sync.example")});
            async move { http.create(&body.to_string()).await }
        });
        let updates = ids.iter().step_by(3).map(|id| {
            let patch = json!({"custom_data": {"round": round}}).to_string();
            async move { http.patch(id, &patch, &[]).await }
        });
        let deletes = ids
            .iter()
            .skip(1)
            .step_by(7)
            .map(|id| async move { http.delete(id, &[]).await });
        let (created, updated, deleted, ()) = tokio::join!(
            join_all(creates),
            join_all(updates),
            join_all(deletes),
            mirror.catch_up(http),
        );
        for response in created {
            assert_eq!(response.status, 201);
            ids.push(response.json()["id"].as_str().unwrap().to_owned());
        }
        for response in updated.iter().chain(&deleted) {
            assert!([200, 410].contains(&response.status), "{:?}", response.body);
        }
    }
    mirror.catch_up(http).await;
    let expected = service_state(http, &ids).await;
    let mirrored: BTreeMap<String, Value> = mirror
        .items
        .iter()
        .map(|(id, item)| {
            let shape = match item.get("deleted_at") {
                Some(_) => json!({"deleted": true}),
                None => item.clone(),
            };
            (id.clone(), shape)
        })
        .collect();
    assert_eq!(
        mirrored.len(),
        ids.len(),
        "every customer reached the mirror"
    );
    assert_eq!(mirrored, expected, "the mirror equals the service");

    // Quiet now: the last cursor yields nothing, and then exactly the next change.
    let last = mirror.cursor.clone().unwrap();
    assert_eq!(feed_page(http, Some(&last), 10).await["data"], json!([]));
    let changed = http.patch(&ids[0], r#"{"name":"Last"}"#, &[]).await;
    let page = feed_page(http, Some(&last), 10).await;
    if changed.status == 200 {
        assert_eq!(
            page["data"],
            json!([changed.json()]),
            "read-your-writes in the feed"
        );
    }
}

#[tokio::test]
async fn a_feed_cursor_stays_valid_across_a_restart() {
    let mut app = spawn_app().await;
    let first = create(
        &app.http,
        json!({"name": "A", "email": "a@restart.example"}),
    )
    .await;
    let page = feed_page(&app.http, None, 10).await;
    assert_eq!(page["data"], json!([first]));
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    app.restart_worker().await;
    let second = create(
        &app.http,
        json!({"name": "B", "email": "b@restart.example"}),
    )
    .await;
    let page = feed_page(&app.http, Some(&cursor), 10).await;
    assert_eq!(page["data"], json!([second]));
    assert_eq!(
        names_listed(&app.http, "status=active").await,
        ["B", "A"],
        "the attribute index survived too"
    );
}
