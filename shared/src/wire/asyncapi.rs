//! The AsyncAPI 3.0 description of the whole NATS interface: the request–reply operations
//! `create`, `get`, `list`, `update` and `delete` with their headers and error headers, the
//! micro service's discovery endpoints (`$SRV.*`) and the event channels (`customer.created`,
//! `customer.updated`, `customer.deleted`). Built from the
//! same schemars types as the OpenAPI document. The ingress serves it at
//! `GET /api/v1/asyncapi.json`; `docs/asyncapi.json` is the committed copy, and
//! `asyncapi_matches_committed_file` fails when the two drift (regenerate with
//! `UPDATE_SCHEMAS=1 cargo test -p customers-shared`).

use serde_json::{Map, Value, json};

use crate::domain::customer::Customer;
use crate::wire::event::{
    self, CustomerCreatedEvent, CustomerDeletedEvent, CustomerUpdatedEvent, EventType,
};
use crate::wire::problem::Problem;
use crate::wire::protocol::{self, headers};
use crate::wire::schema::{
    self, CreateCustomerRequest, CustomerFeedPage, CustomerList, CustomerSearchPage,
    DeletedCustomer, ListCustomersRequest, SearchCustomersRequest, UpdateCustomerRequest,
};

/// The AsyncAPI document, for the default subject prefix.
pub fn document() -> Value {
    let mut generator = schema::components_generator();
    let create = generator.subschema_for::<CreateCustomerRequest>();
    let list_query = generator.subschema_for::<ListCustomersRequest>();
    let search_query = generator.subschema_for::<SearchCustomersRequest>();
    let search_page = generator.subschema_for::<CustomerSearchPage>();
    let customer = generator.subschema_for::<Customer>();
    let list = generator.subschema_for::<CustomerList>();
    let feed = generator.subschema_for::<CustomerFeedPage>();
    let problem = generator.subschema_for::<Problem>();
    let update = generator.subschema_for::<UpdateCustomerRequest>();
    let deleted = generator.subschema_for::<DeletedCustomer>();
    let event_schemas = [
        generator.subschema_for::<CustomerCreatedEvent<'static>>(),
        generator.subschema_for::<CustomerUpdatedEvent<'static>>(),
        generator.subschema_for::<CustomerDeletedEvent<'static>>(),
    ];
    let schemas = generator.take_definitions(true);

    let prefix = protocol::DEFAULT_SUBJECT_PREFIX;
    let string = |description: &str| json!({"type": "string", "description": description});
    let header_object = |properties: Value| json!({"type": "object", "properties": properties});
    let request_headers = |idempotent: bool| {
        let mut properties = json!({
            headers::REQUEST_ID: string("Correlates the request's log lines; echoed on the reply."),
            headers::TRACEPARENT: string("W3C trace context, forwarded unchanged."),
            headers::DEADLINE: string("When the requester stops waiting, in milliseconds since the Unix epoch: a worker that picks the request up later drops it unread."),
        });
        if idempotent {
            properties[headers::IDEMPOTENCY_KEY] = string(
                "Makes the create safe to retry: 1–255 printable ASCII characters (docs/API.md §5).",
            );
        }
        header_object(properties)
    };
    let change_headers = {
        let mut headers = request_headers(true);
        headers["properties"][headers::CUSTOMER_ID] =
            string("The customer to change (required; missing or malformed: 404).");
        headers["properties"][headers::IF_MATCH] = string(
            "Proceed only at one of these versions (entity tags, strong comparison), or * (docs/API.md §4c).",
        );
        headers
    };
    let reply_headers = json!({
        headers::REQUEST_ID: string("The request's X-Request-Id, when it had one."),
        headers::CUSTOMER_ID: string("On a reply carrying a customer: its id."),
        headers::ETAG: string("On a reply carrying a customer, and on a 412: its version as an entity tag (\"3\")."),
        headers::IDEMPOTENT_REPLAYED: {"const": "true", "description": "On the stored reply of an earlier request with the same Idempotency-Key."}
    });
    let error_headers = header_object(json!({
        headers::REQUEST_ID: string("The request's X-Request-Id, when it had one."),
        headers::SERVICE_ERROR: string("The problem's code, e.g. email_already_exists."),
        headers::SERVICE_ERROR_CODE: string("The HTTP status the problem maps to, e.g. 409."),
        headers::RETRY_AFTER: string("On a 503 (and idempotency_key_in_use): seconds to wait before retrying.")
    }));
    let message = |name: &str, summary: &str, headers: Value, payload: Value| json!({"name": name, "summary": summary, "headers": headers, "payload": payload});
    let reference = |kind: &str, name: &str| json!({"$ref": format!("#/{kind}/{name}")});
    let srv = |verb: &str| format!("$SRV.{verb}.{}", protocol::SERVICE_NAME);
    let discovery_reply = |name: &str, description: &str| {
        json!({"name": name, "summary": description, "contentType": "application/json",
               "payload": {"type": "object", "required": ["type", "name", "id", "version"],
                           "properties": {"type": {"type": "string"}, "name": {"const": protocol::SERVICE_NAME},
                                          "id": {"type": "string"}, "version": {"type": "string"}}}})
    };

    let mut messages = Map::new();
    let mut add = |name: &str, body: Value| {
        messages.insert(name.to_owned(), body);
    };
    add(
        "createCustomerRequest",
        message(
            "createCustomerRequest",
            "A new customer: the same JSON as the HTTP body.",
            request_headers(true),
            create.to_value(),
        ),
    );
    add(
        "getCustomerRequest",
        json!({"name": "getCustomerRequest", "summary": "The customer's id, as plain text.",
        "contentType": "text/plain", "headers": request_headers(false), "payload": {"type": "string"}}),
    );
    add(
        "listCustomersRequest",
        message(
            "listCustomersRequest",
            "The list query as a JSON object; an empty payload is {}.",
            request_headers(false),
            list_query.to_value(),
        ),
    );
    add(
        "searchCustomersRequest",
        message(
            "searchCustomersRequest",
            "The search request as a JSON object: query, limit, page.",
            request_headers(false),
            search_query.to_value(),
        ),
    );
    add(
        "updateCustomerRequest",
        message(
            "updateCustomerRequest",
            "A JSON Merge Patch (RFC 7396) of the customer's fields.",
            change_headers.clone(),
            update.to_value(),
        ),
    );
    add(
        "deleteCustomerRequest",
        json!({"name": "deleteCustomerRequest", "summary": "Empty (a payload is ignored, but fingerprinted with an Idempotency-Key).",
        "headers": change_headers, "payload": {"type": "string"}}),
    );
    add(
        "deletedCustomer",
        message(
            "deletedCustomer",
            "The customer is deleted (erased).",
            header_object(reply_headers.clone()),
            deleted.to_value(),
        ),
    );
    add(
        "customer",
        message(
            "customer",
            "The customer, exactly as stored (201 on a create, 200 on a get or an update).",
            header_object(reply_headers),
            customer.to_value(),
        ),
    );
    add(
        "customerList",
        message(
            "customerList",
            "A page of customers, newest first; with order updated_asc a change-feed page.",
            request_headers(false),
            json!({"oneOf": [list.to_value(), feed.to_value()]}),
        ),
    );
    add(
        "customerSearchPage",
        message(
            "customerSearchPage",
            "A page of the customers a search matches, newest first, with how many match in all.",
            request_headers(false),
            search_page.to_value(),
        ),
    );
    add(
        "problem",
        json!({"name": "problem", "summary": "An RFC 9457 problem, with the NATS micro error headers.",
        "contentType": crate::wire::problem::PROBLEM_CONTENT_TYPE, "headers": error_headers, "payload": problem.to_value()}),
    );
    for (event_type, schema) in EventType::ALL.into_iter().zip(event_schemas) {
        let summary = match event_type {
            EventType::Created => {
                "One per stored customer: a CloudEvents 1.0 envelope (JSON structured mode) whose data is the customer exactly as the 201 returned it."
            }
            EventType::Updated => {
                "One per update that changed the customer: data holds the customer exactly as the 200 returned it and previous_attributes, each changed member's value before (and updated_at's)."
            }
            EventType::Deleted => {
                "One per delete: data holds the id, deleted: true and deleted_at, no personal data. The customer's earlier created and updated messages are erased from the stream before it is published."
            }
        };
        let name = event_message(event_type);
        let event_id = match event_type {
            EventType::Updated => format!("{}:{{customer id}}:{{version}}", event_type.name()),
            _ => format!("{}:{{customer id}}", event_type.name()),
        };
        add(
            &name,
            json!({"name": name, "summary": summary,
            "contentType": event::CONTENT_TYPE,
            "headers": header_object(json!({
                "Nats-Msg-Id": string(&format!("The event id ({event_id}); the stream drops a re-publication within its duplicate window.")),
                "Content-Type": {"const": event::CONTENT_TYPE}
            })),
            "payload": schema.to_value()}),
        );
    }
    add(
        "serviceRequest",
        json!({"name": "serviceRequest", "summary": "Empty.", "payload": {"type": "string", "maxLength": 0}}),
    );
    add(
        "pingReply",
        discovery_reply("pingReply", "io.nats.micro.v1.ping_response"),
    );
    add(
        "infoReply",
        discovery_reply(
            "infoReply",
            "io.nats.micro.v1.info_response: description, metadata and endpoints",
        ),
    );
    add(
        "statsReply",
        discovery_reply(
            "statsReply",
            "io.nats.micro.v1.stats_response: requests, errors (problem replies) and processing time per endpoint",
        ),
    );

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut request_reply = |name: &str,
                             operation: &str,
                             summary: &str,
                             request: &str,
                             replies: &[&str]| {
        let address = protocol::subject(prefix, name);
        let reply_channel = format!("{name}Reply");
        channels.insert(name.to_owned(), json!({
            "address": address,
            "description": format!("Requests to the `{name}` endpoint of the customers micro service (queue group q: one worker answers each)."),
            "messages": {request: reference("components/messages", request)}
        }));
        let reply_messages: Map<String, Value> = replies
            .iter()
            .map(|m| ((*m).to_owned(), reference("components/messages", m)))
            .collect();
        channels.insert(
            reply_channel.clone(),
            json!({
                "address": null,
                "description": "The requester's inbox (the request's reply subject).",
                "messages": reply_messages
            }),
        );
        operations.insert(operation.to_owned(), json!({
            "action": "receive",
            "summary": summary,
            "channel": reference("channels", name),
            "messages": [reference(&format!("channels/{name}/messages"), request)],
            "reply": {
                "channel": reference("channels", &reply_channel),
                "messages": replies.iter().map(|m| reference(&format!("channels/{reply_channel}/messages"), m)).collect::<Vec<_>>()
            }
        }));
    };
    request_reply(
        protocol::Endpoint::Create.name(),
        "createCustomer",
        "Creates a customer with a case-insensitively unique email, durably; answers once it is on disk.",
        "createCustomerRequest",
        &["customer", "problem"],
    );
    request_reply(
        protocol::Endpoint::Get.name(),
        "getCustomer",
        "Reads a customer by id (404 for an unknown or malformed id).",
        "getCustomerRequest",
        &["customer", "problem"],
    );
    request_reply(
        protocol::Endpoint::List.name(),
        "listCustomers",
        "Reads a page of customers, newest first.",
        "listCustomersRequest",
        &["customerList", "problem"],
    );
    request_reply(
        protocol::Endpoint::Search.name(),
        "searchCustomers",
        "Finds customers with Stripe's search language, newest first, with the total count; sees every acknowledged write.",
        "searchCustomersRequest",
        &["customerSearchPage", "problem"],
    );
    request_reply(
        protocol::Endpoint::Update.name(),
        "updateCustomer",
        "Applies a merge patch to the customer named by Customer-Id, durably; answers with the whole customer and its ETag.",
        "updateCustomerRequest",
        &["customer", "problem"],
    );
    request_reply(
        protocol::Endpoint::Delete.name(),
        "deleteCustomer",
        "Deletes (erases) the customer named by Customer-Id, durably.",
        "deleteCustomerRequest",
        &["deletedCustomer", "problem"],
    );

    for (verb, name, reply) in [
        ("PING", "servicePing", "pingReply"),
        ("INFO", "serviceInfo", "infoReply"),
        ("STATS", "serviceStats", "statsReply"),
    ] {
        let name = name.to_owned();
        let reply_channel = format!("{name}Reply");
        channels.insert(name.clone(), json!({
            "address": srv(verb),
            "description": format!("NATS micro service discovery: {verb} (also on `$SRV.{verb}`, answered by every service)."),
            "messages": {"serviceRequest": reference("components/messages", "serviceRequest")}
        }));
        channels.insert(
            reply_channel.clone(),
            json!({
                "address": null,
                "description": "The requester's inbox.",
                "messages": {reply: reference("components/messages", reply)}
            }),
        );
        operations.insert(
            name.clone(),
            json!({
                "action": "receive",
                "channel": reference("channels", &name),
                "reply": {"channel": reference("channels", &reply_channel)}
            }),
        );
    }

    for event_type in EventType::ALL {
        let name = event_message(event_type);
        channels.insert(name.clone(), json!({
            "address": event_type.subject(prefix, "{id}"),
            "parameters": {"id": {"description": "The customer's id."}},
            "description": format!("{} events, captured by the JetStream stream {} (subjects {}): one per change, in commit order per customer.",
                event_type.name(), event::DEFAULT_STREAM, event::all_events_subject(prefix)),
            "messages": {name.clone(): reference("components/messages", &name)}
        }));
        let operation = format!("publish{}{}", name[..1].to_uppercase(), &name[1..]);
        operations.insert(operation, json!({
            "action": "send",
            "summary": "The worker publishes each committed change's event (transactional outbox, publish acknowledged by JetStream).",
            "channel": reference("channels", &name),
            "messages": [reference(&format!("channels/{name}/messages"), &name)]
        }));
    }

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "customers (NATS)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The customers service on NATS: the micro service `customers` (request–reply create, get, list, update and delete, the same operations as the HTTP API) and the customer.created, customer.updated and customer.deleted events on JetStream. Subjects are shown with the default prefix `customers`."
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages}
    })
}

/// The message and channel name of an event type: `customerCreated`, and so on.
fn event_message(event_type: EventType) -> String {
    let token = event_type.token();
    format!("customer{}{}", token[..1].to_uppercase(), &token[1..])
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn asyncapi_matches_committed_file() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/asyncapi.json");
        let generated = serde_json::to_string_pretty(&super::document()).unwrap() + "\n";
        crate::wire::schema::assert_committed(&path, &generated);
    }

    #[test]
    fn every_reference_resolves() {
        crate::wire::schema::assert_references_resolve(&super::document());
    }
}
