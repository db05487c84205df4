//! Updates and deletes (docs/API.md §4a, §4b) over HTTP and NATS: merge patches, versions
//! and their entity tags, `If-Match` and `If-None-Match`, email moves, erasure and its
//! tombstone, idempotent changes, and the races between them.

use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::{
    HttpClient, TestApp, TestResponse, customer_with_email, nats_header, spawn_app, subject,
};
use futures_util::future::join_all;
use serde_json::{Value, json};

const MERGE_PATCH: &str = "application/merge-patch+json";

async fn create(http: &HttpClient, body: &Value) -> Value {
    let created = http.create(&body.to_string()).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.json()
}

async fn create_with_email(http: &HttpClient, email: &str) -> String {
    let created = http.create(&customer_with_email(email)).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.json()["id"].as_str().expect("an id").to_owned()
}

fn id_of(customer: &Value) -> &str {
    customer["id"].as_str().expect("an id")
}

fn keys(customer: &Value) -> Vec<String> {
    customer
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

fn problem_code(response: &TestResponse) -> String {
    response.json()["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_patch_merges_into_the_customer_and_answers_all_of_it_with_the_next_etag() {
    let app = spawn_app().await;
    let created = create(
        &app.http,
        &json!({
            "name": "Ana", "email": "ana@example.com", "phone": "+255 700 000 001",
            "address": {"city": "Arusha", "country": "TZ"},
            "custom_data": {"tier": "gold", "since": 2020},
        }),
    )
    .await;
    let id = id_of(&created);
    let patch = json!({
        "address": {"city": "Dodoma"},
        "custom_data": {"tier": null, "seats": 3},
        "phone": null,
        "status": "suspended",
    });
    let updated = app.http.patch(id, &patch.to_string(), &[]).await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(updated.header("etag"), Some("\"2\""));
    assert_eq!(updated.header("content-type"), Some("application/json"));
    let customer = updated.json();
    assert_eq!(
        keys(&customer),
        keys(&created),
        "the create's shape and key order"
    );
    assert_eq!(customer["id"], created["id"]);
    assert_eq!(customer["created_at"], created["created_at"]);
    assert!(customer["updated_at"].as_str() >= created["updated_at"].as_str());
    assert_eq!(
        customer["address"],
        json!({"city": "Dodoma", "country": "TZ"})
    );
    assert_eq!(customer["custom_data"], json!({"since": 2020, "seats": 3}));
    assert_eq!(customer["phone"], Value::Null);
    assert_eq!(customer["status"], "suspended");
    assert_eq!(customer["name"], "Ana", "members the patch leaves out stay");

    let read = app.http.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.body, updated.body,
        "a read shows the update byte for byte"
    );
    assert_eq!(read.header("etag"), Some("\"2\""));
    let json_type = app
        .http
        .patch(
            id,
            r#"{"name":"Ana Maria"}"#,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(
        json_type.status, 200,
        "application/json is a merge patch too"
    );
    assert_eq!(json_type.header("etag"), Some("\"3\""));
    assert_eq!(
        app.http
            .create(&customer_with_email("x@example.com"))
            .await
            .header("etag"),
        Some("\"1\""),
        "a create's 201 carries version 1"
    );
}

#[tokio::test]
async fn a_patch_that_changes_nothing_makes_no_version() {
    let app = spawn_app().await;
    let created = create(
        &app.http,
        &json!({"name": "Bo", "email": "bo@example.com", "address": {"city": "Moshi", "country": "Tanzania"}}),
    )
    .await;
    let id = id_of(&created);
    for (description, patch) in [
        ("the same name", json!({"name": "Bo"})),
        ("the same name untrimmed", json!({"name": "  Bo "})),
        ("the country by name", json!({"address": {"country": "tz"}})),
        ("an absent field removed", json!({"custom_data": null})),
        ("an empty patch", json!({})),
    ] {
        let response = app.http.patch(id, &patch.to_string(), &[]).await;
        assert_eq!(response.status, 200, "{description}");
        assert_eq!(response.header("etag"), Some("\"1\""), "{description}");
        assert_eq!(
            response.json(),
            created,
            "{description}: updated_at unchanged too"
        );
    }
}

/// A description, the content type, the body, and the status, code and fields named.
type BadPatch = (
    &'static str,
    &'static str,
    &'static str,
    u16,
    &'static str,
    &'static [&'static str],
);

