//! Realistic, unique create bodies: varied names and domains, optional fields present in
//! different mixes, statuses, some custom_data; optionally a share of duplicate emails.

use std::fmt::Write;

const FIRST: &[&str] = &[
    "Amina", "Brighton", "Chen", "Dalia", "Erik", "Fatuma", "Goran", "Hana", "Ivan", "Joyce",
    "Kofi", "Lena", "Mateo", "Nia", "Omar", "Priya",
];
const LAST: &[&str] = &[
    "Mboya", "Okafor", "Schmidt", "Tanaka", "Silva", "Kowalski", "Haddad", "Njoroge", "Larsen",
    "Mwangi", "Rossi", "Kim",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "mail.example.net",
    "jani.co.tz",
];
const CITIES: &[(&str, &str)] = &[
    ("Dar es Salaam", "TZ"),
    ("Nairobi", "ke"),
    ("Berlin", "Germany"),
    ("Lagos", "NG"),
    ("Osaka", "JP"),
    ("Lisbon", "Portugal"),
];
const TIERS: &[&str] = &["Bronze", "Silver", "Gold", "Platinum"];

/// Makes request bodies; each generator (one per worker task) has its own sequence.
pub struct Generator {
    rng: fastrand::Rng,
    run: String,
    stream: usize,
    sequence: u64,
    duplicate_ratio: f64,
    last_email: Option<String>,
}

impl Generator {
    pub fn new(run: &str, stream: usize, duplicate_ratio: f64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(stream as u64 ^ 0x9e37_79b9_7f4a_7c15),
            run: run.to_owned(),
            stream,
            sequence: 0,
            duplicate_ratio,
            last_email: None,
        }
    }

    /// The next body and its idempotency key.
    pub fn next_body(&mut self) -> (String, String) {
        self.sequence += 1;
        let rng = &mut self.rng;
        let first = FIRST[rng.usize(..FIRST.len())];
        let last = LAST[rng.usize(..LAST.len())];
        let email = match &self.last_email {
            Some(previous) if rng.f64() < self.duplicate_ratio => previous.clone(),
            _ => format!(
                "{}.{}+{}-{}-{}@{}",
                first.to_lowercase(),
                last.to_lowercase(),
                self.run,
                self.stream,
                self.sequence,
                DOMAINS[rng.usize(..DOMAINS.len())]
            ),
        };
        let mut body = format!(r#"{{"name":"{first} {last}","email":"{email}""#);
        if rng.bool() {
            let _ = write!(
                body,
                r#","phone":"+255 7{:02} {:03} {:03}""#,
                rng.u32(..100),
                rng.u32(..1000),
                rng.u32(..1000)
            );
        }
        if rng.u8(..4) != 0 {
            let (city, country) = CITIES[rng.usize(..CITIES.len())];
            let _ = write!(
                body,
                r#","address":{{"city":"{city}","country":"{country}"}}"#
            );
        }
        if rng.bool() {
            let _ = write!(body, r#","payment_method":"card_{:016x}""#, rng.u64(..));
        }
        // Most customers active (the default), a tenth inactive, a twentieth suspended.
        match rng.u8(..20) {
            0 | 1 => body.push_str(r#","status":"inactive""#),
            2 => body.push_str(r#","status":"suspended""#),
            _ => {}
        }
        if rng.u8(..3) == 0 {
            let _ = write!(
                body,
                r#","custom_data":{{"loyalty_program":"{}","signup_channel":"web","referrals":{}}}"#,
                TIERS[rng.usize(..TIERS.len())],
                rng.u8(..20)
            );
        }
        body.push('}');
        self.last_email = Some(email);
        (
            body,
            format!("{}-{}-{}", self.run, self.stream, self.sequence),
        )
    }
}
