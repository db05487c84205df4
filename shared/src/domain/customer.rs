//! The stored customer record. A [`Customer`] serialises with the keys in the documented
//! order, every key present (null when unset); its `created_at` is its id's millisecond.

use schemars::JsonSchema;
use serde::Serialize;

use crate::domain::fields::{
    Address, CustomData, CustomerEmail, CustomerName, PaymentMethod, Phone, Status,
};
use crate::domain::id::CustomerId;
use crate::domain::new_customer::NewCustomer;
use crate::domain::timestamp::Timestamp;

/// A stored customer, exactly as every success reply shows it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(transform = every_key_required)]
pub struct Customer {
    pub id: CustomerId,
    pub name: CustomerName,
    pub email: CustomerEmail,
    pub phone: Option<Phone>,
    pub address: Option<Address>,
    pub payment_method: Option<PaymentMethod>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub status: Status,
    pub custom_data: Option<CustomData>,
}

/// Every key of a customer is always present (null when unset), so all are `required`.
fn every_key_required(schema: &mut schemars::Schema) {
    let keys: Vec<serde_json::Value> = schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
        .map(|properties| properties.keys().cloned().map(Into::into).collect())
        .unwrap_or_default();
    schema.insert("required".to_owned(), keys.into());
}

impl Customer {
    /// The record for `new`, created at the instant embedded in `id`.
    pub fn create(id: CustomerId, new: NewCustomer) -> Self {
        let created_at = id.timestamp();
        Self {
            id,
            name: new.name,
            email: new.email,
            phone: new.phone,
            address: new.address,
            payment_method: new.payment_method,
            created_at,
            updated_at: created_at,
            status: new.status,
            custom_data: new.custom_data,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a customer always serialises")
    }
}