#[tokio::test]
async fn bad_patches_are_refused_with_every_violation() {
    let app = spawn_app().await;
    let id = create_with_email(&app.http, "carla@example.com").await;
    let cases: [BadPatch; 9] = [
        (
            "null name",
            MERGE_PATCH,
            r#"{"name":null}"#,
            400,
            "validation_failed",
            &["name"],
        ),
        (
            "null email and status",
            MERGE_PATCH,
            r#"{"email":null,"status":null}"#,
            400,
            "validation_failed",
            &["email", "status"],
        ),
        (
            "members the service sets",
            MERGE_PATCH,
            r#"{"id":"cus_x","created_at":"2020-01-01T00:00:00.000Z","updated_at":1,"deleted":true}"#,
            400,
            "validation_failed",
            &["id", "created_at", "updated_at", "deleted"],
        ),
        (
            "an unknown member",
            MERGE_PATCH,
            r#"{"nickname":"c"}"#,
            400,
            "validation_failed",
            &["nickname"],
        ),
        (
            "an invalid email",
            MERGE_PATCH,
            r#"{"email":"nope"}"#,
            400,
            "validation_failed",
            &["email"],
        ),
        (
            "an address made incomplete",
            MERGE_PATCH,
            r#"{"address":{"city":"Tanga"}}"#,
            400,
            "validation_failed",
            &["address.country"],
        ),
        ("not JSON", MERGE_PATCH, "{", 400, "malformed_json", &[]),
        ("not an object", MERGE_PATCH, "[]", 400, "invalid_body", &[]),
        (
            "another media type",
            "text/plain",
            r#"{"name":"C"}"#,
            415,
            "unsupported_media_type",
            &[],
        ),
    ];
    for (description, content_type, body, status, code, fields) in cases {
        let response = app
            .http
            .patch(&id, body, &[("content-type", content_type)])
            .await;
        assert_eq!(
            response.status, status,
            "{description}: {:?}",
            response.body
        );
        let problem = response.json();
        assert_eq!(problem["code"], code, "{description}");
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(named, fields, "{description}");
    }
    let unchanged = app.http.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(
        unchanged.header("etag"),
        Some("\"1\""),
        "nothing refused changed it"
    );
}

