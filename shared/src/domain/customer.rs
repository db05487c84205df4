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

    /// The customer with the fields `fields` (a patch's result), changed at `at_ms`: its id
    /// and `created_at` kept, `updated_at` the later of `at_ms` and its old value (a clock
    /// stepping back never makes a change look older than the one before).
    pub fn updated(&self, fields: NewCustomer, at_ms: u64) -> Self {
        let at = Timestamp::from_unix_ms(at_ms).max(self.updated_at);
        Self {
            updated_at: at,
            ..Self::create(self.id, fields)
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a customer always serialises")
    }

    /// Reads back a customer this service wrote (its [`Customer::to_json`]): the fields
    /// validated again by a create's rules; `Err` says what is wrong with it.
    pub fn from_stored(json: &[u8]) -> Result<Self, String> {
        let mut object = crate::domain::json::object(json).map_err(|e| format!("{e:?}"))?;
        let mut take_text = |key: &str| match object.remove(key) {
            Some(serde_json::Value::String(text)) => Ok(text),
            _ => Err(format!("no {key}")),
        };
        let id: CustomerId = take_text("id")?
            .parse()
            .map_err(|_| "a bad id".to_owned())?;
        let updated_at = Timestamp::parse(&take_text("updated_at")?)
            .ok_or_else(|| "a bad updated_at".to_owned())?;
        take_text("created_at")?;
        let fields = NewCustomer::from_object(object).map_err(|e| format!("{e:?}"))?;
        Ok(Self {
            updated_at,
            ..Self::create(id, fields)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_customer_reads_back_and_an_update_keeps_its_identity() {
        let id: CustomerId = "cus_01h3vjs3b16yc3f9q8q9pfrb80".parse().unwrap();
        let body = br#"{"name":"Ana","email":"a@x.com","address":{"city":"Arusha","country":"Tanzania"},"custom_data":{"k":[1,{"a":null}]}}"#;
        let created = Customer::create(id, NewCustomer::parse(body).unwrap());
        let json = created.to_json();
        assert_eq!(Customer::from_stored(&json), Ok(created.clone()));

        let fields = NewCustomer::parse(br#"{"name":"Bo","email":"b@x.com"}"#).unwrap();
        let later = created.updated(fields.clone(), id.unix_ms() + 5);
        assert_eq!((later.id, later.created_at), (id, created.created_at));
        assert_eq!(later.updated_at.unix_ms(), id.unix_ms() + 5);
        assert_eq!(Customer::from_stored(&later.to_json()), Ok(later.clone()));
        let clock_stepped_back = later.updated(fields, id.unix_ms());
        assert_eq!(
            clock_stepped_back.updated_at, later.updated_at,
            "updated_at never goes back"
        );
    }
}
