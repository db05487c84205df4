//! `customers-peer-postgres`: what a team would write instead of the customers service, as a
//! benchmark peer. `POST /api/v1/customers` takes the same JSON body, checks the two required
//! fields, inserts one row (`synchronous_commit` is on: the commit waits for the WAL fsync)
//! and answers 201 with the stored row, 409 when the unique index on `lower(email)` refuses
//! it, 400 for a body without a name and an email. Configuration by environment:
//! `PEER_LISTEN` (default 127.0.0.1:8090), `DATABASE_URL` (a libpq connection string),
//! `PEER_POOL_SIZE` (default 8: about two connections per core plus the disk, on the two
//! cores it is measured on; the benchmark sweeps it). It starts on an empty table, as the
//! service starts on an empty data directory, so that runs with different pools compare.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

const SCHEMA: &str = "
DROP TABLE IF EXISTS customers;
CREATE TABLE customers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    email text NOT NULL,
    phone text,
    address jsonb,
    payment_method text,
    status text NOT NULL DEFAULT 'active',
    custom_data jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customers_email_key ON customers (lower(email));
";

const INSERT: &str = "
INSERT INTO customers (name, email, phone, address, payment_method, status, custom_data)
VALUES ($1, $2, $3, $4, $5, coalesce($6, 'active'), $7)
RETURNING id, created_at";

#[tokio::main]
async fn main() {
    let listen = std::env::var("PEER_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let pool_size = std::env::var("PEER_POOL_SIZE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8);
    let config: tokio_postgres::Config = url.parse().expect("a valid DATABASE_URL");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(pool_size)
        .build()
        .expect("a pool");
    pool.get()
        .await
        .expect("connect to PostgreSQL")
        .batch_execute(SCHEMA)
        .await
        .expect("create the table");
    let app = Router::new()
        .route("/api/v1/customers", post(create))
        .with_state(Arc::new(pool));
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    eprintln!(
        "peer listening on {}",
        listener.local_addr().expect("address")
    );
    axum::serve(listener, app).await.expect("serve");
}

async fn create(State(pool): State<Arc<deadpool_postgres::Pool>>, body: Bytes) -> Response {
    let Ok(Value::Object(customer)) = serde_json::from_slice::<Value>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "invalid_body");
    };
    let text = |key: &str| customer.get(key).and_then(Value::as_str).map(str::to_owned);
    let object = |key: &str| customer.get(key).filter(|v| v.is_object()).cloned();
    let (Some(name), Some(email)) = (text("name"), text("email")) else {
        return problem(StatusCode::BAD_REQUEST, "validation_failed");
    };
    let client = match pool.get().await {
        Ok(client) => client,
        Err(_) => return problem(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
    };
    let (phone, address, payment_method, status, custom_data) = (
        text("phone"),
        object("address"),
        text("payment_method"),
        text("status"),
        object("custom_data"),
    );
    let inserted = client
        .query_one(
            INSERT,
            &[
                &name,
                &email,
                &phone,
                &address,
                &payment_method,
                &status,
                &custom_data,
            ],
        )
        .await;
    match inserted {
        Ok(row) => {
            let id: uuid::Uuid = row.get(0);
            let created_at: chrono::DateTime<chrono::Utc> = row.get(1);
            let created_at = created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let stored = json!({
                "id": id.to_string(), "name": name, "email": email, "phone": phone, "address": address,
                "payment_method": payment_method, "created_at": created_at,
                "updated_at": created_at, "status": status.as_deref().unwrap_or("active"),
                "custom_data": custom_data,
            });
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json")],
                stored.to_string(),
            )
                .into_response()
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            problem(StatusCode::CONFLICT, "email_already_exists")
        }
        Err(e) => {
            eprintln!("insert failed: {e}");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        }
    }
}

fn problem(status: StatusCode, code: &str) -> Response {
    let body =
        json!({ "type": format!("/problems/{code}"), "status": status.as_u16(), "code": code });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}