#[tokio::test]
async fn an_email_moves_only_when_free_and_the_old_one_is_free_at_once() {
    let app = spawn_app().await;
    let a = create_with_email(&app.http, "a@example.com").await;
    let b = create_with_email(&app.http, "b@example.com").await;
    let taken = app
        .http
        .patch(&a, r#"{"email":"B@EXAMPLE.com"}"#, &[])
        .await;
    assert_eq!(taken.status, 409);
    assert_eq!(taken.json()["code"], "email_already_exists");
    assert_eq!(
        taken.json()["customer_id"],
        b.as_str(),
        "it names the holder"
    );

    let moved = app
        .http
        .patch(&a, r#"{"email":"new-a@example.com"}"#, &[])
        .await;
    assert_eq!(moved.status, 200);
    let reused = app.http.create(&customer_with_email("A@example.com")).await;
    assert_eq!(
        reused.status, 201,
        "the old email is free once the update is answered"
    );
    let case_only = app
        .http
        .patch(&a, r#"{"email":"NEW-A@example.com"}"#, &[])
        .await;
    assert_eq!(case_only.status, 200, "its own email in other letter case");
    assert_eq!(case_only.json()["email"], "NEW-A@example.com");
    let found = app
        .http
        .get("/api/v1/customers?email=new-a@example.com")
        .await
        .json();
    assert_eq!(
        found["data"][0]["id"],
        a.as_str(),
        "the filter finds the new email"
    );
    let old = app
        .http
        .get("/api/v1/customers?email=a@example.com")
        .await
        .json();
    assert_eq!(
        old["data"][0]["id"],
        reused.json()["id"],
        "and the old one's new holder"
    );
}

#[tokio::test]
async fn if_match_guards_changes_and_if_none_match_saves_a_read() {
    let app = spawn_app().await;
    let id = create_with_email(&app.http, "dina@example.com").await;
    let path = format!("/api/v1/customers/{id}");
    let guarded = app
        .http
        .patch(&id, r#"{"name":"Dina"}"#, &[("if-match", "\"1\"")])
        .await;
    assert_eq!(guarded.status, 200);
    assert_eq!(guarded.header("etag"), Some("\"2\""));
    for (description, if_match) in [
        ("a stale version", "\"1\""),
        ("a weak tag never matches strongly", "W/\"2\""),
        ("a list without the current one", "\"1\", \"3\""),
    ] {
        let stale = app
            .http
            .patch(&id, r#"{"name":"Lost"}"#, &[("if-match", if_match)])
            .await;
        assert_eq!(stale.status, 412, "{description}");
        assert_eq!(problem_code(&stale), "precondition_failed", "{description}");
        assert_eq!(
            stale.header("etag"),
            Some("\"2\""),
            "{description}: the current one"
        );
    }
    let listed = app
        .http
        .patch(&id, r#"{"name":"Dina B"}"#, &[("if-match", "\"1\", \"2\"")])
        .await;
    assert_eq!(listed.status, 200, "a list holding the current version");
    let any = app
        .http
        .patch(&id, r#"{"name":"Dina C"}"#, &[("if-match", "*")])
        .await;
    assert_eq!((any.status, any.header("etag")), (200, Some("\"4\"")));
    let bad = app
        .http
        .patch(&id, r#"{"name":"X"}"#, &[("if-match", "4")])
        .await;
    assert_eq!(bad.status, 400, "an unquoted tag is no condition");
    assert_eq!(bad.json()["errors"][0]["field"], "If-Match");

    let cached = app
        .http
        .send_with("GET", &path, "", &[("if-none-match", "\"4\"")])
        .await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header("etag"), Some("\"4\""));
    assert!(cached.body.is_empty());
    let weak = app
        .http
        .send_with("GET", &path, "", &[("if-none-match", "W/\"4\"")])
        .await;
    assert_eq!(weak.status, 304, "If-None-Match compares weakly");
    let old = app
        .http
        .send_with("GET", &path, "", &[("if-none-match", "\"3\"")])
        .await;
    assert_eq!((old.status, old.header("etag")), (200, Some("\"4\"")));

    let stale_delete = app.http.delete(&id, &[("if-match", "\"3\"")]).await;
    assert_eq!(
        (stale_delete.status, stale_delete.header("etag")),
        (412, Some("\"4\""))
    );
    let deleted = app.http.delete(&id, &[("if-match", "\"4\"")]).await;
    assert_eq!(deleted.status, 200);
}

#[tokio::test]
async fn of_concurrent_updates_at_one_version_exactly_one_succeeds() {
    let app = spawn_app().await;
    let id = create_with_email(&app.http, "race@example.com").await;
    let replies = join_all((0..24).map(|n| {
        let http = app.http.clone();
        let id = id.clone();
        async move {
            let patch = json!({"custom_data": {"writer": n}}).to_string();
            http.patch(&id, &patch, &[("if-match", "\"1\"")]).await
        }
    }))
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 412).count(),
        23,
        "{statuses:?}"
    );
    let winner = replies.iter().find(|r| r.status == 200).expect("a winner");
    let read = app.http.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(
        read.body, winner.body,
        "the one that succeeded is what is stored"
    );
    assert_eq!(read.header("etag"), Some("\"2\""));
}

#[tokio::test]
async fn concurrent_updates_without_a_condition_all_land_one_version_each() {
    let app = spawn_app().await;
    let id = create_with_email(&app.http, "merge@example.com").await;
    let replies = join_all((0..20).map(|n| {
        let http = app.http.clone();
        let id = id.clone();
        async move {
            let patch = json!({"custom_data": {format!("k{n}"): n}}).to_string();
            http.patch(&id, &patch, &[]).await
        }
    }))
    .await;
    let mut versions: Vec<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200);
            r.header("etag").expect("an ETag").to_owned()
        })
        .collect();
    versions.sort_by_key(|tag| tag.trim_matches('"').parse::<u64>().unwrap());
    let expected: Vec<String> = (2..22).map(|v| format!("\"{v}\"")).collect();
    assert_eq!(versions, expected, "each update is its own version");
    let customer = app
        .http
        .get(&format!("/api/v1/customers/{id}"))
        .await
        .json();
    let data = customer["custom_data"].as_object().expect("custom_data");
    assert_eq!(data.len(), 20, "no update lost another's key: {data:?}");
}

#[tokio::test]
async fn a_delete_leaves_a_tombstone_frees_the_email_and_hides_the_customer() {
    let app = spawn_app().await;
    let older = create_with_email(&app.http, "older@example.com").await;
    let gone = create_with_email(&app.http, "Gone@example.com").await;
    let newer = create_with_email(&app.http, "newer@example.com").await;
    let deleted = app.http.delete(&gone, &[]).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json(), json!({"id": gone, "deleted": true}));

    let path = format!("/api/v1/customers/{gone}");
    for (description, response) in [
        ("get", app.http.get(&path).await),
        (
            "patch",
            app.http.patch(&gone, r#"{"name":"Back"}"#, &[]).await,
        ),
        ("delete", app.http.delete(&gone, &[]).await),
    ] {
        assert_eq!(response.status, 410, "{description}");
        assert_eq!(problem_code(&response), "customer_deleted", "{description}");
    }
    let never = "cus_01h3vjs3b16yc3f9q8q9pfrb80";
    assert_eq!(app.http.patch(never, "{}", &[]).await.status, 404);
    assert_eq!(app.http.delete(never, &[]).await.status, 404);

    let page = app.http.get("/api/v1/customers").await.json();
    let listed: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [newer.as_str(), older.as_str()]);
    let after = app
        .http
        .get(&format!("/api/v1/customers?starting_after={gone}"))
        .await
        .json();
    assert_eq!(
        after["data"][0]["id"],
        older.as_str(),
        "a cursor naming it still pages"
    );
    let before = app
        .http
        .get(&format!("/api/v1/customers?ending_before={gone}"))
        .await
        .json();
    assert_eq!(before["data"][0]["id"], newer.as_str());
    let by_email = app
        .http
        .get("/api/v1/customers?email=gone@example.com")
        .await;
    assert_eq!(by_email.json()["data"], json!([]));

    let again = create_with_email(&app.http, "gone@EXAMPLE.com").await;
    assert_ne!(again, gone, "the email is free at once, for a new id");
}

#[tokio::test]
async fn keyed_changes_replay_and_an_erased_customer_replays_as_410() {
    let app = spawn_app().await;
    let create_body = customer_with_email("keyed@example.com");
    let first = app.http.create_idempotent(&create_body, "create-1").await;
    assert_eq!(first.status, 201);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let other = create_with_email(&app.http, "other@example.com").await;

    let key = |k: &'static str| [("idempotency-key", k)];
    let patched = app
        .http
        .patch(&id, r#"{"name":"K"}"#, &key("patch-1"))
        .await;
    assert_eq!(patched.status, 200);
    let replay = app
        .http
        .patch(&id, r#"{"name":"K"}"#, &key("patch-1"))
        .await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, patched.body);
    assert_eq!(replay.header("etag"), Some("\"2\""));
    for (description, response) in [
        (
            "another body",
            app.http
                .patch(&id, r#"{"name":"L"}"#, &key("patch-1"))
                .await,
        ),
        (
            "another customer",
            app.http
                .patch(&other, r#"{"name":"K"}"#, &key("patch-1"))
                .await,
        ),
        (
            "another operation",
            app.http.delete(&id, &key("patch-1")).await,
        ),
        (
            "a create",
            app.http
                .create_idempotent(r#"{"name":"K"}"#, "patch-1")
                .await,
        ),
    ] {
        assert_eq!(response.status, 422, "{description}");
        assert_eq!(
            problem_code(&response),
            "idempotency_key_reused",
            "{description}"
        );
    }
    let refused = app
        .http
        .patch(&id, r#"{"name":null}"#, &key("patch-bad"))
        .await;
    assert_eq!(refused.status, 400);
    let refused_again = app
        .http
        .patch(&id, r#"{"name":null}"#, &key("patch-bad"))
        .await;
    assert_eq!(
        (
            refused_again.status,
            refused_again.header("idempotent-replayed")
        ),
        (400, Some("true")),
        "a refusal is stored like a create's"
    );

    let deleted = app.http.delete(&id, &key("delete-1")).await;
    assert_eq!(deleted.status, 200);
    let deleted_again = app.http.delete(&id, &key("delete-1")).await;
    assert_eq!(deleted_again.status, 200, "a keyed delete replays its 200");
    assert_eq!(deleted_again.header("idempotent-replayed"), Some("true"));
    assert_eq!(deleted_again.body, deleted.body);
    for (description, response) in [
        (
            "the create",
            app.http.create_idempotent(&create_body, "create-1").await,
        ),
        (
            "the patch",
            app.http
                .patch(&id, r#"{"name":"K"}"#, &key("patch-1"))
                .await,
        ),
    ] {
        assert_eq!(response.status, 410, "{description} of an erased customer");
        assert_eq!(
            response.header("idempotent-replayed"),
            Some("true"),
            "{description}"
        );
        assert_eq!(problem_code(&response), "customer_deleted", "{description}");
        assert!(
            !String::from_utf8_lossy(&response.body).contains("keyed@example.com"),
            "{description}: no personal data"
        );
    }
}

#[tokio::test]
async fn changes_over_nats_name_the_customer_in_a_header_and_carry_the_etag() {
    let app = spawn_app().await;
    let id = create_with_email(&app.http, "nats@example.com").await;
    let request = |endpoint, payload: &'static str, extra: &[(&str, &str)]| {
        let mut map = async_nats::HeaderMap::new();
        map.insert(headers::CUSTOMER_ID, id.as_str());
        for (name, value) in extra {
            map.insert(*name, *value);
        }
        app.nats_client
            .request_with_headers(subject(endpoint), map, payload.into())
    };
    let updated = request(Endpoint::Update, r#"{"phone":"+1 555 0100 22"}"#, &[])
        .await
        .expect("a reply");
    assert_eq!(nats_header(&updated, headers::SERVICE_ERROR), None);
    assert_eq!(nats_header(&updated, headers::ETAG), Some("\"2\""));
    let body: Value = serde_json::from_slice(&updated.payload).unwrap();
    assert_eq!(body["phone"], "+1 555 0100 22");
    let stale = request(Endpoint::Delete, "", &[(headers::IF_MATCH, "\"1\"")])
        .await
        .expect("a reply");
    assert_eq!(
        nats_header(&stale, headers::SERVICE_ERROR_CODE),
        Some("412")
    );
    assert_eq!(nats_header(&stale, headers::ETAG), Some("\"2\""));
    let deleted = request(Endpoint::Delete, "", &[]).await.expect("a reply");
    assert_eq!(
        serde_json::from_slice::<Value>(&deleted.payload).unwrap(),
        json!({"id": id, "deleted": true})
    );
    let no_id = app
        .nats_client
        .request(subject(Endpoint::Update), "{}".into())
        .await
        .expect("a reply");
    assert_eq!(
        nats_header(&no_id, headers::SERVICE_ERROR),
        Some("customer_not_found")
    );
}

#[tokio::test]
async fn require_if_match_refuses_unconditional_changes_with_428() {
    let nats = customers_tests::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = customers_worker::Config::new(nats.url(), dir.path());
    config.require_if_match = true;
    let _worker = customers_tests::TestWorker::start_with(config).await;
    let ingress = customers_tests::TestIngress::start(&nats.url()).await;
    let http = ingress.http();
    let id = create_with_email(&http, "strict@example.com").await;
    for (description, response) in [
        ("a patch", http.patch(&id, r#"{"name":"S"}"#, &[]).await),
        ("a delete", http.delete(&id, &[]).await),
    ] {
        assert_eq!(response.status, 428, "{description}");
        assert_eq!(
            problem_code(&response),
            "precondition_required",
            "{description}"
        );
    }
    let guarded = http
        .patch(&id, r#"{"name":"S"}"#, &[("if-match", "\"1\"")])
        .await;
    assert_eq!(guarded.status, 200);
    assert_eq!(http.delete(&id, &[("if-match", "*")]).await.status, 200);
}

/// One race: what runs at once, from a starting state, and what must hold after.
struct Race {
    description: &'static str,
    /// Customers created first, by email.
    existing: &'static [&'static str],
    /// Requests sent at once: (method, the index of the existing customer or none for a
    /// create, the body).
    requests: &'static [(&'static str, Option<usize>, &'static str)],
}

#[tokio::test]
async fn races_between_changes_keep_every_email_unique_and_every_answer_true() {
    let races = [
        Race {
            description: "an email moved between two customers while a third creates with it",
            existing: &["a@race.com", "b@race.com"],
            requests: &[
                ("PATCH", Some(0), r#"{"email":"x@race.com"}"#),
                ("PATCH", Some(1), r#"{"email":"a@race.com"}"#),
                ("POST", None, r#"{"name":"C","email":"A@race.com"}"#),
            ],
        },
        Race {
            description: "a create with an email a concurrent update is taking",
            existing: &["a@race.com"],
            requests: &[
                ("PATCH", Some(0), r#"{"email":"n@race.com"}"#),
                ("POST", None, r#"{"name":"C","email":"n@race.com"}"#),
            ],
        },
        Race {
            description: "a delete racing an update",
            existing: &["a@race.com"],
            requests: &[
                ("PATCH", Some(0), r#"{"name":"Renamed"}"#),
                ("DELETE", Some(0), ""),
                ("POST", None, r#"{"name":"C","email":"a@race.com"}"#),
            ],
        },
    ];
    for race in races {
        for round in 0..5 {
            let app = spawn_app().await;
            let mut ids = Vec::new();
            for email in race.existing {
                ids.push(create_with_email(&app.http, email).await);
            }
            let replies = join_all(race.requests.iter().map(|(method, target, body)| {
                let http = app.http.clone();
                let id = target.map(|i| ids[i].clone());
                async move {
                    match (*method, id) {
                        ("POST", _) => http.create(body).await,
                        ("PATCH", Some(id)) => http.patch(&id, body, &[]).await,
                        (_, Some(id)) => http.delete(&id, &[]).await,
                        _ => unreachable!(),
                    }
                }
            }))
            .await;
            let case = format!("{} (round {round})", race.description);
            check_race(&app, &case, &ids, race.requests, &replies).await;
        }
    }
}

/// After a race: no two live customers share an email (case-insensitively); a customer that
/// one success alone changed is exactly what that success answered; a created one exists;
/// an update refused `410` lost to a delete that succeeded; every refusal is one the race
/// can cause.
async fn check_race(
    app: &TestApp,
    case: &str,
    ids: &[String],
    requests: &[(&str, Option<usize>, &str)],
    replies: &[TestResponse],
) {
    let page = app.http.get("/api/v1/customers?limit=100").await.json();
    let live = page["data"].as_array().unwrap();
    let mut emails: Vec<String> = live
        .iter()
        .map(|c| c["email"].as_str().unwrap().to_ascii_lowercase())
        .collect();
    let count = emails.len();
    emails.sort();
    emails.dedup();
    assert_eq!(
        emails.len(),
        count,
        "{case}: two customers share an email: {live:?}"
    );
    let succeeded = |target: usize| {
        requests
            .iter()
            .zip(replies)
            .filter(|((_, t, _), reply)| *t == Some(target) && reply.status == 200)
            .count()
    };
    for ((method, target, _), reply) in requests.iter().zip(replies) {
        let id = match (target, reply.status) {
            (Some(target), _) => ids[*target].clone(),
            (None, 201) => reply.json()["id"].as_str().unwrap().to_owned(),
            (None, _) => String::new(),
        };
        let now = app.http.get(&format!("/api/v1/customers/{id}")).await;
        match (*method, reply.status) {
            ("POST", 201) => assert_eq!(now.body, reply.body, "{case}: the created customer"),
            ("PATCH", 200) if succeeded(target.unwrap()) == 1 => {
                assert_eq!(now.body, reply.body, "{case}: the update is what is stored")
            }
            ("PATCH", 200) | ("DELETE", 200) => {}
            ("PATCH", 410) => {
                assert_eq!(now.status, 410, "{case}: refused 410, so it was deleted")
            }
            (_, 409) => assert_eq!(problem_code(reply), "email_already_exists", "{case}"),
            (_, other) => panic!("{case}: {method} answered {other}: {:?}", reply.body),
        }
    }
}

#[tokio::test]
async fn changes_survive_a_restart_and_leave_the_database_consistent() {
    let mut app = spawn_app().await;
    let kept = create_with_email(&app.http, "kept@restart.com").await;
    let gone = create_with_email(&app.http, "gone@restart.com").await;
    let moved = app
        .http
        .patch(
            &kept,
            r#"{"email":"moved@restart.com","custom_data":{"n":1}}"#,
            &[],
        )
        .await;
    assert_eq!(moved.status, 200);
    assert_eq!(app.http.delete(&gone, &[]).await.status, 200);
    app.stop_worker().await;
    let consistency = {
        let opened = customers_worker::Store::open(app.data_dir.path(), 16 << 20).unwrap();
        opened.store.verify().unwrap()
    };
    assert!(consistency.is_consistent(), "{consistency:?}");
    assert_eq!((consistency.records, consistency.deleted), (1, 1));
    app.restart_worker().await;
    let read = app.http.get(&format!("/api/v1/customers/{kept}")).await;
    assert_eq!((read.status, read.header("etag")), (200, Some("\"2\"")));
    assert_eq!(read.body, moved.body);
    assert_eq!(
        app.http
            .get(&format!("/api/v1/customers/{gone}"))
            .await
            .status,
        410
    );
    for (email, status) in [
        ("kept@restart.com", 201),
        ("gone@restart.com", 201),
        ("moved@restart.com", 409),
    ] {
        let created = app.http.create(&customer_with_email(email)).await;
        assert_eq!(created.status, status, "{email} after the restart");
    }
}

/// Whether any file under `dir` holds `needle`, byte for byte.
fn any_file_holds(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir)
        .expect("the journal directory")
        .any(|entry| {
            let bytes = std::fs::read(entry.expect("an entry").path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|window| window == needle)
        })
}

#[tokio::test]
async fn what_a_delete_erased_leaves_the_journal_within_the_checkpoint_interval() {
    const INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
    let nats = customers_tests::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = customers_worker::Config::new(nats.url(), dir.path());
    config.checkpoint_interval = INTERVAL;
    let _worker = customers_tests::TestWorker::start_with(config).await;
    let ingress = customers_tests::TestIngress::start(&nats.url()).await;
    let http = ingress.http();
    let journal = dir.path().join("journal");
    let email = b"erase-me-7f3a@example.com";
    let id = create_with_email(&http, "erase-me-7f3a@example.com").await;
    // Far below the size bound: only the time bound can remove it.
    assert!(any_file_holds(&journal, email), "the create is journaled");
    assert_eq!(http.delete(&id, &[]).await.status, 200);
    let deleted = std::time::Instant::now();
    // The bound: the interval, a clock tick (a quarter of it) and the checkpoint itself.
    let bound = INTERVAL + INTERVAL / 4 + std::time::Duration::from_secs(5);
    while any_file_holds(&journal, email) {
        assert!(
            deleted.elapsed() < bound,
            "the erased email is still in the journal after {:?}",
            deleted.elapsed()
        );
        // Nothing to await: the checkpointer announces nothing outside the worker.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let read = http.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(read.status, 410, "the tombstone stays");
}
